"""Short rows: a loop over a row's nonzeros that sums into a local runs as masked vectors when short.

CSR SpMV's inner loop, ``for p in [pos[i], pos[i + 1]) { acc = acc + vals[p] * x[crd[p]] }``,
is left to LLVM's loop vectorizer, whose loop runs 32 nonzeros per iteration (four 8-lane
gathers), then 8, then one at a time. A graph or mesh row of 2-10 nonzeros never reaches the
vector code: it runs the scalar remainder, one dependent add per nonzero, and mispredicts
the branches that pick among the three loops at every row. LLVM can instead fold the tail
into the vector loop (``llvm.loop.vectorize.predicate.enable``): each iteration takes up to
:data:`LANES` nonzeros under a mask, so a short row is one or two masked gathers and one
horizontal sum, with no scalar code at all. Long rows are faster in LLVM's unmasked,
four-way unrolled loop, so the loop is versioned on its trip count: rows shorter than
:data:`LONG_ROW` take the masked loop, the others the ordinary one.

Which loops: a serial loop (no schedule hint on it) whose upper bound reads memory (a position
range of a compressed level; a dense loop over ``[0, n)`` is left alone, not measured) and whose
body is only assignments, at least one of them the update of a float sum declared before the
loop (``acc = acc + e`` or ``acc = e + acc``). The hints do not change what is
computed: LLVM applies them only where it can vectorize the loop at all, and the sum is
reassociated exactly as the ordinary vectorized loop reassociates it (its update carries
``reassoc``, see :mod:`.codegen`).

Measured (2-core Xeon VM, one thread, CSR SpMV over the 17 shared matrices, one process with the
variants' calls alternated; ``python benchmarks/spmv_variants.py --compare short-rows``, results in
``benchmarks/results/cpu-2core-spmv-short-rows``): geometric mean 1.17x (float32) and 1.23x (float64)
faster than LLVM's loop alone, up to 2.2x on meshes and graphs with 5-8 nonzeros per row (float32
ct2010 733 -> 341 µs, delaunay_n16 910 -> 483, PGPgiantcompo 95 -> 54, ca-CondMat 326 -> 184).
Slower on matrices whose short rows read runs of adjacent columns, which the scalar loop reads
cheaply and a gather does not: bayer10 48 -> 67 µs, memplus 79 -> 84 (float64 also cs4 81 -> 101);
and 5-12 % on matrices of long rows (the compare per row); also on rows of one constant length,
whose branches LLVM's loop predicts (the benchmark's synthetic uniform 20k x 8: 79 -> 87 µs, banded
50k x 11: 231 -> 284). Eight lanes beat four and sixteen for float32 and float64 alike (a gather's
cost goes by its lanes), and a threshold of 32 beat 8, 16 and 64.

Only on hosts that gather well (:func:`pays_off`). Without AVX-512, or on AMD Zen, LLVM does not
emit gathers at all (its cost model calls them slow there) and scalarizes the masked loop into
one branch and one insert per lane: on a 2-vCPU AMD EPYC (Zen 3, AVX2) the band of 17 nonzeros
per row above ran 14.5 ms masked against 3.0 ms with LLVM's loop alone (scipy 3.7 ms), uniform
random rows of 16 18.1 against 7.0 ms (``benchmarks/results/cpu-2core-amd-short-rows``).
"""

from __future__ import annotations

from ...ir import loop_ir as L

#: elements per masked iteration of the short-row loop
LANES = 8
#: rows with at least this many nonzeros take LLVM's ordinary (unmasked, unrolled) vector loop
LONG_ROW = 32

_FLOATS = ("float16", "float32", "float64")


#: force the masked loop on (True) or off (False) on every host; None lets :func:`pays_off` decide by host
FORCE: bool | None = None


def pays_off() -> bool:
    """Whether this host gets the masked short-row loop: AVX-512 hosts other than AMD Zen (see the module docs).

    Measured faster on an AVX-512 Intel Xeon, 3-5x slower on an AVX2 AMD Zen 3; other hosts
    (AVX2 Intel, AVX-512 Zen 4, ARM) are unmeasured and keep LLVM's loop.
    """
    if FORCE is not None:
        return FORCE
    from .jit import host

    h = host()
    return "+avx512f" in h.features.split(",") and not h.cpu.startswith("znver")


def is_short_row_sum(s: L.For) -> bool:
    """Whether ``s`` is a loop to version by trip count (see the module docs)."""
    if s.kind.kind != "serial" or not any(isinstance(n, L.Load) for n in s.hi.walk()):
        return False
    stmts = [t for t in s.body.stmts if not isinstance(t, L.Comment)]
    if not stmts or not all(isinstance(t, L.Assign) for t in stmts):
        return False
    assigned: set[str] = set()
    found = False
    for t in stmts:
        name = t.var.name
        if name not in assigned and t.var.dtype in _FLOATS and _sum_update(t):
            found = True
        assigned.add(name)
    return found


def _sum_update(t: L.Assign) -> bool:
    """``acc = acc + e`` or ``acc = e + acc`` (``e`` not reading ``acc``)."""
    v = t.value
    if not (isinstance(v, L.BinOp) and v.op == "add"):
        return False
    for mine, other in ((v.a, v.b), (v.b, v.a)):
        if mine == t.var and t.var not in _vars(other):
            return True
    return False


def _vars(e: L.LExpr) -> set[L.Var]:
    return {n for n in e.walk() if isinstance(n, L.Var)}


def hints() -> list[str]:
    """LLVM loop metadata of the short-row loop: masked vectors of :data:`LANES` elements."""
    return ['!{!"llvm.loop.vectorize.enable", i1 1}', f'!{{!"llvm.loop.vectorize.width", i32 {LANES}}}',
            '!{!"llvm.loop.interleave.count", i32 1}', '!{!"llvm.loop.vectorize.predicate.enable", i1 1}']
