"""SpGEMM ``C = A @ A`` with CSR operands and output (issue 8 item 6).

In sparsec it is one line of the DSL::

    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"},
                   dtype="float32", target="triton")

On the GPU the Triton backend runs it as the row-parallel template of
``sparsec/backends/triton/spgemm.py`` (rows expanded, sorted and summed in registers,
a chunk of short rows or one long row per program, rows of many products on dense rows). The
work that depends only on the operands' structure (products per row, C's row pointers) is
memoized by the index buffers, so the example times two sparsec variants: the same
operands again (as in an iteration with a fixed pattern and new values) and a one-shot
product on freshly allocated index buffers (the structure counted again). The baseline is
``torch`` CSR @ CSR (cuSPARSE on the GPU; torch's CPU kernel on the CPU, where scipy is
shown too and sparsec runs the LLVM backend with its dense-row or hash-table workspace).

The result is checked on sampled rows against a dense float64 torch product. Matrices: a
uniform random one (8 entries a row) and one with power-law row lengths. ``--quick``:
tiny sizes (CI).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _dl_common as dl  # noqa: E402

import sparsec as sc  # noqa: E402
from sparsec.formats import parse_format  # noqa: E402

ITEM = "6 SpGEMM"
DSL = "C[i,j] = A[i,k] * B[k,j]"
CSR = parse_format("csr", 2)


def default_sizes(env: dl.Env) -> dict:
    """Matrix size and entries per row for the environment."""
    if env.quick:
        return dict(n=300, per_row=6)
    return dict(n=12000, per_row=8)


def random_csr(n: int, per_row: int, power_law: bool, seed: int) -> sp.csr_matrix:
    """An n x n float32 CSR matrix: ``per_row`` entries a row on average, row lengths uniform or Zipf-like."""
    rng = np.random.default_rng(seed)
    if power_law:
        lengths = np.minimum(rng.zipf(1.8, n), n // 4).astype(np.int64)
        lengths = np.maximum(1, (lengths * (per_row * n / lengths.sum())).astype(np.int64))
    else:
        lengths = np.full(n, per_row, dtype=np.int64)
    rows = np.repeat(np.arange(n), lengths)
    cols = rng.integers(0, n, rows.size)
    m = sp.csr_matrix((rng.uniform(-1, 1, rows.size).astype(np.float32), (rows, cols)), shape=(n, n))
    m.sum_duplicates()
    m.sort_indices()
    return m


def bind(m: sp.csr_matrix, env: dl.Env, name: str) -> Any:
    """``m`` as the target's CSR operand (on the device for Triton, a host Tensor for the CPU), bound once."""
    if env.target == "triton":
        from sparsec.backends.triton.device import bind_operand

        return bind_operand(m, name, CSR, "float32", env.device)
    return sc.Tensor.from_scipy(m, format="csr", name=name)


def fresh_indices(t: Any) -> Any:
    """A copy of device operand ``t`` with newly allocated index buffers (a structure sparsec has not seen)."""
    from sparsec.backends.triton.device import DeviceTensor

    levels = [{k: v.clone() for k, v in lv.items()} for lv in t.levels]
    return DeviceTensor(t.format, t.shape, levels, t.values, t.name)


def check_rows(C: Any, m: sp.csr_matrix, env: dl.Env, case: str, variant: str, samples: int = 128) -> float:
    """Sampled rows of ``C`` against the dense float64 torch product of those rows of ``m`` with ``m``."""
    rows = np.random.default_rng(1).choice(m.shape[0], size=min(samples, m.shape[0]), replace=False)
    dense = torch.from_numpy(m.toarray()).to(env.device, torch.float64)
    ref = dense[torch.from_numpy(rows).to(env.device)] @ dense
    got = C.to_scipy() if hasattr(C, "to_scipy") else C
    got = torch.from_numpy(sp.csr_matrix(got)[rows].toarray()).to(env.device)
    return dl.check(got, ref, torch.float32, f"{case} {variant}")


def run(env: dl.Env, n: int, per_row: int) -> list[dl.Row]:
    """Each matrix: torch CSR @ CSR (baseline), scipy (CPU), sparsec same operands and one-shot (GPU)."""
    k = sc.compile(DSL, formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32", target=env.target,
                   name="spgemm")
    rows: list[dl.Row] = []
    for power_law in (False, True):
        m = random_csr(n, per_row, power_law, seed=3 if power_law else 2)
        case = f"{n}x{n} {'power-law' if power_law else 'uniform'} nnz={m.nnz}"
        p = dict(n=n, nnz=m.nnz)
        tm = torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                     torch.from_numpy(m.indices.astype(np.int64)), torch.from_numpy(m.data),
                                     size=m.shape, check_invariants=False).to(env.device)
        A = bind(m, env, "A")
        rows.append(dl.measure(ITEM, case, "torch csr @ csr" + (" (cuSPARSE)" if env.gpu else ""), lambda tm=tm: tm @ tm,
                               None, env, baseline=True, **p))
        if not env.gpu:
            rows.append(dl.measure(ITEM, case, "scipy csr @ csr", lambda m=m: m @ m, None, env, **p))
        row = dl.measure(ITEM, case, "sparsec (same operands)", lambda A=A: k(A=A, B=A), None, env, **p)
        if row.status == "ok":
            row.err = check_rows(k(A=A, B=A), m, env, case, row.variant)
        rows.append(row)
        if env.gpu:
            def one_shot(A=A):
                fresh = fresh_indices(A)
                return k(A=fresh, B=fresh)

            row = dl.measure(ITEM, case, "sparsec one-shot (new structure)", one_shot, None, env, **p)
            if row.status == "ok":
                row.err = check_rows(one_shot(), m, env, case, row.variant)
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    env = dl.setup(argv)
    rows = run(env, **default_sizes(env))
    dl.print_table("C = A @ A, CSR x CSR -> CSR, float32 (item 6)", rows, env)
    return dl.finish(rows)


if __name__ == "__main__":
    sys.exit(main())
