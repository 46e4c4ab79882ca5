import gzip, os, sys
import numpy as np, scipy.io, scipy.sparse as sp, torch
import sparsec as sc
from sparsec.backends.triton import program_template, spgemm_old
from sparsec.backends.triton.device import bind_operand
from torch.profiler import profile, ProfilerActivity
folder = os.environ["SPARSEC_MATRICES"]
k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32", target="triton")
new = program_template(k)
old = spgemm_old.SpgemmTemplate(new.mt, k)
for name in sys.argv[1].split(","):
    A = sp.csr_matrix(scipy.io.mmread(gzip.open(f"{folder}/{name}.mtx.gz"))).astype(np.float32)
    A.sum_duplicates(); A.sort_indices()
    d = bind_operand(A, "A", sc.formats.parse_format("csr", 2), "float32", torch.device("cuda"))
    g = {"A": d, "B": d}
    for lab, t in (("old", old), ("new", new)):
        for cold in (False, True):
            for _ in range(3): t(g)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    if cold: t._plans.clear()
                    t(g)
                torch.cuda.synchronize()
            print(f"== {name} {lab} {'cold' if cold else 'warm'}")
            for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:8]:
                if e.device_time_total > 0:
                    print(f"   {e.device_time_total / 5:9.1f} us x{e.count / 5:.0f}  {e.key[:60]}")
    pl = next(iter(new._plans.values()))
    print("   total", pl.total, "n_large", pl.n_large, "n_big", pl.n_big, "nnz", pl.nnz, "chunks", pl.starts.numel() - 1, flush=True)
