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
from dataclasses import dataclass, field
from typing import Callable

from ..errors import VerificationError
from ..ir.loop_printer import kernel_text
from ..ir.tensor_ir import Assignment, Program, Reduce, TensorDecl
from .level_space import build_level_space
from .loop_order import choose_loop_order, order_text
from .normalize import (
    extract_reduction, free_vars, inline_intermediates, nested_reductions, normalize_reductions,
    split_repeated_indices,
)
from .sparsify import Lowered, Namer, NeedsOrdered, NotFusable, Sparsifier


@dataclass
class LoweredProgram:
    """Everything the runtime needs: statements in order, temporaries, and the pass log."""

    program: Program
    statements: list[Lowered]
    temporaries: list[TensorDecl]
    log: list[tuple[str, str]] = field(default_factory=list)

    def loops_text(self) -> str:
        """Loop IR of every kernel, with the host steps (conversions) around them."""
        parts = []
        for low in self.statements:
            for c in low.space.conversions:
                parts.append(c.text())
            parts.append(f"// {order_text(low.order)}; output strategy: {low.strategy}")
            if low.symbolic is not None:
                parts.append(kernel_text(low.symbolic))
            parts.append(kernel_text(low.numeric))
            if low.space.output_conversion is not None:
                parts.append(low.space.output_conversion.text())
        return "\n".join(parts)


def _debug_enabled(debug: bool | None) -> bool:
    return bool(debug) if debug is not None else os.environ.get("SPARSEC_DEBUG", "") not in ("", "0")


def lower_program(program: Program, compute_dtype: str, kernel_name: str = "kernel",
                  parallel: bool = True, debug: bool | None = None,
                  stmt_text: Callable[[Assignment], str] | None = None,
                  outputs: set[str] | None = None) -> LoweredProgram:
    """Run all passes over ``program`` (declarations must carry formats and dtypes).

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
    while idx < len(stmts):
        s = stmts[idx]
        try:
            low = _lower_statement(s, idx, len(stmts), decls, taken, namer, compute_dtype, kernel_name, parallel,
                                   record)
        except NotFusable as nf:
            # Materialize that reduction in a dense temporary and lower both statements again.
            stmts[idx: idx + 1] = extract_reduction(s, nf.reduce, decls, namer.fresh, compute_dtype)
            record("precompute-nested", f"{nf}: " + "; ".join(render(x) for x in stmts[idx: idx + 2]))
            continue
        lowered.append(low)
        idx += 1
    temps = [decls[n] for n in decls if n not in program.decl_map]
    return LoweredProgram(program, lowered, temps, log)


def _lower_statement(s: Assignment, idx: int, count: int, decls: dict, taken: set, namer: Namer,
                     compute_dtype: str, kernel_name: str, parallel: bool, record) -> Lowered:
    """Lower one statement (nested reductions fused as scalars; raises NotFusable otherwise)."""
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
    for _ in range(len(space.operands) + 1):
        choice = choose_loop_order(space, reduction_vars, first_seen, main_dims, nested_free)
        try:
            low = Sparsifier(s, space, choice, compute_dtype, dim_params, namer, fix.filters, name,
                             parallel).run()
            break
        except NeedsOrdered as need:
            o = space.operand(need.key)
            space.convert(o, o.fmt.with_ordered(), "co-iteration needs ordered coordinates")
    else:  # pragma: no cover - each retry orders one more operand
        raise VerificationError("could not order the operands for co-iteration")
    record(f"level-space + loop-order [{name}]", "\n".join(
        [c.text() for c in space.conversions] + [order_text(choice)]))
    record(f"sparsify [{name}]", "\n".join(
        ([kernel_text(low.symbolic)] if low.symbolic else []) + [kernel_text(low.numeric)]))
    return low
