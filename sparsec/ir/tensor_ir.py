"""Tensor IR: *what* is computed, in index notation, one statement per output.

Nodes are frozen dataclasses (hashable, comparable, safe to share). All three
frontends (einsum strings, index-notation text, the embedded Python DSL) build
these nodes; every later stage reads them.

Scalar body operators (``Unary.op`` / ``Binary.op``) form a closed vocabulary:

* unary: ``neg exp log sqrt abs not``
* binary arithmetic: ``add sub mul div max min``
* binary comparison (result is boolean): ``lt le gt ge eq ne``
* binary logic (boolean operands): ``and or``

Reductions are explicit :class:`Reduce` nodes (``sum``, ``max``, ``min``). The
frontends turn einsum-style implicit sums into ``Reduce('sum', ...)``: each
top-level additive term is summed over the index variables it uses that do not
appear on the left-hand side (so ``y[i] = A[i,j]*x[j] + b[i]`` is ``A x + b``).

Names of tensors and index variables are validated identifiers (see
:func:`check_identifier`): they may reach generated source code.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Union

from ..errors import VerificationError
from ..formats import Format

UNARY_OPS = ("neg", "exp", "log", "sqrt", "abs", "not")
ARITH_OPS = ("add", "sub", "mul", "div", "max", "min")
COMPARE_OPS = ("lt", "le", "gt", "ge", "eq", "ne")
LOGIC_OPS = ("and", "or")
BINARY_OPS = ARITH_OPS + COMPARE_OPS + LOGIC_OPS
REDUCE_OPS = ("sum", "max", "min")

#: dtypes a value buffer may have (numpy names; bfloat16 only on the Triton backend).
VALUE_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "bool")

_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")  # used with fullmatch: `$` would accept a trailing "\n"
#: names generated code uses for itself; user names may not collide with them.
RESERVED_NAMES = frozenset({"tl", "triton", "np", "torch", "math", "sc", "sparsec", "range", "min", "max",
                            "abs", "sum", "exp", "log", "sqrt", "where", "len", "int", "float", "bool",
                            "inf", "nan", "true", "false"})


def check_identifier(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a safe identifier for generated code, else raise.

    Accepted: an ASCII letter followed by up to 63 letters, digits or underscores,
    not a Python keyword and not a name sparsec's generated code uses itself.
    """
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise VerificationError(
            f"{what} {name!r} is not a valid identifier (use a letter followed by letters, digits or _, at most 64)"
        )
    if keyword.iskeyword(name) or name in RESERVED_NAMES or name.startswith("sc_"):
        raise VerificationError(f"{what} {name!r} is reserved; choose another name")
    return name


@dataclass(frozen=True)
class IndexVar:
    """An index variable such as ``i``; equal names are the same variable."""

    name: str

    def __post_init__(self) -> None:
        check_identifier(self.name, "index variable")

    def __str__(self) -> str:
        return self.name


class Expr:
    """Base class of scalar body expressions."""

    def children(self) -> tuple["Expr", ...]:
        """Direct sub-expressions, left to right."""
        return ()

    def walk(self) -> Iterator["Expr"]:
        """This node and every node below it, pre-order."""
        yield self
        for c in self.children():
            yield from c.walk()


@dataclass(frozen=True)
class Access(Expr):
    """``tensor[indices...]``: read (or, as a statement's output, write) a tensor."""

    tensor: str
    indices: tuple[IndexVar, ...] = ()

    def __post_init__(self) -> None:
        check_identifier(self.tensor, "tensor name")
        object.__setattr__(self, "indices", tuple(self.indices))


@dataclass(frozen=True, eq=False)
class Literal(Expr):
    """A scalar constant (int, float or bool). ``Literal(True) != Literal(1)``."""

    value: Union[int, float, bool]

    def __post_init__(self) -> None:
        if not isinstance(self.value, (bool, int, float)):
            raise VerificationError(f"a literal must be a number or a bool, got {self.value!r}")

    def _key(self) -> tuple:
        # bool is a subclass of int and 1 == 1.0 == True: compare the type too.
        return (type(self.value).__name__, self.value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Literal):
            return NotImplemented
        k1, k2 = self._key(), other._key()
        if k1[1] != k1[1] and k2[1] != k2[1]:  # NaN literals are equal to each other
            return k1[0] == k2[0]
        return k1 == k2

    def __hash__(self) -> int:
        return hash(self._key()) if self.value == self.value else hash((type(self.value).__name__, "nan"))


