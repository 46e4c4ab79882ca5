"""Host time per call of the item-5 kernel (no sync), and a cProfile of 300 calls."""
import time, cProfile, pstats, io, torch
import sparsec as sc
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
for _ in range(20):
    k0(X=arow, Wt=Wt, t=t)
torch.cuda.synchronize()
for lab, f in (("sparsec k0(...)", lambda: k0(X=arow, Wt=Wt, t=t)), ("torch.mv", lambda: torch.mv(W, x)), ("torch.zeros(4096)", lambda: torch.zeros(1, 4096, device="cuda"))):
    ts = []
    for _ in range(5):
        torch.cuda.synchronize(); t0 = time.perf_counter()
        for _ in range(200): f()
        ts.append((time.perf_counter() - t0) / 200 * 1e6)
        torch.cuda.synchronize()
    print(f"{lab:<20} host {min(ts):6.1f} us per call (best of 5 x 200)")
pr = cProfile.Profile(); pr.enable()
for _ in range(300): k0(X=arow, Wt=Wt, t=t)
pr.disable(); torch.cuda.synchronize()
s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(18); print(s.getvalue()[:5000])
