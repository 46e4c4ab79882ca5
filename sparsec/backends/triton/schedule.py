"""GPU scheduling pass: decide how each loop of a loop-IR kernel maps onto Triton.

The pass reads a :class:`~sparsec.ir.loop_ir.Kernel` and returns a :class:`Plan`:

* **grid mapping** (``Plan.mode``):

  - ``grid``: the kernel's top-level parallel ``For`` becomes the program axis
    (one iteration per program, or ``ROWS`` iterations when a map tile applies);
  - ``persistent``: a parallel loop that uses workspaces (SpGEMM) runs on a fixed
    number of programs, each striding over the range with its own workspace slice;
  - ``atomic``: a top-level *serial* loop whose iterations only meet in reducing
    stores to outputs (CSC SpMV: ``y[i] += ...``) is parallelized over programs
    with ``tl.atomic_add/max/min``;
  - ``single``: anything else runs as one program (correct, slow).

* **fast paths** (``Plan.fast``, keyed by ``id`` of the ``For`` they replace), each a
  block form of a recognized loop pattern; everything else is scalar Triton code:

  - :class:`ReduceLoop` -- a loop that only feeds a scalar accumulator
    (``acc = acc op e``) runs ``BLOCK`` iterations at a time with ``tl.arange`` and
    masks, a vector accumulator, and one ``tl.sum``/``tl.max``/``tl.min`` at the end
    (CSR-vector SpMV, the dot product of SDDMM, TTV's inner loop);
  - :class:`MapTile` -- a loop whose iterations are independent (the parallel loop,
    or a loop whose stores are indexed by its own variable) runs ``ROWS`` iterations
    as lanes; an inner :class:`ReduceLoop` becomes the second tile axis
    (``[ROWS, BLOCK]``: several short CSR rows per program; SDDMM's
    ``[nonzeros, k]`` tile);
  - :class:`AccTile` -- a chain of reduction loops around dense loops that end in one
    reducing store (``C[i, j] += A[i, k] * B[k, j]``): the dense loops become tile
    axes, the store becomes a register accumulator written once after the chain
    (CSR SpMM: ``[BLOCK_N]`` slices of B per nonzero; BSR: ``tl.dot`` on blocks;
    MTTKRP, TTM).

Matching is structural and conservative; code generation may still reject a match
(it raises ``NoFastPath``) and then emits the scalar form, so correctness never
depends on a fast path. :func:`scheduled_text` prints the kernel with the chosen
loops annotated (``block``/``parallel``), for ``dump("triton")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable

from ...ir import loop_ir as L
from ...ir.loop_ir import assigned, expr_loads, stmt_exprs
from ...ir.loop_ir import var_reads as reads
from ...ir.loop_printer import kernel_text


class NoFastPath(Exception):
    """A fast path does not apply after all; the caller emits scalar code."""


# ------------------------------------------------------------------------------------ helpers
def expr_vars(e: L.LExpr) -> set[str]:
    """Names of the variables an expression reads."""
    return {x.name for x in e.walk() if isinstance(x, L.Var)}


def stores(s: L.Stmt) -> list[L.Store]:
    return [t for t in s.walk() if isinstance(t, L.Store)]


def loaded_buffers(s: L.Stmt) -> set[str]:
    out: set[str] = set()
    for t in s.walk():
        for e in stmt_exprs(t):
            out |= expr_loads(e)
    return out


def substitute(e: L.LExpr, env: dict[str, L.LExpr]) -> L.LExpr:
    """``e`` with variables replaced by their definitions (recursively, definitions are already inlined)."""
    return L.substitute(e, env)


def next_pow2(n: int) -> int:
    """The least power of two at or above ``n`` (1 for ``n <= 1``)."""
    n = max(1, int(n))
    return 1 << (n - 1).bit_length()


# ------------------------------------------------------------------------------------ estimates
@dataclass(frozen=True)
class Est:
    """How the launcher estimates a loop's trip count (for block-size heuristics).

    ``kind`` is ``pos`` (average segment length of the ``pos`` buffer ``buffer``),
    ``expr`` (``hi - lo`` evaluated on scalar parameters) or ``none``.
    """

    kind: str = "none"
    buffer: str = ""
    lo: L.LExpr | None = None
    hi: L.LExpr | None = None


def _row_segment(f: L.For, i: L.Var) -> str | None:
    """The ``pos`` buffer when loop ``f`` walks ``pos[i]:pos[i+1]`` (row ``i`` of a compressed level)."""
    lo, hi = (x.a if isinstance(x, L.Cast) else x for x in (f.lo, f.hi))
    ok = (isinstance(lo, L.Load) and isinstance(hi, L.Load) and lo.buffer == hi.buffer and lo.index == i
          and hi.index == L.binop("add", i, 1))
    return lo.buffer if ok else None


def _loop_name(loop: L.For) -> str:
    """The name a schedule uses for a loop: its index variable, else its own variable."""
    return loop.index_var or loop.var.name


def estimate_for(loop: L.For) -> Est:
    lo, hi = loop.lo, loop.hi
    lo_c = lo.a if isinstance(lo, L.Cast) else lo
    hi_c = hi.a if isinstance(hi, L.Cast) else hi
    if isinstance(lo_c, L.Load) and isinstance(hi_c, L.Load) and lo_c.buffer == hi_c.buffer:
        return Est("pos", lo_c.buffer)
    if not expr_loads(lo) and not expr_loads(hi):
        return Est("expr", "", lo, hi)
    return Est()


# ------------------------------------------------------------------------------------ templates
@dataclass
class ReduceLoop:
    """``for v in [lo, hi) { assigns; acc = acc op e }`` run in blocks of ``block`` lanes."""

    loop: L.For
    acc: L.Var
    op: str
    assigns: tuple[L.Assign, ...]
    value: L.LExpr
    block: str
    est: Est


@dataclass
class MapTile:
    """Independent iterations of ``loop`` as ``lanes`` lanes; ``items`` are Assign/Store/ReduceLoop."""

    loop: L.For
    top: bool
    lanes: str
    items: tuple
    red: ReduceLoop | None
    est: Est


@dataclass
class Axis:
    """A dense loop turned into a tile axis of an :class:`AccTile`."""

    loop: L.For
    role: str            # "out" (the store index depends on it) or "red"
    static: int | None   # static bound of the trip count (min(x, c)), None when open
    size: str | int      # tile size: literal (static) or constexpr name (open)
    lo: L.LExpr = field(default_factory=lambda: L.Const(0))
    hi: L.LExpr = field(default_factory=lambda: L.Const(0))


@dataclass
class AccTile:
    """Reduction loops ``rloops`` around dense ``axes`` ending in one reducing ``store``."""

    rloops: tuple[L.For, ...]
    raassigns: tuple[tuple[L.Assign, ...], ...]   # scalar assigns at each reduction level
    axes: tuple[Axis, ...]
    store: L.Store
    index: L.LExpr       # store index with the dense-level assigns inlined
    value: L.LExpr       # store value, likewise
    variant: str         # "dot" or "sum"
    dot: tuple | None    # (x_expr, y_expr, m_axis, k_axis, n_axis) for the dot variant
    est: Est
    #: constexpr of the block size when the innermost reduction loop (SpMM's walk over a row's
    #: nonzeros) runs BLOCK_K positions at a time as a tile axis reduced with tl.sum
    block_k: str | None = None


@dataclass
class ConstexprSpec:
    """A launch-time constant: its name, the role the heuristics see, and its estimator."""

    name: str
    role: str            # rows | block | lanes | inner | block_n | block_k
    est: Est
    group: str = ""      # constexprs chosen together share a group
    minimum: int = 1
    #: the loop (index variable) whose block dimension this constant sizes; a schedule's
    #: ``block(var, size)`` sets it
    var: str = ""


@dataclass(frozen=True)
class SplitInfo:
    """The top loop over rows ``i`` walks ``pos[i]:pos[i+1]`` in the accumulator loop ``loop_id``.

    ``kind``: ``acc`` (an accumulator tile's reducing store, SpMM) or ``map`` (a map tile whose
    row reduction ends in a plain store ``out[i] = acc``, SpMV): segments of a ``map`` row add
    into ``store_buffer``, which the launcher zeroes first; ``store_id`` is that store.
    """

    pos: str
    loop_id: int
    kind: str = "acc"
    store_buffer: str = ""
    store_id: int = 0


@dataclass
class Plan:
    kernel: L.Kernel
    mode: str                                  # grid | persistent | atomic | single
    top: L.For | None = None
    pre: tuple[L.Stmt, ...] = ()
    fast: dict[int, object] = field(default_factory=dict)
    constexprs: list[ConstexprSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    workspaces: tuple[str, ...] = ()
    #: row splitting (TACO's pos + split): the ``pos`` buffer whose segments the top loop walks and
    #: the accumulator loop they bound; set when a program may take part of a row (atomic add)
    split: "SplitInfo | None" = None

    @property
    def atomic(self) -> bool:
        # a private reduction (CPU: a copy of the output per chunk) has no copies on the GPU: atomics
        return self.mode == "atomic" or (self.top is not None and (self.top.kind.atomic or self.top.kind.private))


# ------------------------------------------------------------------------------------ the pass
_ATOMIC_DTYPES = {"add": ("float32", "float64", "int32", "int64"), "max": ("float32", "int32", "int64"),
                  "min": ("float32", "int32", "int64")}


class Scheduler:
    def __init__(self, kernel: L.Kernel, fast_paths: bool = True, dot_min_block: int = 16):
        self.k = kernel
        self.fast_paths = fast_paths
        self.dot_min_block = dot_min_block
        self.total_reads = reads(kernel.body)
        self.used: dict[str, int] = {}
        #: the kernel's own names (buffers, scalars, variables): a launch constant never takes one of them
        self.kernel_names = {p.name for p in kernel.params} | {p.name for p in kernel.scalars} | \
            set(L.assigned(kernel.body))
        self.plan = Plan(kernel, "single")
        self.dtypes = {p.name: p.dtype for p in kernel.buffers}
        self.out_buffers = {p.name for p in kernel.buffers if p.role == "out"}

    def fresh(self, base: str) -> str:
        """A new launch-constant name (``ROWS``, ``BLOCK_N``, ...): a user's index named ``ROWS`` keeps its name."""
        while True:
            n = self.used.get(base, 0) + 1
            self.used[base] = n
            name = base if n == 1 else f"{base}_{n}"
            if name not in self.kernel_names:
                return name

    def read_outside(self, s: L.Stmt) -> set[str]:
        inside = reads(s)
        return {v for v, n in self.total_reads.items() if n > inside.get(v, 0)}

    # -- grid mapping -------------------------------------------------------------------------
    def run(self) -> Plan:
        body = list(self.k.body.stmts)
        plan = self.plan
        plan.workspaces = tuple(p.name for p in self.k.buffers if p.role == "work")
        loops = [k for k, s in enumerate(body) if isinstance(s, L.For)]
        last = body[-1] if body else None
        pre_ok = all(isinstance(s, (L.Assign, L.Comment)) for s in body[:-1])
        if isinstance(last, L.For) and pre_ok and len(loops) == 1:
            if last.kind.kind == "parallel":
                plan.top = last
                plan.pre = tuple(body[:-1])
                plan.mode = "persistent" if plan.workspaces else "grid"
            elif not plan.workspaces and self._atomic_ok(last, body[:-1]):
                plan.top = last
                plan.pre = tuple(body[:-1])
                plan.mode = "atomic"
                plan.notes.append(f"serial loop {last.var.name} parallelized over programs with atomic reducing stores")
        if plan.mode == "single":
            plan.notes.append("no parallel loop at the top: one program runs the kernel")
        if self.fast_paths:
            if plan.top is not None and plan.mode == "grid":
                mt = self.match_map(plan.top, top=True)
                if mt is not None:
                    plan.fast[id(plan.top)] = mt
            self._walk(self.k.body)
            plan.split = self._split_info()
            if plan.split is not None:
                how = f"{plan.split.store_buffer} zeroed, then " if plan.split.kind == "map" else ""
                plan.notes.append(f"rows may be split into segments of {plan.split.pos} ({how}atomic add of each "
                                  "segment's partial sums) when they are skewed or too few to fill the GPU")
        return plan

    def _split_info(self) -> "SplitInfo | None":
        """Rows can be split when the top loop's whole body is one additive accumulator tile over
        ``pos[i]:pos[i+1]``: each segment of a row then adds its partial sums independently."""
        plan = self.plan
        top = plan.top
        if plan.mode != "grid" or top is None:
            return None
        if id(top) in plan.fast:
            return self._map_split_info(plan.fast[id(top)])
        body = [s for s in top.body.stmts if not isinstance(s, L.Comment)]
        if len(body) != 1 or not isinstance(body[0], L.For):
            return None
        f0 = body[0]
        t = plan.fast.get(id(f0))
        if not isinstance(t, AccTile) or t.store.reduce != "add" or t.rloops[0] is not f0:
            return None
        if self.dtypes.get(t.store.buffer) not in _ATOMIC_DTYPES["add"]:
            return None
        pos = _row_segment(f0, top.var)
        return SplitInfo(pos, id(f0)) if pos is not None else None

    def _map_split_info(self, mt: object) -> "SplitInfo | None":
        """A map tile over rows splits when each row is ``acc = 0; acc += ... over pos[i]:pos[i+1];
        out[i] = acc``: zeroing ``out`` first and adding each segment's partial sum atomically
        then gives the same result."""
        if not isinstance(mt, MapTile) or mt.red is None or mt.red.op != "add":
            return None
        items = list(mt.items)
        if len(items) != 3 or items[1] is not mt.red:
            return None
        init, store = items[0], items[2]
        acc = mt.red.acc
        if not (isinstance(init, L.Assign) and init.var == acc and isinstance(init.value, L.Const)
                and init.value.value == 0):
            return None
        value = store.value.a if isinstance(store, L.Store) and isinstance(store.value, L.Cast) else \
            getattr(store, "value", None)
        if not (isinstance(store, L.Store) and store.reduce is None and store.index == mt.loop.var and value == acc):
            return None
        if self.dtypes.get(store.buffer) not in _ATOMIC_DTYPES["add"]:
            return None
        pos = _row_segment(mt.red.loop, mt.loop.var)
        return SplitInfo(pos, id(mt.red.loop), "map", store.buffer, id(store)) if pos is not None else None

    def _atomic_ok(self, loop: L.For, pre: list[L.Stmt]) -> bool:
        sts = stores(loop)
        if not sts:
            return False
        for s in sts:
            if s.reduce is None or s.buffer not in self.out_buffers:
                return False
            if self.dtypes.get(s.buffer) not in _ATOMIC_DTYPES[s.reduce]:
                return False
        if loaded_buffers(loop) & {s.buffer for s in sts}:
            return False
        inner = set(assigned(loop))
        before = set()
        for s in pre:
            before |= set(assigned(s))
        if inner & before or inner & self.read_outside(loop):
            return False
        return True

    def _walk(self, s: L.Stmt) -> None:
        """Try the fast paths on every loop not already inside a fast path, outermost first."""
        if isinstance(s, L.Block):
            for c in s.stmts:
                self._walk(c)
            return
        if isinstance(s, L.For):
            if id(s) in self.plan.fast:
                return
            if s is not self.plan.top or self.plan.mode in ("single",):
                t = self.match_acc(s) or (self.match_map(s, top=False) if s.kind.kind != "parallel" else None) \
                    or self.match_reduce(s, standalone=True)
                if t is not None:
                    self.plan.fast[id(s)] = t
                    return
            self._walk(s.body)
            return
        if isinstance(s, L.While):
            self._walk(s.body)
        elif isinstance(s, L.If):
            self._walk(s.then)
            self._walk(s.orelse)

    # -- reduce loop ---------------------------------------------------------------------------
    def register_reduce(self, r: "ReduceLoop", role: str, group: str = "") -> None:
        r.block = self.fresh("BLOCK")
        self.plan.constexprs.append(ConstexprSpec(r.block, role, r.est, group, var=_loop_name(r.loop)))

    def match_reduce(self, loop: L.For, standalone: bool) -> "ReduceLoop | None":
        if loop.kind.kind == "parallel":
            return None
        st = tuple(s for s in loop.body.stmts if not isinstance(s, L.Comment))
        if not st or not all(isinstance(s, L.Assign) for s in st):
            return None
        last = st[-1]
        acc = last.var
        v = last.value
        if not (isinstance(v, L.BinOp) and v.op in ("add", "max", "min") and v.a == acc):
            return None
        if acc.name in expr_vars(v.b) or any(acc.name in expr_vars(a.value) or a.var.name == acc.name
                                             for a in st[:-1]):
            return None
        if acc.dtype not in ("float16", "bfloat16", "float32", "float64", "int32", "int64"):
            return None
        local = {a.var.name for a in st[:-1]} | {loop.var.name}
        if local & self.read_outside(loop):
            return None
        seen = {loop.var.name}
        for a in st:
            if expr_vars(a.value) & (local - seen):
                return None
            seen.add(a.var.name)
        r = ReduceLoop(loop, acc, v.op, st[:-1], v.b, "", estimate_for(loop))
        if standalone:
            self.register_reduce(r, "block")
        return r

    # -- map tile ------------------------------------------------------------------------------
    def match_map(self, loop: L.For, top: bool) -> "MapTile | None":
        st = [s for s in loop.body.stmts if not isinstance(s, L.Comment)]
        if not st:
            return None
        items: list = []
        red = None
        for s in st:
            if isinstance(s, (L.Assign, L.Store)):
                items.append(s)
            elif isinstance(s, L.For) and red is None:
                red = self.match_reduce(s, standalone=False)
                if red is None:
                    return None
                items.append(red)
            else:
                return None
        body = L.Block(tuple(st))
        local = set(assigned(body)) | {loop.var.name}
        if local & self.read_outside(loop):
            return None
        if red is not None:
            before = items[: items.index(red)]
            if not any(isinstance(s, L.Assign) and s.var == red.acc for s in before):
                return None
        # no local read before it is assigned in the same iteration
        seen = {loop.var.name}
        for it in items:
            if isinstance(it, ReduceLoop):
                rlocal = {a.var.name for a in it.assigns} | {it.loop.var.name}
                used = expr_vars(it.loop.lo) | expr_vars(it.loop.hi) | expr_vars(it.value)
                for a in it.assigns:
                    used |= expr_vars(a.value)
                used -= rlocal
                if used & (local - seen):
                    return None
                seen |= rlocal
            else:
                used = set()
                for e in stmt_exprs(it):
                    used |= expr_vars(e)
                if used & (local - seen):
                    return None
                if isinstance(it, L.Assign):
                    seen.add(it.var.name)
        sts = stores(loop)
        if not sts:
            return None
        if not top:
            # independent iterations: every store indexed exactly by the loop variable
            if not all(s.index == loop.var for s in sts):
                return None
            if loaded_buffers(loop) & {s.buffer for s in sts}:
                return None
        lanes = self.fresh("ROWS" if top else "LANES")
        est = red.est if (top and red is not None) else (Est() if top else estimate_for(loop))
        self.plan.constexprs.append(ConstexprSpec(lanes, "rows" if top else "lanes", est, lanes,
                                                  var=_loop_name(loop)))
        if red is not None:
            self.register_reduce(red, "inner", lanes)
        return MapTile(loop, top, lanes, tuple(items), red, estimate_for(loop) if not top else Est())

    # -- accumulator tile ----------------------------------------------------------------------
    def match_acc(self, f0: L.For) -> AccTile | None:
        if f0.kind.kind == "parallel":
            return None
        chain: list[L.For] = [f0]
        assigns: list[tuple[L.Assign, ...]] = []
        store = None
        while True:
            st = [s for s in chain[-1].body.stmts if not isinstance(s, L.Comment)]
            if not st:
                return None
            head = st[:-1]
            if not all(isinstance(s, L.Assign) for s in head):
                return None
            assigns.append(tuple(head))  # type: ignore[arg-type]
            tail = st[-1]
            if isinstance(tail, L.For) and tail.kind.kind != "parallel":
                chain.append(tail)
                continue
            if isinstance(tail, L.Store) and tail.reduce in ("add", "max", "min"):
                store = tail
                break
            return None
        if len(chain) < 2 or store.buffer in loaded_buffers(f0):
            return None
        # inline every assignment along the chain
        env: dict[str, L.LExpr] = {}
        bounds = []
        for f, asg in zip(chain, assigns):
            bounds.append((substitute(f.lo, env), substitute(f.hi, env)))
            for a in asg:
                env[a.var.name] = substitute(a.value, env)
        index = substitute(store.index, env)
        value = substitute(store.value, env)
        idx_vars = expr_vars(index)
        # dense suffix: loops with load-free bounds whose variables index no data
        n = len(chain)
        s = n
        while s > 1:
            f = chain[s - 1]
            lo, hi = bounds[s - 1]
            static = _static_bound(hi, lo)
            dense_ok = not expr_loads(lo) and (static is not None or not expr_loads(hi))
            if not dense_ok:
                break
            if static is None and f.var.name not in idx_vars:
                break  # an open reduction axis stays a loop
            s -= 1
        if s == n or s == 0:
            return None
        rvars = set()
        for f, asg in zip(chain[:s], assigns[:s]):
            rvars.add(f.var.name)
            rvars |= {a.var.name for a in asg}
        if idx_vars & rvars:
            return None
        for x in _loads_in(index):
            if expr_vars(x.index) & {f.var.name for f in chain[s:]}:
                return None  # data-dependent scatter over a tile axis
        axes = []
        nopen = 0
        for f, (lo, hi) in zip(chain[s:], bounds[s:]):
            role = "out" if f.var.name in idx_vars else "red"
            static = _static_bound(hi, lo)
            if role == "out" and (expr_vars(hi) | expr_vars(lo)) & rvars:
                return None
            if static is None:
                nopen += 1
            axes.append(Axis(f, role, static, 0, lo, hi))
        if nopen > 1 or len(axes) > 3:
            return None
        local = set(assigned(f0))
        if local & self.read_outside(f0):
            return None
        # code generation sees only the dense-level assignments inlined (reduction-level ones stay scalars)
        env_d: dict[str, L.LExpr] = {}
        for q, (f, asg) in enumerate(zip(chain[s:], assigns[s:])):
            axes[q].lo, axes[q].hi = substitute(f.lo, env_d), substitute(f.hi, env_d)
            for a in asg:
                env_d[a.var.name] = substitute(a.value, env_d)
        index = substitute(store.index, env_d)
        value = substitute(store.value, env_d)
        dvars = {f.var.name for f in chain[s:]}
        for ax in axes:
            if (expr_vars(ax.lo) | expr_vars(ax.hi)) & (dvars | set(env_d)):
                return None
        dot = self._dot_operands(value, axes, store.reduce)
        variant = "dot" if dot is not None else "sum"
        est = Est()
        for ax in axes:
            if ax.static is None:
                name = self.fresh("BLOCK_N")
                ax.size = name
                est = Est("expr", "", ax.lo, ax.hi)
                self.plan.constexprs.append(ConstexprSpec(name, "block_n", est, minimum=16 if dot else 1,
                                                          var=_loop_name(ax.loop)))
            else:
                ax.size = max(next_pow2(ax.static), 16 if dot else 1)
        block_k = None
        if variant == "sum" and store.reduce == "add":
            # Gather BLOCK_K rows of B at once instead of one per iteration: memory-level parallelism
            # for long rows (one row per program otherwise walks its nonzeros serially).
            block_k = self.fresh("BLOCK_K")
            group = next((c.name for c in self.plan.constexprs if c.role == "block_n" and
                          any(ax.size == c.name for ax in axes)), block_k)
            for c in self.plan.constexprs:
                if c.name == group:
                    c.group = group
            self.plan.constexprs.append(ConstexprSpec(block_k, "block_k", estimate_for(chain[s - 1]), group=group,
                                                      var=_loop_name(chain[s - 1])))
        return AccTile(tuple(chain[:s]), tuple(assigns[:s]), tuple(axes), store, index, value, variant, dot, est,
                       block_k)

    def _dot_operands(self, value: L.LExpr, axes: list[Axis], reduce: str):
        if reduce != "add":
            return None
        red = [a for a in axes if a.role == "red"]
        out = [a for a in axes if a.role == "out"]
        if len(red) != 1 or len(out) != 2:
            return None
        v = value
        if isinstance(v, L.Cast):
            v = v.a
        if not (isinstance(v, L.BinOp) and v.op == "mul" and v.dtype in ("float16", "bfloat16", "float32")):
            return None
        k = red[0]
        for m, nn in ((out[0], out[1]), (out[1], out[0])):
            for x, y in ((v.a, v.b), (v.b, v.a)):
                xv, yv = expr_vars(x), expr_vars(y)
                ax = {a.loop.var.name for a in axes}
                if (xv & ax) == {m.loop.var.name, k.loop.var.name} and (yv & ax) == {k.loop.var.name, nn.loop.var.name}:
                    sizes = [a.static for a in (m, k, nn) if a.static is not None]
                    if any(sz < self.dot_min_block for sz in sizes):
                        return None
                    return (x, y, m, k, nn)
        return None


