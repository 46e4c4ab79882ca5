"""A/B in one process: the BSR SpMM (fp16, 4096^3, 90 % of b x b blocks zero) with the dot tiles' grid block-major
(new) and row-major (old, forced by patching Codegen.plan_tiling), alternated over 3 rounds; medians of do_bench."""
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

_plan = codegen.Codegen.plan_tiling


def row_major_plan(self):
    _plan(self)
    self.tile_major = False


def main():
    env = dl.setup()
    g = torch.Generator(device="cuda").manual_seed(0)
    W0 = torch.randn(4096, 4096, device="cuda", generator=g).half()
    X = torch.randn(4096, 4096, device="cuda", generator=g).half()
    dense = do_bench(lambda: W0 @ X, return_mode="median") * 1e3
    print(torch.cuda.get_device_name(), f"dense {dense:.1f} us")
    print(f"{'block':>6} {'row-major us':>13} {'block-major us':>15} {'speed-up':>9} {'new vs dense':>12}")
    for b in (16, 32, 64, 128):
        fmt = f"bsr({b},{b})"
        W = block_prune(W0, (b, b), 0.9)
        ref = W.float() @ X.float()
        Wb = dl.bind(W, fmt, env)
        new = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": fmt}, dtype="float16", target="triton",
                         name=f"bsr_new{b}")
        codegen.Codegen.plan_tiling = row_major_plan
        try:
            old = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": fmt}, dtype="float16", target="triton",
                             name=f"bsr_old{b}")
            y_old = old(W=Wb, X=X)
        finally:
            codegen.Codegen.plan_tiling = _plan
        assert "share a row" in old.dump("triton") and "share a block" in new.dump("triton")
        for y in (y_old, new(W=Wb, X=X)):
            err = ((y.float() - ref).norm() / ref.norm()).item()
            assert err < 5e-3, err
        t = {"old": [], "new": []}
        for _ in range(3):
            for name, k in (("old", old), ("new", new)):
                t[name].append(do_bench(lambda k=k: k(W=Wb, X=X), return_mode="median") * 1e3)
        o, n = statistics.median(t["old"]), statistics.median(t["new"])
        print(f"{b:>6} {o:13.1f} {n:15.1f} {o / n:8.2f}x {dense / n:11.2f}x   rounds old {t['old']} new {t['new']}")


if __name__ == "__main__":
    main()
