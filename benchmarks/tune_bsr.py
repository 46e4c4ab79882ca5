"""Sweep the launch configuration of sparsec's BSR SpMM (issue 8, item 3) on a GPU, next to dense cuBLAS.

    python benchmarks/tune_bsr.py            # one line per (block size, BLOCK_N, warps, stages); needs CUDA
    python benchmarks/tune_bsr.py 64,128     # only these block sizes

``Y = W X`` in float16 with ``W`` 4096 x 4096 in ``bsr(b, b)``, 90 % of its blocks zero, and
``X`` 4096 x 4096 (the issue's setting). Each configuration is forced through
``sparsec.backends.triton.options(block_n=..., num_warps=..., num_stages=...)``; each result is
checked against a float32 product. The heuristic's own choice is timed last per block size.
Lines also go to ``$OUT/tune_bsr.txt`` when ``OUT`` is set. The widths that
``Codegen.dot_block_n`` picks come from this sweep on an H100.
"""

from __future__ import annotations

import itertools
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

import torch  # noqa: E402

import sparsec as sc  # noqa: E402
from sparsec.backends import triton as tb  # noqa: E402
from sparsec.nn import block_prune  # noqa: E402


def sweep(size: int = 4096, blocks=(16, 32, 64, 128), sparsity: float = 0.9) -> list[str]:
    """One line per configuration and a summary line per block size (time, speed-up over dense)."""
    from triton.testing import do_bench

    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    W0 = torch.randn(size, size, device=dev, generator=gen).half()
    X = torch.randn(size, size, device=dev, generator=gen).half()

    def bench(fn) -> float:
        return do_bench(fn, warmup=10, rep=60, return_mode="median") * 1e3
    t_dense = bench(lambda: W0 @ X)
    lines = [f"dense torch.matmul {t_dense:.1f} us"]
    print(lines[-1], flush=True)
    for b in blocks:
        W = block_prune(W0, (b, b), sparsity)
        k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": f"bsr({b},{b})"}, dtype="float16", target="triton")
        Wb = tb.device.bind_operand(W.to_sparse_bsr((b, b)), "W", None, "float16", dev)
        ref = W.float() @ X.float()
        best = None
        for bn, warps, stages in itertools.product((64, 128, 256), (4, 8), (2, 3, 4)):
            try:
                with tb.options(block_n=bn, num_warps=warps, num_stages=stages):
                    err = float((tb.call(k, W=Wb, X=X).float() - ref).abs().max() / ref.abs().max())
                    t = bench(lambda: tb.call(k, W=Wb, X=X))
            except Exception as e:  # out of shared memory or registers for this tile
                lines.append(f"b={b} BLOCK_N={bn} warps={warps} stages={stages}: failed {type(e).__name__}")
                continue
            best = min(best or (t, bn, warps, stages), (t, bn, warps, stages))
            lines.append(f"b={b} BLOCK_N={bn} warps={warps} stages={stages}: {t:7.1f} us  {t_dense / t:4.2f}x dense"
                         f"  err {err:.1e}")
            print(lines[-1], flush=True)
        t = bench(lambda: tb.call(k, W=Wb, X=X))
        lines.append(f"b={b} heuristic: {t:.1f} us {t_dense / t:.2f}x dense; best swept {best[0]:.1f} us "
                     f"(BLOCK_N={best[1]} warps={best[2]} stages={best[3]})")
        print(lines[-1], flush=True)
    return lines


def main() -> int:
    if not torch.cuda.is_available():
        print("tune_bsr.py needs a CUDA GPU")
        return 1
    blocks = tuple(int(b) for b in sys.argv[1].split(",")) if len(sys.argv) > 1 else (16, 32, 64, 128)
    lines = sweep(blocks=blocks)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "tune_bsr.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
