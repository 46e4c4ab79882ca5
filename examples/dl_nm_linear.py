"""N:M structured weights (2:4 and general n:m) times skinny activations: ``Y = W X``.

``W`` keeps the n largest of every m consecutive weights of a row; sparsec stores it in
``nm(n, m)`` (the kept values plus their in-block coordinates) and the kernel is the same
one line as for any other format::

    k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": "nm(2,4)"},
                   dtype={"W": "float16", "X": "float16", "Y": "float32"}, target="triton")

On the GPU the Triton backend rebuilds each tile of W from its slots in registers (the
slots of a step load as one contiguous block, are split apart in registers, and each puts
its value at its in-block coordinate) and multiplies it with ``tl.dot``. The weight is
declared ``nm(n,m)[pos32,crd8]``: 8-bit in-block coordinates, so a 2:4 float16 weight
moves 1.5 bytes per weight against dense's 2 (with the default 32-bit coordinates, 3).
The same weights stored as ``nm(n,m,packed)`` (coordinates packed at 2 or 4 bits: 1.25
bytes for 2:4) and as ``bitmap`` (1 bit per weight + the values: 1.1 bytes) are timed
beside it.

Checked against ``W @ X`` in float64 and timed next to dense ``torch.matmul`` (the
baseline) and, for 2:4 on the GPU, torch's ``to_sparse_semi_structured`` matmul
(cuSPARSELt / CUTLASS). Without CUDA it runs the CPU backend in float32 at smaller
sizes. ``--quick``: tiny sizes (CI).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _dl_common as dl  # noqa: E402

import sparsec as sc  # noqa: E402
from sparsec.nn import nm_prune  # noqa: E402

ITEM = "2 n:m W x skinny X"
DSL = "Y[i,j] = W[i,k] * X[k,j]"


def default_sizes(env: dl.Env) -> dict:
    """Shapes, patterns and column counts for the environment."""
    if env.quick:
        return dict(shapes=[(64, 64)], patterns=[(2, 4), (3, 8)], ns=[8])
    if env.gpu:
        return dict(shapes=[(4096, 4096), (11008, 4096)], patterns=[(2, 4), (1, 4), (4, 8)],
                    ns=[8, 16, 32, 64, 128, 256])
    return dict(shapes=[(512, 512)], patterns=[(2, 4), (4, 8)], ns=[8, 64])


def semi_structured(W: torch.Tensor, env: dl.Env):
    """torch's 2:4 semi-structured weight, or NotImplementedError where torch has none."""
    if not env.gpu:
        raise NotImplementedError("torch semi-structured sparsity needs CUDA")
    from torch.sparse import to_sparse_semi_structured

    return to_sparse_semi_structured(W)


def run(env: dl.Env, shapes: Sequence[tuple[int, int]], patterns: Sequence[tuple[int, int]],
        ns: Sequence[int]) -> list[dl.Row]:
    """Every (shape, pattern, N): dense matmul (baseline), torch 2:4 (2:4 only), sparsec nm(n, m)."""
    rows: list[dl.Row] = []
    gen = torch.Generator(device=env.device).manual_seed(0)
    for M, K in shapes:
        W0 = torch.randn(M, K, device=env.device, generator=gen).to(env.dtype)
        for n, m in patterns:
            fmt = f"nm({n},{m})[pos32,crd8]"
            W = nm_prune(W0, n, m)
            k = sc.compile(DSL, formats={"W": fmt}, dtype=dl.spmm_dtypes(env), target=env.target, name="nm_spmm")
            Wb = dl.bind(W, fmt, env)
            packed = f"nm({n},{m},packed)"
            kp = sc.compile(DSL, formats={"W": packed}, dtype=dl.spmm_dtypes(env), target=env.target,
                            name="nm_packed_spmm")
            Wp = dl.bind(W, packed, env)
            kb = sc.compile(DSL, formats={"W": "bitmap"}, dtype=dl.spmm_dtypes(env), target=env.target,
                            name="nm_as_bitmap") if env.gpu else None
            Wbm = dl.bind(W, "bitmap", env) if kb is not None else None
            Ws = None
            if (n, m) == (2, 4):
                try:
                    Ws = semi_structured(W, env)
                except Exception as e:
                    Ws = e
            for N in ns:
                X = torch.randn(K, N, device=env.device, generator=gen).to(env.dtype)
                ref = W.double() @ X.double()
                case = f"{M}x{K} {n}:{m} N={N}"
                p = dict(M=M, K=K, N=N, n=n, m=m)
                rows.append(dl.measure(ITEM, case, "dense torch.matmul", lambda W=W, X=X: W @ X, ref, env,
                                       baseline=True, **p))
                if Ws is not None:
                    def torch24(Ws=Ws, X=X):
                        if isinstance(Ws, Exception):
                            raise NotImplementedError(f"to_sparse_semi_structured: {Ws}")
                        return Ws @ X
                    rows.append(dl.measure(ITEM, case, "torch semi-structured 2:4", torch24, ref, env, **p))
                Xo = dl.dense(X, env)
                rows.append(dl.measure(ITEM, case, f"sparsec nm({n},{m})", lambda k=k, Wb=Wb, X=Xo: k(W=Wb, X=X),
                                       ref, env, fmt=fmt, **p))
                rows.append(dl.measure(ITEM, case, f"sparsec nm({n},{m}) packed",
                                       lambda k=kp, Wb=Wp, X=Xo: k(W=Wb, X=X), ref, env, fmt=packed, **p))
                if kb is not None:
                    rows.append(dl.measure(ITEM, case, "sparsec bitmap (same weights)",
                                           lambda k=kb, Wb=Wbm, X=X: k(W=Wb, X=X), ref, env, fmt="bitmap", **p))
    return rows


def main() -> int:
    env = dl.setup()
    rows = run(env, **default_sizes(env))
    dl.print_table("Y = W X, W n:m-pruned (item 2)", rows, env)
    return dl.finish(rows)


if __name__ == "__main__":
    sys.exit(main())
