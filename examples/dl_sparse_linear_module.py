"""``sparsec.nn.SparseLinear`` in a model: a pruned MLP block, eager and under ``torch.compile``.

Each ``nn.Linear`` of a small MLP (``up -> ReLU -> down``, LLaMA-like widths on the GPU)
is replaced by a :class:`sparsec.nn.SparseLinear` built from it with one pruning spec::

    sparse = snn.SparseLinear.from_dense(linear, sparsity=0.8)        # or pattern="2:4", block=(32, 32)
    model = torch.compile(model, fullgraph=True)   # the forward is the custom op sparsec::sparse_linear

The sparse model's output is checked against the same MLP with the pruned weights in
dense ``nn.Linear`` layers (float64 reference), and timed next to that dense model (the
baseline), eager and compiled. ``--quick``: tiny sizes (CI).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _dl_common as dl  # noqa: E402

import sparsec.nn as snn  # noqa: E402

ITEM = "8 SparseLinear MLP"
SPECS = {"magnitude 80%": dict(sparsity=0.8), "2:4": dict(pattern="2:4"), "blocks 32x32 90%": dict(block=(32, 32),
                                                                                                   sparsity=0.9)}


def default_sizes(env: dl.Env) -> dict:
    """Model width, hidden width, token counts and pruning specs."""
    if env.quick:
        # aot_eager: the custom op through dynamo and fake tensors, without inductor's C++ build (CI time)
        return dict(dim=64, hidden=128, tokens=[4], specs=["magnitude 80%", "blocks 32x32 90%"],
                    backend="aot_eager")
    if env.gpu:
        # inductor compiles of the 4096-11008 MLP take tens of seconds: compiled variants for one spec only
        return dict(dim=4096, hidden=11008, tokens=[1, 16, 64], specs=list(SPECS), compiled_specs=["magnitude 80%"])
    return dict(dim=512, hidden=1024, tokens=[8], specs=list(SPECS))


def mlp(dim: int, hidden: int, env: dl.Env) -> torch.nn.Sequential:
    """``Linear(dim, hidden) -> ReLU -> Linear(hidden, dim)`` in the example's dtype and device."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, dim)).to(env.device, env.dtype).eval()


def sparsify(model: torch.nn.Sequential, spec: dict) -> tuple[torch.nn.Sequential, torch.nn.Sequential]:
    """(the model with SparseLinear layers, the same model with the pruned weights in dense layers)."""
    sparse, dense = [], []
    for m in model:
        if isinstance(m, torch.nn.Linear):
            s = snn.SparseLinear.from_dense(m, **spec)
            d = torch.nn.Linear(m.in_features, m.out_features).to(m.weight.device, m.weight.dtype)
            with torch.no_grad():
                d.weight.copy_(s.dense_weight())
                d.bias.copy_(m.bias)
            sparse.append(s)
            dense.append(d)
        else:
            sparse.append(m)
            dense.append(m)
    return torch.nn.Sequential(*sparse).eval(), torch.nn.Sequential(*dense).eval()


def reference(dense: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    y = x.double()
    for m in dense:
        y = torch.nn.functional.linear(y, m.weight.double(), m.bias.double()) if isinstance(m, torch.nn.Linear) \
            else m(y)
    return y


def run(env: dl.Env, dim: int, hidden: int, tokens: Sequence[int], specs: Sequence[str],
        backend: str | None = "inductor", compiled_specs: Sequence[str] | None = None) -> list[dl.Row]:
    """Every (pruning spec, token count): dense model with pruned weights (baseline) vs SparseLinear model.

    ``backend``: the torch.compile backend of the compiled variants (None: eager only), for the
    specs in ``compiled_specs`` (None: all).
    """
    base = mlp(dim, hidden, env)
    rows: list[dl.Row] = []
    for name in specs:
        sparse, dense = sparsify(base, SPECS[name])
        models = [("dense nn.Linear eager", dense, True), ("sparsec SparseLinear eager", sparse, False)]
        if backend is not None and (compiled_specs is None or name in compiled_specs):
            torch._dynamo.reset()
            models += [("dense nn.Linear compiled", torch.compile(dense, backend=backend), False),
                       ("sparsec SparseLinear compiled", torch.compile(sparse, fullgraph=True, backend=backend),
                        False)]
        for T in tokens:
            x = torch.randn(T, dim, device=env.device).to(env.dtype)
            ref = reference(dense, x)
            case = f"{dim}-{hidden}-{dim} {name} T={T}"
            for label, model, is_base in models:
                def fwd(model=model, x=x):
                    with torch.no_grad():
                        return model(x)
                rows.append(dl.measure(ITEM, case, label, fwd, ref, env, baseline=is_base, spec=name, T=T))
    return rows


def main() -> int:
    env = dl.setup()
    rows = run(env, **default_sizes(env))
    dl.print_table("MLP block with SparseLinear layers (item 8)", rows, env)
    return dl.finish(rows)


if __name__ == "__main__":
    sys.exit(main())
