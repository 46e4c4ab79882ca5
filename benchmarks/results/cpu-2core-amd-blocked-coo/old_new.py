"""The blocked-COO SpMV kernel of whichever sparsec is first on sys.path, at 1 and 2 threads (median of 7 calls).

Usage: python old_new.py (this tree), PYTHONPATH=<old tree> python old_new.py (another tree), from any directory.
"""
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[3]))   # benchmarks.cases; sparsec from PYTHONPATH first
import sparsec as sc  # noqa: E402
from benchmarks import cases as C  # noqa: E402
from sparsec.formats import parse_format  # noqa: E402

m = 1_000_000
A = C.uniform_random(m, m, 16, 1).astype(np.float32)
x = np.random.default_rng(0).random(m).astype(np.float32)
F = parse_format("(i, j) -> (i floordiv 4096 : dense, j floordiv 32768 : compressed, i mod 4096 : "
                 "compressed(nonunique), j mod 32768 : singleton)").with_widths(32, 16)
T = sc.Tensor.from_scipy(A).to(F)
k = sc.compile("y[i] = A[i,j]*x[j]", formats={"A": F}, dtype="float32")
assert np.allclose(k(A=T, x=x), A @ x, rtol=1e-3, atol=1e-3)
out = []
for th in (1, 2, 1, 2):
    sc.set_num_threads(th)
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        k(A=T, x=x)
        ts.append(time.perf_counter() - t0)
    out.append(f"{th}t {np.median(ts) * 1e3:.1f} ms")
print(Path(sc.__file__).parent, " | ".join(out))
