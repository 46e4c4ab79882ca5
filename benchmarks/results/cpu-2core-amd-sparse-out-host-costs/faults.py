"""Minor page faults and wall time per call of the CPU sparse add C = A + Aᵀ (csr, float32, 1 thread), sparsec
against scipy, in one process. From the repository root:
    python benchmarks/results/cpu-2core-amd-sparse-out-host-costs/faults.py [matrix]
and again under MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=268435456 (glibc keeps freed memory).
"""
import resource, sys, time
import numpy as np
import sparsec as sc
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from hash_workspace import load
name = sys.argv[1] if len(sys.argv) > 1 else "p2p-Gnutella31"
A = load(name).astype(np.float32).tocsr(); A.sort_indices()
B = A.T.tocsr(); B.sort_indices()
k = sc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32")
TA, TB = sc.Tensor.from_scipy(A, format="csr"), sc.Tensor.from_scipy(B, format="csr")
sc.set_num_threads(1)
for _ in range(5): k(A=TA, B=TB)
def faults(f, n=20):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt; t0 = time.perf_counter()
    for _ in range(n): f()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / n, (time.perf_counter() - t0) / n * 1e6
print("sparsec faults/call %.0f  us %.0f" % faults(lambda: k(A=TA, B=TB)))
print("scipy   faults/call %.0f  us %.0f" % faults(lambda: A + B))
