import torch, triton, sparsec as sc
from sparsec.backends.triton import tiles
K, M = 4096, 4096
W = torch.randn(M, K, device="cuda").half(); Wt = W.t().contiguous()
a = torch.randn(K, device="cuda").half()
thr = float(a.abs().float().quantile(0.5))
x = torch.where(a.abs() > thr, a, torch.zeros_like(a)).reshape(1, -1)
ref = (W.double() @ x.double().reshape(-1))
bench = lambda f: triton.testing.do_bench(f, rep=200)
print("dense mv", bench(lambda: torch.mv(W, x.reshape(-1))) * 1e3, "us")
print("where", bench(lambda: torch.where(a.abs() > thr, a, torch.zeros_like(a))) * 1e3, "us")
orig = tiles.choose_skip_config
for bm_, bn, bk, sp, w in [(1,256,32,32,4),(1,256,32,8,4),(1,128,32,16,4),(1,128,64,16,4),(1,64,64,16,4),(1,256,16,32,4),(1,128,32,16,8),(1,64,32,32,2)]:
    tiles.choose_skip_config = lambda mt, rows, n, k, sms, c=(bm_, bn, sp, w, bk): tiles.SkipConfig(*c)
    k = sc.compile("Y[r,i] = X[r,k] * Wt[k,i]", dtype={"X": "float16", "Wt": "float16", "Y": "float32"},
                   target="triton", schedule=sc.Schedule().skip_zeros("X"), name=f"p{bn}_{bk}_{sp}_{w}")
    y = k(X=x, Wt=Wt).reshape(-1)
    err = float((y.double() - ref).norm() / ref.norm())
    print(f"BN={bn} BK={bk} split={sp} warps={w}: {bench(lambda: k(X=x, Wt=Wt)) * 1e3:.1f} us err={err:.1e}")
