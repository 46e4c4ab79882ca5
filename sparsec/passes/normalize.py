"""Tensor-IR rewrites that run before sparsification.

* :func:`normalize_reductions` moves factors that do not use the summed variables
  into the sum (``M[i,j] * sum[k](U*V)`` -> ``sum[k](M*U*V)``: SDDMM stays one loop
  nest) and merges nested reductions of the same kind.
* :func:`precompute_nested` turns every reduction that is still nested inside an
  expression into its own statement writing a dense temporary, so each statement
  the sparsifier sees is ``out = op[vars](body)`` with a reduction-free body, or a
  reduction-free expression. (Fusion, which keeps such temporaries out of memory,
  is a later pass.)
* :func:`split_repeated_indices` renames repeated indices of a sparse access
  (``A[i, i]`` with A sparse) into a fresh variable plus an equality filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..formats import parse_format
from ..ir.tensor_ir import (
    Access, Assignment, Binary, Expr, IndexVar, Reduce, TensorDecl, Unary, Where,
)


def free_vars(e: Expr) -> list[str]:
    """Index variables ``e`` uses that no reduction inside ``e`` binds, first-appearance order."""
    out: list[str] = []

    def go(x: Expr, bound: frozenset) -> None:
        if isinstance(x, Access):
            for v in x.indices:
                if v.name not in bound and v.name not in out:
                    out.append(v.name)
        elif isinstance(x, Reduce):
            go(x.body, bound | {v.name for v in x.vars})
        else:
            for c in x.children():
                go(c, bound)

    go(e, frozenset())
    return out


def _map_children(e: Expr, f: Callable[[Expr], Expr]) -> Expr:
    if isinstance(e, Unary):
        return Unary(e.op, f(e.operand))
    if isinstance(e, Binary):
        return Binary(e.op, f(e.lhs), f(e.rhs))
    if isinstance(e, Where):
        return Where(f(e.cond), f(e.then), f(e.other))
    if isinstance(e, Reduce):
        return Reduce(e.op, e.vars, f(e.body))
    return e


def _movable_into(factor: Expr, r: Reduce) -> bool:
    """A factor may join a sum's body when it uses none of the summed variables and no variable
    the sum does not already depend on: moving it in then adds no work per summed element
    (SDDMM's ``M[i,j] * sum[k](...)``), while ``sum[d](...) * V[j,e]`` must stay outside,
    or the d-loop would run once per e."""
    fv = set(free_vars(factor))
    return not ({v.name for v in r.vars} & fv) and fv <= set(free_vars(r))


def _pull(e: Expr) -> Expr:
    e = _map_children(e, _pull)
    if isinstance(e, Binary) and e.op in ("mul", "div"):
        lhs, rhs = e.lhs, e.rhs
        if isinstance(lhs, Reduce) and lhs.op == "sum" and _movable_into(rhs, lhs):
            return Reduce("sum", lhs.vars, _pull(Binary(e.op, lhs.body, rhs)))
        if e.op == "mul" and isinstance(rhs, Reduce) and rhs.op == "sum" and _movable_into(lhs, rhs):
            return Reduce("sum", rhs.vars, _pull(Binary("mul", lhs, rhs.body)))
    if isinstance(e, Unary) and e.op == "neg" and isinstance(e.operand, Reduce) and e.operand.op == "sum":
        r = e.operand
        return Reduce("sum", r.vars, Unary("neg", r.body))
    if isinstance(e, Reduce) and isinstance(e.body, Reduce) and e.body.op == e.op:
        return Reduce(e.op, e.vars + e.body.vars, e.body.body)
    return e


def normalize_reductions(stmt: Assignment) -> Assignment:
    """Apply the reduction rewrites above until nothing changes."""
    expr = stmt.expr
    while True:
        new = _pull(expr)
        if new == expr:
            return Assignment(stmt.output, new)
        expr = new


def _contains_reduce(e: Expr) -> bool:
    return any(isinstance(x, Reduce) for x in e.walk())


def precompute_nested(stmt: Assignment, decls: dict[str, TensorDecl], fresh: Callable[[str], str],
                      dtype: str) -> list[Assignment]:
    """Split ``stmt`` into statements whose only reduction is at the top.

    New dense temporaries are added to ``decls``; returns the statements in
    execution order (temporaries first).
    """
    before: list[Assignment] = []
    out_order = [v.name for v in stmt.output.indices]

    def extract(e: Expr, top: bool) -> Expr:
        if isinstance(e, Reduce) and top:
            return Reduce(e.op, e.vars, extract(e.body, False))
        if isinstance(e, Reduce):
            body = extract(e.body, False)
            seen = free_vars(Reduce(e.op, e.vars, body))
            fv = sorted(seen, key=lambda v: (out_order.index(v) if v in out_order else len(out_order), seen.index(v)))
            name = fresh("tmp")
            decls[name] = TensorDecl(name, len(fv), parse_format("dense", len(fv)), dtype)
            acc = Access(name, tuple(IndexVar(v) for v in fv))
            before.append(Assignment(acc, Reduce(e.op, e.vars, body)))
            return acc
        return _map_children(e, lambda c: extract(c, False))

    expr = extract(stmt.expr, True)
    return before + [Assignment(stmt.output, expr)]


def nested_reductions(stmt: Assignment) -> list[Reduce]:
    """Reductions below the statement's top-level one (outermost first)."""
    body = stmt.expr.body if isinstance(stmt.expr, Reduce) else stmt.expr
    return [e for e in body.walk() if isinstance(e, Reduce)]


def extract_reduction(stmt: Assignment, target: Reduce, decls: dict[str, TensorDecl], fresh: Callable[[str], str],
                      dtype: str) -> list[Assignment]:
    """Move one nested reduction into its own statement writing a temporary.

    The temporary is dense, unless it has the sparse output's indices in the output's order: then it takes
    the output's format (``C = A @ B + D`` into csr computes ``A @ B`` as a csr SpGEMM, not an n x n array).
    """
    out_order = [v.name for v in stmt.output.indices]
    seen = free_vars(target)
    fv = sorted(seen, key=lambda v: (out_order.index(v) if v in out_order else len(out_order), seen.index(v)))
    name = fresh("tmp")
    out_fmt = decls[stmt.output.tensor].format
    fmt = out_fmt if out_fmt.is_sparse and fv == out_order else parse_format("dense", len(fv))
    decls[name] = TensorDecl(name, len(fv), fmt, dtype)
    acc = Access(name, tuple(IndexVar(v) for v in fv))

    def swap(e: Expr) -> Expr:
        if e == target:  # structural: earlier passes may have rebuilt the nodes
            return acc
        return _map_children(e, swap)

    new_expr = swap(stmt.expr)
    if new_expr == stmt.expr:
        raise ValueError(f"reduction {target!r} not found in the statement")
    return [Assignment(acc, target), Assignment(stmt.output, new_expr)]


@dataclass(frozen=True)
class RepeatedIndexFix:
    """The rewritten statement and the (var, duplicate) pairs that must be equal."""

    stmt: Assignment
    filters: tuple[tuple[str, str], ...]
    dup_of: dict


def split_repeated_indices(stmt: Assignment, decls: dict[str, TensorDecl], fresh: Callable[[str], str]) -> RepeatedIndexFix:
    """Rename repeated indices inside sparse accesses; the duplicates are summed under a filter.

    A duplicate joins the innermost reduction that binds its variable (``sum[i](B[i, i])`` becomes
    ``sum[i, i_dup](B[i, i_dup])``), or, for a variable free in the statement, the top reduction
    (a sum around the statement if it has none). The filter keeps one duplicate per value of the
    variable, so sums, max and min all see each diagonal value once.
    """
    filters: list[tuple[str, str]] = []
    dup_of: dict[str, str] = {}
    attached: set[str] = set()

    def fix(e: Expr) -> Expr:
        if isinstance(e, Access) and decls[e.tensor].format.is_sparse and len(set(e.indices)) != len(e.indices):
            seen: list[str] = []
            idx: list[IndexVar] = []
            for v in e.indices:
                if v.name in seen:
                    d = fresh(f"{v.name}_dup")
                    filters.append((v.name, d))
                    dup_of[d] = v.name
                    idx.append(IndexVar(d))
                else:
                    seen.append(v.name)
                    idx.append(v)
            return Access(e.tensor, tuple(idx))
        if isinstance(e, Reduce):
            body = fix(e.body)
            mine = {v.name for v in e.vars}
            dups = [d for d, v in dup_of.items() if v in mine and d not in attached]
            attached.update(dups)  # under max/min too: the filter drops off-diagonal terms, it does not zero them
            return Reduce(e.op, e.vars + tuple(IndexVar(d) for d in dups), body)
        return _map_children(e, fix)

    expr = fix(stmt.expr)
    if not filters:
        return RepeatedIndexFix(stmt, (), {})
    dups = tuple(IndexVar(d) for d in dup_of if d not in attached)
    if dups and isinstance(expr, Reduce):
        # max/min too: over the filtered (var, duplicate) pairs, the reduction sees each value once
        expr = Reduce(expr.op, expr.vars + dups, expr.body)
    elif dups:
        expr = Reduce("sum", dups, expr)
    return RepeatedIndexFix(Assignment(stmt.output, expr), tuple(filters), dup_of)


def unsplit_repeated_indices(e: Expr, dup_of: dict[str, str]) -> Expr:
    """Undo :func:`split_repeated_indices` on a sub-expression: duplicates back to their variables."""
    if isinstance(e, Access):
        return Access(e.tensor, tuple(IndexVar(dup_of.get(v.name, v.name)) for v in e.indices))
    if isinstance(e, Reduce):
        return Reduce(e.op, tuple(v for v in e.vars if v.name not in dup_of), unsplit_repeated_indices(e.body, dup_of))
    return _map_children(e, lambda c: unsplit_repeated_indices(c, dup_of))


def _rename_vars(e: Expr, mapping: dict[str, str]) -> Expr:
    if isinstance(e, Access):
        return Access(e.tensor, tuple(IndexVar(mapping.get(v.name, v.name)) for v in e.indices))
    if isinstance(e, Reduce):
        return Reduce(e.op, tuple(IndexVar(mapping.get(v.name, v.name)) for v in e.vars), _rename_vars(e.body, mapping))
    return _map_children(e, lambda c: _rename_vars(c, mapping))


def inline_intermediates(stmts: list[Assignment], keep: set[str], fresh: Callable[[str], str]) -> list[Assignment]:
    """Substitute producers whose output is not in ``keep`` into the statements that read them.

    ``T[i,j] = A[i,j] * sum[k](U[i,k] * V[k,j]);  Y[i,l] = T[i,j] * W[j,l]`` becomes
    ``Y[i,l] = sum[j](A[i,j] * sum[k2](U[i,k2] * V[k2,j]) * W[j,l])``; the sparsifier
    then computes the inner sum per nonzero, and T never reaches memory. Values
    are unchanged: a tensor's format does not change its values.
    """
    out = list(stmts)
    changed = True
    while changed:
        changed = False
        for n, prod in enumerate(out):
            name = prod.output.tensor
            if name in keep or any(s.output.tensor == name for s in out[n + 1:]):
                continue
            readers = [m for m in range(n + 1, len(out)) if any(a.tensor == name for a in out[m].accesses())]
            if not readers or any(a.tensor == name for a in prod.accesses()):
                continue
            for m in readers:
                taken = {v.name for v in out[m].index_vars()}
                out[m] = Assignment(out[m].output, _substitute(out[m].expr, prod, fresh, taken))
            del out[n]
            changed = True
            break
    return out


def _substitute(e: Expr, prod: Assignment, fresh: Callable[[str], str], taken: set[str]) -> Expr:
    """``e`` with each read of ``prod``'s output replaced by its right-hand side. A summed-over variable of
    the producer keeps its name (a schedule may name the user's loop) unless the consumer already uses
    that name (``taken``, updated with the names each copy takes): then it gets a fresh one."""
    if isinstance(e, Access) and e.tensor == prod.output.tensor:
        mapping = {v.name: u.name for v, u in zip(prod.output.indices, e.indices)}
        for r in prod.expr.walk():
            if isinstance(r, Reduce):
                for v in r.vars:
                    if v.name not in mapping:
                        mapping[v.name] = v.name if v.name not in taken else fresh(v.name)
                        taken.add(mapping[v.name])
        return _rename_vars(prod.expr, mapping)
    return _map_children(e, lambda c: _substitute(c, prod, fresh, taken))
