"""Probe: CSR SpMM with column panels (shipped) against without (MIN_COLUMNS huge), one process, calls alternated."""
import os, sys, time
os.environ["SPARSEC_CACHE_DIR"] = ""
sys.path.insert(0, ".")
import numpy as np
import sparsec as sc
from sparsec import runtime
from sparsec.backends.cpu import panels
sys.path.insert(0, ".")
from benchmarks.spmv_variants import matrix

text, formats = "C[i,j] = A[i,k] * B[k,j]", {"A": "csr"}
ks = {"panels": sc.compile(text, formats=formats, dtype="float32", name="spmm_panels")}
saved = panels.MIN_COLUMNS
panels.MIN_COLUMNS = 1 << 40
ks["rows"] = sc.compile(text, formats=formats, dtype="float32", name="spmm_rows")
panels.MIN_COLUMNS = saved
threads = int(os.environ.get("THREADS", "1"))
runtime.set_num_threads(threads)
for N in [int(n) for n in os.environ.get("NS", "256").split(",")]:
    for name in sys.argv[1].split(","):
        if name.startswith("conv"):   # convC: a C x C weight, 80 % pruned (uniform), as a 1x1 convolution
            import scipy.sparse as sp
            c = int(name[4:])
            m = sp.random(c, c, density=0.2, format="csr", dtype="float32", random_state=1)
        else:
            m = matrix(name, "float32")
        B = np.random.default_rng(0).standard_normal((m.shape[1], N)).astype(np.float32)
        t = sc.Tensor.from_buffers("csr", m.shape, [{}, {"pos": m.indptr, "crd": m.indices}], m.data, name="A", validate=False)
        want = m.astype(np.float64) @ B.astype(np.float64)
        times = {l: [] for l in ks}
        for l, k in ks.items():
            np.testing.assert_allclose(k(A=t, B=B), want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
        end = time.perf_counter() + float(os.environ.get("SECONDS", "3"))
        while time.perf_counter() < end:
            for l, k in ks.items():
                t0 = time.perf_counter(); k(A=t, B=B); times[l].append(time.perf_counter() - t0)
        p, r = (np.median(times[l]) * 1e3 for l in ("panels", "rows"))
        print(f"N={N} {threads}t {name:24s} rows {m.shape[0]:7d} K {m.shape[1]:7d} nnz/row {m.nnz/m.shape[0]:6.1f}  panels {p:8.2f} ms  rows {r:8.2f} ms  rows/panels {p/r:5.2f}x", flush=True)
