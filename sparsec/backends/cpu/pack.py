"""Packed rows: the rows of a misaligned dense operand that a column panel reads, copied 64-byte aligned first.

The register tiles of :mod:`.regtile` load, for every nonzero, a row of the dense
operand: for ``Y[o,p] = W[o,c] * X[c,p]`` (W in CSR) the row ``X[c, lo:hi]``. On
AVX-512 hosts they load it with aligned 512-bit vectors when every such row starts
on a 64-byte boundary; that needs the row length to be a multiple of 16 float32.
A 1x1 convolution over a 7x7 or 14x14 feature map has rows of 49 or 196 pixels:
the rows start at 4-byte offsets, nearly every 512-bit load straddles two cache
lines, and the tiles fall back to 256-bit loads that are no better. Measured (one
thread, 2-vCPU Emerald Rapids VM, float32, W 80 % pruned, X from L2): 12.5 lanes
per ns at 49 columns against 29 at 48, the same count of loads.

So, as a dense GEMM packs its panels, the panel loop (see :mod:`.panels`) copies the
rows it will read into a 64-byte aligned buffer whose rows are ``SP`` elements apart
(the panel's width rounded up to whole vectors), once per panel and chunk of rows,
and runs the tiles over the copy with the aligned, masked 512-bit variant::

    for each panel [pl, ph):                 # one panel when the rows are short
      for v in [vmin, vmax]:                 # copy: X[v * S + b + pl : ... + ph] -> P[(v - vmin) * SP : ...]
      for o in rows:                         # the tiles read P[(v - vmin) * SP + (p - pl)]
        ...

Which rows: the operand's index must be ``v * S + b + p`` with ``p`` the tiles'
column, ``v`` one local of the row nest (the coordinate ``c`` above), and ``S`` and
``b`` computed from parameters only (no loads, nothing the nest assigns). A first
pass over the chunk's nonzero iterations (the row nest without its column loop,
which only re-runs its definitions: they are re-runnable, see
:func:`regtile.rerunnable_definitions`) finds the least and largest ``v`` and counts the
iterations. Every row between the two is in the operand's buffer (the index is linear
in ``v`` and the extreme rows are read by the nest itself), so the copy never reads
out of bounds. The copy keeps each element's value, and the tiles over it are those
aligned rows get (same accumulator sets, same order of terms), so a result is bitwise
the one of the same operand stored with aligned rows.

When: AVX-512 hosts (the aligned masked tiles), operand rows that do not all start
64-byte aligned (checked at run time; aligned ones run as before), at least
:data:`MIN_REUSE` nonzero iterations per copied row (each copied element is then
read that many times over), and a copy of at most :data:`MAX_BYTES`. The buffer is
``malloc``-ed per chunk (a failed allocation runs the unpacked tiles).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...ir import loop_ir as L
from . import regtile

#: pack only where the nest reads each copied row at least this many times (nonzero iterations per row)
MIN_REUSE = 4
#: nor when the copy (the chunk's rows of one panel) would take more bytes than this
MAX_BYTES = 1 << 20

_INT64 = ("index", "int64")


@dataclass(frozen=True)
class Pack:
    """How the tiles of one panel's row loop read a packed copy of their dense operand (module docs)."""

    rows: L.For                # the panel's row loop
    plan: regtile.TilePlan     # the tiles of its nonzero loop, reading the operand
    packed: regtile.TilePlan   # the same tiles reading the copy (only the aligned masked variant)
    buffer: str                # the operand
    row: L.Var                 # v: the operand's index is v * stride + offset + column
    stride: L.LExpr
    offset: L.LExpr
    copy: str                  # the copy, a buffer of the generated code only
    vmin: str                  # locals: least and largest v, nonzero iterations, the copy's row length,
    vmax: str                  #   and the copy's index of the current row minus the panel's first column
    count: str
    width: str
    rowbase: str

    @property
    def locals(self) -> tuple[str, ...]:
        return self.vmin, self.vmax, self.count, self.width, self.rowbase

    @property
    def variant(self) -> regtile.Variant:
        return self.packed.variants[0]

    def survey(self) -> L.For:
        """The row loop without its column loop: least and largest ``v`` over the nonzero iterations, and
        their count (the locals must be initialized before it runs)."""
        nz = self.plan.outer
        vmin, vmax, count = L.Var(self.vmin), L.Var(self.vmax), L.Var(self.count)
        row = self.row if self.row.dtype == L.INDEX else L.Cast(self.row, L.INDEX)
        update = (L.Assign(vmin, L.BinOp("min", vmin, row, L.INDEX)),
                  L.Assign(vmax, L.BinOp("max", vmax, row, L.INDEX)),
                  L.Assign(count, L.binop("add", count, 1)))
        inner = L.For(nz.var, nz.lo, nz.hi, L.Block(tuple(self.plan.pre) + update))
        head = tuple(s for s in self.rows.body.stmts if s is not nz and not isinstance(s, L.Comment))
        return L.For(self.rows.var, self.rows.lo, self.rows.hi, L.Block(head + (inner,)))


