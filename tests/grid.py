"""The differential grid: kernels x formats x dtypes x shapes, shared by every target.

Each :class:`Case` is one expression (an einsum string or index-notation text),
its operands (format, shape, density) and an output format. ``run_case`` builds
random operands from a fixed seed (with empty rows and columns, and sometimes
all-zero or empty tensors), runs sparsec, and compares with ``numpy.einsum`` (or
the dense tensor-IR evaluator for index notation) in float64.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

import sparsec as sc
from sparsec import api
from sparsec.frontend import parse_statement
from sparsec.ir.tensor_eval import evaluate


@dataclass(frozen=True)
class Operand:
    fmt: str
    dims: str            # index letters, e.g. "ij" -> extents from the case's sizes
    density: float = 0.3
    pattern: str = "random"  # random | nm24 | empty | zeros | blocks


@dataclass(frozen=True)
class Case:
    label: str
    expr: str                      # einsum subscripts, or index notation if it contains "="
    operands: tuple[Operand, ...]
    out_format: str | None = None
    dtype: str = "float64"
    sizes: tuple[tuple[str, int], ...] = ()
    seed: int = 0

    @property
    def is_einsum(self) -> bool:
        return "=" not in self.expr

    def id(self) -> str:
        sz = ",".join(f"{k}{v}" for k, v in self.sizes)
        fm = "+".join(o.fmt.replace(" ", "").replace(",", "_") for o in self.operands)
        return f"{self.label}[{fm}->{self.out_format or 'dense'}|{self.dtype}|{sz}|s{self.seed}]"


def _nm24(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A matrix with at most 2 nonzeros in every aligned block of 4 columns."""
    m, n = shape
    a = np.zeros(shape)
    for b in range(0, n, 4):
        w = min(4, n - b)
        for r in range(m):
            keep = rng.choice(w, size=min(2, w) if rng.random() < 0.8 else rng.integers(0, min(2, w) + 1),
                              replace=False)
            a[r, b + keep] = rng.uniform(-1, 1, size=keep.shape[0])
    return a


def make_dense(op: Operand, shape: tuple[int, ...], rng: np.random.Generator, dtype: str) -> np.ndarray:
    """Random values with the operand's density; some rows and columns forced empty."""
    if op.pattern == "zeros" or 0 in shape:
        return np.zeros(shape, dtype=dtype)
    if op.pattern == "nm24":
        return _nm24(rng, shape).astype(dtype)
    vals = rng.uniform(-1.0, 1.0, size=shape)
    if np.issubdtype(np.dtype(dtype), np.integer):
        vals = rng.integers(-4, 5, size=shape).astype(float)
    mask = rng.random(shape) < op.density
    if len(shape) >= 2 and shape[0] > 2:
        mask[rng.integers(0, shape[0])] = False          # an empty row
    if len(shape) >= 2 and shape[1] > 2:
        mask[:, rng.integers(0, shape[1])] = False       # an empty column
    if op.fmt == "dense" and op.density >= 1:
        mask[:] = True
    return np.where(mask, vals, 0).astype(dtype)


def build_operands(case: Case) -> tuple[list[sc.Tensor], list[np.ndarray]]:
    """sc.Tensors in the case's formats and the dense float64 arrays they hold."""
    rng = np.random.default_rng(case.seed)
    sizes = dict(case.sizes)
    tensors, arrays = [], []
    for k, op in enumerate(case.operands):
        shape = tuple(sizes[c] for c in op.dims)
        dense = make_dense(op, shape, rng, case.dtype)
        t = sc.Tensor.from_numpy(dense, format=op.fmt if op.fmt != "dense" else "dense", name=_name(k))
        tensors.append(t)
        arrays.append(dense.astype(np.float64))
    return tensors, arrays


def _name(k: int) -> str:
    return "ABCDEFGH"[k]


