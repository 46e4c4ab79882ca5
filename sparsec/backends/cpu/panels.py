"""Column panels: a register-tiled row nest walked once per panel of columns, all rows per panel.

:mod:`.regtile` keeps a tile of the output row in registers while it walks that
row's nonzeros, and goes over the row's columns tile by tile. Every row thus reads
whole rows of the dense operand: for ``Y[o,p] = W[o,c] * X[c,p]`` (a 1x1
convolution, W pruned, X the ``C_in x pixels`` feature map) one output row touches
the rows of X its nonzeros name, over all pixels, before the next output row uses
them again. With thousands of pixels that is megabytes between two uses of a row
of X: the loads come from L2, not L1, and the FMAs wait for them.

A panel swaps the order: the columns are cut into panels of ``P`` and, per panel,
every row of the loop (every output row of the thread's chunk) runs its tiles over
that panel only::

    for o in rows:                         for [pl, ph) in panels of [lo, hi):
      for pW1 in row o:              =>      for o in rows:
        for p in [lo, hi): ...                 for pW1 in row o:
                                                 for p in [pl, ph): ...   (register tiles)

so the ``C_in x P`` block of X a panel reads stays in L1 across all the rows.
XNNPACK's sparse 1x1 convolution kernels walk their output the same way
(pixel blocks outer, output channels inner).

Legality: for a fixed column the (row, nonzero) iterations run in the same order as
before, so each output element gets its terms in the same order; only iterations of
different columns are reordered, and in a register-tiled nest (see
:func:`regtile.find_plans`) those touch different output elements through a
reducing store whose value never loads the output. The row loop's definitions
before the nonzero loop are re-run per panel, so they may read only the row
variable, earlier definitions and names the row loop never assigns.

Where that nest is the kernel's whole parallel row loop, the host may also split a call
by columns across threads (:func:`column_window`): every thread runs all the rows over
its own window of the columns, so it reads its share of the dense operand once instead
of all of it for every chunk of rows (see ``FastCall._column_chunks``).

A panel is taken (see :func:`find_panels`) where the row loop is such a nest and the
column range does not depend on the row; its width is chosen at run time by
:meth:`.codegen._FunctionBuilder.panel_loop`: rows of fewer than :data:`MIN_COLUMNS` columns stay
one panel (the plain register-tiled nest), longer ones are cut every :data:`PANEL_BYTES` bytes,
unless the dense rows a panel reads take more than :data:`PANEL_SLAB_BYTES` (the panel's block
of the dense operand, ``rows x PANEL_BYTES``, then stays in no cache across the rows, and the
panels only cut each dense row into short runs: more TLB misses, shorter prefetch streams).
The dense operand's rows are the extent of the index variable its loads are strided by
(:attr:`Panel.dense_rows`); where that is not known, only the columns decide.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...ir import loop_ir as L
from . import regtile

#: columns a row must have before it is cut into panels: up to two of the widest register tiles
#: (8 vectors of 16 float32 lanes) stay one panel, as before
MIN_COLUMNS = 256

#: bytes of the output row (and of each dense row read) a panel covers: 512 B, 128 float32, the widest
#: register tile (8 vectors of 16 lanes); the X block of a 128-channel layer is 64 KiB (L1 and L2)
PANEL_BYTES = 512


#: a panel's block of the dense operand (its rows x :data:`PANEL_BYTES`) larger than this: one panel.
#: Measured on a 2-vCPU AMD EPYC (Zen 3, 32 MiB L3; float32, one thread, one process, calls
#: alternated; panels / one panel): rows of 11 (banded 500k), 14 (cage11) and 5 (ct2010) nonzeros
#: against 39k-500k dense rows (20-256 MiB blocks): 2.44x / 1.48x / 1.40x slower with panels at
#: 256 columns, 1.93x / 1.99x at 3136; a 4096x4096 weight 90 % pruned (2 MiB block) 0.41x at 3136
#: columns (panels faster), 80 % pruned 1x1 convolutions (64-512 channels) 0.86-0.98x at 784-3136
#: (``benchmarks/results/cpu-2core-amd-spmv-spmm``)
PANEL_SLAB_BYTES = 4 << 20

#: the column window a call over every column passes to a kernel that takes one (see :func:`column_window`)
WHOLE_WINDOW = (0, (1 << 63) - 1)


@dataclass(frozen=True)
class Panel:
    """How one row loop is emitted: per panel of the columns ``[lo, hi)``, the loop ``rows``."""

    rows: L.For          # the row loop, its column loop bounded by ``[lo_var, hi_var)``
    lo: L.LExpr          # the column loop's original bounds (invariant in the row loop)
    hi: L.LExpr
    lo_var: str
    hi_var: str
    dtype: str           # element dtype of the output row
    #: scalars whose sum is the number of dense rows the nest reads (one per dense operand), or ()
    #: where some dense operand's row extent is not known
    dense_rows: tuple[str, ...] = ()


def _body(s: L.For) -> list[L.Stmt]:
    return [c for c in s.body.stmts if not isinstance(c, L.Comment)]


def _candidate(rows: L.For, plans: dict[int, regtile.TilePlan]) -> regtile.TilePlan | None:
    """The tile plan of ``rows``'s nonzero loop when ``rows`` may be cut into panels (module docs)."""
    if rows.kind.kind == "parallel" and rows.kind.atomic:
        return None
    stmts = _body(rows)
    if not stmts or not isinstance(stmts[-1], L.For):
        return None
    plan = plans.get(id(stmts[-1]))
    pre = stmts[:-1]
    if plan is None or not all(isinstance(s, L.Assign) for s in pre):
        return None
    stored = {s.buffer for s in rows.body.walk() if isinstance(s, L.Store)}
    if regtile.rerunnable_definitions(rows, pre) is None or any(L.expr_loads(s.value) & stored for s in pre):
        return None
    inside = set(L.assigned(rows.body))
    for b in (plan.inner.lo, plan.inner.hi):
        if set(L.var_reads(b)) & (inside | {rows.var.name}) or L.expr_loads(b) & stored:
            return None
    return plan


