"""The pass manager: tensor-IR program -> lowered statements (loop IR + host plan).

Passes, in order, each a named function; with ``SPARSEC_DEBUG=1`` (or
``debug=True``) the text after each pass is printed to stderr:

1. ``normalize-reductions``   pull factors into sums, merge nested reductions
2. ``precompute-nested``      nested reductions -> dense temporaries
3. ``split-repeated-indices`` ``A[i, i]`` on sparse A -> filter
4. ``level-space``            split blocked dimensions, unblock conflicting operands
5. ``loop-order``             iteration graph, topological order, conversions
6. ``sparsify``               merge lattices -> loop IR
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from typing import Callable

from ..errors import ScheduleError, VerificationError
from ..schedule import Command
from ..ir.loop_printer import kernel_text
from ..ir.tensor_ir import Access, Assignment, Binary, Literal, Program, Reduce, TensorDecl, Where
from .level_space import build_level_space
from .loop_order import choose_loop_order, order_text
from .normalize import (
    extract_reduction, free_vars, inline_intermediates, nested_reductions, normalize_reductions,
    split_repeated_indices, unsplit_repeated_indices,
)
from .schedule_loops import LOOP_PASSES, apply_loop_schedule, loop_names
from .sparsify import ONE_PASS_MAX_BYTES, Lowered, Namer, NeedsOrdered, NotFusable, ParallelSpec, Sparsifier


@dataclass
class LoweredProgram:
    """Everything the runtime needs: statements in order, temporaries, and the pass log."""

    program: Program
    statements: list[Lowered]
    temporaries: list[TensorDecl]
    log: list[tuple[str, str]] = field(default_factory=list)
    schedule: object = None

    def loops_text(self) -> str:
        """Loop IR of every kernel, with the host steps (conversions) around them."""
        parts = [f"// schedule: {self.schedule}"] if self.schedule is not None else []
        for low in self.statements:
            for c in low.space.conversions:
                parts.append(c.text())
            parts.append(f"// {order_text(low.order)}; output strategy: {low.strategy}")
            if low.one_pass is not None:
                parts.append("// one pass (rows in chunks on threads): a bound per row, then the rows written in order")
                parts += [kernel_text(low.one_pass.bound), kernel_text(low.one_pass.numeric)]
                parts.append(f"// two passes (exact counts, then the rows) where the bound's entries would take more "
                             f"than {ONE_PASS_MAX_BYTES >> 20} MiB")
            if low.symbolic is not None:
                parts.append(kernel_text(low.symbolic))
            parts.append(kernel_text(low.numeric))
            if low.space.output_conversion is not None:
                parts.append(low.space.output_conversion.text())
        return "\n".join(parts)


def _kernels_text(low: Lowered) -> str:
    """Every kernel of a lowered statement, as the pass log shows it: the one-pass pair, then the two passes."""
    kernels = [low.one_pass.bound, low.one_pass.numeric] if low.one_pass is not None else []
    kernels += [low.symbolic] if low.symbolic is not None else []
    return "\n".join(kernel_text(k) for k in kernels + [low.numeric])


def _debug_enabled(debug: bool | None) -> bool:
    return bool(debug) if debug is not None else os.environ.get("SPARSEC_DEBUG", "") not in ("", "0")


def lower_program(program: Program, compute_dtype: str, kernel_name: str = "kernel",
                  parallel: bool = True, debug: bool | None = None,
                  stmt_text: Callable[[Assignment], str] | None = None,
                  outputs: set[str] | None = None, schedule=None, one_pass: bool = False) -> LoweredProgram:
    """Run all passes over ``program`` (declarations must carry formats and dtypes).

    ``one_pass``: the backend runs a parallel loop as chunks of consecutive rows (CPU threads), so
    workspace outputs also get :class:`~sparsec.passes.sparsify.OnePass` kernels.

    ``outputs`` names the tensors the caller wants back; any other written tensor
    is an intermediate and is inlined into its consumers (fused). ``None`` keeps all.
    """
    decls = dict(program.decl_map)
    taken = set(decls)
    for s in program.statements:
        taken |= {v.name for v in s.index_vars()}
    namer = Namer(taken)
    log: list[tuple[str, str]] = []
    show = _debug_enabled(debug)
    render = stmt_text or (lambda a: repr(a))

    def record(name: str, text: str) -> None:
        log.append((name, text))
        if show:
            print(f"// ----- after {name} -----\n{text}", file=sys.stderr)

    stmts = list(program.statements)
    if outputs is not None:
        stmts = inline_intermediates(stmts, set(outputs), namer.fresh)
        record("inline-intermediates", "\n".join(render(s) for s in stmts))
    stmts = [normalize_reductions(s) for s in stmts]
    record("normalize-reductions", "\n".join(render(s) for s in stmts))

    lowered: list[Lowered] = []
    idx = 0
    used: set[int] = set()
    while idx < len(stmts):
        s = stmts[idx]
        try:
            low = _lower_statement(s, idx, len(stmts), decls, taken, namer, compute_dtype, kernel_name, parallel,
                                   record, schedule, used, one_pass)
        except NotFusable as nf:
            # Materialize that reduction in a dense temporary and lower both statements again.
            stmts[idx: idx + 1] = extract_reduction(s, nf.reduce, decls, namer.fresh, compute_dtype)
            record("precompute-nested", f"{nf}: " + "; ".join(render(x) for x in stmts[idx: idx + 2]))
            continue
        lowered.append(low)
        idx += 1
    if schedule is not None:
        unread = [str(c) for n, c in enumerate(schedule.commands) if n not in used and c.op == "skip_zeros"]
        if unread:
            raise ScheduleError(f"{', '.join(unread)}: no statement reads that tensor as an input")
        for n, c in enumerate(schedule.commands):
            loops = [low.order.order for low in lowered if c.op == "reorder" and set(c.args) < set(low.order.order)]
            if n not in used and loops:
                raise ScheduleError(f"{c}: a reorder names every loop of its statement, in the new order; this "
                                    f"statement's loops are {', '.join(loops[0])}")
        unused = [str(c) for n, c in enumerate(schedule.commands) if n not in used]
        if unused:
            raise ScheduleError(f"{', '.join(unused)}: no statement has that loop; the loops are "
                                + "; ".join(", ".join(low.order.order) for low in lowered))
    temps = [decls[n] for n in decls if n not in program.decl_map]
    return LoweredProgram(program, lowered, temps, log, schedule)


def _tensor_level(schedule, main_vars: set[str], used: set[int]) -> tuple[tuple[str, ...] | None, ParallelSpec]:
    """The reorder and parallel/pos commands that name this statement's loops."""
    forced = None
    spec = ParallelSpec()
    if schedule is None:
        return forced, spec
    earlier: dict[str, Command] = {}

    def once(c: Command) -> None:   # a second command of the same kind for this statement is a conflict
        if c.op in earlier:
            raise ScheduleError(f"{c}: this statement already has {earlier[c.op]}; give one {c.op} per statement")
        earlier[c.op] = c

    for n, c in enumerate(schedule.commands):
        if c.op == "reorder" and set(c.args) == main_vars:
            once(c)
            forced, _ = c.args, used.add(n)
        elif c.op == "parallelize" and c.args[0] in main_vars:
            once(c)
            spec = replace(spec, var=c.args[0], enabled=c.args[1] != "none", reduction=c.args[2], command=str(c))
            used.add(n)
        elif c.op == "pos" and c.args[0] in main_vars:
            once(c)
            spec = replace(spec, var=spec.var or c.args[0], balance_tensor=c.args[1], segment=c.args[2],
                           command=spec.command or str(c))
            used.add(n)
        elif c.op == "workspace" and c.args[0] in main_vars:
            spec = replace(spec, workspace_var=c.args[0], workspace=c.args[1], workspace_touch=c.args[2])
            used.add(n)
    pos = earlier.get("pos")
    if pos is not None:      # pos splits the parallel loop's work: it must name that loop, and it must run in parallel
        if pos.args[0] != spec.var:
            raise ScheduleError(f"{pos}: pos splits the parallel loop's work by nonzeros, and the parallel loop is "
                                f"{spec.var} ({earlier['parallelize']}); write pos({spec.var}, {pos.args[1]})")
        if not spec.enabled:
            raise ScheduleError(f"{pos}: loop {spec.var} does not run in parallel ({earlier['parallelize']}); pos "
                                "splits a parallel loop's work by nonzeros")
    return forced, spec


