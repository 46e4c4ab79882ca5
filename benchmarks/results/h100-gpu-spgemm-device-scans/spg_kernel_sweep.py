"""Per-kernel device time of the new template under module-constant settings (cold calls)."""
import gzip, os, sys
import numpy as np, scipy.io, scipy.sparse as sp, torch
import sparsec as sc
from sparsec.backends.triton import program_template, spgemm
from sparsec.backends.triton.device import bind_operand
from torch.profiler import profile, ProfilerActivity
folder = os.environ["SPARSEC_MATRICES"]
k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32", target="triton")
new = program_template(k)
configs = [dict(c.split("=") for c in cfg.split(":")) for cfg in sys.argv[2].split(",")]
for name in sys.argv[1].split(","):
    A = sp.csr_matrix(scipy.io.mmread(gzip.open(f"{folder}/{name}.mtx.gz"))).astype(np.float32)
    A.sum_duplicates(); A.sort_indices()
    d = bind_operand(A, "A", sc.formats.parse_format("csr", 2), "float32", torch.device("cuda"))
    g = {"A": d, "B": d}
    ref = None
    for cfg in configs:
        for kk, v in cfg.items():
            setattr(spgemm, kk, int(v))
        for _ in range(3):
            new._plans.clear(); c = new(g)
        if ref is None: ref = c
        assert torch.equal(c.levels[1]["crd"], ref.levels[1]["crd"]) and torch.equal(c.levels[1]["pos"], ref.levels[1]["pos"])
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                new._plans.clear(); new(g)
            torch.cuda.synchronize()
        ks = {e.key: e.device_time_total / 5 for e in prof.key_averages() if e.key.startswith("spgemm")}
        print(f"{name:<15} {':'.join(f'{a}={b}' for a, b in cfg.items()):<60}" + " ".join(f"{a[7:]}={b:.1f}" for a, b in sorted(ks.items())), flush=True)
