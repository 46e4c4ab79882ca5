"""Loop IR: *how* a statement is computed, read by both backends.

A :class:`Kernel` is a function over flat buffers (one per level buffer and one for
values, per tensor) and scalar parameters (index-variable extents). Its body is a
tree of statements:

* :class:`For` over ``[lo, hi)`` with a :class:`LoopKind` annotation (serial,
  parallel, vector, block, unroll) and a comment tying it to its index variable;
* :class:`While` for co-iteration of several sparse levels (merge lattices);
* :class:`If`, :class:`Assign` (scalar locals, mutable), :class:`Store` (optionally
  accumulating with ``add``/``max``/``min``), :class:`Comment`.

Expressions are typed: every node has a ``dtype`` that is a numpy dtype name or
``"index"`` (a signed integer wide enough for positions; the CPU backend uses 64
bits, the Triton backend may narrow to 32 when sizes allow) or ``"bool"``.

Semantics are those of :func:`sparsec.ir.interp.run_kernel`, the reference
interpreter:

* ``and``/``or`` short-circuit: the right operand may contain a load that is only
  in bounds when the left one holds (``u > 0 && buf[u - 1] > key``). Backends must
  not evaluate it speculatively.
* Every load is in bounds whenever the statement holding it executes; a
  :class:`Select` evaluates both arms, so neither arm contains a guarded load.
* Integer ``div`` is C division; ``floordiv``/``mod`` are Python's (operands here
  are never negative). Float ``max``/``min`` propagate NaN (as ``np.maximum``).
* ``shr`` (logical shift right) and ``bitand`` act on non-negative 64-bit integers
  (bitmap levels read their bits with them).
* Casts: float -> int truncates, bool -> 0/1, ``index`` is a signed 64-bit
  integer on the CPU.
* A parallel :class:`For` runs over ``[sc_lo, sc_hi)``: the host passes the
  chunk bounds (the full range is recorded beside the kernel).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator, Union

INDEX = "index"
BOOL = "bool"

LOOP_KINDS = ("serial", "parallel", "vector", "block", "unroll")
BIN_OPS = ("add", "sub", "mul", "div", "floordiv", "mod", "max", "min",
           "lt", "le", "gt", "ge", "eq", "ne", "and", "or", "shr", "bitand")
UN_OPS = ("neg", "exp", "log", "sqrt", "abs", "not")
CMP_OPS = ("lt", "le", "gt", "ge", "eq", "ne")
REDUCE_STORE_OPS = ("add", "max", "min")


def is_float(dtype: str) -> bool:
    """True for floating-point value dtypes."""
    return dtype in ("float16", "bfloat16", "float32", "float64")


def is_int(dtype: str) -> bool:
    """True for integer dtypes, ``index`` included."""
    return dtype == INDEX or dtype.startswith("int") or dtype.startswith("uint")


# ---------------------------------------------------------------------------- expressions
class LExpr:
    """Base class of loop-IR expressions; every node carries ``dtype``."""

    dtype: str

    def children(self) -> tuple["LExpr", ...]:
        return ()

    def walk(self) -> Iterator["LExpr"]:
        """This node and every node below it, pre-order."""
        yield self
        for c in self.children():
            yield from c.walk()

    # small conveniences for building IR by hand (passes and tests)
    def __add__(self, o: "LExpr | int") -> "LExpr":
        return binop("add", self, o)

    def __sub__(self, o: "LExpr | int") -> "LExpr":
        return binop("sub", self, o)

    def __mul__(self, o: "LExpr | int") -> "LExpr":
        return binop("mul", self, o)


@dataclass(frozen=True, eq=True)
class Const(LExpr):
    """A literal of the given dtype."""

    value: Union[int, float, bool]
    dtype: str = INDEX


@dataclass(frozen=True, eq=True)
class Var(LExpr):
    """A scalar: a local assigned by :class:`Assign`/:class:`For`, or a scalar parameter."""

    name: str
    dtype: str = INDEX


@dataclass(frozen=True, eq=True)
class Load(LExpr):
    """``buffer[index]``."""

    buffer: str
    index: LExpr
    dtype: str

    def children(self) -> tuple[LExpr, ...]:
        return (self.index,)


@dataclass(frozen=True, eq=True)
class BinOp(LExpr):
    """``a op b`` with ``op`` in :data:`BIN_OPS`; comparisons have dtype ``bool``."""

    op: str
    a: LExpr
    b: LExpr
    dtype: str

    def children(self) -> tuple[LExpr, ...]:
        return (self.a, self.b)


@dataclass(frozen=True, eq=True)
class UnOp(LExpr):
    """``op(a)`` with ``op`` in :data:`UN_OPS`."""

    op: str
    a: LExpr
    dtype: str

    def children(self) -> tuple[LExpr, ...]:
        return (self.a,)


@dataclass(frozen=True, eq=True)
class Select(LExpr):
    """``cond ? a : b``."""

    cond: LExpr
    a: LExpr
    b: LExpr
    dtype: str

    def children(self) -> tuple[LExpr, ...]:
        return (self.cond, self.a, self.b)


@dataclass(frozen=True, eq=True)
class Cast(LExpr):
    """Convert ``a`` to ``dtype`` (bool -> 0/1, float -> int truncates)."""

    a: LExpr
    dtype: str

    def children(self) -> tuple[LExpr, ...]:
        return (self.a,)


def expr_loads(e: LExpr) -> set[str]:
    """Buffers an expression loads from."""
    return {x.buffer for x in e.walk() if isinstance(x, Load)}


def stmt_exprs(s: "Stmt") -> list[LExpr]:
    """The expressions a statement evaluates itself (not those of nested statements)."""
    if isinstance(s, Assign):
        return [s.value]
    if isinstance(s, Store):
        return [s.index, s.value]
    if isinstance(s, For):
        return [s.lo, s.hi]
    if isinstance(s, (While, If)):
        return [s.cond]
    return []


def var_reads(x: "Stmt | LExpr") -> Counter:
    """How often each variable is read in an expression or a statement subtree."""
    exprs = [x] if isinstance(x, LExpr) else [e for t in x.walk() for e in stmt_exprs(t)]
    return Counter(v.name for e in exprs for v in e.walk() if isinstance(v, Var))


def assigned(s: "Stmt") -> dict[str, str]:
    """Variables assigned in a subtree (``For`` variables included), with their dtypes."""
    out: dict[str, str] = {}
    for t in s.walk():
        if isinstance(t, (Assign, For)):
            out.setdefault(t.var.name, t.var.dtype)
    return out


def rewrite(e: LExpr, fn: "Callable[[LExpr], LExpr | None]") -> LExpr:
    """``e`` rebuilt top-down: a node for which ``fn`` returns an expression is replaced by it (and not
    visited further); the others keep their operator and dtype over rewritten operands."""
    new = fn(e)
    if new is not None:
        return new
    if isinstance(e, (Var, Const)):
        return e
    if isinstance(e, Load):
        return Load(e.buffer, rewrite(e.index, fn), e.dtype)
    if isinstance(e, BinOp):
        return BinOp(e.op, rewrite(e.a, fn), rewrite(e.b, fn), e.dtype)
    if isinstance(e, UnOp):
        return UnOp(e.op, rewrite(e.a, fn), e.dtype)
    if isinstance(e, Select):
        return Select(rewrite(e.cond, fn), rewrite(e.a, fn), rewrite(e.b, fn), e.dtype)
    if isinstance(e, Cast):
        return Cast(rewrite(e.a, fn), e.dtype)
    raise TypeError(f"not a loop-IR expression: {e!r}")


def substitute(e: LExpr, env: "dict[str, LExpr]", cast: bool = False) -> LExpr:
    """``e`` with the variables named in ``env`` replaced by their expressions.

    With ``cast``, a replacement whose dtype differs from the variable's is wrapped in
    a :class:`Cast` to the variable's dtype (so the expression keeps its types).
    """
    def replace_var(x: LExpr) -> LExpr | None:
        if not isinstance(x, Var) or x.name not in env:
            return None
        v = env[x.name]
        return Cast(v, x.dtype) if cast and v.dtype != x.dtype else v

    return rewrite(e, replace_var)


def const(value: Union[int, float, bool], dtype: str = INDEX) -> Const:
    """A :class:`Const` with the value normalized to the dtype's Python type."""
    if dtype == BOOL:
        return Const(bool(value), BOOL)
    if is_float(dtype):
        return Const(_rounded(float(value), dtype), dtype)
    return Const(int(value), dtype)


