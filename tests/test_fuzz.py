"""Differential fuzzer: random expressions, formats, shapes and carriers against the dense oracle.

Hypothesis draws a :class:`FuzzCase`: 1-4 index variables (extents 0-7), 1-4
operands of 1-4 dimensions (a repeated index reads a diagonal), an expression in
index notation built from ``+ - *``, ``max(a, b)``/``min(a, b)``, ``where(X > Y,
a, b)`` (comparisons only between operand values, so float32 rounding cannot flip
them), ``exp`` of bounded arguments, ``abs``, negation and literal scaling; every
index not on the left is summed implicitly or reduced explicitly with
``sum[v](...)`` / ``max[v](...)`` around the smallest subexpression that holds
all its uses. Or an einsum string over the same operands. Each operand gets a
random format that its pattern allows (dense, csr, csc, coo, dcsr, dcsc, csf in
any level order, bsr, ell, nm(2,4) for 2:4 data), a density (all-zero tensors
included), optionally explicit stored zeros, and a *carrier*: an
``sc.Tensor`` in its declared format, in another format (the kernel converts),
a numpy array (C, Fortran, negative-stride, strided or read-only), a scipy
matrix, or a torch tensor. The output is dense or sparse (``out_format``).

The oracle is :func:`sparsec.ir.tensor_eval.evaluate` on the same text in
float64 (``numpy.einsum`` for einsum strings). Targets ``cpu`` (through the fast
call path and through ``Kernel.run``, the general runtime) and ``interp`` run on
every example; ``triton`` (Triton's interpreter) runs on a smaller budget. Inputs
must come back unchanged.

Budget and reproducibility
--------------------------
By default every test runs a fixed number of examples with a fixed seed
(``derandomize=True``, no example database): CI sees the same examples every run.

Long mode (to hunt for bugs)::

    SPARSEC_FUZZ_EXAMPLES=5000 python -m pytest -q tests/test_fuzz.py -k fuzz_cpu_interp
    SPARSEC_FUZZ_EXAMPLES=5000 SPARSEC_FUZZ_SEED=7 python -m pytest -q tests/test_fuzz.py   # other examples

``SPARSEC_FUZZ_EXAMPLES`` sets ``max_examples`` for the cpu/interp test (the
Triton test gets a tenth of it); ``SPARSEC_FUZZ_SEED`` switches to random
exploration from that seed. Hypothesis shrinks a failure to a minimal
:class:`FuzzCase` and prints it; paste it into :data:`REGRESSIONS` below (with
``xfail`` and a reason if the fix is not in this change).

Known bugs, documented by strict-xfail regressions, are recognised by
:data:`KNOWN_BUGS` so that the fuzzer keeps looking for *new* ones; set
``SPARSEC_FUZZ_STRICT=1`` to fail on them too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fuzzing import FuzzEnv, KnownBug, explore_failures, sparsec_frames

import sparsec as sc
from grid import _nm24, check
from sparsec.frontend import parse_statement
from sparsec.ir.tensor_eval import evaluate

# ------------------------------------------------------------------------------------ settings
ENV = FuzzEnv.read("SPARSEC_FUZZ")
FUZZ_EXAMPLES, FUZZ_SEED, FUZZ_STRICT = ENV.examples, ENV.seed, ENV.strict
CI_EXAMPLES = 60
CI_TRITON_EXAMPLES = 8
_settings, _seeded = ENV.settings, ENV.seeded


# ------------------------------------------------------------------------------------ cases
@dataclass(frozen=True)
class FOp:
    """One operand: name, index letters (a repeated letter reads the diagonal), format, data, carrier.

    ``pattern``: ``random`` (uniform values with ``density``), ``zeros`` (all zero),
    ``nm24`` (at most 2 nonzeros per 4 columns), ``explicit`` (random, plus stored zeros).
    ``carrier``: ``tensor`` (sc.Tensor in ``fmt``), ``coo``/``dense`` (sc.Tensor in
    that format; the kernel converts), ``numpy`` / ``numpy_f`` / ``numpy_neg`` /
    ``numpy_strided`` / ``numpy_ro`` (dense only), ``scipy``, ``torch``.
    """

    name: str
    dims: str
    fmt: str = "dense"
    density: float = 0.4
    pattern: str = "random"
    carrier: str = "tensor"


@dataclass(frozen=True)
class FuzzCase:
    """An expression (index notation with ``=``, or einsum subscripts), its operands, sizes and output."""

    text: str
    operands: tuple[FOp, ...]
    sizes: tuple[tuple[str, int], ...]
    out_format: str | None = None
    dtype: str = "float64"
    seed: int = 0

    @property
    def is_einsum(self) -> bool:
        return "=" not in self.text


FLOAT_DTYPES = ("float64", "float32")
FORMATS: dict[int, tuple[str, ...]] = {
    1: ("dense", "coo", "csf"),
    2: ("dense", "csr", "csc", "coo", "dcsr", "dcsc", "csf(1,0)", "bsr(2,2)", "bsr(3,2)", "ell", "nm(2,4)",
        "bsr(2,1)", "bsr(1,3)"),
    3: ("dense", "coo", "csf", "csf(0,2,1)", "csf(1,0,2)", "csf(1,2,0)", "csf(2,0,1)", "csf(2,1,0)"),
    4: ("dense", "coo", "csf", "csf(3,1,0,2)", "csf(1,3,2,0)"),
}
OUT_FORMATS: dict[int, tuple[str | None, ...]] = {
    0: (None,),
    1: (None, "coo", "csf"),
    2: (None, "csr", "csc", "coo", "dcsr", "dcsc", "bsr(2,2)", "ell"),
    3: (None, "coo", "csf", "csf(2,0,1)"),
    4: (None, "coo", "csf"),
}
SIZE_TABLE = (1, 2, 3, 4, 5, 6, 7, 3, 4, 2, 5, 0)   # index 11 (the last) is an empty dimension


def _chance(draw: st.DrawFn, in_20: int) -> bool:
    """True with probability ``in_20 / 20`` (shrinks to False)."""
    return draw(st.integers(0, 19)) >= 20 - in_20


# ------------------------------------------------------------------------------------ expression trees
@dataclass
class _Node:
    """Expression tree node used while generating (rendered to index-notation text)."""

    kind: str                      # acc | lit | bin | fn | un | where | red
    op: str = ""
    kids: list["_Node"] = field(default_factory=list)
    name: str = ""
    dims: str = ""
    value: str = ""
    red_vars: str = ""
    bound: float = 1.0             # upper bound of |value| (keeps exp arguments small)

    def render(self, top: bool = False) -> str:
        k = self.kind
        if k == "acc":
            return f"{self.name}[{','.join(self.dims)}]"
        if k == "lit":
            return self.value
        if k == "bin":
            s = f"{self.kids[0].render()} {self.op} {self.kids[1].render()}"
            return s if top else f"({s})"
        if k == "fn":
            return f"{self.op}({self.kids[0].render(True)}, {self.kids[1].render(True)})"
        if k == "un":
            if self.op == "neg":
                return f"-{self.kids[0].render()}" if not top else f"-({self.kids[0].render(True)})"
            if self.op.startswith("scale"):
                return f"{self.value} * {self.kids[0].render()}" if top else f"({self.value} * {self.kids[0].render()})"
            if self.op == "offset":
                return f"({self.kids[0].render(True)} + {self.value})"
            return f"{self.op}({self.kids[0].render(True)})"
        if k == "where":
            x, y, a, b = self.kids
            return f"where({x.render()} > {y.render()}, {a.render(True)}, {b.render(True)})"
        if k == "red":
            return f"{self.op}[{','.join(self.red_vars)}]({self.kids[0].render(True)})"
        raise AssertionError(k)

    def vars(self) -> set[str]:
        if self.kind == "acc":
            return set(self.dims)
        out: set[str] = set()
        for c in self.kids:
            out |= c.vars()
        return out - set(self.red_vars)


def _paths(node: _Node, var: str, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Paths to every access of ``var`` below ``node``."""
    if node.kind == "acc":
        return [path] if var in node.dims else []
    out = []
    for k, c in enumerate(node.kids):
        out += _paths(c, var, path + (k,))
    return out


