"""Choose a loop order from the iteration graph; insert conversions where none exists.

The iteration graph has one node per level variable and an edge ``u -> v`` when
some sparse-format operand stores ``v`` at a level below ``u`` (a compressed level
can only be iterated once its parent position is known). Dense operands add no
edges: they are addressed by arithmetic in any order. A sparse output adds its own
level order (it is appended to in order).

Every topological order is legal. Among them we prefer, in this order:

1. for sparse outputs, no reduction variable before an output variable (else the
   output needs a workspace);
2. dense operands read along their contiguous (last) level innermost;
3. an output variable outermost (so the outer loop can run in parallel);
4. sparse levels as far out as possible (each sparse traversal is done once);
5. reduction variables innermost;
6. the variables' first-appearance order.

When the graph has a cycle (CSR read together with CSC, say), the operand whose
edges close the cycle is converted to a format that follows the chosen order.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Sequence

import networkx as nx

from .level_space import LevelSpace, Operand, assign_level_vars, dim_level_vars, permuted_format

_MAX_ORDERS = 20000


@dataclass(frozen=True)
class OrderChoice:
    """The chosen loop order (level-variable names, outermost first) and why."""

    order: tuple[str, ...]
    graph: nx.DiGraph
    explanation: str


def operand_edges(o: Operand) -> list[tuple[str, str]]:
    """Ordering constraints one sparse-format operand imposes."""
    if not o.fmt.is_sparse:
        return []
    names = [lv.name for lv in o.level_vars]
    units = {lv.name for lv in o.level_vars if lv.is_unit}  # 'dim mod 1' levels bind no loop
    edges = []
    for l in range(1, len(names)):
        if names[l] not in units and any(not lvl.is_full for lvl in o.levels[: l + 1]):
            edges += [(names[m], names[l]) for m in range(l) if names[m] != names[l] and names[m] not in units]
    return edges


def iteration_graph(space: LevelSpace, operands: Iterable[Operand]) -> nx.DiGraph:
    """Graph over all level variables with the edges of ``operands`` (and block outer -> inner)."""
    g = nx.DiGraph()
    all_vars = space.level_vars()
    g.add_nodes_from(all_vars)
    for lv in all_vars.values():
        if lv.part == "inner":
            g.add_edge(f"{lv.dim_var}_blk", lv.name, reason="block outer before inner")
    for o in operands:
        for u, v in operand_edges(o):
            g.add_edge(u, v, reason=f"{o.tensor} is {o.fmt}: its level order")
    return g


def _score(order: Sequence[str], space: LevelSpace, reduction_vars: set[str], first_seen: dict[str, int],
           nested_free: Sequence[set[str]] = ()):
    pos = {v: k for k, v in enumerate(order)}
    lvars = space.level_vars()
    # A fused reduction is computed once its free variables are bound; it is only computed once per
    # combination of them if they are the outermost loops.
    not_prefix = 0
    for free in nested_free:
        names = [n for n in order if lvars[n].dim_var in free]
        if sorted(pos[n] for n in names) != list(range(len(names))):
            not_prefix += 1
    is_reduction = {n: lv.dim_var in reduction_vars for n, lv in lvars.items()}
    out = space.output
    out_vars = [lv.name for lv in out.level_vars] if out.fmt.is_sparse else [
        n for d in out.dim_vars for n, lv in lvars.items() if lv.dim_var == d]
    out_vars = [v for v in out_vars if v in pos]  # a fused reduction's sub-order holds no output variable
    sparse_out_penalty = 0
    if out.fmt.is_sparse and out_vars:
        last_out = max(pos[v] for v in out_vars)
        sparse_out_penalty = sum(1 for v in order[:last_out] if is_reduction[v])
    contig = 0
    for o in space.all_operands():
        if o.fmt.is_sparse or not o.dim_vars:
            continue
        loop_vars = [lv.name for d in o.dim_vars for lv in dim_level_vars(space, d) if lv.name in pos]
        contiguous = dim_level_vars(space, o.dim_vars[o.fmt.exprs[-1].dim])[-1].name
        if not loop_vars or contiguous not in pos:
            continue  # read inside a fused reduction: that nest has its own order
        deepest = max(loop_vars, key=lambda n: pos[n])
        contig += 0 if deepest == contiguous else 1
    outer_not_output = 1 if order and is_reduction[order[0]] else 0
    sparse_pos = 0
    for o in space.operands:
        for lv, lvl in zip(o.level_vars, o.levels):
            if not lvl.is_full and lv.name in pos:
                sparse_pos += pos[lv.name]
    red_pos = -sum(pos[v] for v in order if is_reduction[v])
    tie = [first_seen.get(lvars[v].dim_var, 99) * 2 + (lvars[v].part == "inner") for v in order]
    return (not_prefix, sparse_out_penalty, contig, outer_not_output, sparse_pos, red_pos, tie)


def choose_loop_order(space: LevelSpace, reduction_vars: set[str], first_seen: dict[str, int],
                      main_dims: set[str] | None = None, nested_free: Sequence[set[str]] = (),
                      forced: Sequence[str] | None = None) -> OrderChoice:
    """Pick the loop order over ``main_dims`` (default: all); mutate ``space`` with needed conversions.

    Variables bound by fused nested reductions are left out of the main order;
    each gets its own order from :func:`sub_order`. ``forced`` (a schedule's
    ``reorder``) must be a legal order of exactly the main loop variables.
    """
    lvars = space.level_vars()
    keep = None if main_dims is None else {n for n, lv in lvars.items() if lv.dim_var in main_dims}

    def restrict(g: nx.DiGraph) -> nx.DiGraph:
        return g if keep is None else g.subgraph(keep).copy()

    if forced is not None:
        return _forced(space, restrict, tuple(forced))

    def best(g: nx.DiGraph):
        orders = islice(nx.all_topological_sorts(g), _MAX_ORDERS)
        return min((tuple(o) for o in orders),
                   key=lambda o: _score(o, space, reduction_vars, first_seen, nested_free))

    return _choose(space, restrict, best)


def _forced(space: LevelSpace, restrict, order: tuple[str, ...]) -> OrderChoice:
    """Check a requested loop order against the iteration graph (inputs and a sparse output)."""
    from ..errors import ScheduleError

    sparse = [o for o in space.operands if o.fmt.is_sparse]
    out = space.output
    g = restrict(iteration_graph(space, sparse + ([out] if out.fmt.is_sparse else [])))
    want = set(g.nodes)
    if set(order) != want or len(order) != len(want):
        raise ScheduleError(f"reorder{order}: the loops to order are {', '.join(sorted(want))}")
    pos = {v: k for k, v in enumerate(order)}
    for u, v, data in g.edges(data=True):
        if pos[u] > pos[v]:
            raise ScheduleError(f"reorder{order}: {v} cannot come before {u} ({data.get('reason', 'level order')}); "
                                "change that operand's format (e.g. csr <-> csc) to iterate in this order")
    return OrderChoice(order, g, "order given by the schedule")


def sub_order(space: LevelSpace, dims: set[str], first_seen: dict[str, int]) -> tuple[str, ...]:
    """Loop order for the variables of one fused reduction (they are all reduction variables)."""
    lvars = space.level_vars()
    keep = {n for n, lv in lvars.items() if lv.dim_var in dims}
    g = iteration_graph(space, [o for o in space.operands if o.fmt.is_sparse]).subgraph(keep).copy()
    if not nx.is_directed_acyclic_graph(g):
        raise nx.NetworkXUnfeasible("reduction variables conflict")
    orders = islice(nx.all_topological_sorts(g), _MAX_ORDERS)
    return min((tuple(o) for o in orders), key=lambda o: _score(o, space, dims, first_seen))


def _choose(space: LevelSpace, restrict, _best_order) -> OrderChoice:
    sparse_inputs = [o for o in space.operands if o.fmt.is_sparse]
    out = space.output
    with_out = sparse_inputs + ([out] if out.fmt.is_sparse else [])
    g = restrict(iteration_graph(space, with_out))
    if nx.is_directed_acyclic_graph(g):
        order = _best_order(g)
        return OrderChoice(order, g, "all operand level orders agree")

    # The output alone conflicts: compute it in an order-compatible format, convert afterwards.
    g_in = restrict(iteration_graph(space, sparse_inputs))
    if out.fmt.is_sparse and nx.is_directed_acyclic_graph(g_in):
        order = _best_order(g_in)
        _convert(space, out, order, "output level order conflicts with the inputs'")
        return OrderChoice(order, restrict(iteration_graph(space, sparse_inputs + [out])),
                           "output converted after the kernel")

    # Drop inputs (last first) until the rest agree; convert the dropped ones.
    kept = list(sparse_inputs)
    dropped: list[Operand] = []
    while kept:
        dropped.append(kept.pop())
        g_try = restrict(iteration_graph(space, kept + ([out] if out.fmt.is_sparse else [])))
        if nx.is_directed_acyclic_graph(g_try):
            order = _best_order(g_try)
            for o in dropped:
                _convert(space, o, order, "its level order conflicts with the chosen loop order")
            return OrderChoice(order, restrict(iteration_graph(
                space, kept + dropped + ([out] if out.fmt.is_sparse else []))),
                f"converted {', '.join(o.tensor for o in dropped)}")
        g_try = restrict(iteration_graph(space, kept))
        if nx.is_directed_acyclic_graph(g_try):
            order = _best_order(g_try)
            for o in dropped:
                _convert(space, o, order, "its level order conflicts with the chosen loop order")
            if out.fmt.is_sparse:
                _convert(space, out, order, "output level order conflicts with the inputs'")
            return OrderChoice(order, restrict(iteration_graph(space, kept + dropped + [out])),
                               f"converted {', '.join(o.tensor for o in dropped)} and the output")
    raise AssertionError("a graph without sparse operands is always acyclic")


def _convert(space: LevelSpace, o: Operand, order: Sequence[str], reason: str) -> None:
    pos = {v: k for k, v in enumerate(order)}
    dim_rank = {}
    for d, var in enumerate(o.dim_vars):
        names = [lv.name for lv in o.level_vars if lv.dim_var == var] or [var]
        dim_rank[d] = min(pos.get(n, len(order)) for n in names)
    new = permuted_format(o.fmt, dim_rank)
    if new != o.fmt:
        space.convert(o, new, reason)
        assign_level_vars(space)  # the level variables follow the new level order


def order_text(choice: OrderChoice) -> str:
    """Human-readable loop order with the graph's edges."""
    reduced = nx.transitive_reduction(choice.graph) if nx.is_directed_acyclic_graph(choice.graph) else choice.graph
    edges = ", ".join(f"{u} -> {v}" for u, v in sorted(reduced.edges))
    return f"loop order: {', '.join(choice.order)}   (constraints: {edges or 'none'}; {choice.explanation})"

