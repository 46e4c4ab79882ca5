import torch
from triton.testing import do_bench
g = torch.Generator(device="cuda").manual_seed(0)
W = torch.randn(4096, 4096, device="cuda", generator=g).half()
X = torch.randn(4096, 4096, device="cuda", generator=g).half()
print("dense K=4096", round(do_bench(lambda: W @ X, return_mode="median") * 1e3, 1), "us")
for k in (384, 400, 408, 410, 416, 448, 512):
    Wc, Xc = W[:, :k].contiguous(), X[:k].contiguous()
    print(f"K={k}", round(do_bench(lambda: Wc @ Xc, return_mode="median") * 1e3, 1), "us")
