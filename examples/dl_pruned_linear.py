"""Unstructured pruned weights times skinny activations (the Flash-LLM setting): ``Y = W X``.

``W`` (4096x4096 or 11008x4096) is magnitude-pruned to 70-95 % zeros, ``X`` has N = 8..256
columns, float16 on the GPU. The sparsec kernel is one line of index notation; the weight
is stored once in a sparse format and the kernel is called like a matmul::

    k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": "bitmap"},
                   dtype={"W": "float16", "X": "float16", "Y": "float32"}, target="triton")
    Y = k(W=W_sparse, X=X)

Two formats: ``csr`` (the generic CSR SpMM: a gather of X rows per nonzero) and ``bitmap``
(1 bit per weight plus the packed values; the Triton backend expands each 64-column tile
of W into registers and multiplies it with ``tl.dot``: "load sparse, compute dense").
The output is float32 (float16 products summed in float32, as cuBLAS does).

Checked against ``W @ X`` in float64 and timed next to dense ``torch.matmul`` (cuBLAS;
the baseline) and torch.sparse CSR (cuSPARSE). Without CUDA it runs the CPU backend in
float32 at smaller sizes. ``--quick``: tiny sizes (CI).
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

ITEM = "1 pruned W x skinny X"
DSL = "Y[i,j] = W[i,k] * X[k,j]"
FORMATS = ("csr", "bitmap")


def default_sizes(env: dl.Env) -> dict:
    """Shapes, sparsities and column counts for the environment."""
    if env.quick:
        return dict(shapes=[(192, 128)], sparsities=[0.8], ns=[8, 32])
    if env.gpu:
        return dict(shapes=[(4096, 4096), (11008, 4096)], sparsities=[0.7, 0.8, 0.9, 0.95],
                    ns=[8, 16, 32, 64, 128, 256])
    return dict(shapes=[(1024, 1024)], sparsities=[0.8, 0.95], ns=[8, 64])


def run(env: dl.Env, shapes: Sequence[tuple[int, int]], sparsities: Sequence[float], ns: Sequence[int],
        formats: Sequence[str] = FORMATS) -> list[dl.Row]:
    """Every (shape, sparsity, N): dense matmul (baseline), torch.sparse CSR, sparsec in each format."""
    kernels = {f: sc.compile(DSL, formats={"W": f}, dtype=dl.spmm_dtypes(env), target=env.target, name="pruned_spmm")
               for f in formats}
    rows: list[dl.Row] = []
    gen = torch.Generator(device=env.device).manual_seed(0)
    for M, K in shapes:
        W0 = torch.randn(M, K, device=env.device, generator=gen).to(env.dtype)
        for s in sparsities:
            W = magnitude_prune(W0, s)
            bound = {f: dl.bind(W, f, env) for f in formats}
            try:
                Wcsr = W.to_sparse_csr()
            except Exception:  # pragma: no cover - dtype without sparse CSR support
                Wcsr = None
            for N in ns:
                X = torch.randn(K, N, device=env.device, generator=gen).to(env.dtype)
                ref = W.double() @ X.double()
                case = f"{M}x{K} s={s:.2f} N={N}"
                p = dict(M=M, K=K, N=N, sparsity=s)
                rows.append(dl.measure(ITEM, case, "dense torch.matmul", lambda W=W, X=X: W @ X, ref, env,
                                       baseline=True, **p))
                if Wcsr is not None:
                    rows.append(dl.measure(ITEM, case, "torch.sparse CSR", lambda Wc=Wcsr, X=X: Wc @ X, ref, env, **p))
                for f in formats:
                    k, Wb = kernels[f], bound[f]
                    Xo = dl.dense(X, env)
                    rows.append(dl.measure(ITEM, case, f"sparsec {f}", lambda k=k, Wb=Wb, X=Xo: k(W=Wb, X=X), ref,
                                           env, fmt=f, **p))
    return rows


def main() -> int:
    env = dl.setup()
    rows = run(env, **default_sizes(env))
    dl.print_table("Y = W X, W magnitude-pruned (item 1)", rows, env)
    return dl.finish(rows)


if __name__ == "__main__":
    sys.exit(main())
