"""Block-sparse weights: ``Y = W X`` with ``W`` in ``bsr(b, b)``, 90 % of its blocks zero.

Block sizes 16..128; on the GPU the kernel multiplies every present block with ``tl.dot``
on the tensor cores::

    k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": "bsr(64,64)"}, dtype="float16", target="triton")

Checked against ``W @ X`` in float64 and timed next to dense ``torch.matmul`` (the
baseline), torch's BSR matmul (``W.to_sparse_bsr((b, b)) @ X``), and, for reference, a dense
``torch.matmul`` of the same work: ``K`` cut to the kept share of the blocks, to a multiple of 16
(416 of 4096 at 90 %), so about the same multiply-adds, the same output and no sparsity at all (not
checked: another product). GPU: 4096x4096 weights, N = 4096 (the issue's setting). Without CUDA it
runs the CPU backend in float32 at smaller sizes. ``--quick``: tiny sizes (CI).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _dl_common as dl  # noqa: E402

import sparsec as sc  # noqa: E402
from sparsec.nn import block_prune  # noqa: E402

ITEM = "3 block-sparse W"
DSL = "Y[i,j] = W[i,k] * X[k,j]"
#: dense torch.matmul with K cut to the kept share of the blocks: the same multiply-adds and output (reference)
SAME_WORK = "dense, same work (K x kept share)"


def default_sizes(env: dl.Env) -> dict:
    """Shape, block sizes, block sparsities and column counts for the environment."""
    if env.quick:
        return dict(shape=(64, 64), blocks=[16], sparsities=[0.75], ns=[32])
    if env.gpu:
        return dict(shape=(4096, 4096), blocks=[16, 32, 64, 128], sparsities=[0.9], ns=[4096])
    return dict(shape=(1024, 1024), blocks=[16, 32], sparsities=[0.9], ns=[256])


def run(env: dl.Env, shape: tuple[int, int], blocks: Sequence[int], sparsities: Sequence[float],
        ns: Sequence[int]) -> list[dl.Row]:
    """Every (block size, block sparsity, N): dense matmul (baseline), torch BSR, sparsec bsr(b, b)."""
    M, K = shape
    rows: list[dl.Row] = []
    gen = torch.Generator(device=env.device).manual_seed(0)
    W0 = torch.randn(M, K, device=env.device, generator=gen).to(env.dtype)
    for b in blocks:
        fmt = f"bsr({b},{b})"
        k = sc.compile(DSL, formats={"W": fmt}, dtype=env.dtype_name, target=env.target, name="bsr_spmm")
        for s in sparsities:
            W = block_prune(W0, (b, b), s)
            Wb = dl.bind(W, fmt, env)
            try:
                Wt = W.to_sparse_bsr((b, b))
            except Exception as e:  # pragma: no cover - torch without BSR for this dtype/device
                Wt = e
            for N in ns:
                X = torch.randn(K, N, device=env.device, generator=gen).to(env.dtype)
                ref = W.double() @ X.double()
                case = f"{M}x{K} b={b} s={s:.2f} N={N}"
                p = dict(M=M, K=K, N=N, block=b, sparsity=s)
                rows.append(dl.measure(ITEM, case, "dense torch.matmul", lambda W=W, X=X: W @ X, ref, env,
                                       baseline=True, **p))

                def torch_bsr(Wt=Wt, X=X):
                    if isinstance(Wt, Exception):
                        raise NotImplementedError(f"to_sparse_bsr: {Wt}")
                    return Wt @ X
                rows.append(dl.measure(ITEM, case, "torch BSR", torch_bsr, ref, env, **p))
                # dense product of the same work: K cut to the kept share, to a multiple of 16 (rows of 32-byte
                # multiples, as cuBLAS's fast kernels want)
                k_kept = max(16, 16 * round(K * (1 - s) / 16))
                Wc, Xc = W0[:, :k_kept].contiguous(), X[:k_kept].contiguous()
                rows.append(dl.measure(ITEM, case, SAME_WORK, lambda Wc=Wc, Xc=Xc: Wc @ Xc, None, env, **p))
                Xo = dl.dense(X, env)
                rows.append(dl.measure(ITEM, case, f"sparsec bsr({b},{b})", lambda k=k, Wb=Wb, X=Xo: k(W=Wb, X=X),
                                       ref, env, fmt=fmt, **p))
    return rows


def main() -> int:
    env = dl.setup()
    rows = run(env, **default_sizes(env))
    dl.print_table("Y = W X, W block-sparse (item 3)", rows, env)
    return dl.finish(rows)


if __name__ == "__main__":
    sys.exit(main())
