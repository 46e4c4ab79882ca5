"""Sweep the Triton fast paths' block sizes on a GPU, next to cuSPARSE, and print the best per matrix.

Usage (GPU machine): python benchmarks/tune_triton.py [spmm|spmv] [matrices...]
Writes nothing; prints one line per (matrix, N, setting) and a summary of the best settings.
It is how the heuristics in sparsec/backends/triton/options.py were chosen.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import torch
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sparsec as sc  # noqa: E402
from sparsec.backends import triton as tb  # noqa: E402
from benchmarks.cases import _loader, matrices_dir  # noqa: E402


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median") * 1e3  # us


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "spmm"
    names = sys.argv[2:] or ["wiki-Vote", "ca-HepPh", "dlmc_tf_mag0.9_dec0_ffn1", "dlmc_rn50_mag0.8_proj4", "cage11",
                             "memplus", "bayer10"]
    load = _loader(matrices_dir()).load
    dev = torch.device("cuda")
    best: dict[str, list] = {}
    for name in names:
        A = load(name, "float32", pattern_values="random")
        At = torch.sparse_csr_tensor(torch.from_numpy(A.indptr.astype(np.int64)), torch.from_numpy(A.indices.astype(np.int64)),
                                     torch.from_numpy(A.data), size=A.shape).to(dev)
        Ad = tb.device.bind_operand(At, "A", None, "float32", dev)
        for N in ((32, 128) if kind == "spmm" else (1,)):
            if kind == "spmm":
                X = torch.randn(A.shape[1], N, device=dev)
                k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float32", target="triton")
                ref = (At @ X)
                t_cu = bench(lambda: At @ X)
                grid = [dict(block_k=bk, block_n=bn) for bk, bn in itertools.product((1, 2, 4, 8, 16, 32), (32, 64, 128))
                        if bn <= max(32, N)] + [dict()]
                ops = dict(A=Ad, B=X)
            else:
                X = torch.randn(A.shape[1], device=dev)
                k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float32", target="triton")
                ref = At @ X
                t_cu = bench(lambda: At @ X)
                grid = [dict(block=b, rows=r) for b, r in itertools.product((4, 8, 16, 32, 64), (1, 4, 16, 64))] + [dict()]
                ops = dict(A=Ad, x=X)
            rows = []
            for opt in grid:
                with tb.options(**opt):            # launch constants are memoized per options
                    out = tb.call(k, **ops)
                    err = float((out - ref).abs().max() / (ref.abs().max() + 1e-30))
                    t = bench(lambda: tb.call(k, **ops))
                rows.append((t, opt, err))
                print(f"{name:26s} N={N:<4d} {str(opt) or 'heuristic':34s} {t:8.1f} us  cusparse {t_cu:8.1f} us  "
                      f"x{t_cu / t:5.2f}  err {err:.1e}", flush=True)
            rows.sort(key=lambda r: r[0])
            heur = [r for r in rows if not r[1]][0]
            best.setdefault(f"N={N}", []).append((name, rows[0][1], rows[0][0], heur[0], t_cu))
    print("\nbest settings (matrix: best, best us, heuristic us, cusparse us)")
    for key, items in best.items():
        for name, opt, tb_, th, tc in items:
            print(f"{key:6s} {name:26s} {str(opt):34s} {tb_:8.1f} {th:8.1f} {tc:8.1f}  heuristic/cusparse x{tc / th:.2f}")


if __name__ == "__main__":
    main()