def _check_parallel(low: Lowered, spec: ParallelSpec, order: tuple[str, ...]) -> None:
    """A parallelize/pos command must have made its loop the parallel outer loop."""
    if spec.var is None or not spec.enabled:
        return
    if not order or order[0] != spec.var:
        raise ScheduleError(f"{spec.command}: only the outermost loop runs in parallel and the order is "
                            f"{', '.join(order)}; reorder first")
    if low.parallel is None:
        lv = low.space.level_vars()[spec.var]
        if lv.dim_var not in set(low.space.output.dim_vars) and spec.reduction is None:
            why = (f"its iterations update the same output entries ({spec.var} is summed over); "
                   "pass reduction='atomic' or 'private'")
        elif low.space.output.fmt.is_sparse and spec.reduction is not None:
            why = "a sparse output cannot take atomic or private reductions"
        else:
            why = "it co-iterates several sparse operands (a while loop) or walks a non-unique level"
        raise ScheduleError(f"{spec.command}: loop {spec.var} cannot run in parallel: {why}")


def _product_factors(e) -> list:
    """The factors of ``e`` if it is a product (of accesses, literals...), else ``[e]``."""
    if isinstance(e, Binary) and e.op == "mul":
        return _product_factors(e.lhs) + _product_factors(e.rhs)
    return [e]