def _rounded(value: float, dtype: str) -> float:
    """``value`` as ``dtype`` holds it: float16/float32 round, and overflow to +-inf as numpy's casts do
    (``1e300`` in a float16 kernel is inf, never a backend's overflow error). bfloat16 is left to the
    backend (it has no numpy type)."""
    if dtype in ("float16", "float32"):
        import numpy as np

        with np.errstate(over="ignore"):
            return float(np.asarray(value, dtype=dtype))
    return value


def _lift(x: "LExpr | int", like: LExpr) -> LExpr:
    return x if isinstance(x, LExpr) else const(x, like.dtype)


def binop(op: str, a: "LExpr | int", b: "LExpr | int") -> LExpr:
    """Build ``a op b`` with light constant folding for index arithmetic."""
    if not isinstance(a, LExpr):
        a = _lift(a, b)  # type: ignore[arg-type]
    b = _lift(b, a)
    dtype = BOOL if op in CMP_OPS else a.dtype
    if a.dtype == INDEX and b.dtype == INDEX and op in ("add", "sub", "mul"):
        if isinstance(a, Const) and isinstance(b, Const):
            return Const({"add": a.value + b.value, "sub": a.value - b.value, "mul": a.value * b.value}[op], INDEX)
        if op == "add" and isinstance(b, Const) and b.value == 0:
            return a
        if op == "add" and isinstance(a, Const) and a.value == 0:
            return b
        if op == "sub" and isinstance(b, Const) and b.value == 0:
            return a
        if op == "mul" and isinstance(b, Const) and b.value == 1:
            return a
        if op == "mul" and isinstance(a, Const) and a.value == 1:
            return b
        if op == "mul" and ((isinstance(a, Const) and a.value == 0) or (isinstance(b, Const) and b.value == 0)):
            return Const(0, INDEX)
    return BinOp(op, a, b, dtype)