def dense_rows(plan: regtile.TilePlan, extents: dict[str, str]) -> tuple[str, ...]:
    """The extents (scalar names) of the rows of the dense operands that ``plan``'s vector loads read, or ()
    when one of them is not a row ``v * S`` of an index variable ``v`` with a known extent."""
    iv = plan.inner.var.name
    found = []
    for load in plan.vector_loads():
        split = regtile.affine(load.index, iv)
        rows = None
        if split is not None:
            for v in L.var_reads(split[0]):
                if v in extents and regtile.row_stride(split[0], v) is not None:
                    rows = extents[v]
        if rows is None:
            return ()
        found.append(rows)
    return tuple(found)


def column_window(kernel: L.Kernel, panels: dict[int, Panel]) -> Panel | None:
    """The panel whose columns a call may restrict to a window, or None.

    That is a kernel whose whole body is one parallel row loop cut into panels, with
    column bounds that are constants or scalar parameters. Its function then takes
    two more arguments, ``[window_lo, window_hi)``, and runs only the panels' columns
    inside them: the host may split a call by columns instead of rows (each thread
    reads its share of the dense operand once, not all of it per chunk of rows). Calls
    with disjoint windows write disjoint output elements, each element's terms summed
    in the same order as without a window (the panel legality above), so they may
    run at once; the rows outside ``[sc_lo, sc_hi)`` and the columns outside the
    window are not touched.
    """
    stmts = [c for c in kernel.body.stmts if not isinstance(c, L.Comment)]
    if len(stmts) != 1 or id(stmts[0]) not in panels:
        return None
    rows = stmts[0]
    scalars = {p.name for p in kernel.scalars}
    pn = panels[id(rows)]
    if rows.kind.kind != "parallel" or not (isinstance(rows.lo, L.Var) and rows.lo.name == "sc_lo"):
        return None
    if not all(isinstance(b, L.Const) or (isinstance(b, L.Var) and b.name in scalars) for b in (pn.lo, pn.hi)):
        return None
    return pn


def find_panels(kernel: L.Kernel, vector_bits: int,
                plans: dict[int, regtile.TilePlan] | None = None) -> tuple[L.Kernel, dict[int, Panel]]:
    """``kernel`` with every panel-able row loop's column bounds replaced by panel locals, and the
    panels keyed by ``id`` of the rewritten row loop (its register tiles are found again on the result).
    ``plans``: the kernel's register tiles, when the caller has found them already."""
    if plans is None:
        plans = regtile.find_plans(kernel, vector_bits)
    panels: dict[int, Panel] = {}
    scalars = {p.name for p in kernel.scalars}
    extents = {v: n for v, n in dict(kernel.hints).get("extents", ()) if n in scalars}

    def rewrite(s: L.Stmt) -> L.Stmt:
        if isinstance(s, L.For):
            plan = _candidate(s, plans)
            if plan is not None:
                n = len(panels)
                lo_var, hi_var = f"sc.pn{n}.lo", f"sc.pn{n}.hi"
                inner = replace(plan.inner, lo=L.Var(lo_var, L.INDEX), hi=L.Var(hi_var, L.INDEX))
                nz = replace(plan.outer, body=L.Block(tuple(
                    inner if c is plan.inner else c for c in plan.outer.body.stmts)))
                rows = replace(s, body=L.Block(tuple(nz if c is plan.outer else c for c in s.body.stmts)))
                panels[id(rows)] = Panel(rows, plan.inner.lo, plan.inner.hi, lo_var, hi_var, plan.dtype,
                                         dense_rows(plan, extents))
                return rows
            return replace(s, body=rewrite(s.body))
        if isinstance(s, L.Block):
            return L.Block(tuple(rewrite(c) for c in s.stmts))
        if isinstance(s, L.While):
            return replace(s, body=rewrite(s.body))
        if isinstance(s, L.If):
            return replace(s, then=rewrite(s.then), orelse=rewrite(s.orelse))
        return s

    if not plans:
        return kernel, {}
    body = rewrite(kernel.body)
    return (replace(kernel, body=body), panels) if panels else (kernel, {})

