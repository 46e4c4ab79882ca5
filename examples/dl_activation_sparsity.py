"""Activation sparsity (the CATS / CHESS setting): ``y = W x`` with ``x`` thresholded at run time.

An activation vector is thresholded to 50-90 % zeros on every call; the kernel must read
only the weight columns of the active inputs. In sparsec the activations are a sparse
row vector (a 1 x K CSR: the active coordinates and their values, built on the device
each call) and the weight is kept transposed (``Wt = W^T``, K x M, row-major, stored once),
so the columns of ``W`` for an active input are one contiguous row of ``Wt``::

    k = sc.compile("Y[r,i] = X[r,k] * Wt[k,i]", formats={"X": "csr"},
                   dtype={"X": "float16", "Wt": "float16", "Y": "float32"}, target="triton")

The output is float32: the GPU kernel splits the active inputs across programs, which add
their partial sums atomically.

Compressing ``x`` on every call costs more than the product itself on a GPU (a device
sync for the count, and a launch set-up for a new operand), so the second form keeps
``x`` dense and tells the kernel to skip its zeros::

    k = sc.compile("Y[r,k2] = X[r,k] * Wt[k,k2]", dtype=..., target="triton",
                   schedule=sc.Schedule().skip_zeros("X"))

The Triton tile template then loads a row of ``Wt`` only where ``x`` is nonzero (a masked
load: no memory traffic for the others). The third form also moves the thresholding into
the kernel: the raw activations ``a`` and the threshold ``t`` (a 0-d tensor) go in, and
entries with ``|a| <= t`` are skipped like zeros (no ``torch.where`` pass, no extra launches)::

    k = sc.compile("Y[r,i] = where(abs(X[r,k]) > t, X[r,k], 0) * Wt[k,i]", dtype=..., target="triton",
                   schedule=sc.Schedule().skip_zeros("X"))

All are timed per call *including* the thresholding (and, for the CSR form, the compression)
of ``x``, next to the dense GEMV with the same thresholding, ``torch.mv(W, torch.where(...))``
(the baseline), ``torch.mv`` alone on a given ``x`` (for reference) and torch's
gather-then-GEMV (``x[idx] @ Wt[idx]``). On a GPU a last row times the memory floor: a plain
read (``torch.sum``) of as many bytes as the live rows of ``Wt``, which no kernel here can beat.
Without CUDA it runs the CPU backend in float32 at smaller sizes (where ``skip_zeros``
computes every term). ``--quick``: tiny sizes (CI).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _dl_common as dl  # noqa: E402

import sparsec as sc  # noqa: E402
from sparsec.formats import parse_format  # noqa: E402

ITEM = "5 activation sparsity"
DSL = "Y[r,i] = X[r,k] * Wt[k,i]"
DSL_THRESHOLD = "Y[r,i] = where(abs(X[r,k]) > t, X[r,k], 0) * Wt[k,i]"   # x thresholded in the kernel
CSR = parse_format("csr", 2)
#: the variant that times a plain read of the live weight rows' bytes (a lower bound for any kernel here)
FLOOR = "floor: read the live Wt rows"
_ZERO_ONE: dict = {}   # per device: tensor([0, 1]); pos = it * nnz needs no host-to-device copy


def default_sizes(env: dl.Env) -> dict:
    """Weight shapes (M outputs x K inputs) and activation sparsities for the environment."""
    if env.quick:
        return dict(shapes=[(96, 128)], zero_fractions=[0.5, 0.9])
    if env.gpu:
        return dict(shapes=[(4096, 4096), (4096, 11008)], zero_fractions=[0.5, 0.7, 0.9])
    return dict(shapes=[(2048, 2048)], zero_fractions=[0.5, 0.9])


def threshold(a: torch.Tensor, zero_fraction: float) -> float:
    """The magnitude under which ``zero_fraction`` of ``a``'s entries fall (calibrated once, as CATS does)."""
    return float(a.abs().float().quantile(zero_fraction))


def sparse_activations(a: torch.Tensor, thr: float, env: dl.Env):
    """``a`` thresholded (``|a| > thr`` kept) as a 1 x K CSR operand on the target; runs every call."""
    idx = torch.nonzero(a.abs() > thr).squeeze(1).to(torch.int32)
    vals = a[idx]
    if env.target == "triton":
        from sparsec.backends.triton.device import DeviceTensor

        pos = _ZERO_ONE.setdefault(a.device, torch.tensor([0, 1], dtype=torch.int32, device=a.device)) * idx.numel()
        return DeviceTensor(CSR, (1, a.numel()), [{}, {"pos": pos, "crd": idx}], vals, "X")
    pos = np.array([0, idx.numel()], dtype=np.int32)
    return sc.Tensor.from_buffers(CSR, (1, a.numel()), [{}, {"pos": pos, "crd": idx.numpy()}], vals.numpy(),
                                  name="X", validate=False)


