"""Text form of tensor IR: index notation that :func:`sparsec.frontend.parse_statement` reads back.

``statement_text`` prints one :class:`Assignment` so that parsing the text gives an
equal Assignment: reductions are explicit (``sum[k](...)``), parentheses are the
minimal ones the grammar's precedence needs (``a - (b + c)`` keeps them, since the
IR is a tree), and literals round-trip (``repr`` of floats, ``1e999`` for infinity,
``-(3)`` for ``neg`` of a literal since ``-3`` is the literal -3). NaN literals print
as ``nan``, which does not parse. Round-tripping holds for verified statements (every
right-hand-side index is an output index or bound by a reduction); otherwise the
parser's implicit-reduction rule adds reductions the original did not have.

``program_text`` adds an MLIR-like header, one ``// name : tensor<...>`` line per
declared tensor; the grammar treats ``//`` at the start of a line as a comment, so
the statements of a printed program parse back too::

    // A : tensor<?x?xf64, csr>
    // x : tensor<?xf64>
    // y : tensor<?xf64>
    y[i] = sum[j](A[i, j] * x[j])
"""

from __future__ import annotations

import math

from .loop_printer import short_dtype
from .tensor_ir import Access, Assignment, Binary, Expr, Literal, Program, Reduce, TensorDecl, Unary, Where

__all__ = ["statement_text", "program_text", "expr_text", "access_text", "decl_text"]

_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/",
          "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
_PREC = {"lt": 1, "le": 1, "gt": 1, "ge": 1, "eq": 1, "ne": 1, "add": 2, "sub": 2, "mul": 3, "div": 3}
_UNARY_PREC = 4
_ATOM = 5
_CALLS = {"exp": "exp", "log": "log", "sqrt": "sqrt", "abs": "abs", "not": "logical_not",
          "max": "max", "min": "min", "and": "logical_and", "or": "logical_or"}


def _literal(value: bool | int | float) -> tuple[str, int]:
    if isinstance(value, bool):
        return ("true" if value else "false"), _ATOM
    if isinstance(value, int):
        return str(value), (_UNARY_PREC if value < 0 else _ATOM)
    if math.isnan(value):
        return "nan", _ATOM
    if math.isinf(value):
        return ("-inf" if value < 0 else "inf"), (_UNARY_PREC if value < 0 else _ATOM)
    if math.isnan(value):
        return "nan", _ATOM
    text = repr(float(value))
    return text, (_UNARY_PREC if text.startswith("-") else _ATOM)


def _render(e: Expr) -> tuple[str, int]:
    """Text of ``e`` and the precedence level of its top operator."""
    if isinstance(e, Literal):
        return _literal(e.value)
    if isinstance(e, Access):
        return access_text(e), _ATOM
    if isinstance(e, Binary) and e.op in _INFIX:
        p = _PREC[e.op]
        # left-associative: the left operand may sit at the same level, the right one may not;
        # comparisons do not associate at all.
        left = _operand(e.lhs, p + 1 if p == 1 else p)
        right = _operand(e.rhs, p + 1)
        return f"{left} {_INFIX[e.op]} {right}", p
    if isinstance(e, Binary):
        return f"{_CALLS[e.op]}({expr_text(e.lhs)}, {expr_text(e.rhs)})", _ATOM
    if isinstance(e, Unary) and e.op == "neg":
        operand = e.operand
        if isinstance(operand, Literal) and not isinstance(operand.value, bool):
            # "-3" would parse as the literal -3, not as neg(3)
            return f"-({expr_text(operand)})", _UNARY_PREC
        text = _operand(operand, _UNARY_PREC)
        return (f"-({text})" if text.startswith("-") else f"-{text}"), _UNARY_PREC
    if isinstance(e, Unary):
        return f"{_CALLS[e.op]}({expr_text(e.operand)})", _ATOM
    if isinstance(e, Where):
        return f"where({expr_text(e.cond)}, {expr_text(e.then)}, {expr_text(e.other)})", _ATOM
    if isinstance(e, Reduce):
        return f"{e.op}[{', '.join(v.name for v in e.vars)}]({expr_text(e.body)})", _ATOM
    raise TypeError(f"not a tensor-IR expression: {e!r}")


def _operand(e: Expr, min_prec: int) -> str:
    text, p = _render(e)
    return text if p >= min_prec else f"({text})"


def expr_text(e: Expr) -> str:
    """Index-notation text of an expression, with minimal parentheses."""
    return _render(e)[0]


def access_text(a: Access) -> str:
    """``A[i, j]``; a 0-d access is the bare name."""
    return f"{a.tensor}[{', '.join(v.name for v in a.indices)}]" if a.indices else a.tensor


def statement_text(a: Assignment) -> str:
    """One statement, e.g. ``C[i, j] = sum[k](A[i, k] * B[k, j])``."""
    return f"{access_text(a.output)} = {expr_text(a.expr)}"


def decl_text(d: TensorDecl) -> str:
    """``tensor<?x?xf32, csr>``: extents (``?`` where unknown), element type, non-dense format."""
    shape = d.shape if d.shape is not None else (None,) * d.ndim
    dims = "".join(f"{'?' if n is None else n}x" for n in shape)
    enc = "" if d.format.is_dense else f", {d.format}"
    return f"tensor<{dims}{short_dtype(d.dtype)}{enc}>"


def program_text(p: Program) -> str:
    """Header of ``// name : tensor<...>`` lines, then one statement per line."""
    lines = [f"// {d.name} : {decl_text(d)}" for d in p.decls]
    lines += [statement_text(s) for s in p.statements]
    return "\n".join(lines) + "\n"