@dataclass(frozen=True)
class Unary(Expr):
    """``op(operand)`` with ``op`` in :data:`UNARY_OPS`."""

    op: str
    operand: Expr

    def __post_init__(self) -> None:
        if self.op not in UNARY_OPS:
            raise VerificationError(f"unknown unary operator {self.op!r}")

    def children(self) -> tuple[Expr, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class Binary(Expr):
    """``lhs op rhs`` with ``op`` in :data:`BINARY_OPS`."""

    op: str
    lhs: Expr
    rhs: Expr

    def __post_init__(self) -> None:
        if self.op not in BINARY_OPS:
            raise VerificationError(f"unknown binary operator {self.op!r}")

    def children(self) -> tuple[Expr, ...]:
        return (self.lhs, self.rhs)


@dataclass(frozen=True)
class Where(Expr):
    """``where(cond, then, other)``: elementwise select."""

    cond: Expr
    then: Expr
    other: Expr

    def children(self) -> tuple[Expr, ...]:
        return (self.cond, self.then, self.other)


@dataclass(frozen=True)
class Reduce(Expr):
    """``op[vars](body)``: reduce ``body`` over ``vars`` with ``op`` in :data:`REDUCE_OPS`."""

    op: str
    vars: tuple[IndexVar, ...]
    body: Expr

    def __post_init__(self) -> None:
        if self.op not in REDUCE_OPS:
            raise VerificationError(f"unknown reduction {self.op!r} (sum, max, min)")
        object.__setattr__(self, "vars", tuple(self.vars))
        if not self.vars:
            raise VerificationError("a reduction needs at least one index variable")
        if len(set(self.vars)) != len(self.vars):
            raise VerificationError(f"reduction over {[v.name for v in self.vars]} repeats a variable")

    def children(self) -> tuple[Expr, ...]:
        return (self.body,)


@dataclass(frozen=True)
class Assignment:
    """``output[indices] = expr``: one statement. ``output`` is an :class:`Access`."""

    output: Access
    expr: Expr

    def accesses(self) -> list[Access]:
        """Every tensor read on the right-hand side, left to right."""
        return [e for e in self.expr.walk() if isinstance(e, Access)]

    def index_vars(self) -> list[IndexVar]:
        """All index variables in order of first appearance (output first)."""
        seen: list[IndexVar] = []
        for v in self.output.indices:
            if v not in seen:
                seen.append(v)
        for e in self.expr.walk():
            vs = e.indices if isinstance(e, Access) else e.vars if isinstance(e, Reduce) else ()
            for v in vs:
                if v not in seen:
                    seen.append(v)
        return seen


@dataclass(frozen=True)
class TensorDecl:
    """A tensor's declaration: rank, storage format and value dtype.

    ``shape`` entries are ``None`` where the extent is only known when the kernel
    is called.
    """

    name: str
    ndim: int
    format: Format
    dtype: str
    shape: tuple[int | None, ...] | None = None

    def __post_init__(self) -> None:
        check_identifier(self.name, "tensor name")
        if self.format.ndim != self.ndim:
            raise VerificationError(
                f"tensor {self.name!r} has {self.ndim} dimensions but format {self.format} has {self.format.ndim}"
            )
        if self.dtype not in VALUE_DTYPES:
            raise VerificationError(f"tensor {self.name!r}: unsupported dtype {self.dtype!r}; use one of {VALUE_DTYPES}")


@dataclass(frozen=True)
class Program:
    """Statements in execution order plus a declaration for every tensor they use."""

    statements: tuple[Assignment, ...]
    decls: tuple[TensorDecl, ...] = field(default=())

    def decl(self, name: str) -> TensorDecl:
        """The declaration of tensor ``name``."""
        for d in self.decls:
            if d.name == name:
                return d
        raise VerificationError(f"tensor {name!r} is not declared")

    @property
    def decl_map(self) -> Mapping[str, TensorDecl]:
        """Declarations by tensor name."""
        return {d.name: d for d in self.decls}

    def inputs(self) -> list[str]:
        """Tensors read but never written, in order of first use."""
        written = {s.output.tensor for s in self.statements}
        out: list[str] = []
        for s in self.statements:
            for a in s.accesses():
                if a.tensor not in written and a.tensor not in out:
                    out.append(a.tensor)
        return out

    def outputs(self) -> list[str]:
        """Tensors written by some statement, in statement order."""
        out: list[str] = []
        for s in self.statements:
            if s.output.tensor not in out:
                out.append(s.output.tensor)
        return out
