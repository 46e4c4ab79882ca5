"""Fast Sparse ConvNets on the CPU: a 1x1 convolution with a 70-90 % pruned weight as SpMM in CHW layout.

A 1x1 convolution of a ``C_in x H x W`` feature map is ``Y = W X`` with ``X`` the map
seen as ``C_in x (H*W)`` (CHW is already that layout: no im2col) and ``W`` the
``C_out x C_in`` filter matrix. With ``W`` pruned and stored in CSR, every nonzero
weight scales one contiguous row of ``X``: the LLVM backend keeps a strip of an output
row in vector registers while it walks that row's nonzeros (broadcast weight times a
strip of ``X``), masks the strip's last vector at the row's end, copies the rows of ``X``
to an aligned buffer first where they do not start 64-byte aligned (7x7 and 14x14 maps:
rows of 49 and 196 floats), and splits the pixels across threads (each thread runs every
output channel over its share of the map, so it reads that share of X once; a large
weight splits the output channels instead)::

    k = sc.compile("Y[o,p] = W[o,c] * X[c,p]", formats={"W": "csr"}, dtype="float32", target="cpu")

Checked against the dense product in float64 and timed next to the dense matmul of
numpy and of torch on the same CPU (the faster of the two is the baseline), batch 1,
float32, on MobileNet-like layer shapes, in three rounds that alternate the variants (each reports its
median round, so the ratio does not compare different minutes of a drifting host). Always the CPU backend (also on GPU machines).
``--quick``: tiny sizes (CI).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _dl_common as dl  # noqa: E402

import sparsec as sc  # noqa: E402
from sparsec.nn import magnitude_prune  # noqa: E402

ITEM = "9 sparse 1x1 conv (CPU)"
DSL = "Y[o,p] = W[o,c] * X[c,p]"
#: rounds of (sparsec, numpy, torch) per case; each variant reports its median round
ROUNDS = 3


def default_sizes(env: dl.Env) -> dict:
    """(C_out, C_in, H, W) layer shapes and weight sparsities."""
    if env.quick:
        return dict(layers=[(32, 24, 8, 8)], sparsities=[0.8])
    return dict(layers=[(128, 128, 56, 56), (256, 256, 28, 28), (512, 512, 14, 14), (1024, 1024, 7, 7)],
                sparsities=[0.7, 0.8, 0.9])


def run(env: dl.Env, layers: Sequence[tuple[int, int, int, int]], sparsities: Sequence[float]) -> list[dl.Row]:
    """Every (layer, sparsity): numpy and torch dense matmul (the faster is the baseline), sparsec CSR."""
    k = sc.compile(DSL, formats={"W": "csr"}, dtype="float32", target="cpu", name="conv1x1")
    rows: list[dl.Row] = []
    gen = torch.Generator().manual_seed(0)
    for co, ci, h, w in layers:
        fmap = torch.randn(ci, h, w, generator=gen)           # CHW, batch 1
        X = fmap.reshape(ci, h * w)                           # a view: CHW is the SpMM layout
        Xn = X.numpy()
        for s in sparsities:
            W = magnitude_prune(torch.randn(co, ci, generator=gen), s)
            Wn = W.numpy()
            Ws = sc.Tensor.from_torch(W, format="csr")
            ref = W.double() @ X.double()
            case = f"{co}x{ci} {h}x{w} s={s:.2f}"
            p = dict(C_out=co, C_in=ci, HW=h * w, sparsity=s)
            # sparsec first in each round: BLAS threads spin for a while after their calls and would steal
            # its cores; three rounds (one with --quick), each variant's median over them
            ours, *pair = dl.measure_rounds(
                1 if env.quick else ROUNDS, ITEM, case,
                [("sparsec csr (cpu)", lambda Ws=Ws, Xn=Xn: k(W=Ws, X=Xn)),
                 ("dense numpy matmul", lambda Wn=Wn, Xn=Xn: Wn @ Xn),
                 ("dense torch.matmul", lambda W=W, X=X: W @ X)], ref, env, **p)
            ours.params["fmt"] = "csr"
            ok = [r for r in pair if r.status == "ok"]
            if ok:
                min(ok, key=lambda r: r.time_s).baseline = True
            rows += pair + [ours]
    return rows


def main() -> int:
    env = dl.setup(device="cpu")
    rows = run(env, **default_sizes(env))
    dl.print_table(f"1x1 convolution as SpMM, CHW, batch 1 (item 9; {sc.get_num_threads()} sparsec threads, "
                   f"{torch.get_num_threads()} torch threads)", rows, env)
    return dl.finish(rows)


if __name__ == "__main__":
    sys.exit(main())
