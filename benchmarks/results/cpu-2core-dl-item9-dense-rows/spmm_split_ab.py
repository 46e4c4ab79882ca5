import time, numpy as np, scipy.sparse as sp
import sparsec as sc
from sparsec import fastcall
sc.set_num_threads(2)
k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float32", target="cpu", name="spmm")
shipped = fastcall.FastCall._column_chunks
variants = {"rows": lambda self, *a: None, "dense-rows": shipped}
for m, K, per, n in [(500, 4096, 100, 128), (500, 4096, 100, 256), (600, 2000, 80, 128), (256, 512, 200, 192), (400, 400, 120, 160)]:
    A = sp.random(m, K, density=per / K, format="csr", dtype=np.float32, random_state=0)
    B = np.random.default_rng(0).standard_normal((K, n)).astype(np.float32)
    At = sc.Tensor.from_scipy(A, "csr", name="A")
    ref = A.astype(np.float64) @ B
    res = {v: [] for v in variants}
    for rep in range(15):
        for v, fn in variants.items():
            fastcall.FastCall._column_chunks = fn
            k._fast._rows_memo.clear()
            y = np.asarray(k(A=At, B=B)); assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()
            ts = []
            for _ in range(5):
                t0 = time.perf_counter(); k(A=At, B=B); ts.append(time.perf_counter() - t0)
            res[v].append(min(ts))
    fastcall.FastCall._column_chunks = shipped
    print(f"{m}x{K} {per}/row nnz {A.nnz} N={n}: " + ", ".join(f"{v} {np.median(t) * 1e6:.0f} us" for v, t in res.items()), flush=True)
