"""Run the shipped BSR SpMM once per block size (fp16 4096^3, 90 % of the blocks zero) for Nsight Compute:
    ncu --kernel-name regex:bsr_ncu --metrics <...> python3 benchmarks/results/h100-dl-item3-k-steps/ncu_bsr.py
(from the repository root on a GPU). Each kernel runs twice; profile the second launch (--launch-skip)."""
import os
import sys

import torch

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "examples")]
import _dl_common as dl  # noqa: E402
import sparsec as sc  # noqa: E402
from sparsec.nn import block_prune  # noqa: E402

env = dl.setup()
g = torch.Generator(device="cuda").manual_seed(0)
W0 = torch.randn(4096, 4096, device="cuda", generator=g).half()
X = torch.randn(4096, 4096, device="cuda", generator=g).half()
for b in (16, 32, 64, 128):
    fmt = f"bsr({b},{b})"
    Wb = dl.bind(block_prune(W0, (b, b), 0.9), fmt, env)
    k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": fmt}, dtype="float16", target="triton",
                   name=f"bsr_ncu{b}")
    for _ in range(2):
        k(W=Wb, X=X)
    torch.cuda.synchronize()
