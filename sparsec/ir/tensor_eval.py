"""Dense reference evaluator of tensor IR: the semantics oracle, slow and obviously right.

:func:`evaluate` computes one :class:`Assignment` over dense numpy arrays in
float64. Every sub-expression is evaluated to an array over the index variables
it is free in (numpy broadcasting over named axes), so a product such as
``A[i,k] * B[k,j]`` materializes the whole ``i x k x j`` space: use small inputs.

Semantics (what every backend must reproduce):

* an access with a repeated index (``A[i, i]``) reads the diagonal;
* ``Reduce('sum' | 'max' | 'min', vars, body)`` reduces ``body`` over ``vars``; a
  variable the body does not use still counts (``sum[j](x[i])`` is ``n_j * x[i]``);
  over an empty range ``sum`` gives 0, ``max`` gives ``-inf`` and ``min`` ``+inf``;
* ``max``/``min`` (binary and reductions) propagate NaN, as ``np.maximum`` does;
* comparisons give booleans, ``where(c, a, b)`` selects where ``c`` is nonzero,
  ``logical_*`` treat nonzero as true; booleans in arithmetic are 0/1;
* ``/`` is true division, ``log``/``sqrt`` of negatives give NaN (no warnings).

The result is a float64 array with the output's index order.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import ShapeError, VerificationError
from .tensor_ir import Access, Assignment, Binary, Expr, IndexVar, Literal, Program, Reduce, Unary, Where

__all__ = ["evaluate", "evaluate_program"]

_Val = tuple[np.ndarray, tuple[IndexVar, ...]]  # data with one axis per index variable, in that order

_UNARY = {"neg": np.negative, "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs, "not": np.logical_not}
_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide, "max": np.maximum,
           "min": np.minimum, "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
           "eq": np.equal, "ne": np.not_equal, "and": np.logical_and, "or": np.logical_or}
_REDUCE = {"sum": (np.sum, 0.0), "max": (np.max, -np.inf), "min": (np.min, np.inf)}


def evaluate(assignment: Assignment, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Evaluate ``assignment`` with the dense ``arrays`` (by tensor name); return the output array."""
    data = {name: np.asarray(a, dtype=np.float64) for name, a in arrays.items()}
    extents = _extents(assignment, data)
    with np.errstate(all="ignore"):
        arr, axes = _eval(assignment.expr, data, extents)
        out = assignment.output
        if len(set(out.indices)) != len(out.indices):
            raise VerificationError(f"output {out.tensor} repeats an index: {[v.name for v in out.indices]}")
        for v in out.indices:
            if v not in axes:
                raise VerificationError(f"index {v} of output {out.tensor} does not appear on the right-hand side")
        extra = [v for v in axes if v not in out.indices]
        if extra:
            raise VerificationError(f"index {extra[0]} is neither an output index nor reduced")
        arr, _ = _align((arr, axes), out.indices, extents)
    return np.asarray(arr, dtype=np.float64)


def evaluate_program(program: Program, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the statements in order; return ``arrays`` plus every output, by name."""
    env = dict(arrays)
    for s in program.statements:
        env[s.output.tensor] = evaluate(s, env)
    return env


def _extents(a: Assignment, data: Mapping[str, np.ndarray]) -> dict[IndexVar, int]:
    ext: dict[IndexVar, int] = {}
    where: dict[IndexVar, str] = {}
    for acc in a.accesses():
        if acc.tensor not in data:
            raise VerificationError(f"no array given for tensor {acc.tensor!r}")
        shape = data[acc.tensor].shape
        if len(shape) != len(acc.indices):
            raise ShapeError(f"tensor {acc.tensor!r} has shape {shape} but is accessed with {len(acc.indices)} indices")
        for dim, (v, n) in enumerate(zip(acc.indices, shape)):
            if v in ext and ext[v] != n:
                raise ShapeError(f"index {v} has extent {ext[v]} in {where[v]} but {n} in {acc.tensor} (dimension {dim})")
            ext.setdefault(v, n)
            where.setdefault(v, f"{acc.tensor} (dimension {dim})")
    for e in a.expr.walk():
        if isinstance(e, Reduce):
            for v in e.vars:
                if v not in ext:
                    raise ShapeError(f"reduction index {v} has no extent: no operand is accessed with it")
    return ext


def _align(val: _Val, axes: tuple[IndexVar, ...], extents: Mapping[IndexVar, int]) -> _Val:
    """Transpose and broadcast ``val`` to exactly ``axes`` (a superset of its own)."""
    arr, have = val
    order = [have.index(v) for v in axes if v in have]
    arr = np.transpose(arr, order) if order else arr
    shape = [extents[v] if v in have else 1 for v in axes]
    arr = np.reshape(arr, shape)
    return np.broadcast_to(arr, tuple(extents[v] for v in axes)), axes


def _union(*axes_lists: tuple[IndexVar, ...]) -> tuple[IndexVar, ...]:
    out: list[IndexVar] = []
    for axes in axes_lists:
        for v in axes:
            if v not in out:
                out.append(v)
    return tuple(out)


def _eval(e: Expr, data: Mapping[str, np.ndarray], extents: Mapping[IndexVar, int]) -> _Val:
    if isinstance(e, Literal):
        return np.asarray(e.value), ()
    if isinstance(e, Access):
        arr = data[e.tensor]
        axes = _union(e.indices)
        if len(axes) != len(e.indices):  # repeated index: take the diagonal
            letters = {v: chr(ord("a") + k) for k, v in enumerate(axes)}
            spec = "".join(letters[v] for v in e.indices) + "->" + "".join(letters[v] for v in axes)
            arr = np.einsum(spec, arr)
        return arr, axes
    if isinstance(e, Unary):
        arr, axes = _eval(e.operand, data, extents)
        if e.op == "neg" and arr.dtype == np.bool_:
            arr = arr.astype(np.float64)
        return _UNARY[e.op](arr), axes
    if isinstance(e, Binary):
        a, b = _eval(e.lhs, data, extents), _eval(e.rhs, data, extents)
        axes = _union(a[1], b[1])
        x, y = _align(a, axes, extents)[0], _align(b, axes, extents)[0]
        if e.op in ("add", "sub", "mul", "div", "max", "min"):
            x, y = x.astype(np.float64), y.astype(np.float64)
        return _BINARY[e.op](x, y), axes
    if isinstance(e, Where):
        vals = [_eval(c, data, extents) for c in (e.cond, e.then, e.other)]
        axes = _union(*(v[1] for v in vals))
        c, a, b = (_align(v, axes, extents)[0] for v in vals)
        return np.where(c.astype(bool), a.astype(np.float64), b.astype(np.float64)), axes
    if isinstance(e, Reduce):
        body = _eval(e.body, data, extents)
        axes = _union(body[1], e.vars)
        arr = _align(body, axes, extents)[0].astype(np.float64)
        fn, identity = _REDUCE[e.op]
        red = tuple(axes.index(v) for v in e.vars)
        keep = tuple(v for v in axes if v not in e.vars)
        if arr.size == 0:
            return np.full(tuple(extents[v] for v in keep), identity), keep
        return fn(arr, axis=red), keep
    raise VerificationError(f"not a tensor-IR expression: {e!r}")
