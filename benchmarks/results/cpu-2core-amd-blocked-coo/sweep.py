"""CSR SpMV against blocked-COO tiles of several sizes, uniform random columns, one process, alternating rounds.

Usage (repository root): python benchmarks/results/cpu-2core-amd-blocked-coo/sweep.py ROWS THREADS
Blocked COO: (i floordiv R : dense, j floordiv C : compressed, i mod R : compressed(nonunique), j mod C : singleton),
16-bit coordinates where they fit. Each row of the output: the best of 5 calls per round, 4 rounds, and their median.
"""
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[3]))
import sparsec as sc  # noqa: E402
from benchmarks import cases as C  # noqa: E402
from sparsec.formats import parse_format  # noqa: E402

m, threads = int(sys.argv[1]), int(sys.argv[2])
sc.set_num_threads(threads)
A = C.uniform_random(m, m, 16, 1).astype(np.float32)
x = np.random.default_rng(0).random(m).astype(np.float32)
ref = A @ x
kc = sc.compile("y[i] = A[i,j]*x[j]", formats={"A": "csr"}, dtype="float32")
variants = [("csr", kc, A)]
for R, Cc in [(4096, 32768), (2048, 8192), (16384, 16384), (65536, 32768), (1024, 32768)]:
    F = parse_format(f"(i, j) -> (i floordiv {R} : dense, j floordiv {Cc} : compressed, i mod {R} : "
                     f"compressed(nonunique), j mod {Cc} : singleton)").with_widths(32, 16 if R <= 32768 else 32)
    t0 = time.perf_counter()
    T = sc.Tensor.from_scipy(A).to(F)
    print(f"convert R{R}/C{Cc}: {time.perf_counter() - t0:.2f} s", flush=True)
    k = sc.compile("y[i] = A[i,j]*x[j]", formats={"A": F}, dtype="float32")
    assert np.allclose(k(A=T, x=x), ref, rtol=1e-3, atol=1e-3)
    variants.append((f"R{R}/C{Cc}", k, T))
res = {n: [] for n, _, _ in variants}
for r in range(4):
    for n, k, a in variants:
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            k(A=a, x=x)
            ts.append(time.perf_counter() - t0)
        res[n].append(min(ts) * 1e3)
print(f"rows {m}, 16 per row, {threads} thread(s); ms per SpMV, best of 5 per round")
for n, v in res.items():
    print(f"{n:16s} " + " ".join(f"{t:7.1f}" for t in v) + f"   median {np.median(v):.1f} ms")