def expected(case: Case, arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The float64 oracle: numpy.einsum, or the dense evaluator for index notation."""
    if case.is_einsum:
        return np.einsum(case.expr, *arrays)
    stmt = parse_statement(case.expr)
    return evaluate(stmt, {_name(k): a for k, a in enumerate(arrays)})


def tolerance(dtype: str) -> float:
    return {"float64": 1e-11, "float32": 2e-5, "int64": 0.0, "int32": 0.0}.get(dtype, 1e-2)


def run_case(case: Case, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Run sparsec on the case; return (result as dense float64, expected)."""
    tensors, arrays = build_operands(case)
    ref = expected(case, arrays)
    if case.is_einsum:
        out = api.einsum(case.expr, *tensors, out_format=case.out_format, target=target, dtype=case.dtype)
    else:
        fmts = {_name(k): op.fmt for k, op in enumerate(case.operands)}
        stmt = parse_statement(case.expr)
        if case.out_format:
            fmts[stmt.output.tensor] = case.out_format
        k = api.compile(case.expr, formats=fmts, dtype=case.dtype, target=target)
        out = k(**{_name(i): t for i, t in enumerate(tensors)})
    if hasattr(out, "to_host"):          # the Triton backend's device-resident sparse result
        out = out.to_host()
    if isinstance(out, sc.Tensor):
        assert case.out_format is not None, "a sparse result needs out_format"
        out.validate()
        assert out.format == sc.parse_format(case.out_format, out.ndim) or out.format.with_widths(32, 32) == \
            sc.parse_format(case.out_format, out.ndim), (out.format, case.out_format)
        got = out.to_numpy()
    else:
        assert case.out_format is None, f"expected a sparse {case.out_format} result, got {type(out).__name__}"
        got = out.cpu().numpy() if hasattr(out, "cpu") else np.asarray(out)
    return np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)