def _gated_tensor(f) -> str | None:
    """The tensor a product factor is zero with: ``X[..]``, or ``where(cond, X[..], 0)`` (thresholded X)."""
    if isinstance(f, Access):
        return f.tensor
    if isinstance(f, Where) and isinstance(f.then, Access) and isinstance(f.other, Literal) and \
            type(f.other.value) is not bool and f.other.value == 0:
        return f.then.tensor
    return None


def _skip_zeros(low: Lowered, s: Assignment, decls: dict, schedule, used: set[int]) -> Lowered:
    """Record ``skip_zeros(tensor)`` commands naming a dense factor of this statement as a kernel hint.

    A factor ``where(cond, X[..], 0)`` counts as X's factor: it is zero wherever X is (and where
    ``cond`` fails, which is what a run-time threshold of the activations makes of it).
    """
    body = s.expr.body if isinstance(s.expr, Reduce) and s.expr.op == "sum" else s.expr
    factors = [t for t in map(_gated_tensor, _product_factors(body)) if t is not None]
    read = {a.tensor for a in s.expr.walk() if isinstance(a, Access)}
    added = []
    for n, c in enumerate(schedule.commands):
        if c.op != "skip_zeros" or c.args[0] not in read:
            continue
        name = c.args[0]
        if name not in factors or len(factors) < 2:
            raise ScheduleError(f"skip_zeros({name}): {name} must be a factor of the statement's product "
                                f"(a zero entry then annihilates its term)")
        if decls[name].format.is_sparse:
            raise ScheduleError(f"skip_zeros({name}): {name} is sparse; its absent entries "
                                "are skipped already, skip_zeros is for dense inputs")
        added.append(("skip_zeros", name))
        used.add(n)
    if not added:
        return low
    return replace(low, numeric=replace(low.numeric, hints=low.numeric.hints + tuple(added)))


def _lower_statement(s: Assignment, idx: int, count: int, decls: dict, taken: set, namer: Namer,
                     compute_dtype: str, kernel_name: str, parallel: bool, record, schedule=None,
                     used: set[int] | None = None, one_pass: bool = False) -> Lowered:
    """Lower one statement (nested reductions fused as scalars; raises NotFusable otherwise)."""
    used = set() if used is None else used
    fix = split_repeated_indices(s, decls, namer.fresh)
    s = fix.stmt
    dim_params: dict[str, str] = {}
    for v in s.index_vars():
        base = fix.dup_of.get(v.name, v.name)
        if base not in dim_params:
            dim_params[base] = namer.fresh(f"n_{base}")
        dim_params[v.name] = dim_params[base]
    out_decl = decls[s.output.tensor]
    reduction_vars = {v.name for v in s.expr.vars} if isinstance(s.expr, Reduce) else set()
    first_seen = {v.name: k for k, v in enumerate(s.index_vars())}
    taken_now = taken | set(dim_params) | set(decls)
    name = kernel_name if count == 1 else f"{kernel_name}_{idx}"
    space = build_level_space(s, decls, out_decl, taken_now)
    main_dims = {v.name for v in s.output.indices} | reduction_vars
    nested_free = [set(free_vars(r)) for r in nested_reductions(s)]
    main_vars = {n for n, lv in space.level_vars().items() if lv.dim_var in main_dims}
    forced, spec = _tensor_level(schedule, main_vars, used)
    for _ in range(len(space.operands) + 1):
        choice = choose_loop_order(space, reduction_vars, first_seen, main_dims, nested_free, forced)
        try:
            low = Sparsifier(s, space, choice, compute_dtype, dim_params, namer, fix.filters, name,
                             parallel, spec, one_pass).run()
            break
        except NeedsOrdered as need:
            o = space.operand(need.key)
            space.convert(o, o.fmt.with_ordered(), "co-iteration needs ordered coordinates")
        except NotFusable as nf:
            # The caller precomputes the reduction in the statement as written (before the split).
            raise NotFusable(unsplit_repeated_indices(nf.reduce, fix.dup_of), str(nf)) from None
    else:  # pragma: no cover - each retry orders one more operand
        raise VerificationError("could not order the operands for co-iteration")
    record(f"level-space + loop-order [{name}]", "\n".join(
        [c.text() for c in space.conversions] + [order_text(choice)]))
    record(f"sparsify [{name}]", _kernels_text(low))
    _check_parallel(low, spec, choice.order)
    if schedule is not None:
        low = _skip_zeros(low, s, decls, schedule, used)
        loop_cmds = []
        names = set(loop_names(low.numeric))
        for n, c in enumerate(schedule.commands):
            if c.op in LOOP_PASSES and c.args[0] in names:
                loop_cmds.append(c)
                used.add(n)
                names |= {a for a in c.args[1:] if isinstance(a, str)}  # names a split/fuse created
        if loop_cmds:
            low = apply_loop_schedule(low, loop_cmds)
            record(f"schedule [{name}]: {', '.join(map(str, loop_cmds))}", _kernels_text(low))
    return low