def _wrap_at(root: _Node, path: tuple[int, ...], make: Callable[[_Node], _Node]) -> _Node:
    if not path:
        return make(root)
    parent = root
    for k in path[:-1]:
        parent = parent.kids[k]
    parent.kids[path[-1]] = make(parent.kids[path[-1]])
    return root


def _common_prefix(paths: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    first = paths[0]
    n = len(first)
    for p in paths[1:]:
        n = min(n, len(p))
        for k in range(n):
            if p[k] != first[k]:
                n = k
                break
    return first[:n]


@st.composite
def _expression(draw: st.DrawFn, leaves: list[_Node], int_mode: bool, sizes: dict[str, int]) -> _Node:
    """A random expression tree over ``leaves`` (each used once, in order)."""
    if len(leaves) == 1:
        node = leaves[0]
    else:
        cut = draw(st.integers(1, len(leaves) - 1))
        a = draw(_expression(leaves[:cut], int_mode, sizes))
        b = draw(_expression(leaves[cut:], int_mode, sizes))
        op = draw(st.sampled_from(("*", "+", "-", "*", "max", "where", "min", "*")))
        if op in ("*", "+", "-"):
            bound = a.bound * b.bound if op == "*" else a.bound + b.bound
            node = _Node("bin", op, [a, b], bound=bound)
        elif op in ("max", "min"):
            node = _Node("fn", op, [a, b], bound=max(a.bound, b.bound))
        else:
            x = _first_access(a)
            y = _first_access(b) if _chance(draw, 14) else _Node("lit", value="0")
            node = _Node("where", kids=[_copy_acc(x), _copy_acc(y) if y.kind == "acc" else y, a, b],
                         bound=max(a.bound, b.bound))
    if _chance(draw, 5):
        ops = ("abs", "neg", "scale", "offset") + (() if int_mode else ("exp",))
        u = draw(st.sampled_from(ops))
        if u == "exp" and node.bound > 3:
            u = "abs"
        lit = "2" if int_mode else draw(st.sampled_from(("0.5", "2", "1.5")))
        bound = {"exp": 2.72 ** node.bound, "scale": node.bound * float(lit), "offset": node.bound + float(lit)}
        node = _Node("un", u, [node], value=lit, bound=bound.get(u, node.bound))
    return node


def _first_access(n: _Node) -> _Node:
    if n.kind == "acc":
        return n
    for c in n.kids:
        if c.kind != "lit":
            return _first_access(c)
    raise AssertionError("no access")


def _copy_acc(n: _Node) -> _Node:
    return _Node("acc", name=n.name, dims=n.dims)


# ------------------------------------------------------------------------------------ the strategy
@st.composite
def fuzz_cases(draw: st.DrawFn, max_vars: int = 4, max_operands: int = 4, einsum_in_20: int = 5,
               small: bool = False) -> FuzzCase:
    """A random :class:`FuzzCase` (hypothesis strategy)."""
    nvars = draw(st.integers(1, max_vars))
    letters = "ijkl"[:nvars]
    sizes = {c: SIZE_TABLE[draw(st.integers(0, len(SIZE_TABLE) - 1))] for c in letters}
    if small:
        sizes = {c: min(n, 4) for c, n in sizes.items()}
    dtype = draw(st.sampled_from(("float64", "float64", "float32", "float64", "int64")))
    int_mode = dtype == "int64"
    nops = draw(st.integers(1, max_operands))
    ops: list[FOp] = []
    for k in range(nops):
        ndim = draw(st.integers(1, min(3, nvars)))
        if nvars == 4 and _chance(draw, 2):
            ndim = 4
        perm = draw(st.permutations(letters))
        dims = "".join(perm[:ndim])
        if ndim == 2 and _chance(draw, 1):
            dims = dims[0] * 2                        # a diagonal access A[i,i]
        fmt = draw(st.sampled_from(FORMATS[ndim]))
        pattern = "random"
        if fmt == "nm(2,4)":
            pattern = "nm24" if len(set(dims)) == 2 else "random"
            if pattern == "random":
                fmt = "csr"
        r = draw(st.integers(0, 19))
        density = (0.0, 0.15, 0.4, 0.4, 0.7, 1.0)[r % 6]
        if pattern == "random" and r >= 18:
            pattern = "zeros"
        elif pattern == "random" and fmt != "dense" and r in (5, 11):
            pattern = "explicit"
        ops.append(FOp("ABCD"[k], dims, fmt, density, pattern, _draw_carrier(draw, fmt, dims)))
    used = sorted(set("".join(o.dims for o in ops)), key=letters.index)
    if draw(st.integers(0, 19)) < einsum_in_20 and not int_mode:
        out_vars = _draw_out_vars(draw, used)
        text = ",".join(o.dims for o in ops) + "->" + "".join(out_vars)
    else:
        leaves = [_Node("acc", name=o.name, dims=o.dims) for o in ops]
        if _chance(draw, 2):                          # reuse an operand: A[i,j] * A[i,j]
            leaves.append(_Node("acc", name=ops[0].name, dims=ops[0].dims))
        root = draw(_expression(leaves, int_mode, sizes))
        out_vars = _draw_out_vars(draw, sorted(root.vars(), key=letters.index))
        for v in sorted(root.vars() - set(out_vars), key=letters.index):
            how = draw(st.sampled_from(("implicit", "sum", "implicit", "max")))
            if how == "max" and (int_mode or sizes[v] == 0):
                how = "sum"   # max over an empty range is -inf; -inf * (absent 0) is 0 here but NaN densely
            if how == "implicit":
                continue
            prefix = _common_prefix(_paths(root, v))
            root = _wrap_at(root, prefix, lambda n, how=how, v=v: _Node(
                "red", how, [n], red_vars=v, bound=n.bound * (max(sizes[v], 1) if how == "sum" else 1)))
        text = f"out[{','.join(out_vars)}] = {root.render(True)}"
    out_format = draw(st.sampled_from(OUT_FORMATS[len(out_vars)]))
    if out_format is not None and _chance(draw, 10):
        out_format = None
    return FuzzCase(text, tuple(ops), tuple(sizes.items()), out_format, dtype, draw(st.integers(0, 2**16)))


def _draw_out_vars(draw: st.DrawFn, used: Sequence[str]) -> list[str]:
    perm = draw(st.permutations(list(used))) if used else []
    n = draw(st.integers(0, len(perm)))
    return list(perm[:n])


def _draw_carrier(draw: st.DrawFn, fmt: str, dims: str) -> str:
    if fmt == "dense":
        choices = ("tensor", "numpy", "numpy_f", "numpy_neg", "numpy_strided", "numpy_ro", "coo", "torch")
    elif fmt in ("csr", "csc", "coo") and len(dims) == 2:
        choices = ("tensor", "scipy", "dense", "coo", "torch")
    else:
        choices = ("tensor", "coo", "dense")
    return draw(st.sampled_from(choices))


# ------------------------------------------------------------------------------------ running a case
def _values(op: FOp, shape: tuple[int, ...], rng: np.random.Generator, dtype: str) -> np.ndarray:
    """Dense values of one operand (float64 array holding values exact in ``dtype``)."""
    if op.pattern == "zeros" or 0 in shape:
        return np.zeros(shape)
    if op.pattern == "nm24":
        a = _nm24(rng, shape)
    elif dtype == "int64":
        a = rng.integers(-4, 5, size=shape).astype(np.float64)
    else:
        a = rng.uniform(-1.0, 1.0, size=shape)
    a = np.where(rng.random(shape) < op.density, a, 0.0)
    return a.astype(dtype).astype(np.float64)


def _shape(op: FOp, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[c] for c in op.dims)


def build_operands(case: FuzzCase) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(dense float64 arrays, carriers handed to sparsec) by operand name."""
    rng = np.random.default_rng(case.seed)
    sizes = dict(case.sizes)
    arrays: dict[str, np.ndarray] = {}
    carriers: dict[str, Any] = {}
    for op in case.operands:
        shape = _shape(op, sizes)
        dense = _values(op, shape, rng, case.dtype)
        arrays[op.name] = dense
        carriers[op.name] = _carrier(op, dense.astype(case.dtype), rng)
    return arrays, carriers


def _carrier(op: FOp, arr: np.ndarray, rng: np.random.Generator) -> Any:
    c = op.carrier
    if c == "numpy":
        return np.ascontiguousarray(arr)
    if c == "numpy_f":
        return np.asfortranarray(arr)
    if c == "numpy_neg":
        flipped = np.ascontiguousarray(np.flip(arr, axis=0))
        return np.flip(flipped, axis=0)
    if c == "numpy_strided":
        big = np.zeros(tuple(2 * n for n in arr.shape), dtype=arr.dtype)
        view = big[tuple(slice(None, None, 2) for _ in arr.shape)]
        view[...] = arr
        return view
    if c == "numpy_ro":
        ro = arr.copy()
        ro.flags.writeable = False
        return ro
    if c == "scipy":
        import scipy.sparse as sp

        kind = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "coo": sp.coo_matrix}[op.fmt]
        return kind(arr)
    if c == "torch":
        import torch

        t = torch.from_numpy(np.ascontiguousarray(arr))
        if op.fmt == "csr":
            return t.to_sparse_csr()
        if op.fmt == "csc":
            return t.to_sparse_csc()
        if op.fmt == "coo":
            return t.to_sparse()
        return t
    fmt = {"tensor": op.fmt, "coo": "coo", "dense": "dense"}[c]
    if op.pattern == "explicit" and fmt != "dense":
        nz = np.array(np.nonzero(arr), dtype=np.int64).reshape(arr.ndim, -1)
        zero = np.array(np.nonzero(arr == 0), dtype=np.int64).reshape(arr.ndim, -1)
        pick = zero[:, rng.random(zero.shape[1]) < 0.3]
        coords = np.concatenate([nz, pick], axis=1)
        vals = np.concatenate([arr[tuple(nz)], np.zeros(pick.shape[1], arr.dtype)])
        return sc.Tensor.from_coo(coords, vals, arr.shape, format=fmt, name=op.name)
    return sc.Tensor.from_numpy(arr, format=fmt, name=op.name)


def oracle(case: FuzzCase, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """float64 reference: numpy.einsum, or the dense tensor-IR evaluator."""
    if case.is_einsum:
        return np.asarray(np.einsum(case.text, *(arrays[o.name] for o in case.operands)), dtype=np.float64)
    return evaluate(parse_statement(case.text), arrays)


def _snapshot(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, sc.Tensor):
        return x.values.copy(), [{k: v.copy() for k, v in lv.items()} for lv in x.levels]
    if hasattr(x, "toarray"):
        return x.toarray().copy()
    if hasattr(x, "to_dense"):
        return x.to_dense().clone()
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return bool(np.array_equal(a[0], b[0], equal_nan=True)) and all(
            all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a[1], b[1]))
    if hasattr(a, "equal"):
        return bool(a.equal(b))
    return bool(np.array_equal(a, b, equal_nan=True))


def to_dense_result(out: Any, case: FuzzCase) -> np.ndarray:
    """The result as a dense float64 array; checks a sparse result's format and buffers."""
    if hasattr(out, "to_host"):
        out = out.to_host()
    if isinstance(out, sc.Tensor):
        assert case.out_format is not None, f"got a sparse result for a dense output: {out}"
        out.validate()
        want = sc.parse_format(case.out_format, out.ndim)
        assert out.format.with_widths(32, 32) == want, (out.format, case.out_format)
        got = out.to_numpy()
    else:
        assert case.out_format is None, f"expected a sparse {case.out_format} result, got {type(out).__name__}"
        if hasattr(out, "cpu"):
            out = out.cpu().numpy()
        got = np.asarray(out)
        if not case.is_einsum:
            assert got.dtype == np.dtype(case.dtype), (got.dtype, case.dtype)
    return np.asarray(got, dtype=np.float64)


def run_fuzz_case(case: FuzzCase, target: str) -> None:
    """Run ``case`` on ``target`` (both call paths on cpu/interp) and compare with the oracle."""
    arrays, carriers = build_operands(case)
    ref = oracle(case, arrays)
    before = {n: _snapshot(x) for n, x in carriers.items()}
    results = []
    if case.is_einsum:
        names = [o.name for o in case.operands]
        results.append(sc.einsum(case.text, *(carriers[n] for n in names), out_format=case.out_format,
                                 target=target, dtype=case.dtype))
    else:
        formats = {o.name: o.fmt for o in case.operands}
        k = sc.compile(case.text, formats=formats, dtype=case.dtype, target=target, out_format=case.out_format)
        results.append(k(**carriers))
        if target != "triton":
            general = k.run(**carriers)["out"]
            if k.program.decl("out").ndim == 0:
                results.append(general.values.reshape(()).copy())
            else:
                results.append(general if case.out_format is not None else general.to_numpy())
    for out in results:
        got = to_dense_result(out, case)
        check(got, ref, case.dtype)
    for n, x in carriers.items():
        assert _same(before[n], _snapshot(x)), f"operand {n!r} was modified by the call"


# ------------------------------------------------------------------------------------ known bugs
#: failures the fuzzer has found whose fix is outside this test's files (see REGRESSIONS).
KNOWN_BUGS: list[KnownBug] = []


def _run_or_known(case: FuzzCase, target: str) -> None:
    try:
        run_fuzz_case(case, target)
    except Exception as e:
        if not FUZZ_STRICT and any(b.matches(e, case) for b in KNOWN_BUGS):
            return
        raise


# ------------------------------------------------------------------------------------ the fuzz tests
@_seeded
@_settings(FUZZ_EXAMPLES or CI_EXAMPLES)
@given(case=fuzz_cases())
def test_fuzz_cpu_interp(case: FuzzCase) -> None:
    """Random expressions on the LLVM CPU backend and the loop-IR interpreter agree with numpy."""
    for target in ("cpu", "interp"):
        _run_or_known(case, target)


@_seeded
@_settings(max(FUZZ_EXAMPLES // 10, CI_TRITON_EXAMPLES))
@given(case=fuzz_cases(max_vars=3, max_operands=3, small=True))
def test_fuzz_triton_interpreter(case: FuzzCase) -> None:
    """The same generator, smaller, on the Triton backend (Triton's interpreter on this machine)."""
    pytest.importorskip("triton")
    _run_or_known(case, "triton")


# ------------------------------------------------------------------------------------ regressions
def _r(text: str, ops: Sequence[FOp], sizes: str, out_format: str | None = None, dtype: str = "float64",
       seed_: int = 0) -> FuzzCase:
    """Compact constructor: ``sizes`` like ``"i3 j4"``."""
    sz = tuple((s[0], int(s[1:])) for s in sizes.split())
    return FuzzCase(text, tuple(ops), sz, out_format, dtype, seed_)


_CI = ("cpu", "interp")

#: (id, case, targets, xfail reason or None) -- minimized failures the fuzzer found.
REGRESSIONS: list[tuple[str, FuzzCase, tuple[str, ...], str | None]] = [
    ("spmv_plus_constant_csc",
     _r("out[i] = A[i,j] * x[j] + 2.5", [FOp("A", "ij", "csc"), FOp("x", "j")], "i3 j4", seed_=14), _CI, None),
    ("rowmax_plus_vector_csc",
     _r("out[i] = max[j](A[i,j]) + x[i]", [FOp("A", "ij", "csc"), FOp("x", "i")], "i3 j4", seed_=15), _CI, None),
    ("rowmax_plus_vector_dcsr",
     _r("out[i] = max[j](A[i,j]) + x[i]", [FOp("A", "ij", "dcsr"), FOp("x", "i")], "i3 j4", seed_=16), _CI, None),
    ("max_over_rows_inside_implicit_sum_csr",
     _r("out[] = max[j](A[j,i])", [FOp("A", "ji", "csr")], "i3 j4", seed_=1), _CI, None),
    ("colsum_times_vector_csr",
     _r("out[] = sum[k](A[k,j]) * B[i]", [FOp("A", "kj", "csr"), FOp("B", "i")], "i2 j3 k4", seed_=2), _CI, None),
    ("rowmax_times_vector_csc",
     _r("out[] = max[j](A[i,j]) * B[i]", [FOp("A", "ij", "csc"), FOp("B", "i")], "i3 j4", seed_=3), _CI, None),
    ("max_over_rows_inside_implicit_sum_dcsc",
     _r("out[] = max[j](A[j,i])", [FOp("A", "ji", "dcsc")], "i3 j4", seed_=4), _CI, None),
    ("rowmax_times_vector_coo",
     _r("out[] = max[j](A[i,j]) * B[i]", [FOp("A", "ij", "coo"), FOp("B", "i")], "i3 j4", seed_=5), _CI, None),
    ("colsum_to_sparse_vector_csr",
     _r("out[j] = A[i,j]", [FOp("A", "ij", "csr")], "i3 j4", "coo", seed_=6), _CI, None),
    ("einsum_colsum_to_sparse_vector_coo3",
     _r("ijk->j", [FOp("A", "ijk", "coo")], "i2 j3 k2", "coo", seed_=7), _CI, None),
    ("sparse_vector_dot_bsr_rows",
     _r("out[] = A[j] * B[j,i]", [FOp("A", "j", "coo"), FOp("B", "ji", "bsr(2,2)")], "i3 j4", seed_=8), _CI, None),
    ("einsum_sparse_vector_bsr",
     _r("j,ji->", [FOp("A", "j", "coo"), FOp("B", "ji", "bsr(2,2)")], "i3 j5", seed_=9), _CI, None),
    ("max_reduction_middle_level_sparse_out",
     _r("out[i,j] = max[k](B[i,k,j])", [FOp("B", "ikj", "csf", density=0.3)], "i2 j3 k3", "csr", seed_=13), _CI, None),
    ("max_reduction_dense_times_csf_sparse_out",
     _r("out[i,j] = max[k](A[i,j,k] * B[i,j,k])", [FOp("A", "ijk", density=1.0), FOp("B", "ijk", "csf(0,2,1)")],
        "i1 j1 k3", "csr", seed_=0), _CI, None),
    ("diagonal_inside_a_nested_sum",
     _r("out[] = A[i] + (B[i,i] * (C[i] * D[i]))", [FOp("A", "i"), FOp("B", "ii", "csr"), FOp("C", "i"),
                                                    FOp("D", "i")], "i4", seed_=17), _CI, None),
    ("diagonal_inside_a_precomputed_sum",
     _r("out[i] = A[i,j] * B[j,j] * x[j] + 2.5", [FOp("A", "ij", "csc"), FOp("B", "jj", "csr"), FOp("x", "j")],
        "i5 j4", seed_=18), _CI, None),
    ("max_over_a_diagonal",
     _r("out[] = max[i](A[i] * (B[i,i] * (C[i] * D[i])))", [FOp("A", "i"), FOp("B", "ii", "csr"), FOp("C", "i"),
                                                            FOp("D", "i")], "i4", seed_=19), _CI, None),
    ("max_over_a_diagonal_into_a_sparse_output",
     _r("out[i,j] = max[k](B[i,k,k,j])", [FOp("B", "ikkj", "csf", density=0.5)], "i3 j4 k3", "csr", seed_=20), _CI,
     None),
    ("einsum_trace_of_bsr",
     _r("jj->", [FOp("A", "jj", "bsr(2,2)", density=0.15)], "i1 j3 k1"), _CI, None),
    ("diagonal_of_bsr_with_unequal_blocks",
     _r("out[j] = A[j,j]", [FOp("A", "jj", "bsr(3,2)", density=0.6)], "j7", seed_=21), _CI, None),
    ("max_over_an_empty_range_into_a_sparse_output",
     _r("out[i,j] = max[k](B[i,k,j])", [FOp("B", "ikj", "csf")], "i2 j3 k0", "csr", seed_=22), _CI, None),
    ("min_over_an_empty_range_into_a_sparse_vector",
     _r("out[i] = min[k](A[i,k] * B[i,k])", [FOp("A", "ik", "csr"), FOp("B", "ik")], "i3 k0", "coo", seed_=23), _CI,
     None),
    ("diagonal_of_an_output_index_inside_a_precomputed_max",
     _r("out[] = max[i](A[i,j,k] * (B[i] * (C[i,j] * D[j,j])))",
        [FOp("A", "ijk"), FOp("B", "i"), FOp("C", "ij", "csr"), FOp("D", "jj", "csr")], "i1 j1 k1", seed_=24), _CI,
     None),
    # passing relatives of the failures above (they must keep working)
    ("max_reduction_middle_level_dense_out",
     _r("out[i,j] = max[k](B[i,k,j])", [FOp("B", "ikj", "csf", density=0.3)], "i2 j3 k3", seed_=13), _CI, None),
    ("rowmax_csr", _r("out[i] = max[j](A[i,j])", [FOp("A", "ij", "csr")], "i3 j4", seed_=10), _CI, None),
    ("colsum_to_sparse_vector_csc",
     _r("out[j] = A[i,j]", [FOp("A", "ij", "csc")], "i3 j4", "coo", seed_=11), _CI, None),
    ("sparse_vector_dot_dense_rows",
     _r("out[] = A[j] * B[j,i]", [FOp("A", "j", "coo"), FOp("B", "ji", "csr")], "i3 j4", seed_=12), _CI, None),
]


@pytest.mark.parametrize("case,targets,reason", [pytest.param(
    c, t, r, id=i, marks=[pytest.mark.xfail(strict=True, reason=r)] if r else []) for i, c, t, r in REGRESSIONS])
def test_fuzz_regression(case: FuzzCase, targets: tuple[str, ...], reason: str | None) -> None:
    """Each minimized fuzz failure, kept (strict xfail while its fix is pending)."""
    for target in targets:
        run_fuzz_case(case, target)


def test_generator_covers_the_space() -> None:
    """The strategy reaches every format, reduction kind, carrier and sparse outputs (guards the fuzzer)."""
    seen: set[str] = set()

    @settings(max_examples=1000, derandomize=True, database=None, suppress_health_check=list(HealthCheck),
              phases=(Phase.generate,))
    @given(case=fuzz_cases())
    def collect(case: FuzzCase) -> None:
        for o in case.operands:
            seen.add(f"fmt:{o.fmt}")
            seen.add(f"carrier:{o.carrier}")
            seen.add(f"pattern:{o.pattern}")
        seen.add("einsum" if case.is_einsum else "notation")
        for word in ("max[", "sum[", "exp(", "where(", "abs(", "max(", "min("):
            if word in case.text:
                seen.add(word)
        if case.out_format:
            seen.add("sparse_out")
        if any(n == 0 for _, n in case.sizes):
            seen.add("empty_dim")
        seen.add(f"dtype:{case.dtype}")

    collect()
    want = {f"fmt:{f}" for fs in FORMATS.values() for f in fs} | {
        "einsum", "notation", "max[", "sum[", "exp(", "where(", "abs(", "max(", "min(", "sparse_out", "empty_dim",
        "pattern:zeros", "pattern:nm24", "pattern:explicit", "carrier:scipy", "carrier:numpy_ro", "carrier:torch",
        "carrier:coo", "dtype:float32", "dtype:int64"}
    assert want <= seen, sorted(want - seen)


# ------------------------------------------------------------------------------------ exploration
def failure_signature(e: BaseException, target: str) -> str:
    """A short key grouping failures by cause: exception type, where it was raised in sparsec, message shape."""
    frames = sparsec_frames(e)
    if frames:
        return f"{type(e).__name__}|{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}"
    msg = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", str(e).splitlines()[0] if str(e) else "")
    return f"{target}|{type(e).__name__}|tests|{msg[:60]}"


def explore(examples: int, seed_: int, minimize: bool = True) -> dict[str, tuple[int, FuzzCase]]:
    """Draw ``examples`` cases without stopping at failures; group failures by signature, minimize each.

    Returns ``{signature: (count, minimal case)}``. Run as ``python tests/test_fuzz.py EXAMPLES SEED``.
    """
    def probe(case: FuzzCase) -> list[str]:
        sigs = []
        for target in ("cpu", "interp"):
            try:
                _run_or_known(case, target)
            except Exception as e:  # noqa: BLE001 - everything is a finding here
                sig = failure_signature(e, target)
                if sig not in sigs:
                    sigs.append(sig)
        return sigs

    return explore_failures(fuzz_cases(), probe, examples, seed_, minimize, minimize_examples=2000)


if __name__ == "__main__":
    import sys
    import warnings

    warnings.simplefilter("ignore")
    explore(int(sys.argv[1]) if len(sys.argv) > 1 else 500, int(sys.argv[2]) if len(sys.argv) > 2 else 0,
            minimize=(sys.argv[3] != "0") if len(sys.argv) > 3 else True)
