"""Tensor-IR verifier and index-extent inference.

:func:`verify` checks a :class:`Program` and raises
:class:`~sparsec.errors.VerificationError` naming the statement, tensor and index:

* every tensor is declared once, and accessed with as many indices as it has dimensions;
* output indices are distinct and each appears on the right-hand side (else its
  extent is unknown);
* every right-hand-side index is an output index or bound by an enclosing
  reduction (frontends turn implicit sums into explicit ``Reduce`` nodes); a
  reduction does not bind an output index or rebind an index bound outside it;
* a statement does not read its own output, a tensor is written by at most one
  statement, and no statement reads a tensor that a later statement writes;
* dtypes: comparisons and ``logical_*`` give booleans, booleans in arithmetic are
  fine (they count as integers), but a right-hand side may not be of a wider kind
  than the output stores (float into an int or bool tensor, int into bool).

:func:`infer_extents` gives each index variable its extent from operand shapes.
Index variables are program-wide: one name has one extent in the whole program
(that is what lets fusion match loops across statements); rename a variable to
give it a different extent in another statement.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import ShapeError, VerificationError
from .tensor_ir import Access, Assignment, Binary, Expr, IndexVar, Literal, Program, Reduce, Unary, Where
from .tensor_printer import access_text, statement_text

__all__ = ["verify", "verify_statement", "infer_extents", "expr_kind"]

_KIND_RANK = {"bool": 0, "int": 1, "float": 2}


def _dtype_kind(dtype: str) -> str:
    if dtype == "bool":
        return "bool"
    return "int" if dtype.startswith("int") else "float"


def verify(program: Program) -> None:
    """Check ``program``; raise :class:`VerificationError` on the first problem found."""
    decls: dict[str, object] = {}
    for d in program.decls:
        if d.name in decls:
            raise VerificationError(f"tensor {d.name!r} is declared twice")
        decls[d.name] = d
    writer: dict[str, int] = {}
    for k, s in enumerate(program.statements):
        name = s.output.tensor
        if name in writer:
            raise VerificationError(
                f"tensor {name!r} is written by statement {writer[name] + 1} and again by statement {k + 1} "
                f"({statement_text(s)}); each tensor may be written by one statement"
            )
        writer[name] = k
    for k, s in enumerate(program.statements):
        verify_statement(s, program, where=f"statement {k + 1} ({statement_text(s)})")
        for a in s.accesses():
            if a.tensor in writer and writer[a.tensor] > k:
                raise VerificationError(
                    f"statement {k + 1} reads tensor {a.tensor!r} before statement {writer[a.tensor] + 1} writes it"
                )


def verify_statement(s: Assignment, program: Program, where: str | None = None) -> None:
    """Check one statement against ``program``'s declarations."""
    where = where or statement_text(s)
    out = s.output
    for a in [out, *s.accesses()]:
        d = program.decl_map.get(a.tensor)
        if d is None:
            raise VerificationError(f"{where}: tensor {a.tensor!r} is not declared")
        if len(a.indices) != d.ndim:
            raise VerificationError(
                f"{where}: tensor {a.tensor!r} is {d.ndim}-D but accessed with {len(a.indices)} indices: {access_text(a)}"
            )
    for a in s.accesses():
        if a.tensor == out.tensor:
            raise VerificationError(
                f"{where}: output {out.tensor!r} is also read on its own right-hand side ({access_text(a)}); "
                "write the result to a new tensor"
            )
    _check_indices(s, where)
    kind = expr_kind(s.expr, program, where)
    out_dtype = program.decl(out.tensor).dtype
    if _KIND_RANK[kind] > _KIND_RANK[_dtype_kind(out_dtype)]:
        raise VerificationError(
            f"{where}: the right-hand side is {kind} but {out.tensor!r} stores {out_dtype}; "
            f"declare {out.tensor!r} with a {kind} dtype"
        )
    _check_int_literals(s, out_dtype, where)


def _check_int_literals(s: Assignment, out_dtype: str, where: str) -> None:
    """An integer literal of an integer statement must fit the output's dtype (numpy refuses
    ``300 * int8_array`` too); it would otherwise wrap silently when the result is stored."""
    if _dtype_kind(out_dtype) != "int":
        return
    info = np.iinfo(np.dtype(out_dtype))
    for e in s.expr.walk():
        v = e.value if isinstance(e, Literal) else None
        if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and not info.min <= v <= info.max:
            raise VerificationError(f"{where}: the literal {v} does not fit {out_dtype}, the dtype of "
                                    f"{s.output.tensor!r} ({info.min} to {info.max}); declare a wider dtype")