def _loads_in(e: L.LExpr) -> list[L.Load]:
    return [x for x in e.walk() if isinstance(x, L.Load)]


def _static_bound(hi: L.LExpr, lo: L.LExpr) -> int | None:
    """A compile-time bound of ``hi - lo`` when ``lo`` is 0 and ``hi`` is ``c`` or ``min(x, c)``."""
    if not (isinstance(lo, L.Const) and lo.value == 0):
        return None
    if isinstance(hi, L.Const):
        return int(hi.value)
    if isinstance(hi, L.BinOp) and hi.op == "min":
        for side in (hi.a, hi.b):
            if isinstance(side, L.Const):
                return int(side.value)
    return None


def schedule(kernel: L.Kernel, fast_paths: bool = True, dot_min_block: int = 16) -> Plan:
    """Run the GPU scheduling pass over one kernel."""
    return Scheduler(kernel, fast_paths, dot_min_block).run()


# ------------------------------------------------------------------------------------ printing
def _describe(t: object) -> str:
    if isinstance(t, ReduceLoop):
        return f"[reduce-block {t.block}: vector accumulator, tl.{'sum' if t.op == 'add' else t.op}]"
    if isinstance(t, MapTile):
        inner = f" x {t.red.block} (reduction over {t.red.loop.var.name})" if t.red else ""
        where = "program axis" if t.top else "in-program blocks"
        return f"[map-tile {t.lanes} lanes of {t.loop.var.name} ({where}){inner}]"
    if isinstance(t, AccTile):
        axes = ", ".join(f"{a.loop.var.name}:{a.role}[{a.size}]" for a in t.axes)
        return f"[acc-tile {t.variant}: axes {axes}; reduction loops {', '.join(f.var.name for f in t.rloops)}]"
    return ""


