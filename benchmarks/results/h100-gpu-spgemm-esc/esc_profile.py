"""Where the SpGEMM template's time goes on the GPU: wall per call vs the sum of its kernels' device time."""
import gzip, os, sys, time
import numpy as np, scipy.io, scipy.sparse as sp, torch
import sparsec as sc
from sparsec.backends.triton.device import bind_operand
from torch.profiler import profile, ProfilerActivity

folder = os.environ["SPARSEC_MATRICES"]
k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32", target="triton")
for name in sys.argv[1].split(","):
    A = sp.csr_matrix(scipy.io.mmread(gzip.open(f"{folder}/{name}.mtx.gz"))).astype(np.float32)
    A.sum_duplicates(); A.sort_indices()
    d = bind_operand(A, "A", sc.formats.parse_format("csr", 2), "float32", torch.device("cuda"))
    for _ in range(3): k(A=d, B=d)
    torch.cuda.synchronize()
    ts = []
    for _ in range(20):
        t0 = time.perf_counter(); k(A=d, B=d); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(10): k(A=d, B=d)
        torch.cuda.synchronize()
    ev = {}
    for e in prof.key_averages():
        if e.device_time_total > 0 and e.count >= 10 and not e.key.startswith("cuda") and "Memcpy" not in e.key or "Memcpy" in e.key:
            ev[e.key] = (e.device_time_total / 10, e.count // 10)
    dev = sum(v[0] for v in ev.values())
    print(f"{name}: wall {np.median(ts)*1e3:.3f} ms, device kernels {dev/1e3:.3f} ms")
    for kk, (t, c) in sorted(ev.items(), key=lambda x: -x[1][0])[:12]:
        print(f"   {t/1e3:8.3f} ms x{c}  {kk[:90]}")
