"""Sparsification: lower one tensor-IR statement to loop IR.

The algorithm is TACO's, over MLIR-style levels:

* Loop variables are visited in the chosen order (see :mod:`.loop_order`).
* At each variable, the sparse levels bound by it are *iterators*; the merge
  lattice (:mod:`.lattice`) of the body over those iterators decides the loop:

  - no sparse iterator: a dense ``for`` over the extent;
  - one iterator that must be present: a ``for`` over its positions;
  - a universe point (the body is non-zero where every iterator is absent): a
    dense ``for`` with a cursor per iterator and an ``if`` chain of lattice cases;
  - otherwise: TACO's sequence of ``while`` loops, one per lattice point, each with
    an ``if`` chain over the sub-points present at the current coordinate.

  Each case lowers the rest of the nest with the absent operands replaced by 0.
* Dense levels are located, not iterated: position = parent * size + coordinate,
  computed as soon as the coordinate and the parent position are known.
* Reductions below all output variables accumulate in a scalar that is stored
  once (``=``, not ``+=``); this is what makes inner loops vectorize.
* Nested reductions are fused as scalars computed once their free variables are
  bound, unless that would repeat them or an operand of theirs stores an enclosing
  loop's level below one of their own (:class:`NotFusable`: the pipeline then
  precomputes them in a dense temporary).
* Outputs: ``dense`` (address arithmetic), ``same_pattern`` (a sparse output with
  exactly the pattern of one input, e.g. SDDMM: share its index buffers),
  ``entries`` (general sparse output: a symbolic kernel counts entries per outer
  iteration -- per coordinate, per stored position, or in one slot, see
  :class:`CountSlots` -- the host turns counts into offsets, a numeric kernel writes
  coordinates and values), ``workspace`` (an output variable below a reduction,
  as in SpGEMM: a dense row workspace with a touched list, sorted per row; under
  max/min it also counts the terms of each coordinate, so that skipped implicit
  zeros still count), and ``dense_then_convert`` (anything else: compute densely,
  convert on the host). An entries or workspace output stored as (dense, compressed)
  may also get :class:`OnePass` kernels (asked for by backends that run row chunks on
  threads): a cheap bound per row instead of the exact symbolic count, and a numeric
  kernel that writes each chunk's rows one after another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Mapping, Sequence

from ..errors import VerificationError
from ..ir import loop_ir as L
from ..ir.loop_ir import INDEX, BOOL, binop, const
from ..ir.tensor_ir import Access, Assignment, Binary, Expr, Literal, Reduce, Unary, Where
from .lattice import LatticePoint, Opaque, is_zero, lattice, operand_key, operands_in, simplify, sub_points
from .level_space import LevelSpace, LevelVar, Operand
from .loop_order import OrderChoice

#: co-iterating up to this many sparse levels, each combination of them present gets its own case (2**n - 1),
#: which also advances their cursors; beyond, the lattice points' cases, then one advance per level
_STEP_IN_CASES_MAX = 3
#: a SpGEMM row's touched list is insertion-sorted up to this length, radix-sorted beyond
_INSERTION_MAX = 48
#: buckets of a radix-sort pass (8 bits of the column index)
_RADIX = 256
#: the hash-table workspace's buffers (numeric kernel only): keys (-1: empty), values, terms seen
_HASH_PARTS = ("hkey", "hvals", "hcount")
#: the numeric kernel's scalar parameter holding the largest hash table any row needs (slots: a power
#: of two >= 2 * the largest output row count); the runtime fills it from the symbolic pass's counts
TMAX_PARAM = "sc_tmax"
#: ``Schedule.workspace`` kinds: per-row choice, dense row always, hash table always
WORKSPACE_KINDS = ("auto", "dense", "hash")
#: ``Schedule.workspace(..., touch=)``: how a term marks a new column in the dense marks (test and branch, or
#: always append and advance by ``1 - mark``); see :meth:`Sparsifier.ws_touch`
WORKSPACE_TOUCH = ("branch", "select")
#: the automatic choice takes the hash table for a row whose table of T slots has ``T * HASH_RATIO <= n``
#: (n: the workspace's extent, the output's column count) when the dense row's values and marks take at
#: least ``HASH_MIN_BYTES`` (n * (value bytes + 1)); see :meth:`Sparsifier.workspace_row`. Measured
#: (benchmarks/hash_rule.py, 1 thread, float32, 2-core Xeon with 2 MiB L2 a core): the hash table loses
#: 1.15-1.6x for n <= 262144 however small T, is even at n = 2**20 (0.90-1.18x) and wins at n = 2**22
#: (0.71-0.91x, T/n <= 1/4096).
HASH_RATIO = 16
HASH_MIN_BYTES = 8 << 20
#: a :class:`OnePass` output allocates its entries for the rows' bounds; beyond this many bytes of them the
#: host runs the two passes instead (only the pages written are touched, but the bound can exceed the
#: exact count many times over: a dense-ish product's terms per entry)
ONE_PASS_MAX_BYTES = 1 << 30
#: multiplicative hash of a column, kept in 31 bits: ((j mod 2**31) * A mod 2**31) >> (31 - log2 T),
#: A ~ 2**31 / golden ratio, odd (Knuth); all operands non-negative and no product overflows 63 bits
_HASH_MUL = 1327217885
_HASH_BITS = 31
#: a hash row's touched list holds ``column << _SLOT_BITS | slot``: sorted by column, it gives each slot
_SLOT_BITS = 32


class NotFusable(Exception):
    """A nested reduction cannot be computed in a scalar without recomputing it; precompute it instead."""

    def __init__(self, reduce: Reduce, why: str):
        super().__init__(why)
        self.reduce = reduce


@dataclass
class Nest:
    """One loop nest being lowered: the statement's main nest, or a fused reduction's sub-nest."""

    order: list[str]
    reduce_op: str | None
    reduce_vars: set[str]
    top: bool
    acc: L.Var | None = None
    hoist_at: int | None = None


class NeedsOrdered(Exception):
    """Raised when an unordered level must be co-iterated; the driver converts and retries."""

    def __init__(self, key):
        super().__init__(key)
        self.key = key


@dataclass(frozen=True)
class ParallelInfo:
    """The outer loop the host may split into chunks: its variable and full range.

    ``private``: iterations may update the same outputs, so each CPU chunk accumulates
    into its own zeroed copy of the output and the host sums the copies in order.
    """

    var: str
    lo: L.LExpr
    hi: L.LExpr
    balance: str | None = None
    private: bool = False
    #: pos buffers of the levels below ``balance``'s, in order: ``balance[i]`` indexes the first, and so on,
    #: so that the host counts the entries at the bottom (blocked COO: tiles -> entries), not the level's
    balance_chain: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParallelSpec:
    """What a schedule asked of the outer loop (``parallelize`` and ``pos`` commands)."""

    var: str | None = None          # the loop named; None: default behaviour
    enabled: bool = True            # parallelize(var, "none") -> False
    reduction: str | None = None    # None | "atomic" | "private"
    balance_tensor: str | None = None
    segment: int | None = None
    command: str = ""               # the command that named ``var`` (for messages): parallelize(...) or pos(...)
    #: ``Schedule.workspace(var, kind)``: the output variable named and the workspace kind asked for
    workspace_var: str | None = None
    workspace: str = "auto"
    workspace_touch: str = "select"      # Schedule.workspace(..., touch=): how a term marks a new column


@dataclass(frozen=True)
class Workspace:
    """A scratch buffer the host allocates per parallel chunk, every entry ``fill`` (0 unless said).

    ``size`` is evaluated over the kernel's scalars; the numeric kernel's may name
    :data:`TMAX_PARAM`, which the runtime fills from the output's row counts before the launch.
    """

    name: str
    dtype: str
    size: L.LExpr
    fill: int = 0


@dataclass(frozen=True)
class CountSlots:
    """How the symbolic kernel of a sparse output indexes its counts (one run of entries per slot).

    ``by``: ``coordinate`` (the outer loop's coordinate: as many slots as its extent),
    ``position`` (the positions of level ``level`` of the operand whose buffers are named
    ``prefix``, which the outer loop walks: as many slots as it stores, however large the
    extent) or ``one`` (a single run: the outer loop is not an output variable, or
    co-iterates several levels).
    """

    by: str = "one"
    prefix: str = ""
    level: int = 0


@dataclass(frozen=True)
class OnePass:
    """A sparse output's rows assembled in one pass, for backends that run a parallel loop as chunks of
    consecutive rows (CPU threads), in place of the symbolic pass's exact counts.

    ``bound`` counts per row an upper bound of its entries, at most its extent: for a workspace output the
    terms that reach the row's workspace (no marks), for an entries output its operands' stored positions
    (no walk); either is far cheaper than the exact count. ``numeric`` starts each chunk at the
    bound offset of its first row, writes the chunk's rows one after another (the cursor carries over),
    and stores each row's exact count in ``<out>_cnt``; the host then moves every chunk's entries down
    to their final offsets.
    """

    bound: L.Kernel
    numeric: L.Kernel


@dataclass
class Lowered:
    """Result of lowering one statement: kernels plus what the host must do around them."""

    stmt: Assignment
    space: LevelSpace
    order: OrderChoice
    compute_dtype: str
    reduce_op: str | None
    strategy: str
    numeric: L.Kernel
    symbolic: L.Kernel | None = None
    pattern_source: Operand | None = None
    parallel: ParallelInfo | None = None
    workspaces: tuple[Workspace, ...] = ()
    dim_params: dict[str, str] = field(default_factory=dict)
    presorted: bool = True
    #: extra equality constraints from repeated indices: (var, duplicate var)
    filters: tuple[tuple[str, str], ...] = ()
    #: True when output coordinates may be skipped under a max/min reduction (they then hold 0).
    skipped_are_zero: bool = False
    #: entries/workspace output stored as (dense, compressed) directly: the counts' prefix sums are
    #: ``pos`` and the kernel writes only level 1's coordinates, in the output's index width.
    direct_compressed: bool = False
    #: every output value is written exactly once, so the output needs no initial fill.
    writes_all: bool = False
    #: how the counts of an entries/workspace output are indexed.
    count_slots: CountSlots = CountSlots("coordinate")
    #: every coordinate of the dense output is bound by the loops (each output variable runs over its
    #: full extent), though stores below a reduction may run zero times; a backend that accumulates
    #: each output element in a register tile and stores it once (Triton's row tiles) writes them all.
    covers_output: bool = False
    #: the variable a workspace output's rows accumulate along (``Schedule.workspace``'s), else None
    workspace_var: str | None = None
    #: the one-pass kernels of an entries or workspace output, when the caller asked for them (:class:`OnePass`)
    one_pass: OnePass | None = None


class _LevelCG:
    """The :class:`~sparsec.levels.base.LevelCodegen` view a level gets of the sparsifier."""

    def __init__(self, sp: "Sparsifier", o: Operand, level: int):
        self.sp, self.o, self.level = sp, o, level

    def buffer(self, part: str) -> str:
        return self.sp.level_buffer(self.o, self.level, part)

    def load_index(self, buffer: str, index: L.LExpr) -> L.LExpr:
        return self.sp._idx(buffer, index, self.o)

    def size(self) -> L.LExpr:
        return self.sp.level_size(self.o, self.level)


class Namer:
    """Hands out identifiers that collide neither with user names nor with each other."""

    def __init__(self, taken: set[str]):
        self.taken = set(taken)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}{k}", k + 1
        self.taken.add(name)
        return name


@dataclass
class _OpState:
    """Per-operand iteration state: known level positions and segment ends."""

    pos: list[L.LExpr | None]
    seg_end: list[L.LExpr | None]


@dataclass
class _State:
    bound: dict[str, L.LExpr]
    ops: dict[tuple, _OpState]
    acc: L.Var | None = None
    hit: L.Var | None = None
    row_count: L.Var | None = None
    #: inside a hash-table workspace row: (mask, shift) of that row's table
    hash: tuple[L.Var, L.Var] | None = None

    def copy(self) -> "_State":
        return _State(dict(self.bound), {k: _OpState(list(v.pos), list(v.seg_end)) for k, v in self.ops.items()},
                      self.acc, self.hit, self.row_count, self.hash)


IDENTITY = {"sum": 0, "max": float("-inf"), "min": float("inf")}
STORE_OP = {"sum": "add", "max": "max", "min": "min"}


def _replace(e: Expr, target: Expr, new: Expr) -> Expr:
    """``e`` with the node ``target`` (by identity or equality) replaced by ``new``."""
    if e is target or e == target:
        return new
    if isinstance(e, Unary):
        return Unary(e.op, _replace(e.operand, target, new))
    if isinstance(e, Binary):
        return Binary(e.op, _replace(e.lhs, target, new), _replace(e.rhs, target, new))
    if isinstance(e, Where):
        return Where(_replace(e.cond, target, new), _replace(e.then, target, new), _replace(e.other, target, new))
    if isinstance(e, Reduce):
        return Reduce(e.op, e.vars, _replace(e.body, target, new))
    return e


def _outermost_reductions(e: Expr) -> list[Reduce]:
    """The reductions in ``e`` that no other reduction in ``e`` contains, left to right."""
    if isinstance(e, Reduce):
        return [e]
    return [r for c in e.children() for r in _outermost_reductions(c)]


def promote(*dtypes: str) -> str:
    """numpy's type promotion for value dtypes (bfloat16 promotes like float32)."""
    import numpy as np

    np_dts = [np.dtype("float32" if d == "bfloat16" else "int64" if d == INDEX else d) for d in dtypes]
    out = np_dts[0]
    for d in np_dts[1:]:
        out = np.promote_types(out, d)
    name = out.name
    if name == "float32" and all(d == "bfloat16" for d in dtypes):
        return "bfloat16"
    return name


def accumulator_dtype(dtype: str) -> str:
    """The dtype a reduction of ``dtype`` accumulates in: float16 and bfloat16 sums run in float32 (as
    numpy's einsum does for float16), so that a long sum does not stall at float16's 11-bit precision;
    the result is rounded once, when stored."""
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def identity_value(op: str, dtype: str):
    """The identity of a reduction in ``dtype`` (integers use their extreme values)."""
    v = IDENTITY[op]
    if L.is_float(dtype) or op == "sum":
        return v
    import numpy as np

    info = np.iinfo(np.dtype(dtype)) if dtype != BOOL else None
    if info is None:
        return op == "min"
    return info.min if op == "max" else info.max


class Sparsifier:
    """Lowers one statement (already in level space, with its loop order) to loop IR."""

    def __init__(self, stmt: Assignment, space: LevelSpace, order: OrderChoice, compute_dtype: str,
                 dim_extent: Mapping[str, str], namer: Namer, filters: Sequence[tuple[str, str]] = (),
                 kernel_name: str = "kernel", parallel: bool = True, spec: ParallelSpec | None = None,
                 one_pass: bool = False):
        self.stmt = stmt
        self.want_one_pass = one_pass
        self.one_pass_mode = False   # generating OnePass kernels (see _kernel)
        self.space = space
        self.choice = order
        self.cdt = compute_dtype
        self.adt = accumulator_dtype(compute_dtype)   # scalar accumulators and workspace values
        self.namer = namer
        self.filters = list(filters)
        self.kernel_name = kernel_name
        self.want_parallel = parallel
        self.spec = spec or ParallelSpec()
        if not self.spec.enabled:
            self.want_parallel = False
        self.lvars: dict[str, LevelVar] = space.level_vars()
        self.dim_param = dict(dim_extent)  # dim var -> scalar param name
        rhs = stmt.expr
        reduce_op: str | None = None
        reduce_vars: set[str] = set()
        if isinstance(rhs, Reduce):
            reduce_op = rhs.op
            reduce_vars = {v.name for v in rhs.vars}
            rhs = rhs.body
        self.main = Nest(list(order.order), reduce_op, reduce_vars, top=True)
        self.nest = self.main
        self.body = rhs
        self.out = space.output
        self.out_vars = [n for n in self.main.order if self.lvars[n].dim_var in set(self.out.dim_vars)]
        self.operands = {o.key: o for o in space.operands}
        self._buffers: dict[str, L.BufferParam] = {}
        self.opaque: dict[str, L.Var] = {}
        self._sub_orders: dict[frozenset, list[str]] = {}
        self.first_seen = {v.name: k for k, v in enumerate(stmt.index_vars())}
        self.touch_order = False   # set by run(): see there
        self._pick_strategy()

    # The lowering methods read the nest being lowered through these properties.
    @property
    def order(self) -> list[str]:
        return self.nest.order

    @property
    def reduce_op(self) -> str | None:
        return self.nest.reduce_op

    @property
    def reduce_vars(self) -> set[str]:
        return self.nest.reduce_vars

    @property
    def hoist_at(self) -> int | None:
        return self.nest.hoist_at

    # ------------------------------------------------------------------ names and params
    def _buf(self, name: str, dtype: str, role: str = "in", tensor: str = "", part: str = "") -> str:
        if name not in self._buffers:
            self._buffers[name] = L.BufferParam(name, dtype, role, tensor, part)
        return name

    def level_buffer(self, o: Operand, level: int, part: str) -> str:
        """Buffer name of ``part`` (pos/crd) of level ``level`` of operand ``o``."""
        width = o.levels[level].buffer_width(part, o.fmt.pos_width, o.fmt.crd_width)
        return self._buf(f"{o.prefix}_{part}{level}", f"int{width}", "in", o.prefix, f"{part}{level}")

    def vals_buffer(self, o: Operand) -> str:
        role = "out" if o.is_output else "in"
        return self._buf(f"{o.prefix}_vals", o.dtype, role, o.prefix, "vals")

    def extent(self, lv: LevelVar) -> L.LExpr:
        """The iteration range size of a level variable."""
        n = L.Var(self.dim_param[lv.dim_var])
        if lv.part == "full":
            return n
        if lv.part == "outer":
            return binop("floordiv", binop("add", n, lv.factor - 1), lv.factor)
        return const(lv.factor)

    def dense_hi(self, lv: LevelVar, st: _State) -> L.LExpr:
        """Upper bound of a dense loop; the last block of a split variable may be partial."""
        if lv.part != "inner":
            return self.extent(lv)
        outer = st.bound[f"{lv.dim_var}_blk"]
        rest = binop("sub", L.Var(self.dim_param[lv.dim_var]), binop("mul", outer, lv.factor))
        return binop("min", rest, const(lv.factor))

    def dim_coord(self, dim_var: str, st: _State) -> L.LExpr | None:
        """The full coordinate of a dimension variable, if all its loop variables are bound."""
        f = self.space.factors.get(dim_var, 1)
        if f == 1:
            return st.bound.get(dim_var)
        outer, inner = st.bound.get(f"{dim_var}_blk"), st.bound.get(f"{dim_var}_in")
        if outer is None or inner is None:
            return None
        return binop("add", binop("mul", outer, f), inner)

    def level_coord(self, o: Operand, level: int, st: _State) -> L.LExpr | None:
        """Coordinate of ``o`` at ``level``, if known."""
        e = o.fmt.exprs[level]
        var = o.dim_vars[e.dim]
        if o.level_vars[level].is_unit:
            return const(0)
        if o.fmt.is_sparse or o.fmt.is_blocked:
            return st.bound.get(o.level_vars[level].name)
        return self.dim_coord(var, st)

    def level_size(self, o: Operand, level: int) -> L.LExpr:
        e = o.fmt.exprs[level]
        n = L.Var(self.dim_param[o.dim_vars[e.dim]])
        if e.op == "floordiv":
            return binop("floordiv", binop("add", n, e.factor - 1), e.factor)
        if e.op == "mod":
            return const(e.factor)
        return n

    # ------------------------------------------------------------------ strategy
    def _pick_strategy(self) -> None:
        out = self.out
        self.pattern_source: Operand | None = None
        self.ws_var: str | None = None
        if not out.fmt.is_sparse:
            self.strategy = "dense"
            return
        self._pick_sparse_strategy()
        if self.strategy == "dense_then_convert":
            # Compute into a dense array in the output's dimension order; the host converts it.
            from ..formats import parse_format
            from .level_space import assign_level_vars

            self.space.convert(out, parse_format("dense", out.fmt.ndim), "no sparse assembly fits this loop order")
            assign_level_vars(self.space)

    def _pick_sparse_strategy(self) -> None:
        out = self.out
        for o in self.space.operands:
            if o.fmt == out.fmt and o.dim_vars == out.dim_vars and o.fmt.is_sparse:
                others = frozenset(k for k, p in self.operands.items() if p.fmt.is_sparse and k != o.key)
                if is_zero(simplify(self.body, frozenset({o.key}))) and not is_zero(simplify(self.body, others)):
                    self.strategy = "same_pattern"
                    self.pattern_source = o
                    return
        pos = {v: k for k, v in enumerate(self.order)}
        red = [v for v in self.order if self.lvars[v].dim_var in self.reduce_vars]
        outs = self.out_vars
        if not outs:
            self.strategy = "dense_then_convert"
            return
        if not red or max(pos[v] for v in outs) < min(pos[v] for v in red):
            self.strategy = "entries" if pos[outs[0]] == 0 else "dense_then_convert"
            return
        first_red = min(pos[v] for v in red)
        prefix = [v for v in outs if pos[v] < first_red]
        after = [v for v in outs if pos[v] > first_red]
        if (len(after) == 1 and self.lvars[after[0]].part == "full" and (not prefix or pos[prefix[0]] == 0)
                and prefix == self.order[: len(prefix)]):
            self.strategy = "workspace"
            self.ws_var = after[0]
            return
        self.strategy = "dense_then_convert"

    # ------------------------------------------------------------------ entry point
    def _writes_all(self) -> bool:
        """True when each output value is stored exactly once, with '=' (no fill needed beforehand).

        Dense outputs: no output loop may skip coordinates (no sparse level is bound by an
        output variable), reductions (if any) are all below the output variables, and no
        filter or block guard hides a store. Same-pattern outputs: every stored position
        of the source is visited once.
        """
        if self.filters or any(o.fmt.is_blocked for o in self.space.all_operands()):
            return False
        exclusive = self.reduce_op is None or self.main.hoist_at is not None
        if not exclusive:
            return False
        if self.strategy == "same_pattern":
            return True
        return self._covers_output()

    def _covers_output(self) -> bool:
        """True when the loops bind every coordinate of a dense output: no filter, no blocked output,
        and no output variable bound by a level that skips coordinates (a sparse level)."""
        if self.strategy != "dense" or self.filters or self.out.fmt.is_blocked:
            return False
        out_dims = set(self.out.dim_vars)
        for o in self.space.operands:
            for lv, lvl in zip(o.level_vars, o.levels):
                if lv.dim_var in out_dims and not lvl.is_full:
                    return False
        return True

    def _direct_compressed(self) -> bool:
        """(dense, compressed) output whose dense level is the outer loop and whose entries come in order."""
        out = self.out
        if self.strategy not in ("entries", "workspace") or out.fmt.is_blocked or len(out.levels) != 2:
            return False
        lv0, lv1 = out.levels
        if not lv0.is_full or lv1.kind != "compressed" or not lv1.unique or not self.main.order:
            return False
        out_lvl_vars = [lv.name for lv in out.level_vars if not lv.is_unit]
        in_order = [v for v in self.main.order if v in set(out_lvl_vars)] == out_lvl_vars
        return in_order and self.main.order[0] == out_lvl_vars[0]

    def run(self) -> Lowered:
        self._check_fusion(self.main.order, self.body)
        self.main.hoist_at = self._hoist_point()
        self.direct = self._direct_compressed()
        # a (dense, compressed(nonordered)) output assembled directly: a workspace row is emitted in the
        # order its columns were first touched, without sorting (as scipy and MKL leave SpGEMM rows)
        self.touch_order = self.direct and self.strategy == "workspace" and not self.out.levels[1].ordered
        self._check_workspace_request()
        numeric = self._kernel(symbolic=False)
        ws_names = dict(self.ws_names)
        symbolic = self._kernel(symbolic=True) if self.strategy in ("entries", "workspace") else None
        for part, name in self.ws_names.items():   # the symbolic kernel's (the dense marks of a hash-only one)
            ws_names.setdefault(part, name)
        one_pass = self._one_pass()
        workspaces: tuple[Workspace, ...] = ()
        if self.strategy == "workspace":
            n = L.Var(self.dim_param[self.lvars[self.ws_var].dim_var])
            dtypes = {**self._ws_dtypes(symbolic=True), **self._ws_dtypes()}

            def size(part: str) -> L.LExpr:
                if part == "list":      # n + 1: the branch-free touch writes one slot past a full row
                    return binop("add", n, 1)
                return const(_RADIX) if part == "hist" else L.Var(TMAX_PARAM) if part in _HASH_PARTS else n
            workspaces = tuple(Workspace(name, dtypes[part], size(part), -1 if part == "hkey" else 0)
                               for part, name in ws_names.items())
        out_lvl_vars = [lv.name for lv in self.out.level_vars if not lv.is_unit]
        presorted = [v for v in self.order if v in set(out_lvl_vars)] == out_lvl_vars and not self.out.fmt.is_blocked
        # a kernel whose every lattice point simplified away stores nothing: its output needs its fill
        stores = any(isinstance(s, L.Store) and s.buffer == f"{self.out.prefix}_vals" for s in numeric.body.walk())
        if not stores and self.direct and self.order:
            self.count_slots = CountSlots("coordinate")   # no loop set it: one (zero) count per row, a whole pos
        return Lowered(self.stmt, self.space, self.choice, self.cdt, self.reduce_op, self.strategy, numeric, symbolic,
                       self.pattern_source, self.parallel_info, workspaces, dict(self.dim_param), presorted,
                       tuple(self.filters), self.reduce_op in ("max", "min") and self.hoist_at is not None,
                       self.direct, stores and self._writes_all(), self.count_slots,
                       covers_output=stores and self._covers_output(),
                       workspace_var=self.ws_var if self.strategy == "workspace" else None, one_pass=one_pass)

    def _one_pass(self) -> OnePass | None:
        """The :class:`OnePass` kernels, when asked for and the output fits: an entries or workspace output
        stored as (dense, compressed) directly, counted per row, whose rows are the outer dense loop."""
        if not (self.want_one_pass and self.strategy in ("workspace", "entries") and self.direct
                and self.count_slots.by == "coordinate"):
            return None
        keep = (self.parallel_info, self.count_slots, self.ws_names)
        self.one_pass_mode, self._cursor_started = True, False
        try:
            numeric = self._kernel(symbolic=False)
            started = self._cursor_started   # the outer loop was a dense one over the rows
            bound = self._kernel(symbolic=True)
        finally:
            self.one_pass_mode = False
            self.parallel_info, self.count_slots, self.ws_names = keep
        return OnePass(bound, numeric) if started else None

    def _check_workspace_request(self) -> None:
        from ..errors import ScheduleError

        var, kind = self.spec.workspace_var, self.spec.workspace
        if var is None:
            return
        if self.strategy != "workspace" or self.ws_var != var:
            raise ScheduleError(f"workspace({var}, {kind}): the statement does not accumulate rows of a sparse "
                                f"output along {var} in a workspace (strategy {self.strategy!r}"
                                + (f", workspace variable {self.ws_var})" if self.ws_var else ")"))

    def first_reduction_index(self) -> int:
        """Position in the loop order of the first reduction variable (len(order) if none)."""
        for k, v in enumerate(self.order):
            if self.lvars[v].dim_var in self.reduce_vars:
                return k
        return len(self.order)

    def _duplicates_may_repeat(self, k: int) -> bool:
        """Whether loop ``k`` may visit a non-unique level's equal coordinates one entry at a time, without
        first finding each run of them (a loop over runs, and a scan per entry).

        It may where every store below adds into a dense output: a sum whose scalar accumulator, if any,
        wraps loop ``k`` (``hoist_at <= k``), so no store below writes with '=' once per coordinate. Loop 0
        keeps the runs (a parallel top loop over entries would race on equal rows).
        """
        if k == 0 or not self.nest.top or self.strategy != "dense" or self.reduce_op != "sum":
            return False
        return self.hoist_at is None or self.hoist_at <= k

    def _hoist_point(self) -> int | None:
        """Index in the order where a scalar accumulator wraps the reduction loops, if any."""
        if self.reduce_op is None:
            return None
        pos = {v: k for k, v in enumerate(self.order)}
        red = [pos[v] for v in self.order if self.lvars[v].dim_var in self.reduce_vars]
        outs = [pos[v] for v in self.out_vars]
        first_red = min(red)
        if outs and max(outs) > first_red:
            return None
        return first_red

    def _kernel(self, symbolic: bool) -> L.Kernel:
        self.symbolic = symbolic
        self._buffers = {}
        self.parallel_info: ParallelInfo | None = None
        self.ws_names: dict[str, str] = {}
        if self.strategy == "workspace" and not (symbolic and self.one_pass_mode):
            for part, dtype in self._ws_dtypes(symbolic).items():
                self.ws_names[part] = self._buf(f"{self.out.tensor}_ws_{part}", dtype, "work")
        # Declare input buffers first so parameter order is stable and readable.
        for o in self.space.operands:
            if o.fmt.is_sparse:
                for l, lvl in enumerate(o.levels):
                    for part in lvl.buffers:
                        self.level_buffer(o, l, part)
            self.vals_buffer(o)
        self._declare_output_buffers()
        st = _State({}, {o.key: _OpState([None] * len(o.levels), [None] * len(o.levels))
                         for o in self.space.all_operands()})
        self.count_var: L.Var | None = None
        self._outer_count: L.LExpr | None = None
        self.count_slots = CountSlots("one")
        if self.strategy in ("entries", "workspace") and not symbolic:
            self.count_var = L.Var(self.namer_once("w"))
        stmts: list[L.Stmt] = self.lower(0, st, self.body)
        if self.count_var is not None and self._outer_count is None:
            # One run of entries: it starts at off[0].
            stmts.insert(0, L.Assign(self.count_var, L.Cast(L.Load(f"{self.out.prefix}_off", const(0), "int64"),
                                                            INDEX)))
        suffix = {(True, False): "_symbolic", (True, True): "_bound", (False, True): "_one_pass"}
        name = self.kernel_name + suffix.get((symbolic, self.one_pass_mode), "")
        dims = sorted(set(self.dim_param.values()))
        params: list[L.Param] = list(self._buffers.values()) + [L.ScalarParam(d) for d in dims]
        if "hkey" in self.ws_names:
            params.append(L.ScalarParam(TMAX_PARAM))
        if self.parallel_info is not None:
            params += [L.ScalarParam("sc_lo"), L.ScalarParam("sc_hi")]
        role = ("one-pass bound (entries per row, at most) " if symbolic else "one-pass ") if self.one_pass_mode else \
            "symbolic (counts) " if symbolic else ""
        doc = f"{role}kernel for: output {self.out.tensor} ({self.strategy})"
        # which scalar is the extent of each index variable (a backend may size its loops by them)
        hints: tuple = (("extents", tuple(sorted(self.dim_param.items()))),)
        if self.spec.balance_tensor is not None and self.parallel_info is not None:
            hints += (("split_rows", True),) + ((("segment", self.spec.segment),) if self.spec.segment else ())
        return L.Kernel(name, tuple(params), L.Block(tuple(stmts)), doc, hints)

    def _declare_output_buffers(self) -> None:
        out = self.out
        if self.strategy in ("dense", "dense_then_convert"):
            self._buf(f"{out.prefix}_vals", self.cdt, "out", out.prefix, "vals")
        elif self.strategy == "same_pattern":
            self._buf(f"{out.prefix}_vals", self.cdt, "out", out.prefix, "vals")
        elif self.symbolic:
            self._buf(f"{out.prefix}_cnt", "int64", "out", out.prefix, "cnt")
        else:
            self._buf(f"{out.prefix}_off", "int64", "in", out.prefix, "off")
            if self.one_pass_mode:
                self._buf(f"{out.prefix}_cnt", "int64", "out", out.prefix, "cnt")
            if self.direct:
                self._buf(f"{out.prefix}_crd1", f"int{out.fmt.crd_width}", "out", out.prefix, "crd1")
            else:
                for d, _ in enumerate(out.dim_vars):
                    self._buf(f"{out.prefix}_crd{d}", "int64", "out", out.prefix, f"crd{d}")
            self._buf(f"{out.prefix}_vals", self.cdt, "out", out.prefix, "vals")

    # ------------------------------------------------------------------ recursion
    def lower(self, k: int, st: _State, expr: Expr) -> list[L.Stmt]:
        if is_zero(expr) and (self.reduce_op in (None, "sum")):
            return []
        pre, expr = self.fuse_ready(st, expr)
        if pre:
            return pre + self.lower(k, st, expr)
        if k == len(self.order):
            return self.leaf(st, expr)
        if self.nest.top and k == self.hoist_at and st.acc is None:
            return self.hoisted(k, st, expr)
        if self.nest.top and self.strategy == "workspace" and self.ws_first_red(k) and st.row_count is None:
            return self.workspace_row(k, st, expr)
        return self.lower_var(k, st, expr)

    # ------------------------------------------------------------------ fused nested reductions
    def fuse_ready(self, st: _State, expr: Expr) -> tuple[list[L.Stmt], Expr]:
        """Compute every nested reduction whose free variables are all bound, as a scalar."""
        from .normalize import free_vars

        ready: list[Reduce] = []

        def find(e: Expr) -> None:
            if isinstance(e, Reduce):
                if all(self.dim_coord(v, st) is not None for v in free_vars(e)):
                    ready.append(e)
                    return
            for c in e.children():
                find(c)

        find(expr)
        if not ready:
            return [], expr
        stmts: list[L.Stmt] = []
        for r in ready:
            code, var = self.scalar_reduce(r, st)
            stmts += code
            expr = _replace(expr, r, Opaque(var.name))
        return stmts, expr

    def scalar_reduce(self, r: Reduce, st: _State) -> tuple[list[L.Stmt], L.Var]:
        """Lower ``r`` into a sub-nest that accumulates into a fresh scalar.

        Whether each of the statement's nested reductions may be fused was decided by
        :meth:`_check_fusion`; ``r`` may be a lattice case's simplified copy of one of them
        (fewer operands, so it is ready no later and costs no more than the original).
        """
        if not any(isinstance(x, (Access, Reduce)) for x in r.body.walk()):
            return self._constant_reduce(r, st)
        acc = L.Var(self.namer.fresh("red"), self.adt)
        sub = Nest(self._sub_order(r), r.op, {v.name for v in r.vars}, top=False, acc=acc)
        outer, self.nest = self.nest, sub
        try:
            body = self.lower(0, st.copy(), r.body)
        finally:
            self.nest = outer
        self.opaque[acc.name] = acc
        return [L.Assign(acc, const(identity_value(r.op, self.adt), self.adt))] + body, acc

    def _constant_reduce(self, r: Reduce, st: _State) -> tuple[list[L.Stmt], L.Var]:
        """``r`` over a body that reads no operand (a lattice case replaced them by 0): closed form.

        sum: body * (product of the extents); max/min: body, or the identity over an empty range.
        A repeated index's duplicate adds no terms: its filter keeps one value of it.
        """
        value = self._as(self.emit_expr(r.body, st), self.adt)
        dups = {d for _, d in self.filters}
        extents = [L.Var(self.dim_param[v.name]) for v in r.vars if v.name not in dups]
        if r.op == "sum":
            for n in extents:
                value = binop("mul", value, self._as(n, self.adt))
        else:
            nonempty = None
            for n in extents:
                c = binop("gt", n, const(0))
                nonempty = c if nonempty is None else binop("and", nonempty, c)
            if nonempty is not None:
                value = L.Select(nonempty, value, const(identity_value(r.op, self.adt), self.adt), self.adt)
        acc = L.Var(self.namer.fresh("red"), self.adt)
        self.opaque[acc.name] = acc
        return [L.Assign(acc, value)], acc

    def _sub_order(self, r: Reduce) -> list[str]:
        """The loop order of a fused reduction's sub-nest (NotFusable when its operands' level orders conflict)."""
        from .loop_order import sub_order

        dims = frozenset(v.name for v in r.vars)
        if dims not in self._sub_orders:
            try:
                self._sub_orders[dims] = list(sub_order(self.space, set(dims), self.first_seen))
            except Exception:
                raise NotFusable(r, "its operands' level orders conflict") from None
        return self._sub_orders[dims]

    def _check_fusion(self, order: Sequence[str], body: Expr) -> None:
        """Raise NotFusable for a nested reduction of ``body`` that cannot be a scalar of the nest ``order``.

        Decided on the statement's own reductions, before lowering, because the lattice cases
        lower simplified copies of them, which the pipeline could not find to precompute.
        """
        from .normalize import free_vars

        for r in _outermost_reductions(body):
            free = set(free_vars(r))
            ready = max((k + 1 for k, v in enumerate(order) if self.lvars[v].dim_var in free), default=0)
            extra = [v for v in order[:ready] if self.lvars[v].dim_var not in free]
            if extra:
                raise NotFusable(r, f"computing it below {extra[0]!r} would repeat it for every {extra[0]!r}")
            self._check_levels_outside(r, free)
            self._check_fusion(self._sub_order(r), r.body)

    def _check_levels_outside(self, r: Reduce, free: set[str]) -> None:
        """NotFusable when an operand of ``r`` stores a level the enclosing loops must walk (a variable
        free in ``r``, not located) below a level of a variable ``r`` reduces: its parent position is
        not known until ``r``'s own loops run (SpMV on CSC: ``sum[j](A[i,j] * x[j]) + c``)."""
        for key in sorted(operands_in(r.body)):
            o = self.operands[key]
            if not o.fmt.is_sparse:
                continue
            for l, (lv, lvl) in enumerate(zip(o.level_vars, o.levels)):
                if lv.is_unit or lvl.is_full or lv.dim_var not in free:
                    continue
                inner = [m.name for m in o.level_vars[:l] if not m.is_unit and m.dim_var not in free]
                if inner:
                    raise NotFusable(r, f"{o.tensor} stores {lv.name}, a loop outside it, below {inner[0]}, "
                                        "a variable it reduces")

    def ws_first_red(self, k: int) -> bool:
        return self.lvars[self.order[k]].dim_var in self.reduce_vars and all(
            self.lvars[v].dim_var not in self.reduce_vars for v in self.order[:k])

    def iterators(self, var: str, st: _State, expr: Expr) -> list[tuple[Operand, int]]:
        present = operands_in(expr)
        its = []
        for key in present:
            o = self.operands[key]
            if not o.fmt.is_sparse:
                continue
            for l, (lv, lvl) in enumerate(zip(o.level_vars, o.levels)):
                if lv.name == var and not lvl.is_full and st.ops[key].pos[l] is None:
                    its.append((o, l))
                    break
        its.sort(key=lambda t: [op.key for op in self.space.operands].index(t[0].key))
        return its

    def lower_var(self, k: int, st: _State, expr: Expr) -> list[L.Stmt]:
        var = self.order[k]
        its = self.iterators(var, st, expr)
        keys = [o.key for o, _ in its]
        # Under a max/min reduction a skipped coordinate would still contribute an implicit 0, so every
        # loop from the first reduction variable down visits all coordinates.
        # When the max/min is not accumulated in a scalar, stores combine with the output's initial value,
        # which must then be the identity, so every coordinate is visited.
        skip = is_zero
        counted = self.nest.top and self.strategy == "workspace"  # see ws_value
        if self.reduce_op in ("max", "min") and not counted and (k >= self.first_reduction_index()
                                                                 or (self.nest.top and self.hoist_at is None)):
            # ... unless a coordinate yields the identity itself (a masked max: where(M, A, -inf)).
            ident = IDENTITY[self.reduce_op]
            skip = lambda e: isinstance(e, Literal) and not isinstance(e.value, bool) and e.value == ident  # noqa
        points = lattice(expr, keys, skip)
        if not points:
            return []
        universe = any(p.is_universe for p in points)
        if self.symbolic and self.one_pass_mode and self.strategy == "entries" and self.nest.top and k == 1:
            return self._bound_row(var, st, its, universe)
        comment = self._comment(var, its, universe)
        if not its:
            return self._dense_loop(k, st, expr, comment)
        for o, l in its:
            if (universe or len(points) > 1 or len(its) > 1) and not o.levels[l].ordered:
                raise NeedsOrdered(o.key)
        if universe or any(not o.levels[l].positions_iterable for o, l in its):
            return self._universe_loop(k, st, its, points, comment)
        if len(points) == 1 and len(its) == 1:
            return self._position_loop(k, st, its[0], points[0].expr, comment)
        return self._coiterate(k, st, its, points, comment)

    def _bound_row(self, var: str, st: _State, its, universe: bool) -> list[L.Stmt]:
        """One pass (:class:`OnePass`), entries output: bound a row's entries without walking it. Each entry
        sits at a stored coordinate of some iterator of the row's loop (unless the loop visits every
        coordinate), so the iterators' position counts, at most the row's extent, bound it."""
        n = self.extent(self.lvars[var])
        if not its or universe or not all(o.levels[l].positions_iterable for o, l in its):
            return [L.Store(f"{self.out.prefix}_cnt", self._count_slot(), L.Cast(n, "int64"), "add")]
        stored = L.Var(self.namer.fresh("stored"))
        total: L.LExpr | None = None
        for o, l in its:
            lo, hi = self._iter_range(o, l, st)
            total = binop("sub", hi, lo) if total is None else binop("add", total, binop("sub", hi, lo))
        return [L.Assign(stored, total),
                L.Store(f"{self.out.prefix}_cnt", self._count_slot(), L.Cast(binop("min", stored, n), "int64"), "add")]

    def _comment(self, var: str, its, universe: bool = False) -> str:
        """``i: compressed level 1 of A`` -- ties a loop to its index variable and the levels it walks."""
        lv = self.lvars[var]
        head = var if lv.part == "full" else f"{var} = {lv.dim_var} {'floordiv' if lv.part == 'outer' else 'mod'} " \
                                               f"{lv.factor}"
        parts = ", ".join(f"{o.levels[l].mlir()} level {l} of {o.prefix}" for o, l in its) or "dense"
        return f"{head}: {parts}{' (every coordinate)' if universe and its else ''}"

    # ------------------------------------------------------------------ binding
    def bind(self, k: int, st: _State, value: L.LExpr, expr: Expr) -> tuple[list[L.Stmt], list[L.Stmt]]:
        """Bind loop variable ``order[k]``; return (statements, guard-wrapped continuation marker).

        Returns the statements to emit before the nested body and a list of guard
        conditions (as statements are built by the caller).
        """
        var = self.order[k]
        stmts: list[L.Stmt] = []
        v = L.Var(var)
        if not (isinstance(value, L.Var) and value.name == var):
            stmts.append(L.Assign(v, value))
        st.bound[var] = v
        stmts += self._materialize(st)
        if self.nest.top and k == 0 and self.count_var is not None and self._outer_count is not None \
                and not self.one_pass_mode:
            # Numeric pass of a sparse output: entries of this outer iteration start at its offset.
            stmts.append(L.Assign(self.count_var, L.Cast(L.Load(f"{self.out.prefix}_off", self._outer_count, "int64"),
                                                         INDEX)))
        return stmts, []

    def namer_once(self, base: str) -> str:
        key = f"_once_{base}"
        if not hasattr(self, key):
            setattr(self, key, self.namer.fresh(base))
        return getattr(self, key)

    def _materialize(self, st: _State) -> list[L.Stmt]:
        """Compute positions of dense levels whose coordinate and parent position are known."""
        stmts: list[L.Stmt] = []
        for o in self.space.all_operands():
            if o.is_output and self.strategy not in ("dense", "dense_then_convert"):
                continue
            ops = st.ops[o.key]
            for l, lvl in enumerate(o.levels):
                if ops.pos[l] is not None:
                    continue
                if not lvl.is_full:
                    break
                parent = const(0) if l == 0 else ops.pos[l - 1]
                coord = self.level_coord(o, l, st)
                if parent is None or coord is None:
                    break
                p = binop("add", binop("mul", parent, self.level_size(o, l)), coord) if l > 0 else coord
                if isinstance(p, (L.Var, L.Const)):
                    ops.pos[l] = p
                else:
                    name = L.Var(self.namer.fresh(f"p{o.prefix}{l}"))
                    stmts.append(L.Assign(name, p))
                    ops.pos[l] = name
        return stmts

    def _guarded(self, k: int, st: _State, expr: Expr, pre: list[L.Stmt]) -> list[L.Stmt]:
        """``pre`` then the nested body, wrapped in filters for repeated indices and block padding."""
        conds: list[L.LExpr] = []
        var = self.order[k]
        lv = self.lvars[var]
        for a, b in self.filters:
            # Full coordinates: a blocked operand splits both variables into blocks and offsets.
            ca, cb = self.dim_coord(a, st), self.dim_coord(b, st)
            if lv.dim_var in (a, b) and ca is not None and cb is not None:
                conds.append(binop("eq", ca, cb))
        if lv.part == "inner" and self._sparse_inner(var):
            full = self.dim_coord(lv.dim_var, st)
            if full is not None:
                conds.append(binop("lt", full, L.Var(self.dim_param[lv.dim_var])))
        inner = self.lower(k + 1, st, expr)
        if not inner:
            return []
        if conds:
            c = conds[0]
            for x in conds[1:]:
                c = binop("and", c, x)
            return pre + [L.If(c, L.Block(tuple(inner)))]
        return pre + inner

    def _sparse_inner(self, var: str) -> bool:
        """True when an inner block variable is bound from stored coordinates (may hit padding)."""
        for o in self.space.operands:
            for lv, lvl in zip(o.level_vars, o.levels):
                if lv.name == var and not lvl.is_full:
                    return True
        return False

    # ------------------------------------------------------------------ loop shapes
    def _dense_loop(self, k: int, st: _State, expr: Expr, comment: str) -> list[L.Stmt]:
        var = self.order[k]
        lv = self.lvars[var]
        inner_st = st.copy()
        self._count_per_iteration(k, L.Var(var), CountSlots("coordinate"))
        pre, _ = self.bind(k, inner_st, L.Var(var), expr)
        body = self._guarded(k, inner_st, expr, pre)
        if not body:
            return []
        lo, hi = const(0), self.dense_hi(lv, st)
        kind = L.SERIAL
        if k == 0 and self._parallel_ok(k):
            kind = self._parallel_kind(var, None)
            self.parallel_info = ParallelInfo(var, lo, hi, kind.balance, kind.private, self._balance_chain(kind.balance))
            lo, hi = L.Var("sc_lo"), L.Var("sc_hi")
        if not (k == 0 and self.nest.top and self.one_pass_mode and self.count_var is not None):
            return [L.For(L.Var(var), lo, hi, L.Block(tuple(body)), kind, comment, var)]
        # one pass: the chunk's rows follow one another from the bound offset of its first row, and each
        # row's exact count is stored for the host
        self._cursor_started = True
        w, row_start = self.count_var, L.Var(self.namer.fresh("wrow"))
        count = L.Store(f"{self.out.prefix}_cnt", self._count_slot(), L.Cast(binop("sub", w, row_start), "int64"))
        body = [L.Assign(row_start, w)] + body + [count]
        start = L.Assign(w, L.Cast(L.Load(f"{self.out.prefix}_off", lo, "int64"), INDEX))
        return [start, L.For(L.Var(var), lo, hi, L.Block(tuple(body)), kind, comment, var)]

    def _parallel_ok(self, k: int) -> bool:
        if not self.want_parallel or k != 0 or not self.nest.top:
            return False
        var = self.order[0]
        races = self.lvars[var].dim_var in self.reduce_vars or var not in self.out_vars
        if races:
            # iterations may update the same outputs: only with a reduction the schedule asked for
            return self.spec.reduction is not None and self.strategy in ("dense", "dense_then_convert")
        return self.strategy in ("dense", "dense_then_convert", "same_pattern", "entries", "workspace")

    def _parallel_kind(self, var: str, it) -> L.LoopKind:
        """The annotation of the parallel outer loop: balance, atomics (see :class:`ParallelSpec`)."""
        balance = self._balance_for(var, it)
        if self.spec.balance_tensor is not None and self.spec.var in (None, var):
            balance = self._balance_of(self.spec.balance_tensor, var) or balance
        return L.LoopKind("parallel", balance=balance, atomic=self.spec.reduction == "atomic",
                          private=self._private(var))

    def _private(self, var: str) -> bool:
        """Whether the parallel loop ``var`` takes private copies of the output: asked for, and a loop whose
        iterations may update the same output entries (``var`` is summed over). A loop over output
        coordinates writes disjoint entries: copies would only cost time, so it takes none."""
        return self.spec.reduction == "private" and self.lvars[var].dim_var not in set(self.space.output.dim_vars)

    def _balance_of(self, tensor: str, var: str) -> str | None:
        for o in self.space.operands:
            if o.tensor != tensor or not o.fmt.is_sparse:
                continue
            for l, lv in enumerate(o.level_vars[:-1]):
                if lv.name == var and o.levels[l + 1].balance_part is not None:
                    return self.level_buffer(o, l + 1, o.levels[l + 1].balance_part)
        from ..errors import ScheduleError

        raise ScheduleError(f"pos({var}, {tensor}): {tensor} has no compressed level directly below {var} "
                            "whose positions could split the work")

    def _balance_chain(self, balance: str | None) -> tuple[str, ...]:
        """The pos buffers below the balancing one, while each level has positions (see ParallelInfo)."""
        for o in self.space.operands:
            if balance is None or not o.fmt.is_sparse:
                continue
            for l, lvl in enumerate(o.levels):
                if lvl.balance_part is None or self.level_buffer(o, l, lvl.balance_part) != balance:
                    continue
                chain = []
                for m in range(l + 1, len(o.levels)):
                    part = o.levels[m].balance_part
                    if part is None:
                        break
                    chain.append(self.level_buffer(o, m, part))
                return tuple(chain)
        return ()

    def _balance_for(self, var: str, it: tuple[Operand, int] | None) -> str | None:
        """A pos buffer indexed by this loop's iteration variable, to split work by nonzeros."""
        cands = []
        for o in self.space.operands:
            if not o.fmt.is_sparse:
                continue
            for l, lv in enumerate(o.level_vars[:-1]):
                if lv.name == var and (it is None or (o.key == it[0].key and l == it[1])):
                    part = o.levels[l + 1].balance_part
                    if part is not None and l == 0:
                        cands.append(self.level_buffer(o, l + 1, part))
        return cands[0] if cands else None

    def _iter_range(self, o: Operand, l: int, st: _State) -> tuple[L.LExpr, L.LExpr]:
        """Position range of level ``l`` of ``o`` under its parent's position (asked of the level)."""
        ops = st.ops[o.key]
        parent = const(0) if l == 0 else ops.pos[l - 1]
        assert parent is not None, "parent position must be bound (loop order guarantees it)"
        seg = ops.seg_end[l - 1] if l > 0 else None
        return o.levels[l].position_range(_LevelCG(self, o, l), parent, seg)

    def _idx(self, buf: str, index: L.LExpr, o: Operand) -> L.LExpr:
        dt = self._buffers[buf].dtype
        return L.Cast(L.Load(buf, index, dt), INDEX)

    def _crd(self, o: Operand, l: int, p: L.LExpr) -> L.LExpr:
        return o.levels[l].coordinate(_LevelCG(self, o, l), p)

    def _segment(self, o: Operand, l: int, cur: L.Var, end: L.LExpr, coord: L.LExpr) -> tuple[list[L.Stmt], L.Var]:
        """For a non-unique level: find where the run of equal coordinates starting at ``cur`` ends."""
        seg = L.Var(self.namer.fresh(f"seg{o.prefix}{l}"))
        nxt = binop("add", seg, 1)
        cond = binop("and", binop("lt", seg, end), binop("eq", self._crd(o, l, seg), coord))
        return [L.Assign(seg, binop("add", cur, 1)), L.While(cond, L.Block((L.Assign(seg, nxt),)))], seg

    def _enter(self, st: _State, o: Operand, l: int, p: L.LExpr, seg: L.LExpr | None) -> None:
        st.ops[o.key].pos[l] = p
        st.ops[o.key].seg_end[l] = seg

    def _position_loop(self, k: int, st: _State, it: tuple[Operand, int], expr: Expr, comment: str) -> list[L.Stmt]:
        o, l = it
        lvl = o.levels[l]
        lo, hi = self._iter_range(o, l, st)
        var = self.order[k]
        p = L.Var(self.namer.fresh(f"p{o.prefix}{l}"))
        inner = st.copy()
        one_child = lvl.single_child and not (l > 0 and st.ops[o.key].seg_end[l - 1] is not None)
        if one_child:
            self._count_per_iteration(k, None, CountSlots("one"))
        elif l == 0 and lvl.ordered:  # positions in coordinate order: the runs of entries stay sorted
            self._count_per_iteration(k, p, CountSlots("position", o.prefix, l))
        else:
            self._count_per_iteration(k, L.Var(var), CountSlots("coordinate"))
        if not lvl.unique and not self._duplicates_may_repeat(k):
            # Iterate runs of equal coordinates: each coordinate once, children get [p, seg).
            end = L.Var(self.namer.fresh(f"end{o.prefix}{l}"))
            coord = self._crd(o, l, p)
            seg_stmts, seg = self._segment(o, l, p, end, L.Var(var))
            self._enter(inner, o, l, p, seg)
            pre, _ = self.bind(k, inner, coord, expr)
            body = self._guarded(k, inner, expr, pre[:1] + seg_stmts + pre[1:])
            if not body:
                return []
            loop = L.While(binop("lt", p, end), L.Block(tuple(body + [L.Assign(p, seg)])), comment, var)
            return [L.Assign(p, lo), L.Assign(end, hi), loop]
        if not lvl.unique:   # each entry on its own (see _duplicates_may_repeat)
            self._enter(inner, o, l, p, None)
            pre, _ = self.bind(k, inner, self._crd(o, l, p), expr)
            body = self._guarded(k, inner, expr, pre)
            return [L.For(p, lo, hi, L.Block(tuple(body)), L.SERIAL, comment + " (entries one by one: they add)",
                          var)] if body else []
        if one_child:  # no loop
            self._enter(inner, o, l, lo, None)
            pre, _ = self.bind(k, inner, self._crd(o, l, lo), expr)
            return [L.Comment(comment)] + self._guarded(k, inner, expr, pre)
        self._enter(inner, o, l, p, None)
        pre, _ = self.bind(k, inner, self._crd(o, l, p), expr)
        body = self._guarded(k, inner, expr, pre)
        if not body:
            return []
        kind = L.SERIAL
        if k == 0 and self._parallel_ok(k):
            kind = self._parallel_kind(var, it)
            self.parallel_info = ParallelInfo(p.name, lo, hi, kind.balance, kind.private, self._balance_chain(kind.balance))
            lo, hi = L.Var("sc_lo"), L.Var("sc_hi")
        return [L.For(p, lo, hi, L.Block(tuple(body)), kind, comment, var)]

    def _cursors(self, st: _State, its) -> tuple[list[L.Stmt], dict, dict]:
        init: list[L.Stmt] = []
        cur, end = {}, {}
        for o, l in its:
            lo, hi = self._iter_range(o, l, st)
            cur[o.key] = L.Var(self.namer.fresh(f"p{o.prefix}{l}"))
            end[o.key] = L.Var(self.namer.fresh(f"end{o.prefix}{l}"))
            init += [L.Assign(cur[o.key], lo), L.Assign(end[o.key], hi)]
        return init, cur, end

    def _point_cases(self, k: int, st: _State, points: list[LatticePoint], members, its, present: dict,
                     cur: dict, segs: dict) -> list[L.Stmt]:
        """The lattice points' cases (the first whose members are all present runs), then an advance of each
        present member (members in operand order, so the generated code is deterministic)."""
        cases = []
        for p in points:
            cond = None
            for o, _ in members:
                if o.key in p.iterators:
                    cond = present[o.key] if cond is None else binop("and", cond, present[o.key])
            cases.append((cond, p))
        stmts = self._case_chain(k, st, cases, its, cur, segs)
        for o, _ in members:
            step = segs.get(o.key, binop("add", cur[o.key], 1))
            stmts.append(L.If(present[o.key], L.Block((L.Assign(cur[o.key], step),))))
        return stmts

    def _presence_chain(self, k: int, st: _State, subs: list[LatticePoint], members, its, present: dict,
                        cur: dict, segs: dict) -> list[L.Stmt]:
        """One case per set of members present at the coordinate (largest sets first; the last, a single
        member, is the ``else``: the coordinate is the least of theirs, so one is present). Each case runs
        the body of the first lattice point among ``subs`` whose iterators it holds, if any, then advances
        its members. Advancing inside the cases makes each cursor depend on the branch taken, which the
        CPU predicts, rather than on the coordinate just loaded: a merge of like patterns (A + Aᵀ of a
        symmetric A) ran ~1.4x faster on the AMD host than with the advances after the chain."""
        chain: list[L.Stmt] = []
        subsets = [c for r in range(len(members), 0, -1) for c in combinations(members, r)]
        for combo in reversed(subsets):
            keys = frozenset(o.key for o, _ in combo)
            point = next((p for p in subs if p.iterators <= keys), None)
            body: list[L.Stmt] = []
            if point is not None:
                inner = st.copy()
                for o, l in its:
                    if o.key in point.iterators:
                        self._enter(inner, o, l, cur[o.key], segs.get(o.key))
                body = self._guarded(k, inner, point.expr, self._materialize(inner))
            body += [L.Assign(cur[o.key], segs.get(o.key, binop("add", cur[o.key], 1))) for o, _ in combo]
            if not chain:
                chain = body
                continue
            cond = None
            for o, _ in combo:
                cond = present[o.key] if cond is None else binop("and", cond, present[o.key])
            chain = [L.If(cond, L.Block(tuple(body)), L.Block(tuple(chain)))]
        return chain

    def _case_chain(self, k: int, st: _State, cases: list[tuple[L.LExpr | None, LatticePoint]], its,
                    cur: dict, segs: dict) -> list[L.Stmt]:
        """``if c1 {body(P1)} else if c2 {...}`` where each body sees only P's operands."""
        chain: list[L.Stmt] = []
        for cond, point in reversed(cases):
            inner = st.copy()
            for o, l in its:
                if o.key in point.iterators:
                    self._enter(inner, o, l, cur[o.key], segs.get(o.key))
            body = self._guarded(k, inner, point.expr, self._materialize(inner))
            if cond is None:
                chain = body
            elif body or chain:
                chain = [L.If(cond, L.Block(tuple(body)), L.Block(tuple(chain)))]
        return chain

    def _universe_loop(self, k: int, st: _State, its, points: list[LatticePoint], comment: str) -> list[L.Stmt]:
        var = self.order[k]
        lv = self.lvars[var]
        init, cur, end = self._cursors(st, its)
        inner = st.copy()
        self._count_per_iteration(k, L.Var(var), CountSlots("coordinate"))
        pre, _ = self.bind(k, inner, L.Var(var), None)
        n = self.extent(lv)
        body: list[L.Stmt] = list(pre)
        coords, segs, present = {}, {}, {}
        for o, l in its:
            lvl = o.levels[l]
            if not lvl.positions_iterable:  # a bitmap: test this coordinate's bit
                parent = const(0) if l == 0 else inner.ops[o.key].pos[l - 1]
                c = L.Var(self.namer.fresh(f"has{o.prefix}{l}"), BOOL)
                body.append(L.Assign(c, lvl.present(_LevelCG(self, o, l), parent, L.Var(var))))
                present[o.key] = c
                continue
            c = L.Var(self.namer.fresh(f"c{o.prefix}{l}"))
            coords[o.key] = c
            body += [L.Assign(c, n), L.If(binop("lt", cur[o.key], end[o.key]),
                                          L.Block((L.Assign(c, self._crd(o, l, cur[o.key])),)))]
            present[o.key] = binop("eq", c, L.Var(var))
            if not o.levels[l].unique:
                seg_stmts, seg = self._segment(o, l, cur[o.key], end[o.key], c)
                body += [L.Assign(seg, binop("add", cur[o.key], 1)), L.If(present[o.key], L.Block(tuple(seg_stmts)))]
                segs[o.key] = seg
        body += self._point_cases(k, inner, points, its, its, present, cur, segs)
        loop = L.For(L.Var(var), const(0), self.dense_hi(lv, st), L.Block(tuple(body)), L.SERIAL, comment, var)
        return init + [loop]

    def _coiterate(self, k: int, st: _State, its, points: list[LatticePoint], comment: str) -> list[L.Stmt]:
        var = self.order[k]
        init, cur, end = self._cursors(st, its)
        self._count_per_iteration(k, None, CountSlots("one"))
        out: list[L.Stmt] = list(init)
        by_key = {o.key: (o, l) for o, l in its}
        for point in points:
            members = [by_key[key] for key in by_key if key in point.iterators]
            if len(members) == 1:
                out += self._tail_loop(k, st, members[0], cur, end, point.expr,
                                       self._comment(var, members) + " (rest)")
                continue
            inner = st.copy()
            body: list[L.Stmt] = []
            coords, segs, present = {}, {}, {}
            for o, l in members:
                c = L.Var(self.namer.fresh(f"c{o.prefix}{l}"))
                coords[o.key] = c
                body.append(L.Assign(c, self._crd(o, l, cur[o.key])))
            vmin = None
            for o, _ in members:
                vmin = coords[o.key] if vmin is None else binop("min", vmin, coords[o.key])
            pre, _ = self.bind(k, inner, vmin, None)
            body += pre
            for o, l in members:
                present[o.key] = binop("eq", coords[o.key], L.Var(var))
                if not o.levels[l].unique:
                    seg_stmts, seg = self._segment(o, l, cur[o.key], end[o.key], coords[o.key])
                    body += seg_stmts
                    segs[o.key] = seg
            subs = [p for p in sub_points(points, point) if not p.is_universe]
            if len(members) <= _STEP_IN_CASES_MAX:
                body += self._presence_chain(k, inner, subs, members, its, present, cur, segs)
            else:
                body += self._point_cases(k, inner, subs, members, its, present, cur, segs)
            cond = None
            for o, _ in members:
                c = binop("lt", cur[o.key], end[o.key])
                cond = c if cond is None else binop("and", cond, c)
            out.append(L.While(cond, L.Block(tuple(body)), comment, var))
        return out

    def _tail_loop(self, k: int, st: _State, it, cur: dict, end: dict, expr: Expr, comment: str) -> list[L.Stmt]:
        """The remaining positions of one iterator after the others ran out."""
        o, l = it
        var = self.order[k]
        inner = st.copy()
        p = cur[o.key]
        if not o.levels[l].unique:
            seg_stmts, seg = self._segment(o, l, p, end[o.key], L.Var(var))
            self._enter(inner, o, l, p, seg)
            pre, _ = self.bind(k, inner, self._crd(o, l, p), expr)
            body = self._guarded(k, inner, expr, pre[:1] + seg_stmts + pre[1:])
            if not body:
                return []
            return [L.While(binop("lt", p, end[o.key]), L.Block(tuple(body + [L.Assign(p, seg)])), comment, var)]
        q = L.Var(self.namer.fresh(f"q{o.prefix}{l}"))
        self._enter(inner, o, l, q, None)
        pre, _ = self.bind(k, inner, self._crd(o, l, q), expr)
        body = self._guarded(k, inner, expr, pre)
        if not body:
            return []
        return [L.For(q, p, end[o.key], L.Block(tuple(body)), L.SERIAL, comment, var)]

    # ------------------------------------------------------------------ accumulation and output
    def hoisted(self, k: int, st: _State, expr: Expr) -> list[L.Stmt]:
        """Wrap the reduction loops in a scalar accumulator, then write it once."""
        inner = st.copy()
        stmts: list[L.Stmt] = []
        op = self.reduce_op or "sum"
        # A sparse output gets an entry only where some term contributed.
        needs_hit = self.strategy == "entries"
        if needs_hit:
            inner.hit = L.Var(self.namer.fresh("hit"), BOOL)
            stmts.append(L.Assign(inner.hit, const(False, BOOL)))
        if self.symbolic:
            inner.acc = L.Var("acc_unused", self.adt)  # marks "inside the accumulation"; never emitted
        else:
            inner.acc = L.Var(self.namer.fresh("acc"), self.adt)
            stmts.append(L.Assign(inner.acc, const(identity_value(op, self.adt), self.adt)))
        stmts += self.lower_var(k, inner, expr)
        if self.symbolic:
            return stmts + [L.If(inner.hit, L.Block(tuple(self.emit(st, None))))]
        write = self.write_output(st, inner.acc, exclusive=True)
        if needs_hit:
            return stmts + [L.If(inner.hit, L.Block(tuple(write)))]
        return stmts + write

    def leaf(self, st: _State, expr: Expr) -> list[L.Stmt]:
        if not self.nest.top:
            value = self.emit_expr(expr, st)
            acc = self.nest.acc
            return [L.Assign(acc, binop(STORE_OP[self.reduce_op], acc, self._as(value, acc.dtype)))]
        if self.symbolic:
            if st.hit is not None:
                return [L.Assign(st.hit, const(True, BOOL))]
            if self.strategy == "workspace" and self.one_pass_mode:
                return [L.Assign(st.row_count, binop("add", st.row_count, 1))]   # a term: at most one new entry
            if self.strategy == "workspace":
                return self.ws_touch(st)
            return self.emit(st, None)
        value = self.emit_expr(expr, st)
        if self.strategy == "workspace" and st.hash is not None:
            return self.hash_accumulate(st, value)
        if self.strategy == "workspace":
            return self.ws_touch(st) + self.ws_accumulate(st, value)
        if st.acc is not None:
            op = self.reduce_op or "sum"
            new = binop({"sum": "add", "max": "max", "min": "min"}[op], st.acc, self._as(value, st.acc.dtype))
            stmts = [L.Assign(st.acc, new)]
            if st.hit is not None:
                stmts.append(L.Assign(st.hit, const(True, BOOL)))
            return stmts
        exclusive = self.reduce_op is None
        return self.write_output(st, value, exclusive)

    def write_output(self, st: _State, value: L.LExpr, exclusive: bool) -> list[L.Stmt]:
        red = None if exclusive else STORE_OP[self.reduce_op or "sum"]
        if self.strategy in ("dense", "dense_then_convert"):
            pos = st.ops[self.out.key].pos[-1] if self.out.levels else const(0)
            if pos is None:
                raise AssertionError("output position unknown at the leaf")
            return [L.Store(self.vals_buffer_out(), pos, value, red)]
        if self.strategy == "same_pattern":
            src = self.pattern_source
            pos = st.ops[src.key].pos[-1]
            return [L.Store(self.vals_buffer_out(), pos, value, red)]
        return self.emit(st, value)

    def vals_buffer_out(self) -> str:
        return f"{self.out.prefix}_vals"

    def emit(self, st: _State, value: L.LExpr | None) -> list[L.Stmt]:
        """Append one output entry (numeric) or count it (symbolic)."""
        if self.symbolic:
            return [L.Store(f"{self.out.prefix}_cnt", self._count_slot(), const(1, "int64"), "add")]
        w = self.count_var if self.count_var is not None else const(0)
        stmts: list[L.Stmt] = []
        if self.direct:
            d = self.out.fmt.exprs[1].dim
            dt = f"int{self.out.fmt.crd_width}"
            stmts.append(L.Store(f"{self.out.prefix}_crd1", w, L.Cast(self.dim_coord(self.out.dim_vars[d], st), dt)))
        else:
            for d, var in enumerate(self.out.dim_vars):
                stmts.append(L.Store(f"{self.out.prefix}_crd{d}", w, L.Cast(self.dim_coord(var, st), "int64")))
        stmts.append(L.Store(f"{self.out.prefix}_vals", w, value))
        stmts.append(L.Assign(w, binop("add", w, 1)))
        return stmts

    def _count_slot(self) -> L.LExpr:
        """The entry of the counts array an output entry is counted in (see :class:`CountSlots`)."""
        return self._outer_count if self._outer_count is not None else const(0)

    def _count_per_iteration(self, k: int, index: L.LExpr | None, slots: CountSlots) -> None:
        """At the outer loop (``k == 0``) of a sparse output: count entries per iteration ``index`` (a
        coordinate, or a position of the level the loop walks), or in one slot when ``index`` is None."""
        if k != 0 or not self.nest.top or self.strategy not in ("entries", "workspace"):
            return
        if self.order[0] not in self.out_vars:
            self._outer_count, self.count_slots = None, CountSlots("one")
        elif self.direct:
            # The counts' prefix sums become the output's pos array: one slot per row.
            self._outer_count, self.count_slots = L.Var(self.order[0]), CountSlots("coordinate")
        elif index is None:
            self._outer_count, self.count_slots = None, CountSlots("one")
        else:
            self._outer_count, self.count_slots = index, slots

    # ------------------------------------------------------------------ workspace (SpGEMM-style)
    def workspace_row(self, k: int, st: _State, expr: Expr) -> list[L.Stmt]:
        """Accumulate one output row in a workspace, then emit it sorted and clear it.

        The symbolic kernel counts a row's distinct columns with the dense marks (n bytes).
        The numeric kernel knows each row's exact output count from the counts' prefix sums
        (``off[slot + 1] - off[slot]``) and, per row, accumulates it either in the dense row
        (``vals``/``mark`` of n entries) or in a hash table of T slots (T: a power of two >=
        2 * the count; linear probing); ``Schedule.workspace`` may force either. Under the
        automatic choice a row takes the hash table when the dense row is large (n * (value
        bytes + 1) >= HASH_MIN_BYTES: it misses the caches) and ``T * HASH_RATIO <= n``: then
        its randomly touched state is far smaller than the dense row. Columns must be < 2**31
        on the hash path (its touched list packs column << 32 | slot).
        """
        kind = self.spec.workspace
        if self.symbolic or kind == "dense":
            return self.dense_row(k, st, expr)
        n = L.Var(self.dim_param[self.lvars[self.ws_var].dim_var])
        off, slot = f"{self.out.prefix}_off", self._count_slot()
        count = binop("sub", L.Cast(L.Load(off, binop("add", slot, 1), "int64"), INDEX),
                      L.Cast(L.Load(off, slot, "int64"), INDEX))
        rc, tsz, lg, mask, sh = (L.Var(self.namer.fresh(b)) for b in ("rc", "tsz", "lg", "hmask", "hsh"))
        size: list[L.Stmt] = [
            L.Assign(rc, count), L.Assign(tsz, const(2)), L.Assign(lg, const(1)),
            L.While(binop("lt", tsz, binop("add", rc, rc)), L.Block((
                L.Assign(tsz, binop("add", tsz, tsz)), L.Assign(lg, binop("add", lg, 1)))),
                comment="hash table slots: the least power of two >= 2 * the row's output count")]
        hashed = [L.Assign(mask, binop("sub", tsz, 1)), L.Assign(sh, binop("sub", const(_HASH_BITS), lg))]
        hashed += self.hash_row(k, st, expr, (mask, sh))
        if kind == "hash":
            return size + hashed
        item = {"float64": 8, "int64": 8, "float32": 4, "int32": 4, "float16": 2, "bfloat16": 2}.get(self.adt, 1)
        min_n = -(-HASH_MIN_BYTES // (item + 1))
        # a dense row of >= HASH_MIN_BYTES, and the table's slots * HASH_RATIO <= n; the row's table size is
        # only computed where the first holds (narrower outputs, all of today's test matrices, pay nothing)
        take = L.Var(self.namer.fresh("hash"), BOOL)
        decide = [L.Assign(take, const(False, BOOL)), L.Assign(tsz, const(2)), L.Assign(lg, const(1)),
                  L.If(binop("ge", n, const(min_n)), L.Block(tuple(size) + (
                      L.Assign(take, binop("le", binop("mul", tsz, const(HASH_RATIO)), n)),)))]
        return decide + [L.If(take, L.Block(tuple(hashed)), L.Block(tuple(self.dense_row(k, st, expr))))]

    def _sort_list(self, cnt: L.Var, n: L.LExpr, start: int = 0) -> L.Stmt:
        """Sort the touched list by its keys' bits from ``start`` up (columns in ``[0, n)`` there)."""
        lst = self.ws_names["list"]
        short = binop("le", cnt, const(_INSERTION_MAX))
        return L.If(short, L.Block(tuple(self.insertion_sort(lst, cnt))),
                    L.Block(tuple(self.radix_sort(lst, self.ws_names["tmp"], self.ws_names["hist"], cnt, n, start))))

    def _hash_slot(self, j: L.LExpr, sh: L.Var) -> L.LExpr:
        """The home slot of column ``j`` in a table of 2**(31 - sh) slots (multiplicative hash)."""
        low = const((1 << _HASH_BITS) - 1)
        return binop("shr", binop("bitand", binop("mul", binop("bitand", j, low), const(_HASH_MUL)), low), sh)

    def _probe(self, h: L.Var, j: L.LExpr, mask: L.Var, stop_at_empty: bool) -> L.Stmt:
        """Linear probing from slot ``h`` to ``j``'s slot (or, inserting, the first empty one)."""
        hkey = self.ws_names["hkey"]
        key = L.Load(hkey, h, "int64")
        cond = binop("ne", key, L.Cast(j, "int64"))
        if stop_at_empty:
            cond = binop("and", cond, binop("ne", key, const(-1, "int64")))
        return L.While(cond, L.Block((L.Assign(h, binop("bitand", binop("add", h, 1), mask)),)))

    def hash_row(self, k: int, st: _State, expr: Expr, table: tuple[L.Var, L.Var]) -> list[L.Stmt]:
        """One row in the hash table: accumulate, sort the touched columns, look each up, emit, clear."""
        inner = st.copy()
        inner.row_count = L.Var(self.namer.fresh("nrow"))
        inner.hash = table
        stmts: list[L.Stmt] = [L.Assign(inner.row_count, const(0))]
        stmts += self.lower_var(k, inner, expr)
        cnt, lst = inner.row_count, self.ws_names["list"]
        mask, sh = table
        t, h = L.Var(self.namer.fresh("t")), L.Var(self.namer.fresh("h"))
        jv = L.Var(self.ws_var)
        emit_st = st.copy()
        emit_st.bound[self.ws_var] = jv
        value = self.ws_value(h, "hvals", "hcount")   # the touched list holds column << 32 | slot
        clear: list[L.Stmt] = [L.Store(self.ws_names["hkey"], h, const(-1, "int64")),
                               L.Store(self.ws_names["hvals"], h, const(0, self.adt))]
        if "hcount" in self.ws_names:
            clear.append(L.Store(self.ws_names["hcount"], h, const(0, "int64")))
        x = L.Var(self.namer.fresh("x"), "int64")
        drain = [L.Assign(x, L.Load(lst, t, "int64")),
                 L.Assign(jv, L.Cast(binop("shr", x, const(_SLOT_BITS, "int64")), INDEX)),
                 L.Assign(h, L.Cast(binop("bitand", x, const((1 << _SLOT_BITS) - 1, "int64")), INDEX))]
        drain += self.emit(emit_st, value) + clear
        n = L.Var(self.dim_param[self.lvars[self.ws_var].dim_var])
        if not self.touch_order:
            stmts.append(self._sort_list(cnt, n, _SLOT_BITS))
        order = " in touch order" if self.touch_order else ", sorted"
        stmts.append(L.For(t, const(0), cnt, L.Block(tuple(drain)),
                           comment=f"{self.ws_var}: touched coordinates{order}, looked up in the hash table"))
        return stmts

    def hash_accumulate(self, st: _State, value: L.LExpr) -> list[L.Stmt]:
        """Find (or insert) the column's slot, then combine one term into it (and count it under max/min)."""
        j = st.bound[self.ws_var]
        mask, sh = st.hash
        h = L.Var(self.namer.fresh("h"))
        hkey, lst, cnt = self.ws_names["hkey"], self.ws_names["list"], st.row_count
        packed = binop("add", binop("mul", L.Cast(j, "int64"), const(1 << _SLOT_BITS, "int64")), L.Cast(h, "int64"))
        first: list[L.Stmt] = [L.Store(hkey, h, L.Cast(j, "int64")), L.Store(lst, cnt, packed),
                               L.Assign(cnt, binop("add", cnt, 1))]
        if "hcount" in self.ws_names:
            first.append(L.Store(self.ws_names["hvals"], h, const(identity_value(self.reduce_op, self.adt), self.adt)))
        op = self.reduce_op or "sum"
        stmts: list[L.Stmt] = [
            L.Assign(h, self._hash_slot(j, sh)), self._probe(h, j, mask, True),
            L.If(binop("eq", L.Load(hkey, h, "int64"), const(-1, "int64")), L.Block(tuple(first))),
            L.Store(self.ws_names["hvals"], h, value, STORE_OP[op])]
        if "hcount" in self.ws_names:
            stmts.append(L.Store(self.ws_names["hcount"], h, const(1, "int64"), "add"))
        return stmts

    def dense_row(self, k: int, st: _State, expr: Expr) -> list[L.Stmt]:
        """Accumulate one output row in the dense workspace (n entries), then emit it sorted and clear it."""
        inner = st.copy()
        inner.row_count = L.Var(self.namer.fresh("nrow"))
        stmts: list[L.Stmt] = [L.Assign(inner.row_count, const(0))]
        stmts += self.lower_var(k, inner, expr)
        cnt = inner.row_count
        n = L.Var(self.dim_param[self.lvars[self.ws_var].dim_var])
        if self.symbolic and self.one_pass_mode:   # the bound: the row's terms, at most n columns
            return stmts + [L.Store(f"{self.out.prefix}_cnt", self._count_slot(), L.Cast(binop("min", cnt, n), "int64"),
                                    "add")]
        lst, mark = self.ws_names["list"], self.ws_names["mark"]
        t = L.Var(self.namer.fresh("t"))
        jv = L.Var(self.ws_var)
        clear = [L.Store(mark, jv, const(0, "int8"))]
        if self.symbolic:
            stmts.append(L.Store(f"{self.out.prefix}_cnt", self._count_slot(), L.Cast(cnt, "int64"), "add"))
            stmts.append(L.For(t, const(0), cnt, L.Block((L.Assign(jv, L.Cast(L.Load(lst, t, "int64"), INDEX)),
                                                          *clear))))
            return stmts
        vals = self.ws_names["vals"]
        emit_st = st.copy()
        emit_st.bound[self.ws_var] = jv
        value = self.ws_value(jv)
        if "count" in self.ws_names:
            clear.append(L.Store(self.ws_names["count"], jv, const(0, "int64")))
        drain = [L.Assign(jv, L.Cast(L.Load(lst, t, "int64"), INDEX))] + self.emit(emit_st, value) + [
            L.Store(vals, jv, const(0, self.adt))] + clear
        order = " in touch order" if self.touch_order else ", sorted"
        drain_loop = L.For(t, const(0), cnt, L.Block(tuple(drain)), comment=f"{self.ws_var}: touched coordinates{order}")
        if self.touch_order:
            return stmts + [drain_loop]
        # Emitting the row in column order, whichever is cheapest for its length: scanning the whole
        # workspace (n byte tests), an insertion sort of the touched list (~cnt^2/4 moves: short
        # rows), or a radix sort of it (~2 passes of 512 + 4 cnt branch-free steps).
        scan_body = [L.If(binop("ne", L.Load(mark, jv, "int8"), const(0, "int8")),
                          L.Block(tuple(self.emit(emit_st, value) + [L.Store(vals, jv, const(0, self.adt))] + clear)))]
        scan = [L.For(jv, const(0), n, L.Block(tuple(scan_body)), comment=f"{self.ws_var}: scan the dense workspace")]
        sort = self._sort_list(cnt, n)
        scan_wins = binop("lt", n, binop("add", binop("mul", cnt, 8), const(2 * _RADIX)))
        stmts.append(L.If(scan_wins, L.Block(tuple(scan)), L.Block((sort, drain_loop))))
        return stmts

    def _ws_dtypes(self, symbolic: bool = False) -> dict[str, str]:
        """The row workspace's buffers. The symbolic kernel counts a row's columns with the dense marks
        and the touched list only. The numeric one has the dense row (values, marks and, under max/min,
        how many terms reached each coordinate: fewer than the reduced range means an implicit 0 joins)
        unless the schedule forces the hash table, the touched list and the radix sort's scratch, and the
        hash table's keys, values (and counts) unless the schedule forces the dense row."""
        if symbolic:
            return {"mark": "int8", "list": "int64"}
        kind = self.spec.workspace
        minmax = self.main.reduce_op in ("max", "min")
        parts: dict[str, str] = {}
        if kind != "hash":
            parts.update(vals=self.adt, mark="int8")
        parts["list"] = "int64"
        if not self.touch_order:
            parts.update(tmp="int64", hist="int64")
        if minmax and kind != "hash":
            parts["count"] = "int64"
        if kind != "dense":
            parts.update(hkey="int64", hvals=self.adt)
            if minmax:
                parts["hcount"] = "int64"
        return parts

    def ws_touch(self, st: _State) -> list[L.Stmt]:
        j = st.bound[self.ws_var]
        mark, lst = self.ws_names["mark"], self.ws_names["list"]
        cnt = st.row_count
        if self.spec.workspace_touch == "select" and "count" not in self.ws_names:
            # no branch: the list's slot cnt is written every time and kept only for a new column
            # (the list holds n + 1 slots for the last write of a full row)
            new = L.Cast(binop("sub", const(1, "int8"), L.Load(mark, j, "int8")), INDEX)
            return [L.Store(lst, cnt, L.Cast(j, "int64")), L.Assign(cnt, binop("add", cnt, new)),
                    L.Store(mark, j, const(1, "int8"))]
        first: list[L.Stmt] = [L.Store(mark, j, const(1, "int8")), L.Store(lst, cnt, L.Cast(j, "int64")),
                               L.Assign(cnt, binop("add", cnt, 1))]
        if "count" in self.ws_names and not self.symbolic:
            first.append(L.Store(self.ws_names["vals"], j, const(identity_value(self.reduce_op, self.adt), self.adt)))
        return [L.If(binop("eq", L.Load(mark, j, "int8"), const(0, "int8")), L.Block(tuple(first)))]

    def ws_accumulate(self, st: _State, value: L.LExpr) -> list[L.Stmt]:
        """Combine one term into the workspace (and count it under max/min)."""
        j = st.bound[self.ws_var]
        op = self.reduce_op or "sum"
        stmts: list[L.Stmt] = [L.Store(self.ws_names["vals"], j, value, STORE_OP[op])]
        if "count" in self.ws_names:
            stmts.append(L.Store(self.ws_names["count"], j, const(1, "int64"), "add"))
        return stmts

    def ws_value(self, j: L.Var, vals: str = "vals", count: str = "count") -> L.LExpr:
        """The reduced value of workspace coordinate ``j``.

        Loops skip terms that are structurally 0 (as for sums); under max/min a coordinate
        reached by fewer terms than the reduced range holds (the product of its extents) had
        an implicit 0 among them.
        """
        v = L.Load(self.ws_names[vals], j, self.adt)
        if count not in self.ws_names:
            return v
        terms = None
        dups = {d for _, d in self.filters}  # a repeated index's duplicate adds no terms (the filter drops them)
        for var in sorted(self.main.reduce_vars - dups):
            n = L.Var(self.dim_param[var])
            terms = n if terms is None else binop("mul", terms, n)
        seen = L.Cast(L.Load(self.ws_names[count], j, "int64"), INDEX)
        op = STORE_OP[self.main.reduce_op]
        return L.Select(binop("lt", seen, terms), binop(op, v, const(0, self.adt)), v, self.adt)

    def insertion_sort(self, buf: str, n: L.Var) -> list[L.Stmt]:
        """Sort ``buf[0:n]`` ascending in place (loop IR; ``and`` short-circuits)."""
        t, u, key = (L.Var(self.namer.fresh(b)) for b in ("s", "u", "key"))
        key = L.Var(key.name, "int64")
        prev = L.Load(buf, binop("sub", u, 1), "int64")
        cond = binop("and", binop("gt", u, 0), binop("gt", prev, key))
        shift = L.While(cond, L.Block((L.Store(buf, u, prev), L.Assign(u, binop("sub", u, 1)))))
        return [L.For(t, const(1), n, L.Block((L.Assign(key, L.Load(buf, t, "int64")), L.Assign(u, t), shift,
                                                L.Store(buf, u, key))), comment="insertion sort of the touched list")]

    def radix_sort(self, buf: str, tmp: str, hist: str, n: L.Var, bound: L.LExpr, start: int = 0) -> list[L.Stmt]:
        """Sort ``buf[0:n]`` (keys in ``[0, bound)``) ascending in place: LSD radix sort, 8 bits a pass.

        ``start``: the keys are ``key << start | payload`` and sort by ``key`` (the payload's bits are
        not sorted on: the hash-table workspace's column << 32 | slot, columns unique in a row).

        Each pass counts the digits into ``hist`` (256 entries), turns the counts into start offsets,
        scatters the keys into ``tmp`` in digit order (stable) and copies them back; passes run while
        ``bound - 1`` has digits left. No data-dependent branches, unlike comparison sorts, whose
        mispredictions dominated SpGEMM rows of ~100 entries (measured on the 2-core Xeon: a Shell
        sort was no faster than the insertion sort).
        """
        shift, t, d, acc, c = (L.Var(self.namer.fresh(b)) for b in ("shift", "t", "d", "acc", "c"))
        key = L.Var(self.namer.fresh("key"), "int64")

        def digit(x: L.LExpr) -> L.LExpr:
            return L.Cast(binop("bitand", binop("shr", x, L.Cast(shift, "int64")), const(_RADIX - 1, "int64")), INDEX)
        i64 = "int64"
        count = [L.For(d, const(0), const(_RADIX), L.Block((L.Store(hist, d, const(0, i64)),))),
                 L.For(t, const(0), n, L.Block((L.Store(hist, digit(L.Load(buf, t, i64)), const(1, i64), "add"),)))]
        offsets = [L.Assign(acc, const(0)),
                   L.For(d, const(0), const(_RADIX), L.Block((
                       L.Assign(c, L.Cast(L.Load(hist, d, i64), INDEX)), L.Store(hist, d, L.Cast(acc, i64)),
                       L.Assign(acc, binop("add", acc, c)))))]
        at = L.Cast(L.Load(hist, d, i64), INDEX)
        scatter = [L.For(t, const(0), n, L.Block((
            L.Assign(key, L.Load(buf, t, i64)), L.Assign(d, digit(key)), L.Store(tmp, at, key),
            L.Store(hist, d, const(1, i64), "add"))))]
        back = [L.For(t, const(0), n, L.Block((L.Store(buf, t, L.Load(tmp, t, i64)),)))]
        top = L.Cast(binop("sub", bound, 1), i64)
        more = binop("or", binop("eq", shift, start),
                     binop("gt", binop("shr", top, L.Cast(binop("sub", shift, start), i64)), const(0, i64)))
        return [L.Assign(shift, const(start)),
                L.While(more, L.Block(tuple(count + offsets + scatter + back) + (L.Assign(shift, binop("add", shift, 8)),)),
                        comment="radix sort of the touched list, 8 bits a pass")]

    # ------------------------------------------------------------------ scalar expressions
    def emit_expr(self, e: Expr, st: _State) -> L.LExpr:
        """Translate a (reduction-free) tensor-IR body into a loop-IR value of the compute dtype."""
        v = self._ex(e, st)
        return self._as(v, self.cdt)

    def _as(self, v: L.LExpr, dtype: str) -> L.LExpr:
        if v.dtype == dtype:
            return v
        if isinstance(v, L.Const):
            return const(v.value, dtype)
        if dtype == BOOL:
            return binop("ne", v, const(0, v.dtype))
        return L.Cast(v, dtype)

    def _arith(self, *dtypes: str) -> str:
        """Arithmetic runs in the compute dtype when it is a float; otherwise (bool or int outputs)
        in the operands' promoted dtype, and the result is cast on store, as numpy does. Booleans in
        arithmetic count as integers (the verifier's rule: ``True + True`` is 2), in the output's int type."""
        if L.is_float(self.cdt):
            return self.cdt
        dt = promote(*dtypes)
        return (self.cdt if self.cdt != BOOL else "int64") if dt == BOOL else dt

    def _ex(self, e: Expr, st: _State) -> L.LExpr:
        """Values keep their own dtype until an operator needs another (see :meth:`_arith`)."""
        if isinstance(e, Access):
            o = self.operands[operand_key(e)]
            pos = st.ops[o.key].pos[-1] if o.levels else const(0)
            if pos is None:
                raise AssertionError(f"position of {o.tensor} unknown at the leaf")
            return L.Load(self.vals_buffer(o), pos, o.dtype)
        if isinstance(e, Opaque):
            return self.opaque[e.name]
        if isinstance(e, Literal):
            if isinstance(e.value, bool):
                return const(e.value, BOOL)
            if L.is_float(self.cdt):
                return const(e.value, self.cdt)
            return const(e.value, "float64" if isinstance(e.value, float) else "int64")
        if isinstance(e, Unary):
            a = self._ex(e.operand, st)
            if e.op == "not":
                return L.UnOp("not", self._as(a, BOOL), BOOL)
            dt = self._arith(a.dtype)
            if e.op in ("exp", "log", "sqrt") and not L.is_float(dt):
                dt = "float64"
            return L.UnOp(e.op, self._as(a, dt), dt)
        if isinstance(e, Binary):
            a, b = self._ex(e.lhs, st), self._ex(e.rhs, st)
            if e.op in ("and", "or"):
                return L.BinOp(e.op, self._as(a, BOOL), self._as(b, BOOL), BOOL)
            if e.op in ("lt", "le", "gt", "ge", "eq", "ne"):
                dt = promote(a.dtype, b.dtype)
                return L.BinOp(e.op, self._as(a, dt), self._as(b, dt), BOOL)
            dt = self._arith(a.dtype, b.dtype)
            if e.op == "div" and not L.is_float(dt):
                dt = "float64"  # true division, as numpy's /
            return L.BinOp(e.op, self._as(a, dt), self._as(b, dt), dt)
        if isinstance(e, Where):
            c = self._as(self._ex(e.cond, st), BOOL)
            t, o = self._ex(e.then, st), self._ex(e.other, st)
            dt = self._arith(t.dtype, o.dtype)
            return L.Select(c, self._as(t, dt), self._as(o, dt), dt)
        raise VerificationError(f"nested reduction reached the sparsifier: {e!r} (precompute it first)")
