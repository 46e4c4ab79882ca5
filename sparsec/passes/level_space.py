"""Rewrite a statement into level space: one loop variable per stored level.

A blocked format stores dimension ``i`` as two levels, ``i floordiv b`` and
``i mod b`` (MLIR's dim-to-level maps). Loops then run over *level variables*:
``i`` splits into ``i_blk`` (extent ceil(n_i / b)) and ``i_in`` (extent b), and
every dense operand reads ``i_blk * b + i_in``. All sparse-format operands that
use ``i`` must agree on its block factor; an operand that disagrees is converted
to its unblocked form (BSR -> CSR, nm -> CSR), and the conversion is recorded so
the dumps show it.

The result, :class:`LevelSpace`, lists each operand instance with its format,
the level variable of each of its levels, and the conversions to apply first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..errors import VerificationError
from ..formats import Format, LevelExpr
from ..ir.tensor_ir import Access, Assignment, TensorDecl
from ..levels import Compressed, Dense, Level
from .lattice import OperandKey, operand_key


@dataclass(frozen=True)
class LevelVar:
    """A loop variable in level space.

    ``part`` is ``full`` (the whole dimension), ``outer`` (``dim floordiv factor``),
    ``inner`` (``dim mod factor``) or ``unit`` (``dim mod 1``: a level whose coordinate
    is always 0; it binds no loop, and its name is not an identifier).
    """

    name: str
    dim_var: str = ""
    part: str = "full"
    factor: int = 1

    def __post_init__(self) -> None:
        if not self.dim_var:
            object.__setattr__(self, "dim_var", self.name)

    @property
    def is_unit(self) -> bool:
        """True for a ``dim mod 1`` level: coordinate 0, no loop of its own."""
        return self.part == "unit"


def unit_var(dim_var: str) -> LevelVar:
    """The level variable of a ``dim mod 1`` level (blocks of one: bsr(1, n), bsr(m, 1))."""
    return LevelVar(f"{dim_var} mod 1", dim_var, "unit", 1)


@dataclass(frozen=True)
class Conversion:
    """Convert tensor ``tensor`` from ``src`` to ``dst`` before (or, for outputs, after) the kernel."""

    tensor: str
    src: Format
    dst: Format
    reason: str
    #: buffer prefix the converted copy is known by inside the kernel.
    alias: str = ""

    def text(self) -> str:
        """One MLIR-like line for the dumps."""
        return f"%{self.alias or self.tensor} = sparse_tensor.convert %{self.tensor} : {self.src} -> {self.dst}  // {self.reason}"


@dataclass
class Operand:
    """One access instance of a tensor in the statement (equal accesses share one)."""

    key: OperandKey
    tensor: str
    prefix: str  # buffer-name prefix inside the kernel (the tensor name, or an alias after conversion)
    fmt: Format
    dtype: str
    dim_vars: tuple[str, ...]
    is_output: bool = False
    level_vars: tuple[LevelVar, ...] = ()

    @property
    def levels(self) -> tuple[Level, ...]:
        return self.fmt.levels

    @property
    def is_dense(self) -> bool:
        """All-dense formats are accessed by address arithmetic, never iterated."""
        return not self.fmt.is_sparse


@dataclass
class LevelSpace:
    """Operands with their level variables, split factors and pending conversions.

    ``conversions`` apply to inputs before the kernel runs. The output is computed
    in ``output.fmt``; when that differs from ``requested_output`` it is converted
    after the kernel (see :attr:`output_conversion`).
    """

    operands: list[Operand]
    output: Operand
    factors: dict[str, int]
    requested_output: Format
    conversions: list[Conversion] = field(default_factory=list)
    output_reasons: list[str] = field(default_factory=list)
    #: names the user's program already uses (generated names must avoid them).
    taken: set[str] = field(default_factory=set)

    @property
    def output_conversion(self) -> Conversion | None:
        """The conversion from the computed output format to the requested one, if any."""
        if self.output.fmt == self.requested_output:
            return None
        return Conversion(self.output.tensor, self.output.fmt, self.requested_output, "; ".join(self.output_reasons))

    def convert(self, o: Operand, new: Format, reason: str) -> None:
        """Record that operand ``o`` is stored as ``new`` inside the kernel."""
        new = _converted_widths(o.fmt, new)
        if o.is_output:
            self.output_reasons.append(reason)
        else:
            alias = f"{o.tensor}_{_fmt_tag(new)}"
            k = 1
            while alias in self.taken or any(c.alias == alias for c in self.conversions):
                alias, k = f"{o.tensor}_{_fmt_tag(new)}{k}", k + 1
            self.conversions.append(Conversion(o.tensor, o.fmt, new, reason, alias=alias))
            o.prefix = alias
        o.fmt = new

    def all_operands(self) -> list[Operand]:
        """Inputs then the output."""
        return self.operands + [self.output]

    def operand(self, key: OperandKey) -> Operand:
        for o in self.operands:
            if o.key == key:
                return o
        raise KeyError(key)

    def level_vars(self) -> dict[str, LevelVar]:
        """Every level variable by name (inputs, output and dim vars of dense operands)."""
        out: dict[str, LevelVar] = {}
        for o in self.all_operands():
            for d in o.dim_vars:
                for lv in split_vars(d, self.factors.get(d, 1)):
                    out.setdefault(lv.name, lv)
        return out


def split_vars(dim_var: str, factor: int) -> tuple[LevelVar, ...]:
    """The level variables a dimension variable becomes (one, or outer + inner)."""
    if factor == 1:
        return (LevelVar(dim_var),)
    return (LevelVar(f"{dim_var}_blk", dim_var, "outer", factor), LevelVar(f"{dim_var}_in", dim_var, "inner", factor))


def _last_segment_level(fmt: Format) -> int:
    """Index of the last level that is not a singleton (-1 if none)."""
    return max((k for k, lvl in enumerate(fmt.levels) if lvl.kind != "singleton"), default=-1)


def _repeats_above_a_segment(fmt: Format) -> bool:
    """Whether a non-unique level sits above a level that is not a singleton.

    Such a format repeats a coordinate prefix, each repeat owning its own child segment
    (``(i : compressed(nonunique), j : singleton(nonunique), k : compressed)``). Kernels group a
    non-unique level's run of equal coordinates and walk one child segment per coordinate (COO's
    trailing singletons are the run itself), so these operands are converted to :func:`grouped`.
    """
    last = _last_segment_level(fmt)
    return any(not lvl.unique for lvl in fmt.levels[:last])


def grouped(fmt: Format) -> Format:
    """``fmt`` with every level above its last non-singleton level unique: non-unique and singleton
    levels there become compressed (duplicate coordinates are summed by the conversion)."""
    last = _last_segment_level(fmt)
    levels = [Compressed() if k < last and (not lvl.unique or lvl.kind == "singleton") else lvl
              for k, lvl in enumerate(fmt.levels)]
    return Format(tuple(levels), fmt.exprs, fmt.ndim, fmt.pos_width, fmt.crd_width)


def unblocked(fmt: Format) -> Format:
    """The same format without floordiv/mod blocking: BSR -> CSR, nm(n, m) -> CSR.

    A dimension stored by two levels keeps the position of its first level and
    becomes compressed if either of its two levels was not dense.
    """
    if not fmt.is_blocked:
        return fmt
    levels: list[Level] = []
    exprs: list[LevelExpr] = []
    sparse_dims = {e.dim for e, l in zip(fmt.exprs, fmt.levels) if not l.is_full}
    for e, l in zip(fmt.exprs, fmt.levels):
        if e.op == "mod":
            continue
        exprs.append(LevelExpr(e.dim))
        levels.append(Compressed() if e.dim in sparse_dims else Dense())
    return Format(tuple(levels), tuple(exprs), fmt.ndim, fmt.pos_width, fmt.crd_width)


def _converted_widths(old: Format, new: Format) -> Format:
    """``new`` with 8/16-bit widths raised to 32 unless it stores the same levels as ``old``.

    A tensor's widths fit the levels it has (``nm(2, 4)[pos32,crd8]``: coordinates 0..3;
    ``csc[pos32,crd8]``: at most 128 rows); another arrangement of its entries (CSC read as
    CSR stores column coordinates) may need wider ones, which the kernel reading the
    converted copy must be compiled for. Only a change of level properties (ordering) keeps them.
    """
    if min(new.pos_width, new.crd_width) >= 32:
        return new
    if new.exprs == old.exprs and [type(l) for l in new.levels] == [type(l) for l in old.levels]:
        return new
    return new.with_widths(max(new.pos_width, 32), max(new.crd_width, 32))


def _fmt_tag(fmt: Format) -> str:
    """A short identifier-safe tag for a format (``csr``, ``csf102``, ``fmt``)."""
    name = fmt.short_name() or "fmt"
    return "".join(ch for ch in name if ch.isalnum())


def _dim_factor(fmt: Format, dim: int) -> int:
    return fmt.block_sizes()[dim]


def build_level_space(
    stmt: Assignment,
    decls: Mapping[str, TensorDecl],
    out_decl: TensorDecl,
    taken_names: set[str],
) -> LevelSpace:
    """Collect operand instances, choose block factors, and assign level variables.

    ``taken_names`` holds names already used (tensors, index variables); split
    variable names avoid them.
    """
    accesses: list[Access] = []
    for a in stmt.accesses():
        if operand_key(a) not in [operand_key(b) for b in accesses]:
            accesses.append(a)
    operands = [
        Operand(operand_key(a), a.tensor, a.tensor, decls[a.tensor].format, decls[a.tensor].dtype,
                tuple(v.name for v in a.indices))
        for a in accesses
    ]
    out_acc = stmt.output
    output = Operand(operand_key(out_acc), out_acc.tensor, out_acc.tensor, out_decl.format, out_decl.dtype,
                     tuple(v.name for v in out_acc.indices), is_output=True)
    space = LevelSpace(operands, output, {}, out_decl.format, taken=set(taken_names))
    for o in operands:
        if _repeats_above_a_segment(o.fmt):
            space.convert(o, grouped(o.fmt), "a non-unique level above a level that is not a singleton: kernels "
                                             "walk each coordinate's children once")
    _choose_factors(space)
    for var, f in space.factors.items():
        for lv in split_vars(var, f):
            if lv.name in taken_names:
                raise VerificationError(
                    f"index variable {lv.name!r} collides with the name sparsec gives the blocks of {var!r}; rename it"
                )
    assign_level_vars(space)
    return space


def _choose_factors(space: LevelSpace) -> None:
    """Pick one block factor per dimension variable; unblock operands that disagree.

    Unblocking an operand can leave another dimension's factor wanted by nobody (a
    BSR operand unblocked for its rows no longer asks to split its columns), so the
    factors are chosen again until no operand changes.
    """
    while True:
        factors = _wanted_factors([o for o in space.all_operands() if o.fmt.is_sparse])
        changed = False
        for o in space.all_operands():
            if not o.fmt.is_blocked:
                continue
            if any(_dim_factor(o.fmt, d) != factors.get(var, 1) for d, var in enumerate(o.dim_vars)):
                space.convert(o, unblocked(o.fmt), "block sizes disagree with other operands")
                changed = True
            elif any(e.op == "mod" and e.factor == 1 and not l.is_full for e, l in zip(o.fmt.exprs, o.fmt.levels)):
                # A stored 'dim mod 1' level would need a loop over the single coordinate 0.
                space.convert(o, unblocked(o.fmt), "a sparse level of blocks of one")
                changed = True
        if not changed:
            space.factors = {v: f for v, f in factors.items() if f != 1}
            return


def _wanted_factors(sparse_ops: list[Operand]) -> dict[str, int]:
    """Each dimension variable's block factor: the one all sparse operands agree on, else 1."""
    wanted: dict[str, set[int]] = {}
    for o in sparse_ops:
        for d, var in enumerate(o.dim_vars):
            wanted.setdefault(var, set()).add(_dim_factor(o.fmt, d))
    factors = {v: (next(iter(fs)) if len(fs) == 1 else 1) for v, fs in wanted.items()}
    # A var used twice by one access (A[i, i]) cannot be split consistently.
    for o in sparse_ops:
        if len(set(o.dim_vars)) != len(o.dim_vars):
            for v in o.dim_vars:
                factors[v] = 1
    return factors