def run(env: dl.Env, shapes: Sequence[tuple[int, int]], zero_fractions: Sequence[float]) -> list[dl.Row]:
    """Every (shape, activation sparsity): dense GEMV (baseline), torch gather-then-GEMV, sparsec."""
    dt = env.dtype_name
    out_dt = "float32" if dt in ("float16", "bfloat16") else dt
    k = sc.compile(DSL, formats={"X": "csr"}, dtype={"X": dt, "Wt": dt, "Y": out_dt}, target=env.target,
                   name="act_sparse_gemv")
    k_skip = sc.compile(DSL, dtype={"X": dt, "Wt": dt, "Y": out_dt}, target=env.target, name="act_skip_gemv",
                        schedule=sc.Schedule().skip_zeros("X"))
    k_fused = sc.compile(DSL_THRESHOLD, dtype={"X": dt, "Wt": dt, "Y": out_dt, "t": dt}, target=env.target,
                         name="act_thr_gemv", schedule=sc.Schedule().skip_zeros("X"))
    rows: list[dl.Row] = []
    gen = torch.Generator(device=env.device).manual_seed(0)
    for M, K in shapes:
        W = torch.randn(M, K, device=env.device, generator=gen).to(env.dtype)
        Wt = W.t().contiguous()                      # stored once, like the weight itself
        for zf in zero_fractions:
            a = torch.randn(K, device=env.device, generator=gen).to(env.dtype)
            thr = threshold(a, zf)
            x = torch.where(a.abs() > thr, a, torch.zeros_like(a))
            ref = W.double() @ x.double()
            case = f"{M}x{K} zeros={zf:.0%}"
            p = dict(M=M, K=K, zero_fraction=zf, active=int((x != 0).sum()))

            def dense(W=W, a=a, thr=thr):
                return torch.mv(W, torch.where(a.abs() > thr, a, torch.zeros_like(a)))

            def gather(Wt=Wt, a=a, thr=thr):
                idx = torch.nonzero(a.abs() > thr).squeeze(1)
                return a[idx] @ Wt[idx]

            Wt_op = dl.dense(Wt, env)

            def ours(Wt=Wt_op, a=a, thr=thr):
                return k(X=sparse_activations(a, thr, env), Wt=Wt).reshape(-1)

            def skip(Wt=Wt_op, a=a, thr=thr):
                x = torch.where(a.abs() > thr, a, torch.zeros_like(a)).reshape(1, -1)
                return k_skip(X=dl.dense(x, env), Wt=Wt).reshape(-1)

            t = dl.dense(torch.tensor(thr, dtype=env.dtype, device=env.device), env)   # calibrated once
            a_row = dl.dense(a.reshape(1, -1), env)   # the raw activations, as a layer hands them over

            def fused(Wt=Wt_op, a=a_row, t=t):
                return k_fused(X=a, Wt=Wt, t=t).reshape(-1)

            xs = sparse_activations(a, thr, env)
            rows.append(dl.measure(ITEM, case, "dense GEMV torch.mv", dense, ref, env, baseline=True, **p))
            rows.append(dl.measure(ITEM, case, "torch.mv alone (x given)", lambda W=W, x=x: torch.mv(W, x), ref, env,
                                   **p))
            rows.append(dl.measure(ITEM, case, "torch gather-then-GEMV", gather, ref, env, **p))
            rows.append(dl.measure(ITEM, case, "sparsec (compress + kernel)", ours, ref, env, **p))
            rows.append(dl.measure(ITEM, case, "sparsec skip_zeros (+ threshold)", skip, ref, env, **p))
            rows.append(dl.measure(ITEM, case, "sparsec fused threshold", fused, ref, env, **p))
            rows.append(dl.measure(ITEM, case, "sparsec kernel only", lambda Wt=Wt_op, xs=xs: k(X=xs, Wt=Wt), ref, env,
                                   **p))
            if env.gpu:   # the memory floor: reading the live rows of Wt (as many bytes) and nothing else
                live_bytes = Wt[: p["active"]]
                rows.append(dl.measure(ITEM, case, FLOOR, lambda w=live_bytes: w.sum(), None, env, **p))
    return rows


def main() -> int:
    env = dl.setup()
    rows = run(env, **default_sizes(env))
    dl.print_table("y = W x, x thresholded at run time (item 5)", rows, env)
    return dl.finish(rows)


if __name__ == "__main__":
    sys.exit(main())
