import ctypes, time, sys, os
import numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from benchmarks import cases as C
import sparsec as sc
lib = ctypes.CDLL(os.path.join(os.path.dirname(os.path.abspath(__file__)), "spmv_pf.so"))
P = ctypes.c_void_p
def ptr(a): return a.ctypes.data_as(P)
rows = 1917000
k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float32")
for name, make in [("uniform", lambda: C.uniform_random(rows, rows, 16, 33)), ("powerlaw", lambda: C.powerlaw_rows(rows, rows, 16, 33))]:
    A = make().tocsr().astype(np.float32)
    pos = A.indptr.astype(np.int32); col = A.indices.astype(np.int32); val = A.data
    x = np.random.default_rng(0).standard_normal(A.shape[1]).astype(np.float32)
    ref = A @ x
    T = sc.Tensor.from_scipy(A, "csr")
    nt = 2
    sc.set_num_threads(nt)
    target = np.linspace(0, A.nnz, nt + 1)
    bounds = np.searchsorted(pos, target).astype(np.int64); bounds[0] = 0; bounds[-1] = A.shape[0]
    for rnd in range(2):
        res = []
        for fn, D in [("spmv", 0), ("spmv", 16), ("spmv4", 0), ("spmv4", 8), ("spmv4", 16), ("spmv4", 32), ("sparsec", 0)]:
            y = np.zeros(A.shape[0], np.float32)
            if fn == "sparsec":
                run = lambda: k(A=T, x=x)
            else:
                f = getattr(lib, fn)
                run = lambda f=f, D=D: f(ptr(bounds), nt, ptr(pos), ptr(col), ptr(val), ptr(x), ptr(y), D)
            out = run()
            got = out if fn == "sparsec" else y
            assert np.allclose(got, ref, rtol=1e-3, atol=1e-3)
            ts = []
            for _ in range(7):
                t = time.perf_counter(); run(); ts.append(time.perf_counter() - t)
            res.append(f"{fn}/D={D}: {np.median(ts)*1e3:.1f}")
        print(name, "2t round", rnd, "  ".join(res), flush=True)