# ---------------------------------------------------------------------------- statements
class Stmt:
    """Base class of loop-IR statements."""

    def children(self) -> tuple["Stmt", ...]:
        return ()

    def walk(self) -> Iterator["Stmt"]:
        """This statement and every statement nested in it, pre-order."""
        yield self
        for c in self.children():
            yield from c.walk()


@dataclass(frozen=True)
class Block(Stmt):
    """A sequence of statements."""

    stmts: tuple[Stmt, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stmts", tuple(self.stmts))

    def children(self) -> tuple[Stmt, ...]:
        return self.stmts


@dataclass(frozen=True)
class Assign(Stmt):
    """``var = value``; the first assignment in scope declares the local."""

    var: Var
    value: LExpr


@dataclass(frozen=True)
class Store(Stmt):
    """``buffer[index] = value`` or, with ``reduce``, ``buffer[index] reduce= value``.

    A reducing store may be executed concurrently by different iterations of a
    parallel loop only if the loop's ``atomic`` flag is set; backends then emit
    atomics.
    """

    buffer: str
    index: LExpr
    value: LExpr
    reduce: str | None = None


@dataclass(frozen=True)
class LoopKind:
    """How a loop runs.

    * ``serial``: one iteration after another.
    * ``parallel``: iterations are independent (CPU threads, GPU program ids);
      ``balance`` optionally names a ``pos`` buffer whose prefix sums split the work
      evenly by nonzeros instead of by iterations.
    * ``vector``: SIMD hint of ``width`` lanes (CPU).
    * ``block``: a ``tl.arange`` block of ``width`` lanes with masks (Triton).
    * ``unroll``: unroll by ``width``.
    """

    kind: str = "serial"
    width: int | None = None
    balance: str | None = None
    atomic: bool = False
    #: a parallel reduction loop whose chunks accumulate into private copies of the output (CPU: the host
    #: combines them; the GPU's programs have no copies and combine with atomics instead)
    private: bool = False

    def __post_init__(self) -> None:
        if self.kind not in LOOP_KINDS:
            raise ValueError(f"unknown loop kind {self.kind!r}")

    def __str__(self) -> str:
        if self.kind == "serial":
            return ""
        parts = [self.kind + (f"({self.width})" if self.width else "")]
        if self.balance:
            parts.append(f"balance={self.balance}")
        if self.atomic:
            parts.append("atomic")
        if self.private:
            parts.append("private")
        return " ".join(parts)


SERIAL = LoopKind()


@dataclass(frozen=True)
class For(Stmt):
    """``for var in [lo, hi)`` with step 1; ``comment`` ties it to an index variable."""

    var: Var
    lo: LExpr
    hi: LExpr
    body: Block
    kind: LoopKind = SERIAL
    comment: str = ""
    #: the tensor-IR index variable this loop binds (a level variable), or "" for helper loops.
    index_var: str = ""

    def children(self) -> tuple[Stmt, ...]:
        return (self.body,)


@dataclass(frozen=True)
class While(Stmt):
    """``while cond: body`` (co-iteration)."""

    cond: LExpr
    body: Block
    comment: str = ""
    index_var: str = ""

    def children(self) -> tuple[Stmt, ...]:
        return (self.body,)


@dataclass(frozen=True)
class If(Stmt):
    """``if cond: then else: orelse``."""

    cond: LExpr
    then: Block
    orelse: Block = field(default_factory=Block)

    def children(self) -> tuple[Stmt, ...]:
        return (self.then, self.orelse)


@dataclass(frozen=True)
class Comment(Stmt):
    """A comment carried into the printed IR and generated code."""

    text: str


# ---------------------------------------------------------------------------- kernels
@dataclass(frozen=True)
class BufferParam:
    """A flat array argument.

    ``tensor``/``part`` say where it comes from: part is ``vals``, ``pos<k>`` or
    ``crd<k>`` (level k) for tensor buffers, or a workspace name.
    ``role`` is ``in``, ``out`` (written, initialized by the host), or ``work``.
    """

    name: str
    dtype: str
    role: str = "in"
    tensor: str = ""
    part: str = ""


@dataclass(frozen=True)
class ScalarParam:
    """A scalar argument (an index-variable extent, a level size, a chunk bound)."""

    name: str
    dtype: str = INDEX


Param = Union[BufferParam, ScalarParam]


@dataclass(frozen=True)
class Kernel:
    """A function: parameters and a body. ``name`` is a valid identifier."""

    name: str
    params: tuple[Param, ...]
    body: Block
    doc: str = ""
    #: backend hints from the schedule, e.g. (("split_rows", True), ("segment", 128)) for Triton.
    hints: tuple[tuple[str, object], ...] = ()

    def buffer(self, name: str) -> BufferParam:
        """The buffer parameter called ``name``."""
        for p in self.params:
            if isinstance(p, BufferParam) and p.name == name:
                return p
        raise KeyError(name)

    @property
    def buffers(self) -> tuple[BufferParam, ...]:
        return tuple(p for p in self.params if isinstance(p, BufferParam))

    @property
    def scalars(self) -> tuple[ScalarParam, ...]:
        return tuple(p for p in self.params if isinstance(p, ScalarParam))


def outermost_loop(kernel: Kernel) -> For | None:
    """The first :class:`For` reached from the top of the body without entering a loop."""
    for s in kernel.body.stmts:
        if isinstance(s, For):
            return s
        if isinstance(s, (While,)):
            return None
    return None
