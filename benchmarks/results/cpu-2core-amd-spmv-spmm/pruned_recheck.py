"""Re-measure of the two SpMV cases where MKL led in the suite run (float32, the suite's seeds): 5 rounds of
min-of-20 calls, sparsec and MKL alternating with 0.3 s pauses (MKL's OpenMP workers spin 200 ms after a region).
From the repository root, MKL_RT set as for benchmarks/spgemm_cpu.py:
    python benchmarks/results/cpu-2core-amd-spmv-spmm/pruned_recheck.py
"""
import os
import statistics
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import numpy as np
from cases import _seed, pruned_weights
import sparse_dot_mkl as mkl
import sparsec as sc
for name, st, s in (("pruned_11008x4096_2of4", "2:4", 0.5), ("pruned_11008x4096_u50", "unstructured", 0.5)):
    A = pruned_weights(11008, 4096, st, s, _seed(name)).astype(np.float32).tocsr()
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float32")
    T = sc.Tensor.from_scipy(A, format="csr")
    for th in (1, 2):
        sc.set_num_threads(th); mkl.mkl_set_num_threads(th)
        k(A=T, x=x); mkl.dot_product_mkl(A, x)
        r = {"sc": [], "mkl": []}
        for _ in range(5):
            for who, f in (("sc", lambda: k(A=T, x=x)), ("mkl", lambda: mkl.dot_product_mkl(A, x))):
                ts = []
                for _ in range(20):
                    t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
                r[who].append(min(ts))
                time.sleep(0.3)
        m = {n: statistics.median(v) * 1e6 for n, v in r.items()}
        print(name, A.nnz, th, {n: round(v) for n, v in m.items()}, "mkl/sc %.2f" % (m["mkl"] / m["sc"]), flush=True)
