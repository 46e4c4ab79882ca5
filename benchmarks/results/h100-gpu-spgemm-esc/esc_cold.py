"""SpGEMM template wall time per call on the GPU: warm (structure memoized) vs cold (memo cleared each call)."""
import gzip, os, sys, time
import numpy as np, scipy.io, scipy.sparse as sp, torch
import sparsec as sc
from sparsec.backends.triton import program_template
from sparsec.backends.triton.device import bind_operand
folder = os.environ["SPARSEC_MATRICES"]
k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32", target="triton")
tp = program_template(k)
def wall(fn, reps=30):
    fn(); torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        torch.cuda.synchronize(); t0 = time.perf_counter(); fn(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3
print(f"{'matrix':<16}{'cusparse':>9}{'warm':>9}{'cold':>9}")
for name in sys.argv[1].split(","):
    A = sp.csr_matrix(scipy.io.mmread(gzip.open(f"{folder}/{name}.mtx.gz"))).astype(np.float32)
    A.sum_duplicates(); A.sort_indices()
    d = bind_operand(A, "A", sc.formats.parse_format("csr", 2), "float32", torch.device("cuda"))
    At = torch.sparse_csr_tensor(d.levels[1]["pos"], d.levels[1]["crd"], d.values, size=A.shape)
    cu = wall(lambda: At @ At)
    warm = wall(lambda: k(A=d, B=d))
    def cold():
        tp._plans.clear(); k(A=d, B=d)
    print(f"{name:<16}{cu:>9.3f}{warm:>9.3f}{wall(cold):>9.3f}", flush=True)