def linear(e: L.LExpr, var: str) -> tuple[L.LExpr, L.LExpr] | None:
    """``e`` as ``(coef, rest)`` with ``e == var * coef + rest``, both free of ``var`` (index arithmetic), or None."""
    if var not in L.var_reads(e):
        return L.const(0), e
    if isinstance(e, L.Var):
        return (L.const(1), L.const(0)) if e.dtype in _INT64 else None
    if isinstance(e, L.Cast):
        return linear(e.a, var) if e.dtype in _INT64 and e.a.dtype in _INT64 else None
    if not (isinstance(e, L.BinOp) and e.dtype in _INT64 and e.op in ("add", "sub", "mul")):
        return None
    a, b = linear(e.a, var), linear(e.b, var)
    if a is None or b is None:
        return None
    if e.op in ("add", "sub"):
        return L.binop(e.op, a[0], b[0]), L.binop(e.op, a[1], b[1])
    for (ca, ra), (cb, rb), x in ((a, b, e.b), (b, a, e.a)):
        if isinstance(cb, L.Const) and cb.value == 0:      # (var * ca + ra) * x, x free of var
            return L.binop("mul", ca, x), L.binop("mul", ra, x)
    return None


def find_pack(rows: L.For, plan: regtile.TilePlan, col_lo: str, dtypes: dict[str, str], n: int) -> Pack | None:
    """The packing of ``rows`` (a panel's row loop whose nonzero loop ``plan`` tiles, its columns starting at
    the local ``col_lo``) when the module docs' conditions that do not depend on the data hold, else None."""
    var = plan.variants[0]
    if not (var.masked and var.aligned and var.bits == 512):
        return None
    iv = plan.inner.var.name
    loads = [x for x in plan.value.walk() if isinstance(x, L.Load) and iv in L.var_reads(x.index)]
    if len(loads) != 1 or dtypes.get(loads[0].buffer) != plan.dtype:   # W lanes of it fill the 512-bit tiles
        return None
    load = loads[0]
    base = regtile.affine(load.index, iv)[0]              # unit stride: regtile matched it
    inside = set(L.assigned(rows.body)) | {rows.var.name}
    moving = [name for name in L.var_reads(base) if name in inside]
    if len(moving) != 1:
        return None
    row = next(x for x in base.walk() if isinstance(x, L.Var) and x.name == moving[0])
    split = linear(base, row.name)
    if split is None or row.dtype not in _INT64:
        return None
    stride, offset = split
    for e in split:
        if set(L.var_reads(e)) & inside or L.expr_loads(e):
            return None
    names = [f"sc.pk{n}.{s}" for s in ("copy", "vmin", "vmax", "count", "width", "rowbase")]
    rowbase = L.Var(names[5])
    rel = L.binop("sub", row if row.dtype == L.INDEX else L.Cast(row, L.INDEX), L.Var(names[1]))
    at = L.Assign(rowbase, L.binop("sub", L.binop("mul", rel, L.Var(names[4])), L.Var(col_lo)))
    packed_load = L.Load(names[0], L.binop("add", rowbase, plan.inner.var), load.dtype)
    value = L.rewrite(plan.value, lambda x: packed_load if x is load else None)
    packed = replace(plan, pre=tuple(plan.pre) + (at,), value=value, variants=(var,),
                     assigned=plan.assigned | {rowbase.name})
    return Pack(rows, plan, packed, load.buffer, row, stride, offset, *names)
