"""Loop-IR scheduling passes: split, fuse, and loop annotations (vectorize, unroll, block).

Each pass is a function ``Lowered -> Lowered`` over the statement's kernels (the
numeric one and, for sparse outputs, the symbolic one and the one-pass pair; a pass
that rewrites the parallel outer loop drops the one-pass pair). A loop is named by its
index variable (``For.index_var``) or its own variable. The parallel outer loop
runs over ``[sc_lo, sc_hi)`` chunks the host computes from ``Lowered.parallel``;
splitting or fusing it rewrites that range too (the new outer loop stays parallel,
over blocks, without nonzero balancing).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Callable

from ..errors import ScheduleError
from ..ir import loop_ir as L
from ..ir.loop_ir import binop, const
from ..schedule import Command
from .sparsify import Lowered, ParallelInfo


def _matches(f: L.For, var: str) -> bool:
    return f.index_var == var or f.var.name == var


def loop_names(k: L.Kernel) -> list[str]:
    """The names loops of a kernel answer to (for error messages)."""
    out: list[str] = []
    for s in k.body.walk():
        if isinstance(s, (L.For, L.While)):
            for n in (s.index_var, getattr(getattr(s, "var", None), "name", "")):
                if n and n not in out:
                    out.append(n)
    return out


def _rewrite(s: L.Stmt, fn: Callable[[L.For], L.Stmt | None]) -> L.Stmt:
    """Rebuild ``s`` bottom-up; ``fn`` may replace a For (returning None keeps it)."""
    if isinstance(s, L.Block):
        return L.Block(tuple(_rewrite(c, fn) for c in s.stmts))
    if isinstance(s, L.For):
        new = replace(s, body=_rewrite(s.body, fn))
        out = fn(new)
        return new if out is None else out
    if isinstance(s, L.While):
        return replace(s, body=_rewrite(s.body, fn))
    if isinstance(s, L.If):
        return replace(s, then=_rewrite(s.then, fn), orelse=_rewrite(s.orelse, fn))
    return s


def _apply_to_kernels(low: Lowered, cmd: Command, fn: Callable[[L.For], L.Stmt | None]) -> Lowered:
    var = cmd.args[0]
    if any(isinstance(s, L.While) and s.index_var == var for s in low.numeric.body.walk()):
        # its co-iteration is a while loop (only the tails after one operand runs out are for loops)
        raise ScheduleError(f"{cmd}: loop {var!r} co-iterates several sparse operands (a while loop); "
                            "only for loops can be split, fused or annotated")
    hits = {"n": 0}

    def counted(f: L.For) -> L.Stmt | None:
        out = fn(f)
        if out is not None:
            hits["n"] += 1
        return out

    numeric = replace(low.numeric, body=_rewrite(low.numeric.body, counted))
    if hits["n"] == 0:
        raise ScheduleError(f"{cmd}: no loop named {var!r}; this kernel's loops are "
                            f"{', '.join(loop_names(low.numeric)) or 'none'}")
    symbolic = low.symbolic
    if symbolic is not None:
        symbolic = replace(symbolic, body=_rewrite(symbolic.body, fn))
    one_pass = low.one_pass
    if one_pass is not None:
        moved = {"top": False}

        def watched(f: L.For) -> L.Stmt | None:
            out = fn(f)
            moved["top"] |= out is not None and _is_top_parallel(f)
            return out
        one_pass = replace(one_pass, bound=replace(one_pass.bound, body=_rewrite(one_pass.bound.body, watched)),
                           numeric=replace(one_pass.numeric, body=_rewrite(one_pass.numeric.body, watched)))
        if moved["top"]:   # its cursor starts at the chunk's first row, which a rewritten outer loop no longer is
            one_pass = None
    return replace(low, numeric=numeric, symbolic=symbolic, one_pass=one_pass)


def _names_in(k: L.Kernel) -> set[str]:
    """Every name a kernel uses: its parameters and the variables its statements assign or read."""
    names = {p.name for p in k.params}
    for s in k.body.walk():
        for f in fields(s):
            value = getattr(s, f.name)
            for e in value if isinstance(value, tuple) else (value,):
                if isinstance(e, L.LExpr):
                    names.update(x.name for x in e.walk() if isinstance(x, L.Var))
    return names


def _check_new_names(low: Lowered, cmd: Command, new: tuple[str, ...]) -> None:
    """ScheduleError when a loop name a split or fuse would create already names something in the statement's
    kernels (a loop or position variable, an extent): the new loop would shadow it and read the wrong value."""
    kernels = [low.numeric, low.symbolic] + ([low.one_pass.bound, low.one_pass.numeric] if low.one_pass else [])
    taken = set().union(*(_names_in(k) for k in kernels if k is not None))
    for name in new:
        if name in taken:
            raise ScheduleError(f"{cmd}: the new loop name {name!r} is already used in this kernel (a loop, "
                                "position, extent or buffer name); choose another name")


def _over_output(low: Lowered, f: L.For) -> bool:
    """Whether loop ``f`` runs over an output coordinate (its iterations write disjoint output entries). A loop
    a split created answers no: its name is not a level variable's (a conservative answer)."""
    lv = low.space.level_vars().get(f.index_var)
    return lv is not None and lv.dim_var in set(low.space.output.dim_vars)


def _is_top_parallel(f: L.For) -> bool:
    return f.kind.kind == "parallel" and isinstance(f.lo, L.Var) and f.lo.name == "sc_lo"


def _blocks_kind(top: L.For) -> L.LoopKind:
    """The kind of the parallel loop over blocks that replaces the parallel ``top`` loop: its reduction
    (atomic updates or private copies) stays, its nonzero balancing does not (the chunks are blocks)."""
    return L.LoopKind("parallel", atomic=top.kind.atomic, private=top.kind.private)


