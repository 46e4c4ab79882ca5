"""Item 5 (fused-threshold GEMV, skip_zeros): kernel durations by torch profiler; run under ncu for the report."""
import os, sys, torch, triton
import sparsec as sc
from torch.profiler import profile, ProfilerActivity
DSL = "Y[r,i] = where(abs(X[r,k]) > t, X[r,k], 0) * Wt[k,i]"
gen = torch.Generator(device="cuda").manual_seed(0)
M, K = 4096, 4096
W = torch.randn(M, K, device="cuda", generator=gen).half(); Wt = W.t().contiguous()
a = torch.randn(K, device="cuda", generator=gen).half()
thr = float(a.abs().float().quantile(0.5))
x = torch.where(a.abs() > thr, a, torch.zeros_like(a))
t = torch.tensor(thr, dtype=torch.half, device="cuda"); arow = a.reshape(1, -1)
k0 = sc.compile(DSL, dtype={"X": "float16", "Wt": "float16", "Y": "float32", "t": "float16"}, target="triton",
                schedule=sc.Schedule().skip_zeros("X"), name="skipgemv")
for _ in range(5):
    k0(X=arow, Wt=Wt, t=t); torch.mv(W, x)
torch.cuda.synchronize()
if os.environ.get("NCU"):
    sys.exit(0)
cache = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
bench = lambda f: triton.testing.do_bench(f, warmup=25, rep=200, return_mode="median") * 1e3
print(f"do_bench: sparsec {bench(lambda: k0(X=arow, Wt=Wt, t=t)):.1f} us, torch.mv {bench(lambda: torch.mv(W, x)):.1f} us")
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for _ in range(30):
        cache.zero_(); k0(X=arow, Wt=Wt, t=t)
        cache.zero_(); torch.mv(W, x)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))
