import os
import sys

# tests import their shared helpers (grid.py) as top-level modules
sys.path.insert(0, os.path.dirname(__file__))
# The Triton backend runs in its interpreter on machines without a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Outputs the runtime leaves "uninitialized" are filled with NaN, so a missed write cannot pass.
os.environ.setdefault("SPARSEC_POISON_OUTPUTS", "1")
