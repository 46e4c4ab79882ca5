"""Rows split vs columns split for the item-9 layers (2 threads, one process, alternated), with the
dense-row rule (columns split from 64 per thread where rows average >= 64 nonzeros) on and off.

    PYTHONPATH=. python benchmarks/results/cpu-2core-dl-item9-dense-rows/split_ab.py

"rows": FastCall._column_chunks declines (every call split by rows); "wide-only": the rule before this
change (>= 256 columns per thread); "dense-rows": as shipped. Each variant clears the kernel's memo of
chunk rows first (it would keep the previous variant's split). Medians over 15 rounds of the best of 5
calls; torch.matmul beside.
"""
import time

import numpy as np
import torch

import sparsec as sc
from sparsec import fastcall
from sparsec.nn import magnitude_prune

torch.set_num_threads(2)
sc.set_num_threads(2)
gen = torch.Generator().manual_seed(0)
k = sc.compile("Y[o,p] = W[o,c] * X[c,p]", formats={"W": "csr"}, dtype="float32", target="cpu", name="conv")
shipped = fastcall.FastCall._column_chunks
dense_row = fastcall.COLUMN_SPLIT_DENSE_ROW
variants = {"rows": (lambda self, *a: None, dense_row), "wide-only": (shipped, 1 << 60), "dense-rows": (shipped, dense_row)}
for co, ci, h, w in [(128, 128, 56, 56), (256, 256, 28, 28), (512, 512, 14, 14), (1024, 1024, 7, 7)]:
    X = torch.randn(ci, h * w, generator=gen)
    W = magnitude_prune(torch.randn(co, ci, generator=gen), 0.8)
    Ws = sc.Tensor.from_torch(W, format="csr")
    ref = (W.double() @ X.double()).numpy()
    res = {v: [] for v in (*variants, "torch")}
    for rep in range(15):
        for v, (fn, rule) in variants.items():
            fastcall.FastCall._column_chunks = fn
            fastcall.COLUMN_SPLIT_DENSE_ROW = rule
            k._fast._rows_memo.clear()
            y = np.asarray(k(W=Ws, X=X))
            assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max(), v
            ts = []
            for _ in range(5):
                t0 = time.perf_counter(); k(W=Ws, X=X); ts.append(time.perf_counter() - t0)
            res[v].append(min(ts))
        ts = []
        for _ in range(5):
            t0 = time.perf_counter(); W @ X; ts.append(time.perf_counter() - t0)
        res["torch"].append(min(ts))
    fastcall.FastCall._column_chunks = shipped
    fastcall.COLUMN_SPLIT_DENSE_ROW = dense_row
    print(f"{co}x{ci} {h}x{w} 80%: " + ", ".join(f"{v} {np.median(t) * 1e6:.0f} us" for v, t in res.items()), flush=True)
