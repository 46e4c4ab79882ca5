import ctypes, time, sys, os
import numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from benchmarks import cases as C
lib = ctypes.CDLL(os.path.join(os.path.dirname(os.path.abspath(__file__)), "spmv_pf.so"))
P = ctypes.c_void_p
def ptr(a): return a.ctypes.data_as(P)
rows = 1917000
for name, make in [("uniform", lambda: C.uniform_random(rows, rows, 16, 33)), ("powerlaw", lambda: C.powerlaw_rows(rows, rows, 16, 33)), ("banded", lambda: C.banded(1813000, 8, 33))]:
    A = make().tocsr().astype(np.float32)
    pos = A.indptr.astype(np.int32); col = A.indices.astype(np.int32); val = A.data
    x = np.random.default_rng(0).standard_normal(A.shape[1]).astype(np.float32)
    ref = A @ x
    for nt in (1, 2):
        target = np.linspace(0, A.nnz, nt + 1)
        bounds = np.searchsorted(pos, target).astype(np.int64); bounds[0] = 0; bounds[-1] = A.shape[0]
        res = []
        for D in (0, 8, 16, 32, 64, 128):
            y = np.zeros(A.shape[0], np.float32)
            lib.spmv(ptr(bounds), nt, ptr(pos), ptr(col), ptr(val), ptr(x), ptr(y), D)
            assert np.allclose(y, ref, rtol=1e-3, atol=1e-3)
            ts = []
            for _ in range(7):
                t = time.perf_counter(); lib.spmv(ptr(bounds), nt, ptr(pos), ptr(col), ptr(val), ptr(x), ptr(y), D); ts.append(time.perf_counter() - t)
            res.append((D, np.median(ts) * 1e3))
        print(name, f"{nt}t", "  ".join(f"D={D}: {t:.2f} ms" for D, t in res), flush=True)
