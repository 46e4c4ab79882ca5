"""The implicit-reduction rule and statement checks shared by all three frontends.

**Implicit-reduction rule.** Index variables on the right-hand side that are not
on the left-hand side and not bound by an explicit reduction are summed. The sum
is placed per *additive term*: the right-hand side is split through binary ``+``,
binary ``-`` and unary minus (recursively, only at the top of the expression), and
each resulting term ``t`` becomes ``Reduce('sum', vars, t)`` where ``vars`` are the
free index variables of ``t`` that are not on the left-hand side, in order of first
appearance (pre-order, left to right). A term with no such variables is left alone.
Examples::

    y[i] = A[i,j]*x[j] + b[i]   ->  y[i] = sum[j](A[i,j]*x[j]) + b[i]
    C[i] = exp(A[i,j])          ->  C[i] = sum[j](exp(A[i,j]))
    C[i] = -(A[i,j]*x[j])       ->  C[i] = -sum[j](A[i,j]*x[j])
    C[i] = -A[i,j]*x[j]         ->  C[i] = sum[j](-A[i,j]*x[j])   (the top node is *)
    s = x[i]*y[i]               ->  s = sum[i](x[i]*y[i])

When the right-hand side is a single term (its top node is not ``+``, ``-`` or
unary minus) the reduction wraps the whole right-hand side. The rule never
produces a reduction that rebinds a variable already bound by an explicit
reduction inside the term (``sum[j](A[i,j]) * x[j]`` is rejected: rename one ``j``).

:func:`make_assignment` applies the rule after checking the statement; the
frontends call it so that they build identical :class:`Assignment` objects.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import VerificationError
from ..ir.tensor_ir import Access, Assignment, Binary, Expr, IndexVar, Reduce, Unary


class StatementError(VerificationError):
    """A statement breaks an index-variable rule.

    ``var`` is the offending index variable; ``node`` the :class:`Reduce` node
    involved (or ``None`` when the problem is on the left-hand side), so a parser
    can point at the text that produced it.
    """

    def __init__(self, message: str, var: IndexVar, node: Reduce | None = None):
        super().__init__(message)
        self.var = var
        self.node = node


def free_vars(expr: Expr) -> list[IndexVar]:
    """Index variables used in ``expr`` and not bound by a reduction inside it (first-appearance order)."""
    out: list[IndexVar] = []

    def go(e: Expr, bound: frozenset[IndexVar]) -> None:
        if isinstance(e, Access):
            for v in e.indices:
                if v not in bound and v not in out:
                    out.append(v)
            return
        if isinstance(e, Reduce):
            go(e.body, bound | frozenset(e.vars))
            return
        for c in e.children():
            go(c, bound)

    go(expr, frozenset())
    return out


def additive_terms(expr: Expr) -> list[Expr]:
    """The top-level additive terms of ``expr`` (split through ``+``, ``-`` and unary minus)."""
    if isinstance(expr, Binary) and expr.op in ("add", "sub"):
        return additive_terms(expr.lhs) + additive_terms(expr.rhs)
    if isinstance(expr, Unary) and expr.op == "neg":
        return additive_terms(expr.operand)
    return [expr]


def apply_implicit_reductions(lhs_vars: Sequence[IndexVar], rhs: Expr) -> Expr:
    """Wrap each additive term of ``rhs`` in ``Reduce('sum', ...)`` over its free non-LHS variables."""
    lhs = set(lhs_vars)
    if isinstance(rhs, Binary) and rhs.op in ("add", "sub"):
        return Binary(rhs.op, apply_implicit_reductions(lhs_vars, rhs.lhs), apply_implicit_reductions(lhs_vars, rhs.rhs))
    if isinstance(rhs, Unary) and rhs.op == "neg":
        return Unary("neg", apply_implicit_reductions(lhs_vars, rhs.operand))
    summed = [v for v in free_vars(rhs) if v not in lhs]
    if not summed:
        return rhs
    for node in rhs.walk():
        if isinstance(node, Reduce):
            for v in node.vars:
                if v in summed:
                    raise StatementError(
                        f"index {v} is bound by {node.op}[{v}](...) and also used outside it in the same term, "
                        f"where it would be summed implicitly; rename one of them",
                        v,
                        node,
                    )
    return Reduce("sum", tuple(summed), rhs)


def check_statement(output: Access, rhs: Expr) -> None:
    """Check left-hand-side indices and explicit reductions; raise :class:`StatementError`."""
    seen: set[IndexVar] = set()
    for v in output.indices:
        if v in seen:
            raise StatementError(
                f"index {v} appears twice on the left-hand side {_access_text(output)}; "
                "each output index must be distinct",
                v,
            )
        seen.add(v)

    def go(e: Expr, bound: tuple[IndexVar, ...]) -> None:
        if isinstance(e, Reduce):
            for v in e.vars:
                if v in seen:
                    raise StatementError(
                        f"reduction variable {v} also appears on the left-hand side {_access_text(output)}", v, e
                    )
                if v in bound:
                    raise StatementError(f"reduction variable {v} is already bound by an enclosing reduction", v, e)
            bound = bound + e.vars
        for c in e.children():
            go(c, bound)

    go(rhs, ())


def make_assignment(output: Access, rhs: Expr) -> Assignment:
    """Check a statement and apply the implicit-reduction rule; the one place frontends build statements."""
    check_statement(output, rhs)
    return Assignment(output, apply_implicit_reductions(output.indices, rhs))


def _access_text(a: Access) -> str:
    return f"{a.tensor}[{', '.join(v.name for v in a.indices)}]" if a.indices else a.tensor
