"""Sweep the Triton fast paths' block sizes on a GPU, next to cuSPARSE, and print the best per matrix.

Usage (GPU machine): python benchmarks/tune_triton.py [spmm|spmv|spmv-split] [matrices...]
(spmv-split: the heuristic against row splitting off and on at several segment lengths;
env TUNE_N="64,256": SpMM column counts; TUNE_HEURISTIC_ONLY=1: time only the heuristic settings; TUNE_WARPS=1: SpMM over block_k, block_n
in (N/2, N) and 1, 2 or 4 warps; TUNE_SPMV_NARROW=1: SpMV over narrow blocks (4..32) x 8..128 rows x 1..8 warps, for rows of
a few to ~16 nonzeros)
(matrices: names from ../shared/matrices or synthetic case names such as powerlaw_200k_d16, pruned_4096x4096_u50)
Writes nothing; prints one line per (matrix, N, setting) and a summary of the best settings.
It is how the heuristics in sparsec/backends/triton/options.py were chosen.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import numpy as np
import torch
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sparsec as sc  # noqa: E402
from sparsec.backends import triton as tb  # noqa: E402
from benchmarks.cases import _loader, matrices_dir, synthetic_matrices  # noqa: E402
from sparsec.backends.triton import TritonKernel  # noqa: E402

#: seconds and calls spent in the row-split set-up (memoized per pos array; a miss costs syncs)
SPLIT_TIME = [0.0, 0]


def _count_split_work() -> None:
    import time

    orig = TritonKernel.split_work

    def timed(self, *a, **kw):
        t0 = time.perf_counter()
        try:
            return orig(self, *a, **kw)
        finally:
            SPLIT_TIME[0] += time.perf_counter() - t0
            SPLIT_TIME[1] += 1

    TritonKernel.split_work = timed


def load_matrix(name: str):
    """A shared matrix by name, else a synthetic benchmark case by name, as float32 scipy CSR."""
    for spec in synthetic_matrices(False) + synthetic_matrices(True):
        if spec.name == name:
            A = spec.build().tocsr()
            A.data = np.random.default_rng(0).standard_normal(A.nnz).astype(np.float32)
            return A
    return _loader(matrices_dir()).load(name, "float32", pattern_values="random")


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median") * 1e3  # us


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "spmm"
    names = sys.argv[2:] or ["wiki-Vote", "ca-HepPh", "dlmc_tf_mag0.9_dec0_ffn1", "dlmc_rn50_mag0.8_proj4", "cage11",
                             "memplus", "bayer10"]
    _count_split_work()
    dev = torch.device("cuda")
    best: dict[str, list] = {}
    for name in names:
        A = load_matrix(name)
        At = torch.sparse_csr_tensor(torch.from_numpy(A.indptr.astype(np.int64)), torch.from_numpy(A.indices.astype(np.int64)),
                                     torch.from_numpy(A.data), size=A.shape).to(dev)
        Ad = tb.device.bind_operand(At, "A", None, "float32", dev)
        sizes = tuple(int(v) for v in os.environ.get("TUNE_N", "32,128").split(","))
        for N in (sizes if kind == "spmm" else (1,)):
            if kind == "spmm":
                X = torch.randn(A.shape[1], N, device=dev)
                k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float32", target="triton")
                ref = (At @ X)
                t_cu = bench(lambda: At @ X)
                if os.environ.get("TUNE_WARPS"):  # block_k x (N/2, N) x warps
                    grid = [dict(block_k=bk, block_n=bn, num_warps=w)
                            for bk, bn, w in itertools.product((1, 2, 4), sorted({max(16, N // 2), max(16, N)}),
                                                               (1, 2, 4))] + [dict()]
                else:
                    grid = [dict(block_k=bk, block_n=bn) for bk, bn in itertools.product((1, 2, 4, 8, 16, 32),
                                                                                       (32, 64, 128))
                            if bn <= max(32, N)] + [dict()]
                ops = dict(A=Ad, B=X)
            else:
                X = torch.randn(A.shape[1], device=dev)
                k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float32", target="triton")
                ref = At @ X
                t_cu = bench(lambda: At @ X)
                if kind == "spmv-split":
                    grid = [dict(split_rows=False)] + [dict(split_rows=True, segment=s)
                                                       for s in (32, 64, 128, 256, 1024)] + \
                        [dict(split_rows=True, segment=32, block=b, rows=r)
                         for b, r in itertools.product((8, 16, 32), (8, 16, 32))] + [dict()]
                elif os.environ.get("TUNE_SPMV_NARROW"):
                    grid = [dict(block=b, rows=r, num_warps=w)
                            for b, r, w in itertools.product((4, 8, 16, 32), (8, 16, 32, 64, 128), (None, 2, 4, 8))
                            if b * r <= 2048] + [dict()]
                else:
                    grid = [dict(block=b, rows=r, num_warps=w)
                            for b, r, w in itertools.product((16, 64, 128, 256), (1, 4, 8, 16), (None, 8))] + [dict()]
                ops = dict(A=Ad, x=X)
            if os.environ.get("TUNE_HEURISTIC_ONLY"):
                grid = [dict()]
            rows = []
            for opt in grid:
                with tb.options(**opt):            # launch constants are memoized per options
                    out = tb.call(k, **ops)
                    err = float((out - ref).abs().max() / (ref.abs().max() + 1e-30))
                    SPLIT_TIME[:] = [0.0, 0]
                    t = bench(lambda: tb.call(k, **ops))
                    split_us = SPLIT_TIME[0] / max(SPLIT_TIME[1], 1) * 1e6
                rows.append((t, opt, err))
                print(f"{name:26s} N={N:<4d} {str(opt) or 'heuristic':34s} {t:8.1f} us  cusparse {t_cu:8.1f} us  "
                      f"x{t_cu / t:5.2f}  err {err:.1e}  split set-up {split_us:6.1f} us/call", flush=True)
            rows.sort(key=lambda r: r[0])
            heur = [r for r in rows if not r[1]][0]
            best.setdefault(f"N={N}", []).append((name, rows[0][1], rows[0][0], heur[0], t_cu))
    print("\nbest settings (matrix: best, best us, heuristic us, cusparse us)")
    for key, items in best.items():
        for name, opt, tb_, th, tc in items:
            print(f"{key:6s} {name:26s} {str(opt):34s} {tb_:8.1f} {th:8.1f} {tc:8.1f}  heuristic/cusparse x{tc / th:.2f}")


if __name__ == "__main__":
    main()
