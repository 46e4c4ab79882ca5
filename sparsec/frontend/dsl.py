"""Embedded Python DSL: index variables and tensor objects with ``[]`` and operators.

::

    from sparsec.frontend.dsl import index_vars, tensor, program, exp, maximum, reduce_max
    i, j, k = index_vars("i j k")
    A, B, C = tensor("A", 2, format="csr"), tensor("B", 2), tensor("C", 2)
    C[i, j] = A[i, k] * B[k, j]        # records C.assignment (all of them: C.statements)
    prog = program(C)                  # statements + TensorDecls of every tensor involved

Expressions support ``+ - * /`` (Python numbers on either side), unary ``-``,
``abs()``, the comparisons ``< <= > >=``, and ``&``, ``|``, ``~`` for logical
and/or/not. **Use** ``.eq(other)`` / ``.ne(other)`` **for** ``==`` / ``!=``:
``==`` on expressions stays structural equality (so expressions can be dict keys
and compared in tests), and comparing an expression with a plain number by ``==``
raises ``TypeError`` instead of silently giving ``False``. Chained comparisons and
``if expr:`` raise too (expressions have no truth value).

A reflected comparison is recorded as Python evaluates it: ``0 < A[i]`` becomes
``A[i] > 0`` (``Binary('gt', ...)``), which is not the same IR as the text
``0 < A[i]``; write the tensor first to match text exactly.

Functions: :func:`exp`, :func:`log`, :func:`sqrt`, :func:`abs_`, :func:`maximum`,
:func:`minimum`, :func:`where`, :func:`logical_and` / :func:`logical_or` /
:func:`logical_not`, and explicit reductions :func:`reduce_sum`,
:func:`reduce_max`, :func:`reduce_min` (first argument an index variable or a
tuple of them).

**Implicit reductions.** Assigning applies the same rule as the text and einsum
frontends (:mod:`sparsec.frontend.implicit`): index variables on the right that are
neither on the left nor bound by an explicit reduction are summed per top-level
additive term (split through ``+``, ``-`` and unary minus), in order of first
appearance; so ``y[i] = A[i, j] * x[j] + b[i]`` is ``sum[j](A*x) + b``.

0-d tensors are read as ``s[()]`` or used directly (``s * x[i]``) and written as
``s[()] = expr``.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Sequence

from ..errors import ShapeError, VerificationError
from ..formats import FormatLike, as_format
from ..ir.tensor_ir import (
    Access, Assignment, Binary, Expr, IndexVar, Literal, Program, Reduce, TensorDecl, Unary, Where,
    check_identifier,
)
from .implicit import make_assignment

__all__ = [
    "IndexVar", "TensorVar", "DExpr", "index_vars", "index_var", "tensor", "program",
    "exp", "log", "sqrt", "abs_", "maximum", "minimum", "where", "logical_and", "logical_or", "logical_not",
    "reduce_sum", "reduce_max", "reduce_min",
]

_order = itertools.count()  # global statement order, so program() keeps the order statements were written


def index_vars(names: str | Iterable[str]) -> tuple[IndexVar, ...]:
    """Index variables from ``"i j k"`` / ``"i, j, k"`` or an iterable of names (always a tuple)."""
    if isinstance(names, str):
        names = names.replace(",", " ").split()
    return tuple(IndexVar(n) for n in names)


def index_var(name: str) -> IndexVar:
    """One index variable."""
    return IndexVar(name)


class DExpr:
    """A DSL expression: wraps a tensor-IR :class:`Expr` and the tensors it reads."""

    __slots__ = ("node", "tensors")

    def __init__(self, node: Expr, tensors: Sequence["TensorVar"] = ()):
        self.node = node
        self.tensors: tuple[TensorVar, ...] = tuple(tensors)

    # arithmetic
    def __add__(self, o): return _binary("add", self, o)
    def __radd__(self, o): return _binary("add", o, self)
    def __sub__(self, o): return _binary("sub", self, o)
    def __rsub__(self, o): return _binary("sub", o, self)
    def __mul__(self, o): return _binary("mul", self, o)
    def __rmul__(self, o): return _binary("mul", o, self)
    def __truediv__(self, o): return _binary("div", self, o)
    def __rtruediv__(self, o): return _binary("div", o, self)
    def __neg__(self): return DExpr(Unary("neg", self.node), self.tensors)
    def __pos__(self): return self
    def __abs__(self): return abs_(self)

    # comparisons (== and != are methods, see the module docstring)
    def __lt__(self, o): return _binary("lt", self, o)
    def __le__(self, o): return _binary("le", self, o)
    def __gt__(self, o): return _binary("gt", self, o)
    def __ge__(self, o): return _binary("ge", self, o)

    def eq(self, other) -> "DExpr":
        """Elementwise ``self == other`` (``Binary('eq', ...)``)."""
        return _binary("eq", self, other)

    def ne(self, other) -> "DExpr":
        """Elementwise ``self != other`` (``Binary('ne', ...)``)."""
        return _binary("ne", self, other)

    # logic
    def __and__(self, o): return _binary("and", self, o)
    def __rand__(self, o): return _binary("and", o, self)
    def __or__(self, o): return _binary("or", self, o)
    def __ror__(self, o): return _binary("or", o, self)
    def __invert__(self): return logical_not(self)

    def __eq__(self, other: object) -> "StructurallyEqual":  # type: ignore[override]
        if isinstance(other, DExpr):
            return StructurallyEqual(self.node == other.node)
        if isinstance(other, Expr):
            return StructurallyEqual(self.node == other)
        if isinstance(other, (int, float, bool)):
            raise TypeError("'==' on a sparsec expression is structural equality; for an elementwise "
                            "comparison use expr.eq(value) (and expr.ne(value) for '!=')")
        return NotImplemented

    def __ne__(self, other: object) -> "StructurallyEqual":  # type: ignore[override]
        result = self.__eq__(other)
        return result if result is NotImplemented else StructurallyEqual(not result)

    def __hash__(self) -> int:
        return hash(self.node)

    def __bool__(self) -> bool:
        raise TypeError("a sparsec expression has no truth value (chained comparisons such as a < x < b, "
                        "'if', 'and' and 'or' need one); use where(...), '&' and '|'")

    def __repr__(self) -> str:
        from ..ir.tensor_printer import expr_text

        return f"DExpr({expr_text(self.node)})"


class StructurallyEqual:
    """The answer of ``==`` / ``!=`` between two expressions: whether they are the same expression.

    It is true or false (``assert``, ``if`` and dict lookups use it), but it is no value of an expression:
    ``(A[i] == B[i]) * x[i]`` would otherwise compute with a constant. Elementwise comparisons are
    ``a.eq(b)`` and ``a.ne(b)``.
    """

    __slots__ = ("value",)

    def __init__(self, value: bool):
        self.value = bool(value)

    def __bool__(self) -> bool:
        return self.value

    def __eq__(self, other: object) -> bool:
        return bool(self) == bool(other)

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return repr(self.value)


class TensorVar:
    """A named tensor of fixed rank; ``T[i, j]`` reads it, ``T[i, j] = expr`` writes it.

    ``statements`` lists every statement written to this tensor; ``assignment`` is
    the latest one.
    """

    def __init__(self, name: str, ndim: int, format: FormatLike | None = None, dtype: str = "float64",
                 shape: Sequence[int | None] | None = None):
        self.name = check_identifier(name, "tensor name")
        if not isinstance(ndim, int) or isinstance(ndim, bool) or ndim < 0:
            raise ShapeError(f"tensor {name!r}: ndim must be a non-negative integer, got {ndim!r}")
        self.ndim = ndim
        shape_t = None if shape is None else tuple(shape)
        if shape_t is not None and len(shape_t) != ndim:
            raise ShapeError(f"tensor {name!r} is {ndim}-D but shape {shape_t} has {len(shape_t)} entries")
        from ..api import _normalize_dtype

        self.decl = TensorDecl(self.name, ndim, as_format(format, ndim),
                               _normalize_dtype(dtype, f"tensor {self.name!r}"), shape_t)
        self._statements: list[tuple[int, Assignment, tuple[TensorVar, ...]]] = []

    @property
    def statements(self) -> list[Assignment]:
        """Statements that write this tensor, in the order they were written."""
        return [a for _, a, _ in self._statements]

    @property
    def assignment(self) -> Assignment:
        """The latest statement that writes this tensor."""
        if not self._statements:
            raise VerificationError(f"tensor {self.name!r} has not been assigned")
        return self._statements[-1][1]

    def _access(self, key) -> Access:
        idx = key if isinstance(key, tuple) else (key,)
        vars_: list[IndexVar] = []
        for v in idx:
            if isinstance(v, str):
                v = IndexVar(v)
            if not isinstance(v, IndexVar):
                raise TypeError(f"tensor {self.name!r}: indices must be index variables (from index_vars), "
                                f"got {v!r}")
            vars_.append(v)
        if len(vars_) != self.ndim:
            shown = f"{self.name}[{', '.join(v.name for v in vars_)}]"
            raise ShapeError(f"tensor {self.name!r} is {self.ndim}-D but indexed with {len(vars_)} indices: {shown}")
        return Access(self.name, tuple(vars_))

    def __getitem__(self, key) -> DExpr:
        return DExpr(self._access(key), (self,))

    def __setitem__(self, key, value) -> None:
        output = self._access(key)
        rhs = _wrap(value)
        stmt = make_assignment(output, rhs.node)
        self._statements.append((next(_order), stmt, rhs.tensors))

    def _scalar(self) -> DExpr:
        if self.ndim != 0:
            raise ShapeError(f"tensor {self.name!r} is {self.ndim}-D; index it, e.g. {self.name}[{', '.join('ijkl'[:self.ndim] or 'i')}]")
        return self[()]

    # a 0-d tensor may be used directly in expressions
    def __add__(self, o): return self._scalar() + o
    def __radd__(self, o): return o + self._scalar()
    def __sub__(self, o): return self._scalar() - o
    def __rsub__(self, o): return o - self._scalar()
    def __mul__(self, o): return self._scalar() * o
    def __rmul__(self, o): return o * self._scalar()
    def __truediv__(self, o): return self._scalar() / o
    def __rtruediv__(self, o): return o / self._scalar()
    def __neg__(self): return -self._scalar()
    def __pos__(self): return self._scalar()
    def __abs__(self): return abs_(self._scalar())
    def __lt__(self, o): return self._scalar() < o
    def __le__(self, o): return self._scalar() <= o
    def __gt__(self, o): return self._scalar() > o
    def __ge__(self, o): return self._scalar() >= o
    def __and__(self, o): return self._scalar() & o
    def __rand__(self, o): return o & self._scalar()
    def __or__(self, o): return self._scalar() | o
    def __ror__(self, o): return o | self._scalar()
    def __invert__(self): return ~self._scalar()

    def eq(self, other) -> DExpr:
        """Elementwise ``self == other`` of a 0-d tensor."""
        return self._scalar().eq(other)

    def ne(self, other) -> DExpr:
        """Elementwise ``self != other`` of a 0-d tensor."""
        return self._scalar().ne(other)

    def __repr__(self) -> str:
        return f"tensor({self.name!r}, {self.ndim}, format={str(self.decl.format)!r}, dtype={self.decl.dtype!r})"


def tensor(name: str, ndim: int | None = None, *, format: FormatLike | None = None, dtype: str = "float64",
           shape: Sequence[int | None] | None = None) -> TensorVar:
    """Declare a tensor (format defaults to dense, dtype to float64; ``ndim`` may come from ``shape``)."""
    if ndim is None:
        if shape is None:
            raise ShapeError(f"tensor {name!r}: give ndim or shape")
        ndim = len(tuple(shape))
    return TensorVar(name, ndim, format, dtype, shape)


def program(*tensors: TensorVar, verify: bool = True) -> Program:
    """Collect the statements writing ``tensors`` (and any tensor they read that was itself written).

    Statements keep the order they were written in; declarations come in order of
    first use (a statement's inputs, then its output). With ``verify`` (the default) the program goes through
    :func:`sparsec.ir.verify.verify`.
    """
    by_name: dict[str, TensorVar] = {}

    def register(t: TensorVar) -> None:
        if not isinstance(t, TensorVar):
            raise TypeError(f"program() takes tensors made by tensor(...), got {t!r}")
        other = by_name.setdefault(t.name, t)
        if other is not t and other.decl != t.decl:
            raise VerificationError(f"two different tensors are named {t.name!r}: {other!r} and {t!r}")

    records: dict[int, tuple[Assignment, TensorVar, tuple[TensorVar, ...]]] = {}
    todo = list(tensors)
    for t in todo:
        register(t)
    while todo:
        t = todo.pop()
        for seq, stmt, reads in t._statements:
            if seq in records:
                continue
            records[seq] = (stmt, t, reads)
            for r in reads:
                register(r)
                todo.append(r)
    ordered = [records[s] for s in sorted(records)]
    decl_order: list[str] = []
    for stmt, out, reads in ordered:
        for t in (*reads, out):
            if t.name not in decl_order:
                decl_order.append(t.name)
    for t in tensors:
        if t.name not in decl_order:
            decl_order.append(t.name)
    prog = Program(tuple(s for s, _, _ in ordered), tuple(by_name[n].decl for n in decl_order))
    if verify:
        from ..ir.verify import verify as _verify

        _verify(prog)
    return prog


# -- functions ----------------------------------------------------------------------------


def _wrap(x) -> DExpr:
    if isinstance(x, DExpr):
        return x
    if isinstance(x, StructurallyEqual):
        raise TypeError("'==' and '!=' between sparsec expressions compare their structure and give no "
                        "expression; for elementwise comparisons use a.eq(b) and a.ne(b)")
    if isinstance(x, TensorVar):
        return x._scalar()
    if isinstance(x, Expr):
        return DExpr(x)
    if isinstance(x, (bool, int, float)):
        return DExpr(Literal(x))
    try:
        import numpy as np

        if isinstance(x, np.generic) and x.ndim == 0:
            return DExpr(Literal(x.item()))
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"cannot use {type(x).__name__} {x!r} in a sparsec expression (numbers, tensors and "
                    "index expressions only)")


def _binary(op: str, a, b) -> DExpr:
    x, y = _wrap(a), _wrap(b)
    return DExpr(Binary(op, x.node, y.node), x.tensors + y.tensors)


def _unary(op: str, a) -> DExpr:
    x = _wrap(a)
    return DExpr(Unary(op, x.node), x.tensors)


def exp(x) -> DExpr:
    """Elementwise e**x."""
    return _unary("exp", x)


def log(x) -> DExpr:
    """Elementwise natural logarithm."""
    return _unary("log", x)


def sqrt(x) -> DExpr:
    """Elementwise square root."""
    return _unary("sqrt", x)


def abs_(x) -> DExpr:
    """Elementwise absolute value (the builtin ``abs(expr)`` works too)."""
    return _unary("abs", x)


def maximum(a, b) -> DExpr:
    """Elementwise maximum of two expressions (``max(a, b)`` in text)."""
    return _binary("max", a, b)


def minimum(a, b) -> DExpr:
    """Elementwise minimum of two expressions (``min(a, b)`` in text)."""
    return _binary("min", a, b)


def logical_and(a, b) -> DExpr:
    """Elementwise logical and of two boolean expressions (also ``a & b``)."""
    return _binary("and", a, b)


def logical_or(a, b) -> DExpr:
    """Elementwise logical or of two boolean expressions (also ``a | b``)."""
    return _binary("or", a, b)


def logical_not(a) -> DExpr:
    """Elementwise logical not of a boolean expression (also ``~a``)."""
    return _unary("not", a)


def where(cond, then, other) -> DExpr:
    """Elementwise select: ``then`` where ``cond`` holds, else ``other``."""
    if isinstance(cond, bool):
        raise TypeError("where() got a plain bool as its condition; for an elementwise test use "
                        "expr.eq(value) / expr.ne(value) rather than == / !=")
    c, a, b = _wrap(cond), _wrap(then), _wrap(other)
    return DExpr(Where(c.node, a.node, b.node), c.tensors + a.tensors + b.tensors)


def _reduce(op: str, vars_, body) -> DExpr:
    vs = vars_ if isinstance(vars_, (tuple, list)) else (vars_,)
    for v in vs:
        if not isinstance(v, IndexVar):
            raise TypeError(f"reduce_{op}: reduction variables must be index variables, got {v!r}")
    x = _wrap(body)
    return DExpr(Reduce(op, tuple(vs), x.node), x.tensors)


def reduce_sum(vars_: IndexVar | Sequence[IndexVar], body) -> DExpr:
    """``sum[vars](body)``: explicit sum over one index variable or a tuple of them."""
    return _reduce("sum", vars_, body)


def reduce_max(vars_: IndexVar | Sequence[IndexVar], body) -> DExpr:
    """``max[vars](body)``: maximum over one index variable or a tuple of them."""
    return _reduce("max", vars_, body)


def reduce_min(vars_: IndexVar | Sequence[IndexVar], body) -> DExpr:
    """``min[vars](body)``: minimum over one index variable or a tuple of them."""
    return _reduce("min", vars_, body)
