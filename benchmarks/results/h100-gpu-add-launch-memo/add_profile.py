"""Host time of a sparse add C = A + B (csr, float32) on the Triton backend: wall time per call with a sync, the
same for torch's CSR add (cuSPARSE), then a cProfile of the sparsec calls. From the repository root on the GPU:
    python benchmarks/results/h100-gpu-add-launch-memo/add_profile.py
"""
import cProfile
import io
import os
import pstats
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, os.getcwd())
import sparsec as sc  # noqa: E402

OUT = os.environ.get("OUT", ".")
log_f = open(os.path.join(OUT, "add_profile.txt"), "w")


def log(s):
    print(s, flush=True)
    log_f.write(s + "\n")


def wall(fn, n=300):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e6


A = sp.random(4096, 4096, density=0.002, format="csr", dtype=np.float32, random_state=1)
B = sp.random(4096, 4096, density=0.002, format="csr", dtype=np.float32, random_state=2)
k = sc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32",
               target="triton")
dA = sc.Tensor.from_scipy(A, format="csr").to_device("cuda")
dB = sc.Tensor.from_scipy(B, format="csr").to_device("cuda")
tA = torch.sparse_csr_tensor(torch.from_numpy(A.indptr).long(), torch.from_numpy(A.indices).long(),
                             torch.from_numpy(A.data), A.shape).cuda()
tB = torch.sparse_csr_tensor(torch.from_numpy(B.indptr).long(), torch.from_numpy(B.indices).long(),
                             torch.from_numpy(B.data), B.shape).cuda()
got = k(A=dA, B=dB)
ref = (A + B).toarray()
err = np.abs(got.to_scipy().toarray() - ref).max() if hasattr(got, "to_scipy") else None
log(f"4096x4096, nnz {A.nnz} + {B.nnz}; check {err}")
log(f"wall us per call (synchronized after the loop): sparsec {wall(lambda: k(A=dA, B=dB)):.1f}, "
    f"torch csr add {wall(lambda: tA + tB):.1f}")
pr = cProfile.Profile()
pr.enable()
for _ in range(300):
    k(A=dA, B=dB)
torch.cuda.synchronize()
pr.disable()
for key in ("tottime", "cumtime"):
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats(key).print_stats(30)
    log(s.getvalue())
log_f.close()
