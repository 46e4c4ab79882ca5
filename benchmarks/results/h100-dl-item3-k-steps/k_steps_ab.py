"""A/B/C in one process: the BSR SpMM (fp16, 4096^3, 90 % of b x b blocks zero) as generated before this change
(whole blocks, lane masks against min(x, b)), with 128-deep blocks in two tl.dot steps of 64 (codegen.dot_k_steps),
and with that plus the lane masks against x alone (codegen.lane_bound); the older forms are forced by patching
those two functions. 3 alternating rounds, medians of do_bench. Run from the repository root on a GPU."""
import os
import statistics
import sys

import torch
from triton.testing import do_bench

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "examples")]
import _dl_common as dl  # noqa: E402
import sparsec as sc  # noqa: E402
from sparsec.backends.triton import codegen  # noqa: E402
from sparsec.nn import block_prune  # noqa: E402

SHIPPED = {"dot_k_steps": codegen.dot_k_steps, "lane_bound": codegen.lane_bound}
VARIANTS = {
    "before": {"dot_k_steps": lambda ax: 1, "lane_bound": lambda ax: ax.hi},
    "k-steps": {"lane_bound": lambda ax: ax.hi},
    "k-steps + lane masks": {},
}


def build(fmt: str, name: str, patches: dict):
    for attr, fn in patches.items():
        setattr(codegen, attr, fn)
    try:
        return sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": fmt}, dtype="float16", target="triton", name=name)
    finally:
        for attr, fn in SHIPPED.items():
            setattr(codegen, attr, fn)


def main():
    env = dl.setup()
    g = torch.Generator(device="cuda").manual_seed(0)
    W0 = torch.randn(4096, 4096, device="cuda", generator=g).half()
    X = torch.randn(4096, 4096, device="cuda", generator=g).half()
    dense = do_bench(lambda: W0 @ X, return_mode="median") * 1e3
    print(torch.cuda.get_device_name(), f"dense {dense:.1f} us")
    print(f"{'block':>6} " + " ".join(f"{v:>22}" for v in VARIANTS) + "   now/before  now vs dense")
    for b in (16, 32, 64, 128):
        fmt = f"bsr({b},{b})"
        W = block_prune(W0, (b, b), 0.9)
        ref = W.float() @ X.float()
        Wb = dl.bind(W, fmt, env)
        kernels = {v: build(fmt, f"bsr{b}_{i}", p) for i, (v, p) in enumerate(VARIANTS.items())}
        for v, k in kernels.items():   # compile (the patches act at code generation) and check
            y = k(W=Wb, X=X)
            err = ((y.float() - ref).norm() / ref.norm()).item()
            assert err < 5e-3, (v, err)
        t = {v: [] for v in kernels}
        for _ in range(3):
            for v, k in kernels.items():
                t[v].append(do_bench(lambda k=k: k(W=Wb, X=X), return_mode="median") * 1e3)
        med = {v: statistics.median(ts) for v, ts in t.items()}
        now, before = med["k-steps + lane masks"], med["before"]
        print(f"{b:>6} " + " ".join(f"{med[v]:>19.1f} us" for v in kernels)
              + f"   {before / now:9.2f}x {dense / now:11.2f}x   rounds {t}", flush=True)


if __name__ == "__main__":
    main()