def check(got: np.ndarray, ref: np.ndarray, dtype: str) -> None:
    """Relative error bound that fits the dtype (per element, scaled by the result's magnitude)."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    tol = tolerance(dtype)
    finite = np.abs(ref[np.isfinite(ref)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    same = (got == ref) | (np.isnan(got) & np.isnan(ref))   # equal infinities and NaN/NaN agree
    assert not (np.isnan(got) & ~np.isnan(ref)).any(), "NaN where the oracle has a number"
    with np.errstate(invalid="ignore"):
        err = np.where(same, 0.0, np.abs(got - ref))
    assert not np.isnan(err).any(), "NaN where the oracle has a number"
    worst = float(err.max()) if err.size else 0.0
    assert worst <= tol * scale * (1 + 4 * max(ref.shape or (1,))), f"max abs error {worst:.3e} (scale {scale:.3e})"


# ------------------------------------------------------------------------------ the grid
SPARSE_2D = ("csr", "csc", "coo", "dcsr", "dcsc")
ALL_2D = ("dense",) + SPARSE_2D + ("bsr(2,2)", "bsr(3,2)", "ell", "bitmap")
CSF_3D = ("csf", "csf(0,2,1)", "csf(1,0,2)", "csf(1,2,0)", "csf(2,0,1)", "csf(2,1,0)", "coo", "dense")


def _sizes(rng: np.random.Generator, letters: str, special: int) -> tuple[tuple[str, int], ...]:
    out = []
    for c in letters:
        n = int(rng.integers(1, 12))
        out.append((c, n))
    if special == 1:
        out[0] = (out[0][0], 1)              # one row
    elif special == 2:
        out[-1] = (out[-1][0], 0)            # an empty dimension
    return tuple(out)


def grid(scale: int = 1) -> list[Case]:
    """All cases; ``scale`` multiplies the number of random shapes per combination."""
    cases: list[Case] = []
    seed = itertools.count(1)

    def add(label, expr, ops, out=None, dtypes=("float64", "float32"), shapes=3, letters=None):
        letters = letters or "".join(dict.fromkeys("".join(o.dims for o in ops)))
        for dt in dtypes:
            for s in range(shapes * scale):
                sd = next(seed)
                rng = np.random.default_rng(sd)
                cases.append(Case(label, expr, tuple(ops), out, dt, _sizes(rng, letters, s % 3), sd))

    for f in ALL_2D:
        add("spmv", "ij,j->i", [Operand(f, "ij"), Operand("dense", "j", 1.0)])
    add("spmv", "ij,j->i", [Operand("nm(2,4)", "ij", pattern="nm24"), Operand("dense", "j", 1.0)])
    add("spmv", "ij,j->i", [Operand("nm(2,4,packed)", "ij", pattern="nm24"), Operand("dense", "j", 1.0)])
    add("spmm", "ik,kj->ij", [Operand("nm(2,4,packed)", "ik", pattern="nm24"), Operand("dense", "kj", 1.0)])
    for f in ALL_2D:
        add("spmm", "ik,kj->ij", [Operand(f, "ik"), Operand("dense", "kj", 1.0)])
    for f in SPARSE_2D:
        add("spmm_sparse_b", "ik,kj->ij", [Operand("dense", "ik", 1.0), Operand(f, "kj")], shapes=2)
    for f in ("csr", "coo", "dcsr", "csc"):
        add("sddmm", "ij,ik,kj->ij", [Operand(f, "ij"), Operand("dense", "ik", 1.0), Operand("dense", "kj", 1.0)],
            out="csr")
    for fa, fb in itertools.product(("csr", "csc", "coo", "dcsr"), repeat=2):
        add("add", "C[i,j] = A[i,j] + B[i,j]", [Operand(fa, "ij"), Operand(fb, "ij")], out="csr", shapes=2,
            dtypes=("float64",))
        add("mul", "ij,ij->ij", [Operand(fa, "ij", 0.5), Operand(fb, "ij", 0.5)], out="csr", shapes=2,
            dtypes=("float64",))
    for fa, fb in (("csr", "csr"), ("csr", "csc"), ("dcsr", "csr"), ("coo", "csr")):
        add("spgemm", "ik,kj->ij", [Operand(fa, "ik"), Operand(fb, "kj")], out="csr", shapes=3)
    for f in CSF_3D:
        add("ttv", "ijk,k->ij", [Operand(f, "ijk"), Operand("dense", "k", 1.0)], shapes=2)
        add("ttm", "ijk,kl->ijl", [Operand(f, "ijk"), Operand("dense", "kl", 1.0)], shapes=1)
        add("mttkrp", "ijk,jl,kl->il", [Operand(f, "ijk"), Operand("dense", "jl", 1.0), Operand("dense", "kl", 1.0)],
            shapes=1)
    for f in ("csr", "coo", "dense", "dcsr"):
        add("inner", "ij,ij->", [Operand(f, "ij"), Operand("dense", "ij", 1.0)])
        add("rowsum", "ij->i", [Operand(f, "ij")])
        add("colsum", "ij->j", [Operand(f, "ij")])
        add("transpose", "ij->ji", [Operand(f, "ij")], shapes=2)
        add("transpose_csr", "ij->ji", [Operand(f, "ij")], out="csr", shapes=2, dtypes=("float64",))
        add("atx", "ij,i->j", [Operand(f, "ij"), Operand("dense", "i", 1.0)])
        add("elementwise", "C[i,j] = exp(A[i,j]) + max(B[i,j], 0)", [Operand(f, "ij"), Operand("csr", "ij")],
            shapes=2)
        add("relu", "C[i,j] = where(A[i,j] > 0, A[i,j], 0) * 2", [Operand(f, "ij")], out="csr", shapes=2,
            dtypes=("float64",))
        add("rowmax", "y[i] = max[j](A[i,j])", [Operand(f, "ij")], shapes=2)
        add("axpy_rows", "y[i] = A[i,j] * B[j] + C[i]", [Operand(f, "ij"), Operand("dense", "j", 1.0),
                                                          Operand("dense", "i", 1.0)], shapes=2)
    for f in ("csr", "coo", "dense"):
        add("trace", "ii->", [Operand(f, "ii")], shapes=2, letters="i")
        add("diag", "ii->i", [Operand(f, "ii")], shapes=2, letters="i")
    for f in ("csr", "csc", "coo"):
        add("spmv_int", "ij,j->i", [Operand(f, "ij"), Operand("dense", "j", 1.0)], dtypes=("int64",), shapes=2)
        add("all_zero", "ij,j->i", [Operand(f, "ij", pattern="zeros"), Operand("dense", "j", 1.0)], shapes=1)
    return cases


def extra_cases() -> list[Case]:
    """Hand-picked regressions (each one failed once)."""
    return [
        # rows absent from a COO/DCSR operand must still get max = 0, not -inf
        Case("rowmax_absent_rows", "y[i] = max[j](A[i,j])", (Operand("coo", "ij", 0.3),), None, "float64",
             (("i", 6), ("j", 1)), 391),
        Case("colmax_csr", "y[j] = max[i](A[i,j])", (Operand("csr", "ij", 0.9),), None, "float64",
             (("i", 5), ("j", 4)), 7),
        Case("colmax_dense_negative", "y[j] = max[i](A[i,j])", (Operand("dcsr", "ij", 1.0),), None, "float64",
             (("i", 3), ("j", 3)), 8),
        Case("max3", "y[i,j] = max[k](A[i,k,j])", (Operand("csf", "ikj", 0.4),), None, "float64",
             (("i", 4), ("k", 3), ("j", 5)), 9),
        Case("max_empty_range", "y[i] = max[j](A[i,j])", (Operand("csr", "ij", 0.4),), None, "float64",
             (("i", 3), ("j", 0)), 10),
    ]


def csr_tensor(a, name: str = "A", dtype: str | None = None, validate: bool = False) -> sc.Tensor:
    """A scipy CSR matrix's buffers as a ``csr`` Tensor, shared rather than copied (values cast to ``dtype``
    if given); ``validate`` runs the format's checks."""
    vals = a.data if dtype is None else a.data.astype(dtype)
    return sc.Tensor.from_buffers("csr", a.shape, [{}, {"pos": a.indptr, "crd": a.indices}], vals, name=name,
                                  validate=validate)
