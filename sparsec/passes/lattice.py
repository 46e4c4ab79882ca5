"""Merge lattices: which combinations of sparse operands a loop must visit.

At one loop, each sparse operand level bound by the loop variable is an
*iterator*. For every subset P of iterators we substitute 0 for the operands
outside P and simplify (structural zeros annihilate: ``0 * x = 0``, ``0 / x = 0``,
``exp(0) = 1`` is not zero, ``x / 0`` is not zero). The non-zero results give the
lattice points; a point keeps only the iterators its simplified body still reads.
If the body is non-zero with every iterator absent, the loop must visit every
coordinate (the *universe* point, the empty set).

This covers intersection (``*``), union (``+``), and any mix with elementwise
functions, comparisons and ``where`` in one algorithm, as merge lattices with
present/absent cases do in TACO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Callable, Hashable, Iterable, Sequence

import numpy as np

from ..ir.tensor_ir import Access, Binary, Expr, Literal, Reduce, Unary, Where



@dataclass(frozen=True, eq=False)
class Implicit(Literal):
    """A value computed from absent operands (implicit zeros) and constants alone, as ``exp(0)`` of an
    absent ``A`` is 1. Such a zero is structural: it annihilates a product or a quotient (``0 * x`` is
    0 even if x is NaN), as in every sparse compiler. A zero the user wrote is not: ``A[i,j] * 0`` of a
    stored NaN is NaN, as in numpy."""


ZERO = Implicit(0)

OperandKey = tuple  # (tensor name, index var names) identifies one access instance


@dataclass(frozen=True)
class Opaque(Expr):
    """A value computed earlier in the loop nest (a fused reduction's scalar).

    It is never a structural zero and reads no operand.
    """

    name: str


def operand_key(a: Access) -> OperandKey:
    """The identity of an access instance: equal accesses are one operand."""
    return (a.tensor, tuple(v.name for v in a.indices))


def is_zero(e: Expr) -> bool:
    """True when ``e`` is the literal zero (or false), implicit or written."""
    return isinstance(e, Literal) and not isinstance(e.value, str) and e.value == 0


def is_implicit_zero(e: Expr) -> bool:
    """True when ``e`` is a structural zero (see :class:`Implicit`)."""
    return isinstance(e, Implicit) and is_zero(e)


def _folded(value, *inputs: Expr) -> Literal:
    """A folded constant: implicit when any input was (see :class:`Implicit`)."""
    lit = _lit(value)
    return Implicit(lit.value) if any(isinstance(x, Implicit) for x in inputs) else lit


def _lit(v) -> Literal:
    if isinstance(v, (bool, np.bool_)):
        return Literal(bool(v))
    v = float(v) if isinstance(v, (float, np.floating)) else int(v)
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return Literal(v)
    return Literal(v)


def _fold_unary(op: str, v):
    with np.errstate(all="ignore"):
        x = np.float64(v) if not isinstance(v, bool) else v
        if op == "neg":
            return -v
        if op == "abs":
            return abs(v)
        if op == "not":
            return not v
        if op == "exp":
            return float(np.exp(x))
        if op == "log":
            return float(np.log(x))
        if op == "sqrt":
            return float(np.sqrt(x))
    raise ValueError(op)


def _fold_binary(op: str, a, b):
    with np.errstate(all="ignore"):
        if op == "add":
            return a + b
        if op == "sub":
            return a - b
        if op == "mul":
            return a * b
        if op == "div":
            return float(np.divide(np.float64(a), np.float64(b)))
        if op == "max":
            return max(a, b) if not (math.isnan(a) or math.isnan(b)) else float("nan")
        if op == "min":
            return min(a, b) if not (math.isnan(a) or math.isnan(b)) else float("nan")
        return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b, "eq": a == b, "ne": a != b,
                "and": bool(a) and bool(b), "or": bool(a) or bool(b)}[op]


def simplify(e: Expr, absent: frozenset) -> Expr:
    """Substitute 0 for the operand instances in ``absent`` and fold constants.

    Structural zeros (:class:`Implicit`) annihilate products and quotients (``0 * x = 0`` even if x
    might be NaN), as in every sparse compiler: implicit zeros are not IEEE zeros. Zeros written in
    the expression are: ``A[i,j] * 0`` of a stored NaN stays NaN.
    """
    if isinstance(e, Access):
        return ZERO if operand_key(e) in absent else e
    if isinstance(e, (Literal, Opaque)):
        return e
    if isinstance(e, Unary):
        a = simplify(e.operand, absent)
        if isinstance(a, Literal):
            return _folded(_fold_unary(e.op, a.value), a)
        return Unary(e.op, a)
    if isinstance(e, Binary):
        a, b = simplify(e.lhs, absent), simplify(e.rhs, absent)
        # annihilation before folding: 0 / 0 of an empty row (both sides absent) is 0, not a folded NaN
        if e.op == "mul" and (is_implicit_zero(a) or is_implicit_zero(b)):
            return ZERO
        if e.op == "div" and is_implicit_zero(a):
            return ZERO
        if isinstance(a, Literal) and isinstance(b, Literal):
            return _folded(_fold_binary(e.op, a.value, b.value), a, b)
        if e.op == "and" and (is_zero(a) or is_zero(b)):
            return _folded(False, a if is_zero(a) else b)
        if e.op == "add":
            if is_zero(a):
                return b
            if is_zero(b):
                return a
        if e.op == "sub":
            if is_zero(b):
                return a
            if is_zero(a):
                return Unary("neg", b)
        return Binary(e.op, a, b)
    if isinstance(e, Where):
        c = simplify(e.cond, absent)
        t, o = simplify(e.then, absent), simplify(e.other, absent)
        if isinstance(c, Literal):
            chosen = t if c.value else o
            # where(A > 0, A, 0) of an absent A: a constant chosen by implicit values is implicit too
            return _folded(chosen.value, c, chosen) if isinstance(chosen, Literal) else chosen
        if is_zero(t) and is_zero(o):
            return ZERO if is_implicit_zero(t) and is_implicit_zero(o) else _lit(0)
        return Where(c, t, o)
    if isinstance(e, Reduce):
        body = simplify(e.body, absent)
        if is_zero(body) and e.op == "sum":
            return _folded(0, body)
        return Reduce(e.op, e.vars, body)
    raise TypeError(f"unexpected tensor-IR node {e!r}")


def operands_in(e: Expr) -> set[OperandKey]:
    """Operand instances read by ``e``."""
    return {operand_key(a) for a in e.walk() if isinstance(a, Access)}


@dataclass(frozen=True)
class LatticePoint:
    """A set of iterators that must all be present, and the body simplified for it."""

    iterators: frozenset
    expr: Expr

    @property
    def is_universe(self) -> bool:
        return not self.iterators


def lattice(expr: Expr, iterators: Sequence[Hashable], skip: Callable[[Expr], bool] = is_zero) -> list[LatticePoint]:
    """Lattice points of ``expr`` over the given sparse ``iterators`` (operand keys).

    A combination whose simplified body satisfies ``skip`` needs no visit: 0 for
    sums and plain assignments; the identity (-inf) for a max, where an implicit 0
    is *not* skippable. Points come ordered from most iterators to fewest (the
    universe, if present, last).
    """
    its = list(iterators)
    points: dict[frozenset, Expr] = {}
    for r in range(len(its), -1, -1):
        for subset in combinations(its, r):
            absent = frozenset(its) - frozenset(subset)
            e = simplify(expr, absent)
            if skip(e):
                continue
            refs = frozenset(operands_in(e)) & frozenset(its)
            if refs not in points:
                points[refs] = e
    rank = {it: n for n, it in enumerate(its)}
    # Largest first; ties broken by operand order so generated code never depends on hash order.
    return [LatticePoint(k, v) for k, v in
            sorted(points.items(), key=lambda kv: (-len(kv[0]), sorted(rank[i] for i in kv[0])))]


def sub_points(points: Iterable[LatticePoint], of: LatticePoint) -> list[LatticePoint]:
    """Points whose iterators are a subset of ``of``'s (including ``of``), largest first."""
    return [p for p in points if p.iterators <= of.iterators]
