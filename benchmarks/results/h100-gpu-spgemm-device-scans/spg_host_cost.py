"""Host cost model of the GPU host + cProfile of cold SpGEMM template calls."""
import cProfile, gzip, io, os, pstats, sys, time
import numpy as np, scipy.io, scipy.sparse as sp, torch
import triton, triton.language as tl
import sparsec as sc
from sparsec.backends.triton import program_template
from sparsec.backends.triton.device import bind_operand
from sparsec.backends.triton.launch import SpecializedLaunches
out = os.environ.get("OUT", "/tmp")
dev = torch.device("cuda")

def per_call(f, n=200):
    f(); torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n): f()
    t1 = time.perf_counter(); torch.cuda.synchronize()
    return (t1 - t0) / n * 1e6

@triton.jit
def k_add(X, Y, n, A0, A1, A2, A3, A4, A5, A6, A7, B: tl.constexpr):
    o = tl.program_id(0) * B + tl.arange(0, B)
    tl.store(Y + o, tl.load(X + o, mask=o < n) + 1, mask=o < n)

x = torch.zeros(1024, device=dev, dtype=torch.int64); y = torch.empty_like(x)
sl = SpecializedLaunches(k_add, {"B": 128}, num_warps=4)
rows = [
    ("torch.empty(1000)", lambda: torch.empty(1000, device=dev)),
    ("torch.zeros(1000)", lambda: torch.zeros(1000, device=dev)),
    ("torch.cumsum(out=)", lambda: torch.cumsum(x[1:], 0, out=y[1:])),
    ("x.to(int32)", lambda: x.to(torch.int32)),
    ("x[:3] slice", lambda: x[:3]),
    ("fn[grid] 12 args", lambda: k_add[(8,)](x, y, 1024, 1, 2, 3, 4, 5, 6, 7, 8, B=128)),
    ("SpecializedLaunches 12 args", lambda: sl((8,), x, y, 1024, 1, 2, 3, 4, 5, 6, 7, 8)),
]
lines = []
for lab, f in rows:
    lines.append(f"{lab:<32}{per_call(f):8.2f} us")
def sync_read():
    torch.cuda.synchronize(); t0 = time.perf_counter(); x[:3].tolist(); return (time.perf_counter() - t0) * 1e6
lines.append(f"{'tolist of 3 (idle device)':<32}{np.median([sync_read() for _ in range(200)]):8.2f} us")
def sync_int():
    torch.cuda.synchronize(); t0 = time.perf_counter(); int(x[-1]); return (time.perf_counter() - t0) * 1e6
lines.append(f"{'int(x[-1]) (idle device)':<32}{np.median([sync_int() for _ in range(200)]):8.2f} us")
print("\n".join(lines), flush=True)

folder = os.environ["SPARSEC_MATRICES"]
k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32", target="triton")
tp = program_template(k)
for name in sys.argv[1].split(","):
    A = sp.csr_matrix(scipy.io.mmread(gzip.open(f"{folder}/{name}.mtx.gz"))).astype(np.float32)
    A.sum_duplicates(); A.sort_indices()
    d = bind_operand(A, "A", sc.formats.parse_format("csr", 2), "float32", dev)
    g = {"A": d, "B": d}
    for _ in range(3):
        tp._plans.clear(); tp(g)
    torch.cuda.synchronize()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(40):
        tp._plans.clear(); tp(g); torch.cuda.synchronize()
    pr.disable()
    s = io.StringIO(); ps = pstats.Stats(pr, stream=s).sort_stats("tottime"); ps.print_stats(28)
    s2 = io.StringIO(); ps2 = pstats.Stats(pr, stream=s2).sort_stats("cumulative"); ps2.print_stats(40)
    with open(f"{out}/cprofile_{name}.txt", "w") as fh:
        fh.write(s.getvalue()); fh.write(s2.getvalue())
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            tp._plans.clear(); tp(g)
        torch.cuda.synchronize()
    print(f"== {name} device kernels per cold call")
    for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:10]:
        if e.device_time_total > 0:
            print(f"   {e.device_time_total / 10:9.1f} us x{e.count // 10}  {e.key[:80]}")
    print(s.getvalue()[:6000])
