"""Is item 5's do_bench time host-bound? do_bench of the call, of a CUDA-graph replay of it, and events with the host held ahead."""
import torch, triton, numpy as np
import sparsec as sc
DSL = "Y[r,i] = where(abs(X[r,k]) > t, X[r,k], 0) * Wt[k,i]"
gen = torch.Generator(device="cuda").manual_seed(0)
for M, K in ((4096, 4096), (4096, 11008)):
    W = torch.randn(M, K, device="cuda", generator=gen).half(); Wt = W.t().contiguous()
    a = torch.randn(K, device="cuda", generator=gen).half()
    thr = float(a.abs().float().quantile(0.5))
    x = torch.where(a.abs() > thr, a, torch.zeros_like(a))
    t = torch.tensor(thr, dtype=torch.half, device="cuda"); arow = a.reshape(1, -1)
    k0 = sc.compile(DSL, dtype={"X": "float16", "Wt": "float16", "Y": "float32", "t": "float16"}, target="triton",
                    schedule=sc.Schedule().skip_zeros("X"), name=f"skipgemv{K}")
    fn = lambda: k0(X=arow, Wt=Wt, t=t)
    mv = lambda: torch.mv(W, x)
    for _ in range(10): fn(); mv()
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    graphs = {}
    for lab, f in (("sparsec", fn), ("mv", mv)):
        with torch.cuda.stream(s):
            for _ in range(3): f()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            f()
        graphs[lab] = g
    cache = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    def ahead(f, reps=100):
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for e0, e1 in ev:
            cache.zero_(); torch.cuda._sleep(200000); e0.record(); f(); e1.record()
        torch.cuda.synchronize()
        return float(np.median([e0.elapsed_time(e1) for e0, e1 in ev])) * 1e3
    b = lambda f: triton.testing.do_bench(f, warmup=25, rep=200, return_mode="median") * 1e3
    for lab, f in (("sparsec", fn), ("mv", mv)):
        g = graphs[lab]
        print(f"{M}x{K} {lab:<8} do_bench {b(f):6.1f} us | graph replay {b(g.replay):6.1f} us | host held ahead {ahead(f):6.1f} us", flush=True)