def split_loop(low: Lowered, cmd: Command) -> Lowered:
    """``for v in [lo, hi)`` -> ``for v_o in [0, ceil((hi-lo)/f)) { for v_i in [0, min(f, ...)) { v = ... } }``."""
    var, factor, outer, inner = cmd.args
    _check_new_names(low, cmd, (outer, inner))
    new_par: list[ParallelInfo] = []

    def fn(f: L.For) -> L.Stmt | None:
        if not _matches(f, var):
            return None
        top = _is_top_parallel(f)
        lo, hi = (low.parallel.lo, low.parallel.hi) if top and low.parallel is not None else (f.lo, f.hi)
        vo, vi = L.Var(outer), L.Var(inner)
        span = binop("sub", hi, lo)
        nblocks = binop("floordiv", binop("add", span, factor - 1), factor)
        start = binop("add", lo, binop("mul", vo, factor))
        inner_hi = binop("min", const(factor), binop("sub", hi, start))
        body = L.Block((L.Assign(f.var, binop("add", start, vi)),) + f.body.stmts)
        inner_loop = L.For(vi, const(0), inner_hi, body, L.SERIAL, f"{f.comment} (inner of split by {factor})".strip(),
                           inner)
        if top:
            new_par.append(ParallelInfo(outer, const(0), nblocks, None, f.kind.private))
            return L.For(vo, L.Var("sc_lo"), L.Var("sc_hi"), L.Block((inner_loop,)), _blocks_kind(f),
                         f"blocks of {factor} of {var}", outer)
        return L.For(vo, const(0), nblocks, L.Block((inner_loop,)), f.kind, f"blocks of {factor} of {var}", outer)

    out = _apply_to_kernels(low, cmd, fn)
    if new_par:
        out = replace(out, parallel=new_par[0])
    return out


def fuse_loops(low: Lowered, cmd: Command) -> Lowered:
    """Two perfectly nested dense loops -> one loop over their product."""
    outer, inner, name = cmd.args
    _check_new_names(low, cmd, (name,))
    new_par: list[ParallelInfo] = []
    found = {"outer": False}

    def fn(f: L.For) -> L.Stmt | None:
        if not _matches(f, outer):
            return None
        found["outer"] = True
        body = [s for s in f.body.stmts if not isinstance(s, L.Comment)]
        if len(body) != 1 or not isinstance(body[0], L.For) or not _matches(body[0], inner):
            raise ScheduleError(f"{cmd}: loop {inner!r} must be the only statement of loop {outer!r} "
                                "(perfect nesting)")
        g = body[0]
        bound_vars = {x.name for x in (g.lo, g.hi) for x in x.walk() if isinstance(x, L.Var)}
        if f.var.name in bound_vars or any(isinstance(x, L.Load) for e in (g.lo, g.hi) for x in e.walk()):
            raise ScheduleError(f"{cmd}: the bounds of {inner!r} depend on {outer!r} (a sparse or blocked loop); "
                                "only loops over fixed ranges can be fused")
        top = _is_top_parallel(f)
        if top and not (f.kind.atomic or f.kind.private) and not _over_output(low, g):
            # fused, the parallel loop's chunks would split runs of g's iterations, which update the same outputs
            raise ScheduleError(f"{cmd}: the fused loop runs in parallel, and loop {inner!r} is not over an "
                                f"output coordinate (it is summed over): its iterations update the same output "
                                f"entries; parallelize({outer!r}, reduction='atomic') first, or keep {outer!r} "
                                "serial (parallelize(..., 'none'))")
        lo_a, hi_a = (low.parallel.lo, low.parallel.hi) if top and low.parallel is not None else (f.lo, f.hi)
        nb = binop("sub", g.hi, g.lo)
        total = binop("mul", binop("sub", hi_a, lo_a), nb)
        fv = L.Var(name)
        assigns = (L.Assign(f.var, binop("add", lo_a, binop("floordiv", fv, nb))),
                   L.Assign(g.var, binop("add", g.lo, binop("mod", fv, nb))))
        body2 = L.Block(assigns + g.body.stmts)
        if top:
            new_par.append(ParallelInfo(name, const(0), total, None, f.kind.private))
            return L.For(fv, L.Var("sc_lo"), L.Var("sc_hi"), body2, _blocks_kind(f),
                         f"{outer} x {inner} fused", name)
        return L.For(fv, const(0), total, body2, f.kind, f"{outer} x {inner} fused", name)

    out = _apply_to_kernels(low, cmd, fn)
    if new_par:
        out = replace(out, parallel=new_par[0])
    return out


def annotate_loop(low: Lowered, cmd: Command) -> Lowered:
    """``vectorize`` / ``unroll`` / ``block``: set the loop's annotation (kind and width)."""
    var, width = cmd.args
    kind = {"vectorize": "vector", "unroll": "unroll", "block": "block"}[cmd.op]

    def fn(f: L.For) -> L.Stmt | None:
        if not _matches(f, var):
            return None
        if f.kind.kind == "parallel":
            raise ScheduleError(f"{cmd}: loop {var!r} is the parallel outer loop; split it first and "
                                f"{cmd.op} the inner loop")
        return replace(f, kind=L.LoopKind(kind, width))

    return _apply_to_kernels(low, cmd, fn)


LOOP_PASSES: dict[str, Callable[[Lowered, Command], Lowered]] = {
    "split": split_loop,
    "fuse": fuse_loops,
    "vectorize": annotate_loop,
    "unroll": annotate_loop,
    "block": annotate_loop,
}


def apply_loop_schedule(low: Lowered, commands: list[Command]) -> Lowered:
    """Apply the loop-IR commands in order."""
    for cmd in commands:
        low = LOOP_PASSES[cmd.op](low, cmd)
    return low
