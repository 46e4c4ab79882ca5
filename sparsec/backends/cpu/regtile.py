"""Register tiling of a reduction into a row: the CPU code generation of SpMM-like loop nests.

The loop IR of ``C[i,j] = A[i,k] * B[k,j]`` (A in CSR, B and C dense, row-major) is::

    for pA1 in [A_pos1[i], A_pos1[i + 1]) {      // the *outer* loop (here over a row's nonzeros)
      k = index(A_crd1[pA1])
      for j in [0, n_j) {                        // the *inner* loop
        C_vals[i * n_j + j] += A_vals[pA1] * B_vals[k * n_j + j]
      }
    }

Compiled as written, every nonzero reads and writes the whole row of C from memory
(a store-to-load chain per nonzero), so the kernel runs at the speed of that chain,
not of the FMA units. Whenever the inner loop's reducing store goes to addresses that
do not depend on the outer loop, the two loops can be interchanged per tile of the
inner range, and the tile of C kept in vector registers across the outer loop::

    for each tile [jt, jt + U*W) of [0, n_j):            // U vectors of W lanes
      acc[0..U) = C_vals[i * n_j + jt ...]                 // one load per tile
      for pA1 in row:                                      // k split accumulator sets
        k = index(A_crd1[pA1])
        acc[u] += broadcast(A_vals[pA1]) * B_vals[k * n_j + jt + u*W ...]
      C_vals[i * n_j + jt ...] = acc                       // one store per tile
    remainder columns: the original loop nest over [jt, n_j)

Each element of C still receives its terms in the order of the outer loop, so with
one accumulator set the result is bitwise the one of the original nest. Where the nest
is the whole body of a top-level row loop and its store the only writer of a zero-filled
output (:func:`fresh_rows`), the tiles start from zero instead of loading the row, and
the fast call path leaves the output uninitialized: neither the memset nor the loads
of the zeros happen. With ``split``
> 1, consecutive outer iterations go to different accumulator sets (summed at the
end), which hides the latency of the FMA chain; that reassociates the reduction,
which sparsec allows for ``+=`` stores (they carry ``reassoc``, see :mod:`.codegen`).

On AVX-512 hosts the tiles are 512-bit vectors, masked at the end of the inner range,
when every row they load starts on a 64-byte boundary at the inner range's start, and
256-bit vectors otherwise (see :func:`_variants`); the fast call path copies a misaligned
dense operand that is read many times over (SpMM's B with many nonzeros per column) to an
aligned buffer (:meth:`sparsec.fastcall.FastCall._aligned_operand`), so that its rows get
the 512-bit tiles, and rows at varying offsets (a row length that is not a multiple of the
lanes) are copied to an aligned, padded buffer by the panel loop (:mod:`.pack`). Only the
vector that holds the end of the inner range is masked; whole tiles and the vectors before
it load and store unmasked (a masked load cannot be folded into the FMA, and costs one more
µop on the FMA ports: measured 10-20 % on SpMM rows of 64-3136 float32 columns).

The transformation is *found*, not requested: :func:`find_plans` matches any
outer ``for`` (serial) whose body is scalar definitions followed by one inner
``for`` whose body is scalar definitions and one reducing store (``+=``, ``max=``,
``min=``) whose index is ``base + j`` (unit stride) with ``base`` invariant in the
outer loop, and whose value is built from loads that are either invariant in ``j``
or unit-stride in ``j``, arithmetic and float casts. Anything else (a gather in
``j``, a load of the output, a local carried across iterations, a local read after
the loops...) keeps the ordinary code generation. It applies to CSR SpMM, dense
GEMM rows, blocked operands whose inner loop is unit-stride, and the like.

Schedule commands on the inner loop steer it: ``vectorize(j, 1)`` turns it off,
``vectorize(j, w)`` uses vectors of ``w`` lanes; ``unroll(k, n)`` on the outer loop
sets the number of accumulator sets (``split``; by default 8 // vectors per tile, at
most 4, so that ~8 independent FMA chains are in flight).

Measured (float32, one thread, 2-vCPU Emerald Rapids VM, SpMM over the quick benchmark
matrices): 1.5-4x faster than the untiled nest; against MKL (``sparse_dot_mkl``) from
~0.85x (low-reuse matrices with a misaligned B, N=64) to ~2x.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...ir import loop_ir as L

#: default lanes x bits of the widest vector register the tiles use, by host feature.
_MAX_VECTORS = 8      # vectors per tile (U), the widest tile
_ACC_CHAINS = 8       # aim for this many independent accumulator chains (U * split)
_MAX_SPLIT = 4


@dataclass
class Variant:
    """One way to emit the tiles: vector width, tile sizes and accumulator sets."""

    bits: int                        # vector register width the lanes fill
    lanes: int                       # W: lanes per vector
    tiles: tuple[int, ...]           # U: vectors per tile, widest first (each narrower one used once)
    splits: tuple[int, ...]          # accumulator sets for each tile size
    masked: bool = False             # masked vectors: the last tile of a row is masked at the row's end
    aligned: bool = True             # (masked) every vector load aligned; taken when the loads allow it
    slots: dict = field(default_factory=dict)


@dataclass
class TilePlan:
    """How one outer loop is emitted (see the module docs)."""

    outer: L.For
    pre: tuple[L.Stmt, ...]          # scalar definitions of the outer body before the inner loop
    inner: L.For
    store: L.Store
    value: L.LExpr                   # the store's value, inner-body locals substituted
    out_base: L.LExpr                # the store's index minus the inner variable
    variants: tuple[Variant, ...]    # the first whose alignment holds at run time is used
    dtype: str                       # element dtype of the output buffer
    tail_var: str                    # local holding the first column of the remainder
    assigned: frozenset = frozenset()  # locals the nest assigns (not invariant in it)
    slots: dict = field(default_factory=dict)

    @property
    def reduce(self) -> str:
        return self.store.reduce  # type: ignore[return-value]

    def vector_loads(self) -> list[L.Load]:
        """The loads of the value that are unit-stride along the inner variable."""
        iv = self.inner.var.name
        return [n for n in self.value.walk() if isinstance(n, L.Load) and iv in L.var_reads(n.index)]


def _subst(e: L.LExpr, env: dict[str, L.LExpr]) -> L.LExpr:
    return L.substitute(e, env, cast=True)


# ------------------------------------------------------------------------------------ affine indices
_INT64 = ("index", "int64")


def affine(e: L.LExpr, var: str) -> tuple[L.LExpr, int] | None:
    """``e`` as ``(base, c)`` with ``e == base + c * var`` (``base`` free of ``var``), or None."""
    if var not in L.var_reads(e):
        return e, 0
    if isinstance(e, L.Var):
        return (L.Const(0, L.INDEX), 1) if e.dtype in _INT64 else None
    if isinstance(e, L.Cast):
        if e.dtype in _INT64 and e.a.dtype in _INT64:
            return affine(e.a, var)
        return None
    if isinstance(e, L.BinOp) and e.dtype in _INT64:
        a, b = affine(e.a, var), affine(e.b, var)
        if a is None or b is None:
            return None
        if e.op == "add":
            return L.binop("add", a[0], b[0]), a[1] + b[1]
        if e.op == "sub":
            return L.binop("sub", a[0], b[0]), a[1] - b[1]
        if e.op == "mul":
            for (x, cx), (y, cy) in ((a, b), (b, a)):
                if cy == 0 and isinstance(y, L.Const):
                    return L.binop("mul", x, y), cx * int(y.value)
        return None
    return None


# ------------------------------------------------------------------------------------ vectorizable values
_VEC_BINOPS = {"f": ("add", "sub", "mul", "div", "max", "min"), "i": ("add", "sub", "mul", "max", "min")}
_VEC_UNOPS = ("neg", "abs", "sqrt")


def _kind(dtype: str) -> str:
    if L.is_float(dtype):
        return "f"
    if dtype == L.BOOL:
        return "b"
    return "i"


def vector_ok(e: L.LExpr, var: str, out_buf: str, dtypes: dict[str, str]) -> bool:
    """Can ``e`` (free of inner-body locals) be computed as vectors along ``var``?"""
    if var not in L.var_reads(e):
        return out_buf not in L.expr_loads(e)
    k = _kind(e.dtype)
    if k == "b" or e.dtype == "bfloat16":
        return False
    if isinstance(e, L.Load):
        if e.buffer == out_buf or dtypes.get(e.buffer) in (None, L.BOOL, "bfloat16"):
            return False
        aff = affine(e.index, var)
        return aff is not None and aff[1] == 1 and out_buf not in L.expr_loads(aff[0])
    if isinstance(e, L.BinOp):
        return e.op in _VEC_BINOPS[k] and _kind(e.a.dtype) == k and _kind(e.b.dtype) == k and \
            vector_ok(e.a, var, out_buf, dtypes) and vector_ok(e.b, var, out_buf, dtypes)
    if isinstance(e, L.UnOp):
        return k == "f" and e.op in _VEC_UNOPS and vector_ok(e.a, var, out_buf, dtypes)
    if isinstance(e, L.Cast):
        src = _kind(e.a.dtype)
        return src in ("f", "i") and not (src == "f" and k == "i") and vector_ok(e.a, var, out_buf, dtypes)
    return False


# ------------------------------------------------------------------------------------ matching
_BITS = {"float16": 16, "float32": 32, "float64": 64, "int8": 8, "int16": 16, "int32": 32, "int64": 64,
         "index": 64}


def _variant(dtype: str, bits: int, lanes: int | None, split: int | None, masked: bool,
             aligned: bool = True) -> Variant:
    """Tiles of up to ``_MAX_VECTORS`` vectors: halving sizes after the widest (each used at most once,
    the original nest doing the rest), or, masked, every size (the last tile of a row, masked at its end,
    is exactly as wide as what is left, so the row's nonzeros are read once per full tile plus once)."""
    lanes = lanes or max(bits // _BITS[dtype], 1)
    vmax = _MAX_VECTORS
    tiles = list(range(vmax, 0, -1)) if masked else []
    u = vmax
    while u >= 1 and not masked:
        tiles.append(u)
        u //= 2
    splits = tuple(split or max(1, min(_MAX_SPLIT, _ACC_CHAINS // u)) for u in tiles)
    return Variant(lanes * _BITS[dtype], lanes, tuple(tiles), splits, masked, aligned)


def _variants(dtype: str, bits: int, kind: L.LoopKind, split: int | None) -> tuple[Variant, ...]:
    """With AVX-512: 512-bit tiles over rows that start 64-byte aligned, masked at the end; else 256-bit.

    A 64-byte load that straddles two cache lines costs about twice an aligned one, and
    numpy's arrays are only 16-byte aligned: measured on AVX-512 Xeons (SpMM, float32, one
    thread), 512-bit tiles over misaligned rows of B were 1.7-2.5x slower than over
    aligned ones, and slower than 256-bit tiles. The masked variant runs when every row
    the tiles load starts on a 64-byte boundary at the inner loop's ``lo`` (B's row length
    a multiple of 16 floats and B itself aligned): every vector load is aligned, and the
    last vector of a row is masked to ``[lo, hi)`` (masked-off lanes are never accessed),
    so no remainder is left. Rows at a common nonzero offset could take the same tiles on
    a grid shifted by that offset, masked at both ends, but that loads one vector more
    per row: for SpMM with 16 columns two masked vectors instead of one, measured
    (2-vCPU Emerald Rapids VM, one thread, banded / uniform / cage11) 20-35% slower than
    the 256-bit tiles, and with 64 columns no faster. Otherwise (rows misaligned or at
    varying offsets, or no AVX-512) 256-bit tiles run over ``[lo, hi)`` from ``lo``, and
    the original loop nest does the last columns.
    """
    if kind.kind == "vector" and kind.width:
        return (_variant(dtype, bits, kind.width, split, False),)
    if bits >= 512:
        return (_variant(dtype, 512, None, split, True), _variant(dtype, 256, None, split, True, aligned=False))
    return (_variant(dtype, bits, None, split, False),)


def rerunnable_definitions(loop: L.For, pre, taken: set[str] = frozenset()) -> set[str] | None:
    """The loop variable and the names ``pre`` (definitions leading ``loop``'s body) define, when running
    them again in an iteration changes nothing: each reads only the loop variable, earlier definitions
    and names the loop never assigns, and none redefines a name (or one of ``taken``). Else None."""
    inside = set(L.assigned(loop.body))
    defined = {loop.var.name}
    for s in pre:
        name = s.var.name
        if name in defined or name in taken:
            return None
        if any(r in inside and r not in defined for r in L.var_reads(s.value)):
            return None
        defined.add(name)
    return defined


def _match(outer: L.For, total: dict[str, int], dtypes: dict[str, str], bits: int, n: int) -> TilePlan | None:
    if outer.kind.kind not in ("serial", "unroll"):
        return None
    stmts = [s for s in outer.body.stmts if not isinstance(s, L.Comment)]
    if not stmts or not isinstance(stmts[-1], L.For):
        return None
    inner, pre = stmts[-1], stmts[:-1]
    if inner.kind.kind not in ("serial", "vector") or (inner.kind.kind == "vector" and inner.kind.width == 1):
        return None
    if not all(isinstance(s, L.Assign) for s in pre):
        return None
    ov, iv = outer.var.name, inner.var.name
    defined = rerunnable_definitions(outer, pre, {iv})
    if defined is None:
        return None
    inside = set(L.assigned(outer.body))
    body = [s for s in inner.body.stmts if not isinstance(s, L.Comment)]
    if not body or not isinstance(body[-1], L.Store) or not all(isinstance(s, L.Assign) for s in body[:-1]):
        return None
    store = body[-1]
    if store.reduce not in L.REDUCE_STORE_OPS:
        return None
    out_buf = store.buffer
    out_dt = dtypes.get(out_buf)
    if out_dt is None or _kind(out_dt) == "b" or out_dt == "bfloat16":
        return None
    if store.reduce in ("max", "min") and _kind(out_dt) == "i" and out_dt not in ("int8", "int16", "int32", "int64"):
        return None
    # inner-body definitions are substituted into the store
    env: dict[str, L.LExpr] = {}
    local = {s.var.name for s in body[:-1]} | {iv}
    for s in body[:-1]:
        name = s.var.name
        if name in env or name in defined:
            return None
        if any(r in local and r not in env and r != iv for r in L.var_reads(s.value)):
            return None
        env[name] = _subst(s.value, env)
    # locals of the nest must be dead after it
    in_outer = L.var_reads(outer.body)
    for name in defined:
        if total.get(name, 0) != in_outer.get(name, 0):
            return None
    in_inner = L.var_reads(inner.body)
    for name in local:
        if total.get(name, 0) != in_inner.get(name, 0):
            return None
    # the inner bounds must not move with the outer loop, nor read the output
    for b in (inner.lo, inner.hi):
        if set(L.var_reads(b)) & defined or out_buf in L.expr_loads(b):
            return None
    index = _subst(store.index, env)
    value = _subst(store.value, env)
    aff = affine(index, iv)
    if aff is None or aff[1] != 1:
        return None
    base = aff[0]
    if set(L.var_reads(base)) & (defined | {iv}) or out_buf in L.expr_loads(base):
        return None
    if any(out_buf in L.expr_loads(s.value) for s in pre) or not vector_ok(value, iv, out_buf, dtypes):
        return None
    split = None
    if store.reduce != "add":
        split = 1
    elif outer.kind.kind == "unroll" and outer.kind.width:
        split = outer.kind.width
    return TilePlan(outer, tuple(pre), inner, store, value, base, _variants(out_dt, bits, inner.kind, split), out_dt,
                    f"sc.rt{n}.tail", frozenset(inside | {ov}))


def find_plans(kernel: L.Kernel, vector_bits: int) -> dict[int, TilePlan]:
    """Plans keyed by ``id`` of the outer loop, for every loop nest that matches (see the module docs).

    Tiles always load the output first: an enclosing loop may run the nest several
    times over the same elements (``split(k, 3)`` of SpMM runs it once per block of a
    row's nonzeros), so not even a freshly zeroed output may be assumed to hold 0.
    """
    total = L.var_reads(kernel.body)
    dtypes = {p.name: p.dtype for p in kernel.buffers}
    plans: dict[int, TilePlan] = {}

    def visit(s: L.Stmt, atomic: bool) -> None:
        if isinstance(s, L.For):
            if not atomic:
                plan = _match(s, total, dtypes, vector_bits, len(plans))
                if plan is not None:
                    plans[id(s)] = plan
                    return
            atomic = atomic or (s.kind.kind == "parallel" and s.kind.atomic)
        for c in s.children():
            visit(c, atomic)

    visit(kernel.body, False)
    return plans


# ------------------------------------------------------------------------------------ fresh rows
@dataclass(frozen=True)
class FreshRows:
    """A tiled store whose tiles may start from zero: every element of the output rows ``[sc_lo, sc_hi)``
    (``row_var``'s range) times ``[0, extent)`` is written exactly once per call, by this store alone."""

    store: L.Store
    buffer: str
    row_var: str
    extent: L.LExpr
    rows_lo: L.LExpr                 # the row loop's bounds
    rows_hi: L.LExpr


def _strip(e: L.LExpr) -> L.LExpr:
    while isinstance(e, L.Cast) and e.dtype in _INT64 and e.a.dtype in _INT64:
        e = e.a
    if isinstance(e, L.BinOp) and e.op == "add":
        for x, y in ((e.a, e.b), (e.b, e.a)):
            if isinstance(y, L.Const) and y.value == 0:
                return _strip(x)
    return e


def row_stride(base: L.LExpr, var: str) -> L.LExpr | None:
    """``S`` when ``base`` is ``var * S`` (``S`` free of ``var``), else None."""
    base = _strip(base)
    if isinstance(base, L.BinOp) and base.op == "mul":
        for x, y in ((base.a, base.b), (base.b, base.a)):
            x = _strip(x)
            if isinstance(x, L.Var) and x.name == var and var not in L.var_reads(y):
                return _strip(y)
    return None


def fresh_rows(kernel: L.Kernel, plans: dict[int, TilePlan]) -> list[FreshRows]:
    """The plans of ``kernel`` whose tiles need not load the output first (sums into a zeroed output).

    The host hands a kernel its dense output filled with the statement's fill value, 0 for
    sums (``+=`` stores). A tile that adds into an element no other iteration of the call
    touches may then start its accumulators at 0 instead of loading them. That holds when
    the plan's nonzero loop is the last statement of a top-level row loop ``for r`` (its
    other statements definitions), the tiles' row base is ``r * S`` with the inner loop over
    ``[0, S)`` (distinct rows, disjoint elements, every column covered), and the store is the
    only one into that output buffer. A nest run several times per row (``split(k, 3)`` puts
    a loop between the row and the nest) or an output other loops also write does not match.
    """
    outputs = {p.name for p in kernel.buffers if p.role == "out"}
    stores: dict[str, int] = {}
    for s in kernel.body.walk():
        if isinstance(s, L.Store):
            stores[s.buffer] = stores.get(s.buffer, 0) + 1
    by_outer = {id(p.outer): p for p in plans.values()}
    found = []
    for row in kernel.body.stmts:
        if not isinstance(row, L.For) or (row.kind.kind == "parallel" and row.kind.atomic):
            continue
        body = [s for s in row.body.stmts if not isinstance(s, L.Comment)]
        if not body or not all(isinstance(s, L.Assign) for s in body[:-1]):
            continue
        plan = by_outer.get(id(body[-1]))
        if plan is None or plan.reduce != "add" or plan.store.buffer not in outputs or \
                stores.get(plan.store.buffer) != 1:
            continue
        stride = row_stride(plan.out_base, row.var.name)
        lo = _strip(plan.inner.lo)
        if stride is None or not (isinstance(lo, L.Const) and lo.value == 0) or stride != _strip(plan.inner.hi):
            continue
        found.append(FreshRows(plan.store, plan.store.buffer, row.var.name, stride, row.lo, row.hi))
    return found