def annotated_kernel(plan: Plan) -> L.Kernel:
    """The kernel with fast-path loops marked ``block`` and described in their comments."""

    def fix(s: L.Stmt) -> L.Stmt:
        if isinstance(s, L.Block):
            return L.Block(tuple(fix(c) for c in s.stmts))
        if isinstance(s, L.For):
            t = plan.fast.get(id(s))
            body = fix(s.body)
            kind, comment = s.kind, s.comment
            if t is not None:
                if not (isinstance(t, MapTile) and t.top):
                    kind = L.LoopKind("block")
                comment = f"{_describe(t)} {comment}".strip()
                if isinstance(t, MapTile) and t.red is not None:
                    body = L.Block(tuple(_mark(c, t.red) for c in body.stmts))
            elif s is plan.top and plan.mode == "atomic":
                kind = L.LoopKind("parallel", atomic=True)
            return replace(s, body=body, kind=kind, comment=comment)
        if isinstance(s, L.While):
            return replace(s, body=fix(s.body))
        if isinstance(s, L.If):
            return replace(s, then=fix(s.then), orelse=fix(s.orelse))
        return s

    def _mark(c: L.Stmt, red: ReduceLoop) -> L.Stmt:
        if c is red.loop:
            return replace(c, kind=L.LoopKind("block"), comment=f"{_describe(red)} {c.comment}".strip())
        return c

    return replace(plan.kernel, body=fix(plan.kernel.body))


def scheduled_text(plan: Plan) -> str:
    """Loop IR after the GPU scheduling pass, plus the grid mapping and notes."""
    lines = [f"grid mapping: {plan.mode}" + (f" over {plan.top.var.name}" if plan.top is not None else "")]
    lines += plan.notes
    if plan.constexprs:
        lines.append("launch constants: " + ", ".join(f"{c.name} ({c.role})" for c in plan.constexprs))
    return "\n".join(lines) + "\n" + kernel_text(annotated_kernel(plan))


def walk_fors(s: L.Stmt) -> Iterable[L.For]:
    for t in s.walk():
        if isinstance(t, L.For):
            yield t