def _check_indices(s: Assignment, where: str) -> None:
    out = s.output
    out_vars = list(out.indices)
    for k, v in enumerate(out_vars):
        if v in out_vars[:k]:
            raise VerificationError(f"{where}: index {v} appears twice in the output {access_text(out)}")
    binders: dict[IndexVar, Reduce] = {}
    for e in s.expr.walk():
        if isinstance(e, Reduce):
            for v in e.vars:
                binders.setdefault(v, e)
    used: set[IndexVar] = set()

    def go(e: Expr, bound: tuple[IndexVar, ...]) -> None:
        if isinstance(e, Access):
            for v in e.indices:
                used.add(v)
                if v in out_vars or v in bound:
                    continue
                if v in binders:
                    r = binders[v]
                    raise VerificationError(
                        f"{where}: index {v} is bound by {r.op}[{', '.join(x.name for x in r.vars)}](...) "
                        f"but also used outside it, in {access_text(e)}"
                    )
                raise VerificationError(
                    f"{where}: index {v} in {access_text(e)} is neither an index of the output "
                    f"{access_text(out)} nor bound by a reduction"
                )
            return
        if isinstance(e, Reduce):
            for v in e.vars:
                if v in out_vars:
                    raise VerificationError(
                        f"{where}: index {v} of output {out.tensor!r} is reduced by {e.op}[{v}](...) on the right-hand side"
                    )
                if v in bound:
                    raise VerificationError(f"{where}: reduction over {v} is nested in another reduction over {v}")
            bound = bound + e.vars
        for c in e.children():
            go(c, bound)

    go(s.expr, ())
    for v in out_vars:
        if v not in used:
            raise VerificationError(
                f"{where}: index {v} of output {out.tensor!r} does not appear on the right-hand side, "
                "so its extent is unknown"
            )


def expr_kind(e: Expr, program: Program, where: str = "") -> str:
    """``"bool"``, ``"int"`` or ``"float"``: the kind of value ``e`` computes."""
    if isinstance(e, Access):
        return _dtype_kind(program.decl(e.tensor).dtype)
    if isinstance(e, Literal):
        v = e.value
        return "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "float"
    if isinstance(e, Unary):
        k = expr_kind(e.operand, program, where)
        if e.op == "not":
            return "bool"
        if e.op in ("exp", "log", "sqrt"):
            return "float"
        return "int" if k == "bool" else k  # neg / abs of a boolean count as integers
    if isinstance(e, Binary):
        a, b = expr_kind(e.lhs, program, where), expr_kind(e.rhs, program, where)
        if e.op in ("lt", "le", "gt", "ge", "eq", "ne", "and", "or"):
            return "bool"
        if e.op == "div":
            return "float"
        top = max(a, b, key=_KIND_RANK.__getitem__)
        if e.op in ("max", "min"):
            return top
        return "int" if top == "bool" else top
    if isinstance(e, Where):
        expr_kind(e.cond, program, where)
        a, b = expr_kind(e.then, program, where), expr_kind(e.other, program, where)
        return max(a, b, key=_KIND_RANK.__getitem__)
    if isinstance(e, Reduce):
        k = expr_kind(e.body, program, where)
        return "int" if (e.op == "sum" and k == "bool") else k
    raise VerificationError(f"{where}: not a tensor-IR expression: {e!r}")


def infer_extents(program: Program, shapes: Mapping[str, Sequence[int | None]]) -> dict[str, int]:
    """Extent of every index variable, from ``shapes`` (and declared shapes) of the tensors.

    Statements are processed in order; a tensor a statement writes gets the shape its
    output indices imply, so later statements reading it see it. Raises
    :class:`ShapeError` naming both operands, the index and both extents when two
    disagree, and when an index has no extent at all.
    """
    known: dict[str, tuple[int | None, ...]] = {}
    for d in program.decls:
        if d.shape is not None:
            known[d.name] = tuple(d.shape)
    for name, shp in shapes.items():
        shp = tuple(None if n is None else int(n) for n in shp)
        if name in known:
            shp = _merge_shape(name, known[name], shp)
        known[name] = shp
    extents: dict[str, int] = {}
    source: dict[str, tuple[str, int]] = {}
    for s in program.statements:
        accesses = [*s.accesses(), s.output]
        for a in accesses:
            shp = known.get(a.tensor)
            if shp is None:
                continue
            if len(shp) != len(a.indices):
                raise ShapeError(
                    f"tensor {a.tensor!r} has shape {shp} ({len(shp)}-D) but is accessed with "
                    f"{len(a.indices)} indices: {access_text(a)}"
                )
            for dim, (v, n) in enumerate(zip(a.indices, shp)):
                if n is None:
                    continue
                if v.name in extents and extents[v.name] != n:
                    t0, d0 = source[v.name]
                    raise ShapeError(
                        f"index {v} has extent {extents[v.name]} in {t0} (dimension {d0}) "
                        f"but {n} in {a.tensor} (dimension {dim})"
                    )
                if v.name not in extents:
                    extents[v.name] = n
                    source[v.name] = (a.tensor, dim)
        for v in s.index_vars():
            if v.name not in extents:
                raise ShapeError(
                    f"index {v} has no extent: no tensor with a known shape is accessed with it "
                    f"in {statement_text(s)}"
                )
        out = s.output
        if out.tensor not in known or None in known[out.tensor]:
            known[out.tensor] = tuple(extents[v.name] for v in out.indices)
    return extents


def _merge_shape(name: str, a: tuple[int | None, ...], b: tuple[int | None, ...]) -> tuple[int | None, ...]:
    if len(a) != len(b):
        raise ShapeError(f"tensor {name!r} is declared with shape {a} but given shape {b}")
    out = []
    for dim, (x, y) in enumerate(zip(a, b)):
        if x is not None and y is not None and x != y:
            raise ShapeError(f"tensor {name!r} is declared with extent {x} in dimension {dim} but given {y}")
        out.append(y if x is None else x)
    return tuple(out)
