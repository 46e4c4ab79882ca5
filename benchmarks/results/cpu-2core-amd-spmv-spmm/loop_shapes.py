"""Probe: CSR SpMV row-loop shapes on a host without fast gathers (LLVM loop metadata variants), one process, alternated."""
import os, sys, time
os.environ["SPARSEC_CACHE_DIR"] = ""
sys.path.insert(0, ".")
import numpy as np
import sparsec as sc
from sparsec import runtime
from sparsec.backends.cpu import shortrows
sys.path.insert(0, "benchmarks")
from benchmarks.spmv_variants import matrix

def H(width, il, pred=False):
    h = ['!{!"llvm.loop.vectorize.enable", i1 1}', f'!{{!"llvm.loop.vectorize.width", i32 {width}}}',
         f'!{{!"llvm.loop.interleave.count", i32 {il}}}']
    if pred:
        h.append('!{!"llvm.loop.vectorize.predicate.enable", i1 1}')
    return h

# label: (short-row hints or None for LLVM default everywhere, LONG_ROW)
VARIANTS = {
    "llvm": None,
    "w1i4_all": (H(1, 4), 1 << 40),
    "w1i2_all": (H(1, 2), 1 << 40),
    "w4i1_all": (H(4, 1), 1 << 40),
    "w8i1_all": (H(8, 1), 1 << 40),
    "w1i4_s16": (H(1, 4), 16),
    "w1i4_s32": (H(1, 4), 32),
}
dtype = sys.argv[2] if len(sys.argv) > 2 else "float32"
text, formats = "y[i] = A[i,j] * x[j]", {"A": "csr"}
ks = {}
saved = shortrows.pays_off, shortrows.hints, shortrows.LONG_ROW
for label, v in VARIANTS.items():
    if v is None:
        shortrows.pays_off = lambda: False
    else:
        shortrows.pays_off = lambda: True
        shortrows.hints = (lambda h: (lambda: h))(v[0])
        shortrows.LONG_ROW = v[1]
    ks[label] = sc.compile(text, formats=formats, dtype=dtype, target="cpu", name=f"spmv_{label}")
    shortrows.pays_off, shortrows.hints, shortrows.LONG_ROW = saved
threads = int(os.environ.get("THREADS", "1"))
runtime.set_num_threads(threads)
print(f"# threads {threads} dtype {dtype}; median us; variants {list(ks)}")
for name in sys.argv[1].split(","):
    m = matrix(name, dtype)
    rng = np.random.default_rng(0)
    sets = []
    for _ in range(8):
        c = m.copy()
        t = sc.Tensor.from_buffers("csr", c.shape, [{}, {"pos": c.indptr, "crd": c.indices}], c.data, name="A", validate=False)
        sets.append((t, rng.standard_normal(m.shape[1]).astype(dtype)))
    want = m.astype(np.float64) @ sets[0][1].astype(np.float64)
    for label, k in ks.items():
        np.testing.assert_allclose(k(A=sets[0][0], x=sets[0][1]), want, rtol=1e-3, atol=1e-3 * max(1, np.abs(want).max()))
    times = {l: [] for l in ks}
    i = 0
    end = time.perf_counter() + float(os.environ.get("SECONDS", "3"))
    while time.perf_counter() < end:
        for label, k in ks.items():
            for _ in range(10):
                t, x = sets[i % 8]; i += 1
                t0 = time.perf_counter(); k(A=t, x=x); times[label].append(time.perf_counter() - t0)
    base = np.median(times["llvm"])
    print(f"{name:24s} nnz/row {m.nnz / max(1, m.shape[0]):6.1f} llvm {base*1e6:8.1f} " +
          " ".join(f"{l} {base/np.median(v):5.2f}x" for l, v in times.items() if l != "llvm"), flush=True)