def assign_level_vars(space: LevelSpace) -> None:
    """Give each level of each operand its loop variable (after factors are chosen)."""
    for o in space.all_operands():
        lvs: list[LevelVar] = []
        for e in o.fmt.exprs:
            var = o.dim_vars[e.dim]
            f = space.factors.get(var, 1)
            if f == 1 and e.op == "mod" and e.factor == 1:
                lvs.append(unit_var(var))  # blocks of one: 'var floordiv 1' is var itself, 'var mod 1' is 0
            elif f == 1:
                lvs.append(LevelVar(var))
            else:
                outer, inner = split_vars(var, f)
                lvs.append(outer if e.op == "floordiv" else inner if e.op == "mod" else LevelVar(var))
        o.level_vars = tuple(lvs)


def dim_level_vars(space: LevelSpace, dim_var: str) -> tuple[LevelVar, ...]:
    """The loop variables that together give dimension variable ``dim_var``."""
    return split_vars(dim_var, space.factors.get(dim_var, 1))


def permuted_format(fmt: Format, dim_rank: Mapping[int, int]) -> Format:
    """A format whose levels follow ``dim_rank`` (lower rank first), keeping each slot's level type.

    Used to resolve loop-order conflicts: CSC read in row order becomes CSR. Falls
    back to (dense, compressed, ...) in the new order when slot types do not fit
    (e.g. an N:M level would move away from its ``mod`` expression).
    """
    order = sorted(range(len(fmt.exprs)), key=lambda k: (dim_rank[fmt.exprs[k].dim], fmt.exprs[k].op == "mod"))
    exprs = tuple(fmt.exprs[k] for k in order)
    try:
        return Format(fmt.levels, exprs, fmt.ndim, fmt.pos_width, fmt.crd_width)
    except Exception:
        base = unblocked(fmt)
        dims = sorted(range(fmt.ndim), key=lambda d: dim_rank[d])
        lv: list[Level] = [Dense()] + [Compressed() for _ in dims[1:]]
        return Format(tuple(lv), tuple(LevelExpr(d) for d in dims), fmt.ndim, base.pos_width, base.crd_width)
