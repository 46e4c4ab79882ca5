"""Host timeline of one cold SpGEMM call: stamps around every launch, allocation and read."""
import gzip, os, sys, time
import numpy as np, scipy.io, scipy.sparse as sp, torch
import sparsec as sc
from sparsec.backends.triton import program_template, spgemm
from sparsec.backends.triton.device import bind_operand
folder = os.environ["SPARSEC_MATRICES"]
k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32", target="triton")
new = program_template(k)
stamps = []
def stamp(label):
    stamps.append((label, time.perf_counter()))
orig_launcher = spgemm._launcher
def launcher(name, warps, **c):
    f = orig_launcher(name, warps, **c)
    def call(grid, *a):
        stamp(f"> {name}"); r = f(grid, *a); stamp(f"< {name}"); return r
    return call
spgemm._launcher = launcher
def wrap(obj, attr, label):
    orig = getattr(obj, attr)
    def w(*a, **kw):
        stamp(f"> {label}"); r = orig(*a, **kw); stamp(f"< {label}"); return r
    setattr(obj, attr, w)
wrap(spgemm, "_sections", "_sections")
wrap(new, "_plan", "_plan")
wrap(spgemm, "csr_result", "csr_result")
wrap(spgemm, "bind_operand", "bind_operand")
wrap(spgemm, "_wide_rows", "_wide_rows")
for nm in ("zeros", "empty"):
    wrap(torch, nm, "torch." + nm)
for nm in ("tolist", "__int__", "__index__"):
    wrap(torch.Tensor, nm, "T." + nm)
for name in sys.argv[1].split(","):
    A = sp.csr_matrix(scipy.io.mmread(gzip.open(f"{folder}/{name}.mtx.gz"))).astype(np.float32)
    A.sum_duplicates(); A.sort_indices()
    d = bind_operand(A, "A", sc.formats.parse_format("csr", 2), "float32", torch.device("cuda"))
    g = {"A": d, "B": d}
    for rep in range(6):
        new._plans.clear(); torch.cuda.synchronize()
        stamps.clear(); t0 = time.perf_counter(); stamp("call")
        new(g); stamp("returned"); torch.cuda.synchronize(); stamp("synced")
    print(f"=== {name} (last of 6 cold calls), us since the call")
    prev = stamps[0][1]
    for label, t in stamps:
        print(f"  {(t - stamps[0][1]) * 1e6:8.1f}  +{(t - prev) * 1e6:7.1f}  {label}")
        prev = t
