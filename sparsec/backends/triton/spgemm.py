"""Program template: row-parallel SpGEMM ``C = A @ B`` (all CSR) by expand, sort, compress per row.

The generic lowering of ``C[i,j] = A[i,k] * B[k,j]`` with a CSR output runs each output
row as scalar loops inside one program of a persistent grid (a symbolic pass counting
with dense marks, then a numeric pass with a dense or hash workspace), which leaves a
GPU's lanes idle: measured 0.085x cuSPARSE on an H100. Triton has no shared-memory
scatter, so the hash tables of GPU SpGEMM libraries are out of reach; sorting in
registers is not. This template computes each row *ESC* style (expand, sort, compress):

1. ``spgemm_entry_scan``: the product offsets by entry of ``A`` (the lengths of the rows of
   ``B`` the entries select, summed in entry order) with a decoupled look-back over tiles of
   ``SCAN_ENTRIES`` entries (each tile publishes its sum, then its inclusive prefix; tiles are
   numbered by an atomic ticket in launch order, so a tile only waits for tiles already
   running): balanced however the entries fall into rows. ``spgemm_count``, one lane per row:
   the row's product offsets from those of its first and last entries, each entry's row
   (``A_row``), the chunks' first rows (step 2), and the lists of *long* rows (``ub > HALF``
   products) and *wide* rows (``ub > wide``, :func:`wide_from`), appended with atomics. One host
   synchronization reads the total product count and the list lengths.
2. ``spgemm_chunks``: chunk ``c`` takes the rows whose products start in
   ``[c * HALF, (c + 1) * HALF)``; those of at most ``HALF`` products sit within ``2 * HALF``
   consecutive slots (a longer row can only be a chunk's last, and is left to the kernels below). The
   chunk's entries of ``A`` are consecutive, and so are their products: they are copied
   (``CHUNK_ENTRIES`` entries at a time, whichever rows they are in, each with up to
   ``CHUNK_BLK`` entries of its row of ``B`` per step, at slots from the prefix sum of those
   rows' lengths) to a scratch buffer as keys ``(row - r0) * n_j + column``
   and values, loaded back as one block of ``P = 2 * HALF`` lanes, sorted by
   ``key << log2(P) | lane`` (32-bit keys where they fit, else 64-bit), equal keys summed by a
   segmented scan (``tl.associative_scan``, which also counts each row's entries), and each
   row's entries written, in column order, to the start of the row's own slots.
   ``spgemm_rows`` does the same for one long row per program, at 512, 1024 or ``PMAX``
   lanes, for the long rows of at most ``wide`` products. A row's result is its structural
   pattern (a cancellation to zero stays stored), as in the generic lowering.
3. The wide rows go on dense rows of ``n_j`` values and marks, as many rows at a time as
   ``DENSE_BYTES`` holds: ``spgemm_wide_acc`` (``WIDE_PARTS`` programs a row, each taking every
   ``WIDE_PARTS``-th tile of ``WIDE_ENTRIES`` entries of ``A``) adds the products with atomic adds
   (entries of ``A`` that hit one column meet there, in no fixed order: the last bits of such sums
   can differ between runs) and marks their columns; ``spgemm_wide_count`` counts the marks of each
   segment of columns (a whole number of ``WIDE_STEP`` columns, at most ``WIDE_SEGMENTS`` segments
   a row) and ``spgemm_wide_compact``, one program per segment, writes the segment's marked columns
   in order after those of the segments before it, clearing them for the next batch. A sort costs
   per product and a dense row per column, so rows go dense from ``n_j / 16`` products on
   (measured on an H100: sorts at about 0.15 ns a product, the dense row at about 0.04 ns a product
   plus 0.006 ns a column).
4. ``spgemm_pos``: ``C.pos``, the prefix sum of the row counts (the same look-back), written
   once in int64 for the memo and once in the result's index width; a second host
   synchronization reads the entry count to allocate ``C``, and ``spgemm_compact`` copies each
   row's result from its slots to its place in ``C``.

Step 1, the chunk boundaries and ``C.pos`` depend only on the operands' structure: they
are memoized per template by the index buffers (storage, size and torch version, checked
by identity), so a second product on the same ``pos``/``crd`` tensors (new values allowed)
skips both host synchronizations and runs steps 2-4 only. An index buffer written in place
moves its version and is counted again.

A one-shot product's wall time is mostly host work around its two synchronizations, so the
template keeps it short: no torch scans (each costs ~28 us of host time on the GPU hosts
measured) and no separate launch for the chunk starts; the structure's buffers share one zeroed
allocation, the list lengths and total come back in one read, and each kernel is launched through
its compiled kernel for the arguments' specialization (:class:`~.launch.SpecializedLaunches`)
after the first launch of that specialization, skipping Triton's argument binding.

Sums follow the scan's order (a tree), not the generic lowering's left-to-right order,
so float results differ from it by rounding only. The scratch buffer holds every product
(``flops / 2`` entries of an int64 key and a value); where it would not fit in half the
device's free memory, where ``n_i * n_j >= 2^52``, or where the operands cannot be bound as
CSR, the generic kernels run. Triton's interpreter runs ``tl.sort`` and custom scans one
element at a time in Python, so its flavour of the sort-and-sum step ranks lanes and sums
runs with ``[P, P]`` comparisons (the rest of the source is the same).

**Matching** (:func:`match`) is exact: the program is the one statement
``C[i,j] = A[i,k] * B[k,j]`` (``A`` and ``B`` may be one tensor), ``A``, ``B`` and ``C``
in ``csr`` (any index widths), one value dtype among float32 and float64, no schedule,
``C`` the only output. ``SPARSEC_TRITON_TILES=0`` turns the template off, as for the
other templates.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ...fastcall import FALLBACK
from ...memo import OwnedMemo, tensor_version
from .attention import _canonical, template_may_run
from ...tensor import _needed_format
from .device import _is, _nonempty, bind_operand, csr_result, index_dtype, pick_device
from .schedule import next_pow2

HALF = 256           # a chunk holds the rows starting in HALF products (rows of at most HALF products)
CHUNK_WARPS = 4
CHUNK_ENTRIES, CHUNK_BLK = 16, 16  # a chunk's expansion step: entries of A x entries of their rows of B
SCAN_ENTRIES = 1024  # entries of A a tile of spgemm_entry_scan
COUNT_ROWS = 128     # rows a program of spgemm_count
POS_ROWS = 1024      # rows a tile of spgemm_pos
LOOK = 32            # tiles a look-back step reads
PMAX = 2048          # longer rows run one per program (spgemm_rows) up to PMAX products
ROWS_WARPS = 4
ROWS_ENTRIES, ROWS_BLK = 32, 16  # a long row's expansion step (spgemm_rows)
WIDE_FROM = 0        # rows of more products go to the dense-row kernels; 0: by the width of B (wide_from)
WIDE_PARTS = 8       # programs accumulating one dense row
WIDE_ENTRIES, WIDE_BLK = 32, 32  # their step: entries of A x entries of their rows of B
WIDE_STEP = 1024     # columns a step of the dense rows' count and compaction
WIDE_SEGMENTS = 1024  # at most this many segments (programs) count and compact one dense row
DENSE_BYTES = 1 << 29  # the dense rows in use at a time, all together
_DTYPES = ("float32", "float64")
_STATEMENTS = ("C[i,j] = A[i,k] * B[k,j]", "C[i,j] = A[i,k] * A[k,j]")


@functools.lru_cache(maxsize=None)
def _reference(text: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """Canonical tokens and renaming of one reference statement (roles are its tensor names)."""
    from ...frontend import parse_program

    tokens, renamed, _ = _canonical(parse_program(text))
    return tokens, renamed


@dataclass(frozen=True)
class Match:
    """A recognized SpGEMM program: the tensor name of each role (A, B, C; A and B may be one), the dtype."""

    a: str
    b: str
    c: str
    dtype: str


def match(kernel) -> Match | None:
    """The template for ``kernel`` (an ``sc.Kernel``) if its program is exactly CSR SpGEMM (module docs)."""
    if not template_may_run(kernel):
        return None
    prog = kernel.program
    if len(prog.statements) != 1:
        return None
    tokens, renamed, _ = _canonical(prog.statements)
    for text in _STATEMENTS:
        ref_tokens, ref_renamed = _reference(text)
        if ref_tokens == tokens and len(ref_renamed) == len(renamed):
            break
    else:
        return None
    ours = {v: k for k, v in renamed.items()}
    role = {r: ours[canon] for r, canon in ref_renamed.items() if r in ("A", "B", "C")}
    a, b, c = role["A"], role.get("B", role["A"]), role["C"]
    if kernel.outputs != [c]:
        return None
    decl = prog.decl
    if any(not _is(decl(t).format, "csr") or decl(t).format.ndim != 2 for t in (a, b, c)):
        return None
    dtypes = {decl(t).dtype for t in (a, b, c)}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _DTYPES:
        return None
    return Match(a, b, c, next(iter(dtypes)))


# ------------------------------------------------------------------------------------ source
_SOURCE = '''# Generated by sparsec (Triton backend, program template: row-parallel SpGEMM C = A @ B over CSR
# operands; rows expanded, sorted and compressed in registers, a chunk of short rows or one longer
# row per program; wide rows on dense rows). Do not edit: see sparsec/backends/triton/spgemm.py.

import triton
import triton.language as tl


@triton.jit
def _exclusive_prefix(state, t, aggregate, LOOK: tl.constexpr):
    # the sum of the aggregates of tiles 0 .. t - 1 (a decoupled look-back): state[1 + t] holds tile t's
    # aggregate | AGG, then its inclusive prefix | INC (0 until published); tiles are numbered in launch
    # order (the caller takes t from state[0]), so a tile only waits for tiles already running
    agg_flag = tl.full([], 1, tl.int64) << 61
    inc_flag = agg_flag << 1
    prefix = tl.zeros([], tl.int64)
    if t == 0:
        tl.atomic_xchg(state + 1, aggregate | inc_flag)
    else:
        tl.atomic_xchg(state + 1 + t, aggregate | agg_flag)
        j = t
        while j > 0:                         # tiles [j - LOOK, j): wait until all have published
            idx = j - LOOK + tl.arange(0, LOOK)
            st = tl.load(state + 1 + idx, mask=idx >= 0, other=inc_flag, volatile=True)
            if tl.min(st, 0) != 0:
                inc_at = tl.max(tl.where((st & inc_flag) != 0, idx, -LOOK - 1), 0)
                prefix += tl.sum(tl.where(idx >= inc_at, st & (agg_flag - 1), 0), 0)
                j = tl.where(inc_at >= j - LOOK, 0, j - LOOK)
            else:                            # spin on one word, not the window: less L2 traffic
                wait = state + 1 + tl.max(tl.where(st == 0, idx, 0), 0)
                while tl.load(wait, volatile=True) == 0:
                    pass
        tl.atomic_xchg(state + 1 + t, (prefix + aggregate) | inc_flag)
    return prefix


@triton.jit
def _write_starts(starts, rows, ex, incl, inb, cap, HALF: tl.constexpr):
    # row r + 1 is the first row of the chunks c with ex < c * HALF <= incl (row r's products span
    # [ex, incl)); chunks at or past cap are left out (the host checks the capacity)
    c0 = ex // HALF + 1
    span = tl.where(inb, incl // HALF - c0 + 1, 0)
    for q in range(0, tl.max(span, 0)):
        tl.store(starts + c0 + q, rows + 1, mask=(q < span) & (c0 + q < cap))


@triton.jit
def _last_start(starts, total, n_i, cap, HALF: tl.constexpr):
    # starts[0] = 0, and where the products end inside the last chunk, that chunk ends at row n_i
    tl.store(starts, tl.zeros([], tl.int64))
    chunks = (total + HALF - 1) // HALF
    if (total % HALF != 0) & (chunks < cap):
        tl.store(starts + chunks, n_i + tl.zeros([], tl.int64))


@triton.jit
def spgemm_entry_scan(A_crd, B_pos, EP, state, nnz, ENT: tl.constexpr, LOOK: tl.constexpr):
    # EP[e + 1] = the products of A's entries 0 .. e (the lengths of the rows of B they select, summed;
    # EP[0] = 0 already): tiles of ENT entries, numbered in launch order by state[0], a look-back over
    # their sums. Balanced however the entries fall into rows
    t = tl.atomic_add(state, 1)
    e = t.to(tl.int64) * ENT + tl.arange(0, ENT)
    m = e < nnz
    k = tl.load(A_crd + e, mask=m, other=0).to(tl.int64)
    lo = tl.load(B_pos + k, mask=m, other=0).to(tl.int64)
    bl = tl.load(B_pos + k + 1, mask=m, other=0).to(tl.int64) - lo
    incl = _exclusive_prefix(state, t, tl.sum(bl, 0), LOOK) + tl.cumsum(bl, 0)
    tl.store(EP + 1 + e, incl, mask=m)


@triton.jit
def spgemm_count(A_pos, EP, A_row, ub_off, counts, lists, starts, n_i, cap, wide, HALF: tl.constexpr,
                 ROWS: tl.constexpr):
    # one lane per row: where its products start and end (ub_off[i + 1] = EP[A_pos[i + 1]]), the row of
    # each of its entries (A_row), the chunks' first rows (starts[c] = the first row whose products start
    # at or after c * HALF; rows past the last product excluded); rows over HALF products appended to
    # lists[:n_i] (count in counts[0]), over wide to lists[n_i:] (count in counts[1])
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    inb = rows < n_i
    a0 = tl.load(A_pos + rows, mask=inb, other=0).to(tl.int64)
    a1 = tl.load(A_pos + rows + 1, mask=inb, other=0).to(tl.int64)
    ex = tl.load(EP + a0, mask=inb, other=0)
    incl = tl.load(EP + a1, mask=inb, other=0)
    total = incl - ex
    tl.store(ub_off + 1 + rows, incl, mask=inb)
    large = inb & (total > HALF)
    slot = tl.atomic_add(counts + tl.zeros([ROWS], tl.int32), 1, mask=large)
    tl.store(lists + slot, rows, mask=large)
    big = inb & (total > wide)
    slot = tl.atomic_add(counts + 1 + tl.zeros([ROWS], tl.int32), 1, mask=big)
    tl.store(lists + n_i + slot, rows, mask=big)
    _write_starts(starts, rows, ex, incl, inb, cap, HALF)
    if tl.program_id(0) == 0:
        _last_start(starts, tl.load(EP + tl.load(A_pos + n_i).to(tl.int64)), n_i, cap, HALF)
    for q in range(0, tl.max(a1 - a0, 0)):
        tl.store(A_row + a0 + q, rows, mask=a0 + q < a1)


@triton.jit
def spgemm_starts(ub_off, starts, n_i, cap, HALF: tl.constexpr, ROWS: tl.constexpr):
    # the chunks' first rows as spgemm_count writes them, from the product offsets ub_off: for a
    # product count past the capacity spgemm_count was given
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    inb = rows < n_i
    ex = tl.load(ub_off + rows, mask=inb, other=0)
    _write_starts(starts, rows, ex, tl.load(ub_off + rows + 1, mask=inb, other=0), inb, cap, HALF)
    if tl.program_id(0) == 0:
        _last_start(starts, tl.load(ub_off + n_i), n_i, cap, HALF)


@triton.jit
def _entry_tile(e0, a1, A_crd, A_vals, B_pos, ENTRIES: tl.constexpr):
    # entries e0 .. e0 + ENTRIES of A (those below a1): their values, and where their rows of B
    # start and how long they are (0 past a1)
    e = e0 + tl.arange(0, ENTRIES)
    me = e < a1
    k = tl.load(A_crd + e, mask=me, other=0).to(tl.int64)
    av = tl.load(A_vals + e, mask=me, other=0)
    b0 = tl.load(B_pos + k, mask=me, other=0).to(tl.int64)
    return av, b0, tl.load(B_pos + k + 1, mask=me, other=0).to(tl.int64) - b0


@triton.jit
def _expand(r0, e_lo, e_hi, s, A_crd, A_vals, A_row, B_pos, B_crd, B_vals, X_key, X_vals, n_j,
            ENTRIES: tl.constexpr, BLK: tl.constexpr):
    # the products of A's entries e_lo .. e_hi (rows r0, r0 + 1, ...; A_row[e] the row of entry e) to
    # slots s, s + 1, ... in A's then B's order, as keys (row - r0) * n_j + column: ENTRIES entries at a
    # time, whichever rows they are in, each with up to BLK entries of its row of B per step (an entry's
    # slots start at the exclusive prefix sum of the rows' lengths)
    lane = tl.arange(0, BLK)[None, :]
    for e0 in range(e_lo, e_hi, ENTRIES):
        av, b0, bl = _entry_tile(e0, e_hi, A_crd, A_vals, B_pos, ENTRIES)
        e = e0 + tl.arange(0, ENTRIES)
        row_key = (tl.load(A_row + e, mask=e < e_hi, other=0) - r0).to(tl.int64) * n_j
        first = s + tl.cumsum(bl, 0) - bl
        for t in range(0, tl.max(bl, 0), BLK):
            m = t + lane < bl[:, None]
            c = tl.load(B_crd + b0[:, None] + t + lane, mask=m, other=0)
            v = tl.load(B_vals + b0[:, None] + t + lane, mask=m, other=0)
            tl.store(X_key + first[:, None] + t + lane, row_key[:, None] + c.to(tl.int64), mask=m)
            tl.store(X_vals + first[:, None] + t + lane, av[:, None] * v, mask=m)
        s += tl.sum(bl, 0)


@triton.jit
def _seg_add(k1, v1, r1, c1, k2, v2, r2, c2):
    # two segmented sums over the sorted lanes: values over runs of one (row, column) key, counts
    # over runs of one row
    return k2, tl.where(k1 == k2, v1 + v2, v2), r2, tl.where(r1 == r2, c1 + c2, c2)


@triton.jit
def _esc(r0, r1, A_pos, A_crd, A_vals, A_row, B_pos, B_crd, B_vals, ub_off, X_key, X_vals, cnt, n_j,
         LIMIT, P: tl.constexpr, LOGP: tl.constexpr, ENTRIES: tl.constexpr, BLK: tl.constexpr):
    # rows [r0, r1) with at most P products together, which sit at X[base:base+P] (the last row is left
    # to other kernels when it has more than LIMIT products: only the last can, such a row ends its
    # chunk): expand them there as keys (row - r0) * n_j + column, sort by key, sum equal keys, and write
    # each row's entries in column order to the start of the row's own slice X[ub_off[row]:]; cnt[row] =
    # their number
    base = tl.load(ub_off + r0)
    r_end = tl.where(tl.load(ub_off + r1) - tl.load(ub_off + r1 - 1) > LIMIT, r1 - 1, r1)
    end = tl.load(ub_off + r_end)
    _expand(r0, tl.load(A_pos + r0).to(tl.int64), tl.load(A_pos + r_end).to(tl.int64), base, A_crd, A_vals,
            A_row, B_pos, B_crd, B_vals, X_key, X_vals, n_j, ENTRIES, BLK)
    tl.debug_barrier()                       # the expansion's stores are visible to every lane
__SORT_AND_SUM__    tl.debug_barrier()
    dst = tl.load(ub_off + r0 + row, mask=last, other=0) + seen - 1
    tl.store(X_key + dst, k - row * n_j, mask=last)
    tl.store(X_vals + dst, run, mask=last)
    tl.store(cnt + r0 + row, seen, mask=last & ((p + 1 >= end - base) | (nxt // n_j != row)))


@triton.jit
def spgemm_chunks(starts, A_pos, A_crd, A_vals, A_row, B_pos, B_crd, B_vals, ub_off, X_key, X_vals, cnt, n_j,
                  HALF: tl.constexpr, LOGP: tl.constexpr, ENTRIES: tl.constexpr, BLK: tl.constexpr):
    # chunk c: the rows starting in products [c * HALF, (c + 1) * HALF); those with at most HALF
    # products take at most 2 * HALF lanes together
    c = tl.program_id(0)
    r0 = tl.load(starts + c).to(tl.int64)
    r1 = tl.load(starts + c + 1).to(tl.int64)
    if r1 > r0:
        _esc(r0, r1, A_pos, A_crd, A_vals, A_row, B_pos, B_crd, B_vals, ub_off, X_key, X_vals, cnt, n_j, HALF,
             2 * HALF, LOGP, ENTRIES, BLK)


@triton.jit
def spgemm_rows(rows, A_pos, A_crd, A_vals, A_row, B_pos, B_crd, B_vals, ub_off, X_key, X_vals, cnt, n_j, wide,
                PMAX: tl.constexpr, LOGP: tl.constexpr, ENTRIES: tl.constexpr, BLK: tl.constexpr):
    # one listed row with more than a chunk's half and at most wide (<= PMAX) products
    i = tl.load(rows + tl.program_id(0)).to(tl.int64)
    ub = tl.load(ub_off + i + 1) - tl.load(ub_off + i)
    if ub > wide:
        pass
    elif ub <= PMAX // 4:
        _esc(i, i + 1, A_pos, A_crd, A_vals, A_row, B_pos, B_crd, B_vals, ub_off, X_key, X_vals, cnt, n_j, PMAX,
             PMAX // 4, LOGP - 2, ENTRIES, BLK)
    elif ub <= PMAX // 2:
        _esc(i, i + 1, A_pos, A_crd, A_vals, A_row, B_pos, B_crd, B_vals, ub_off, X_key, X_vals, cnt, n_j, PMAX,
             PMAX // 2, LOGP - 1, ENTRIES, BLK)
    elif ub <= PMAX:
        _esc(i, i + 1, A_pos, A_crd, A_vals, A_row, B_pos, B_crd, B_vals, ub_off, X_key, X_vals, cnt, n_j, PMAX,
             PMAX, LOGP, ENTRIES, BLK)


@triton.jit
def spgemm_wide_acc(rows, r_lo, A_pos, A_crd, A_vals, B_pos, B_crd, B_vals, W_vals, W_mark, n_j,
                    PARTS: tl.constexpr, ENTRIES: tl.constexpr, BLK: tl.constexpr):
    # listed row r_lo + s (s = program_id(0)) on dense row s of the workspace: program_id(1) of PARTS takes
    # every PARTS-th tile of ENTRIES entries of the row of A, adding their products to the row's values
    # and marking their columns
    s = tl.program_id(0).to(tl.int64)
    i = tl.load(rows + r_lo + s).to(tl.int64)
    wv = W_vals + s * n_j
    wm = W_mark + s * n_j
    lane = tl.arange(0, BLK)[None, :]
    a1 = tl.load(A_pos + i + 1).to(tl.int64)
    for e0 in range(tl.load(A_pos + i).to(tl.int64) + tl.program_id(1) * ENTRIES, a1, PARTS * ENTRIES):
        av, b0, bl = _entry_tile(e0, a1, A_crd, A_vals, B_pos, ENTRIES)
        for t in range(0, tl.max(bl, 0), BLK):
            m = t + lane < bl[:, None]
            c = tl.load(B_crd + b0[:, None] + t + lane, mask=m, other=0).to(tl.int64)
            v = tl.load(B_vals + b0[:, None] + t + lane, mask=m, other=0)
            # entries of A hitting one column meet here: atomic adds (their order is not fixed)
            tl.atomic_add(wv + c, av[:, None] * v, mask=m, sem="relaxed")
            tl.store(wm + c, tl.full([ENTRIES, BLK], 1, tl.int8), mask=m)


@triton.jit
def _segment_marks(wm, g, seg, n_j, t, STEP: tl.constexpr):
    # the columns of step t of segment g of a dense row, and which are marked
    jj = g * seg + t + tl.arange(0, STEP)
    return jj, tl.load(wm + jj, mask=(jj < n_j) & (t + tl.arange(0, STEP) < seg), other=0) != 0


@triton.jit
def spgemm_wide_count(W_mark, seg_cnt, n_j, n_seg, seg, STEP: tl.constexpr):
    # seg_cnt[s, g]: the marked columns of segment g (seg columns) of dense row s
    s = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1).to(tl.int64)             # g * seg may pass 2^31 near the widest B
    n = tl.zeros([], tl.int32)
    for t in range(0, seg, STEP):
        _, mk = _segment_marks(W_mark + s * n_j, g, seg, n_j, t, STEP)
        n += tl.sum(mk.to(tl.int32), 0)
    tl.store(seg_cnt + s * n_seg + g, n)


@triton.jit
def spgemm_wide_compact(rows, r_lo, ub_off, W_vals, W_mark, seg_cnt, X_key, X_vals, cnt, n_j, n_seg, seg,
                        STEP: tl.constexpr, SEGS: tl.constexpr):
    # segment g of dense row s (listed row i = rows[r_lo + s]): its marked columns, in order, to the row's
    # slice of X after those of the segments before it, clearing them; the last segment writes cnt[i]
    s = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1).to(tl.int64)             # g * seg may pass 2^31 near the widest B
    i = tl.load(rows + r_lo + s).to(tl.int64)
    q = tl.arange(0, SEGS)
    counts = tl.load(seg_cnt + s * n_seg + q, mask=q < n_seg, other=0)
    w = tl.load(ub_off + i) + tl.sum(tl.where(q < g, counts, 0), 0).to(tl.int64)
    wv = W_vals + s * n_j
    wm = W_mark + s * n_j
    for t in range(0, seg, STEP):
        jj, mk = _segment_marks(wm, g, seg, n_j, t, STEP)
        vv = tl.load(wv + jj, mask=mk)
        dst = w + tl.cumsum(mk.to(tl.int32), 0) - 1
        tl.store(X_key + dst, jj.to(tl.int64), mask=mk)
        tl.store(X_vals + dst, vv, mask=mk)
        tl.store(wm + jj, tl.zeros([STEP], tl.int8), mask=mk)
        tl.store(wv + jj, tl.zeros([STEP], vv.dtype), mask=mk)
        w += tl.sum(mk.to(tl.int32), 0)
    if g == n_seg - 1:
        tl.store(cnt + i, tl.sum(counts, 0))


@triton.jit
def spgemm_pos(cnt, C_pos, pos_out, state, n_i, ROWS: tl.constexpr, LOOK: tl.constexpr):
    # C's row pointers from its row counts, a tile of ROWS rows (tiles numbered in launch order by
    # state[0], a look-back over their sums): C_pos (int64, C_pos[0] = 0 already) and pos_out (the
    # result's index width)
    t = tl.atomic_add(state, 1)
    rows = t * ROWS + tl.arange(0, ROWS)
    inb = rows < n_i
    n = tl.load(cnt + rows, mask=inb, other=0)
    incl = _exclusive_prefix(state, t, tl.sum(n, 0), LOOK) + tl.cumsum(n, 0)
    tl.store(C_pos + 1 + rows, incl, mask=inb)
    tl.store(pos_out + 1 + rows, incl.to(pos_out.dtype.element_ty), mask=inb)
    if t == 0:
        tl.store(pos_out, tl.zeros([], pos_out.dtype.element_ty))


@triton.jit
def spgemm_compact(ub_off, C_pos, X_key, X_vals, C_crd, C_vals, BLK: tl.constexpr):
    # row i's entries from the start of its slice of X to C
    i = tl.program_id(0).to(tl.int64)
    src = tl.load(ub_off + i)
    dst = tl.load(C_pos + i)
    n = tl.load(C_pos + i + 1) - dst
    lane = tl.arange(0, BLK)
    for t in range(0, n, BLK):
        m = t + lane < n
        tl.store(C_crd + dst + t + lane, tl.load(X_key + src + t + lane, mask=m).to(tl.int32), mask=m)
        tl.store(C_vals + dst + t + lane, tl.load(X_vals + src + t + lane, mask=m), mask=m)
'''

# the sort and the segmented sums of _esc: tl.sort and a scan on the GPU; Triton's interpreter runs
# those one element at a time in Python, so its flavour ranks lanes and sums runs with [P, P] comparisons
_SORTED_COMPILED = '''\
    p = tl.arange(0, P)
    valid = p < end - base
    k = tl.load(X_key + base + p, mask=valid, other=(r1 - r0) * n_j)
    if ((r1 - r0) * n_j + 1) * P <= 2147483648:   # 32-bit keys where they fit: a faster sort
        key32 = tl.sort((k.to(tl.int32) << LOGP) | p)
        k = (key32 >> LOGP).to(tl.int64)
        src = key32 & (P - 1)
    else:
        key64 = tl.sort((k << LOGP) | p.to(tl.int64))
        k = key64 >> LOGP
        src = (key64 & (P - 1)).to(tl.int32)
    v = tl.load(X_vals + base + src, mask=valid, other=0)
    tl.debug_barrier()
    tl.store(X_key + base + p, k, mask=valid)
    tl.debug_barrier()
    nxt = tl.load(X_key + base + p + 1, mask=p + 1 < end - base, other=-1)
    last = valid & (k != nxt)                # the last lane of a run of one key
    row = k // n_j
    _, run, _, seen = tl.associative_scan((k, v, row, last.to(tl.int32)), 0, _seg_add)
'''

_SORTED_INTERPRETED = '''\
    p = tl.arange(0, P)
    valid = p < end - base
    k = tl.load(X_key + base + p, mask=valid, other=(r1 - r0) * n_j)
    v = tl.load(X_vals + base + p, mask=valid, other=0)
    key = (k << LOGP) | p.to(tl.int64)
    rank = tl.sum((key[None, :] < key[:, None]).to(tl.int32), 1)
    tl.debug_barrier()
    tl.store(X_key + base + rank, k, mask=valid)
    tl.store(X_vals + base + rank, v, mask=valid)
    tl.debug_barrier()
    k = tl.load(X_key + base + p, mask=valid, other=(r1 - r0) * n_j)
    v = tl.load(X_vals + base + p, mask=valid, other=0)
    nxt = tl.load(X_key + base + p + 1, mask=p + 1 < end - base, other=-1)
    last = valid & (k != nxt)                # the last lane of a run of one key
    row = k // n_j
    before = p[None, :] <= p[:, None]
    run = tl.sum(tl.where((k[None, :] == k[:, None]) & before, v[None, :], 0), 1)
    seen = tl.sum(((row[None, :] == row[:, None]) & before & last[None, :]).to(tl.int32), 1)
'''

_SORT_AND_SUM = {False: _SORTED_COMPILED, True: _SORTED_INTERPRETED}

_FNS: dict[bool, dict[str, Any]] = {}     # loaded kernels by interpreter flavour

_KERNELS = ("spgemm_entry_scan", "spgemm_count", "spgemm_starts", "spgemm_chunks", "spgemm_rows", "spgemm_wide_acc",
            "spgemm_wide_count", "spgemm_wide_compact",
            "spgemm_pos", "spgemm_compact")
_LAUNCHERS: dict[tuple, Any] = {}        # SpecializedLaunches by (flavour, kernel, warps, constexprs)


def _launcher(name: str, warps: int, **consts: Any):
    """The launcher of template kernel ``name`` with these constexprs and warps (made once per flavour)."""
    from .launch import SpecializedLaunches, interpreting

    interp = interpreting()
    key = (interp, name, warps, tuple(consts.items()))
    hit = _LAUNCHERS.get(key)
    if hit is None:
        options = {} if interp else {"num_warps": warps}
        hit = _LAUNCHERS[key] = SpecializedLaunches(SpgemmTemplate.fns()[name], consts, **options)
    return hit


def source(interp: bool) -> str:
    """The template's Triton source (``interp``: the flavour for Triton's CPU interpreter)."""
    return _SOURCE.replace("__SORT_AND_SUM__", _SORT_AND_SUM[interp])


class SpgemmTemplate:
    """The row-parallel SpGEMM for one matched kernel; ``__call__(given)`` -> a CSR DeviceTensor, or FALLBACK."""

    def __init__(self, mt: Match, kernel):
        self.mt = mt
        self.kernel = kernel
        self._plans = OwnedMemo(8)      # by the index buffers of A and B: the structure-only work

    def dump(self, stage: str = "triton") -> str:
        """The template's source under a header naming the roles it took."""
        from .launch import interpreting

        mt = self.mt
        return (f"// program template: row-parallel SpGEMM (A={mt.a}, B={mt.b}, C={mt.c}, {mt.dtype}); the "
                "statement kernels after it run only for operands it does not take\n" + source(interpreting()))

    @staticmethod
    def fns() -> dict[str, Any]:
        """The loaded ``@triton.jit`` functions by name (the flavour for the CPU interpreter, or compiled)."""
        from .launch import interpreting, load_kernel

        interp = interpreting()
        fns = _FNS.get(interp)
        if fns is None:
            src = source(interp)
            fns = _FNS[interp] = {name: load_kernel("spgemm", src, name) for name in _KERNELS}
        return fns

    def __call__(self, given: Mapping[str, Any]) -> Any:
        mt, decl = self.mt, self.kernel.program.decl
        try:
            device = pick_device(given.values())
            a = bind_operand(given[mt.a], mt.a, decl(mt.a).format, mt.dtype, device)
            same = mt.b == mt.a or (given[mt.b] is given[mt.a] and decl(mt.b).format == decl(mt.a).format)
            b = a if same else bind_operand(given[mt.b], mt.b, decl(mt.b).format, mt.dtype, device)
        except Exception:   # the general path binds again and reports what is wrong
            return FALLBACK
        if not (_is(a.format, "csr") and _is(b.format, "csr")) or a.shape[1] != b.shape[0] or \
                b.shape[1] >= 2**31 - 1 or a.shape[0] >= 2**31 - 1:
            return FALLBACK
        fmt, shape = decl(mt.c).format, (a.shape[0], b.shape[1])
        result = self.run(a, b, device, lambda nnz: index_dtype(_needed_format(fmt, fmt.level_sizes(shape),
                                                                               (shape[0], nnz)).pos_width))
        if result is FALLBACK:
            return FALLBACK
        pos, crd, vals, fresh = result
        return csr_result(fmt, shape, pos, crd, vals, mt.c, copy_pos=not fresh)

    def run(self, a, b, device, pos_dtype: Callable[[int], Any]) -> Any:
        """``(pos, crd int32, vals, fresh)`` of ``a @ b`` on ``device``, or FALLBACK when the scratch would not
        fit. ``pos_dtype(bound)``: the row pointers' dtype for at most ``bound`` entries. ``fresh``: ``pos`` is
        this call's own (the first product on a structure); otherwise it is the memoized int64 one, to be
        copied before it is handed out."""
        import torch

        from .launch import interpreting

        n_i, n_j = a.shape[0], b.shape[1]
        vals_dtype = a.values.dtype
        if n_i * max(n_j, 1) >= 2**52:      # (row, column) keys shifted by log2(lanes) must fit 63 bits
            return FALLBACK
        ap, ac, av = a.levels[1]["pos"], _nonempty(a.levels[1]["crd"]), _nonempty(a.values)
        bp, bc, bv = b.levels[1]["pos"], _nonempty(b.levels[1]["crd"]), _nonempty(b.values)
        plan = self._plan(a, b, device)
        item = 8 + vals_dtype.itemsize
        if plan.total * item > (1 << 28) and not interpreting() and \
                plan.total * item > torch.cuda.mem_get_info(device)[0] // 2:
            return FALLBACK
        x_key = torch.empty(max(plan.total, 1), dtype=torch.int64, device=device)
        x_vals = torch.empty(max(plan.total, 1), dtype=vals_dtype, device=device)
        args = (ap, ac, av, plan.a_row, bp, bc, bv, plan.ub_off, x_key, x_vals, plan.cnt, n_j)
        if plan.total:
            _launcher("spgemm_chunks", CHUNK_WARPS, HALF=HALF, LOGP=(2 * HALF).bit_length() - 1,
                      ENTRIES=CHUNK_ENTRIES, BLK=CHUNK_BLK)((plan.starts.numel() - 1,), plan.starts, *args)
        if plan.n_large > plan.n_big:      # the wide rows are listed among the long ones (wide >= HALF)
            _launcher("spgemm_rows", ROWS_WARPS, PMAX=PMAX, LOGP=PMAX.bit_length() - 1, ENTRIES=ROWS_ENTRIES,
                      BLK=ROWS_BLK)((plan.n_large,), plan.lists, *args, plan.wide)
        if plan.n_big:
            _wide_rows(torch, plan.lists[n_i:], plan.n_big, args, device)
        pos = plan.c_pos
        fresh = plan.nnz is None
        if fresh:                         # the first call on this structure: C's row counts -> pos, nnz
            pos = torch.empty(n_i + 1, dtype=pos_dtype(plan.total), device=device)
            if n_i:
                _launcher("spgemm_pos", 4, ROWS=POS_ROWS, LOOK=LOOK)(
                    (-(-n_i // POS_ROWS),), plan.cnt, plan.c_pos, pos, plan.pos_state, n_i)
            else:
                pos.zero_()
            plan.nnz = int(plan.c_pos[-1])
        c_crd = torch.empty(plan.nnz, dtype=torch.int32, device=device)
        c_vals = torch.empty(plan.nnz, dtype=vals_dtype, device=device)
        if plan.nnz:
            _launcher("spgemm_compact", 1, BLK=128)((n_i,), plan.ub_off, plan.c_pos, x_key, x_vals, c_crd, c_vals)
        return pos, c_crd, c_vals, fresh

    def _plan(self, a, b, device) -> "_Plan":
        """The structure-only part of ``a @ b`` (memoized by the index buffers' storage and version)."""
        import torch

        bufs = (a.levels[1]["pos"], a.levels[1]["crd"], b.levels[1]["pos"], b.levels[1]["crd"])
        wide = wide_from(b.shape[1])
        key = tuple((t.data_ptr(), t.numel(), tensor_version(t)) for t in bufs) + (a.shape, b.shape, HALF, PMAX, wide)
        hit = self._plans.get(bufs, key)
        if hit is not None:
            return hit
        n_i = a.shape[0]
        ap, ac, bp = bufs[0], _nonempty(bufs[1]), bufs[2]
        nnz_a = bufs[1].numel()
        cap = _starts_capacity(n_i, nnz_a)
        # one zeroed int64 buffer, one fill, each section from a 16-byte boundary (Triton specializes on
        # pointer alignment): the product offsets by row (ub_off[n_i] the total), the two list lengths right
        # after them (one read), C's row counts and row pointers, the product offsets by entry of A, the two
        # scans' tile states, the lists of long rows and the chunks' first rows (these two need no zeros, but
        # share the allocation)
        sizes = {"ub_off": n_i + 1, "counts": 2, "cnt": n_i, "c_pos": n_i + 1, "entry_offsets": nnz_a + 1,
                 "scan_state": 1 + -(-nnz_a // SCAN_ENTRIES), "pos_state": 1 + -(-n_i // POS_ROWS),
                 "lists": 2 * n_i, "starts": cap}
        meta, at = _sections(torch, sizes, device)
        a_row = torch.empty(max(nnz_a, 1), dtype=torch.int32, device=device)
        if nnz_a:
            _launcher("spgemm_entry_scan", 4, ENT=SCAN_ENTRIES, LOOK=LOOK)(
                (-(-nnz_a // SCAN_ENTRIES),), ac, bp, at["entry_offsets"], at["scan_state"], nnz_a)
        if n_i:
            _launcher("spgemm_count", 4, HALF=HALF, ROWS=COUNT_ROWS)(
                (-(-n_i // COUNT_ROWS),), ap, at["entry_offsets"], a_row, at["ub_off"], at["counts"], at["lists"],
                at["starts"], n_i, cap, wide)
        lo = at["ub_off"].storage_offset() + n_i
        head = meta[lo:at["counts"].storage_offset() + 2].tolist()   # this step's one synchronization
        total, n_large, n_big = head[0], head[-2], head[-1]
        chunks = -(-total // HALF)
        starts = at["starts"][:chunks + 1]
        if chunks + 1 > cap:           # more chunks than spgemm_count could place: place them again
            starts = torch.empty(chunks + 1, dtype=torch.int64, device=device)
            _launcher("spgemm_starts", 4, HALF=HALF, ROWS=COUNT_ROWS)(
                (-(-n_i // COUNT_ROWS),), at["ub_off"], starts, n_i, chunks + 1)
        return self._plans.put(bufs, key, _Plan(at["ub_off"], a_row, at["lists"], starts, total, n_large, n_big,
                                                 wide, at["cnt"], at["c_pos"], at["pos_state"]))


def wide_from(n_j: int) -> int:
    """Rows of more products than this go to the dense-row kernels (``spgemm_wide_*``), the rest over
    ``HALF`` to ``spgemm_rows``'s sorts."""
    return max(HALF, min(PMAX, WIDE_FROM if WIDE_FROM else n_j // 16))


def _wide_rows(torch, rows, n_rows: int, args: tuple, device) -> None:
    """Launch the dense-row kernels over the listed ``rows``: as many at a time as ``DENSE_BYTES`` of dense
    rows hold (the compaction leaves each dense row cleared for the next batch). ``args``: those of
    ``spgemm_chunks`` after ``starts``."""
    ap, ac, av, _, bp, bc, bv, ub_off, x_key, x_vals, cnt, n_j = args
    slots = max(1, min(n_rows, DENSE_BYTES // max(1, n_j * (1 + av.element_size()))))
    seg = WIDE_STEP * max(1, -(-n_j // (WIDE_STEP * WIDE_SEGMENTS)))
    n_seg = max(1, -(-n_j // seg))
    w_vals = torch.zeros(slots * n_j, dtype=av.dtype, device=device)
    w_mark = torch.zeros(slots * n_j, dtype=torch.int8, device=device)
    seg_cnt = torch.empty(slots * n_seg, dtype=torch.int32, device=device)
    acc = _launcher("spgemm_wide_acc", 4, PARTS=WIDE_PARTS, ENTRIES=WIDE_ENTRIES, BLK=WIDE_BLK)
    count = _launcher("spgemm_wide_count", 4, STEP=WIDE_STEP)
    compact = _launcher("spgemm_wide_compact", 4, STEP=WIDE_STEP, SEGS=next_pow2(n_seg))
    for r_lo in range(0, n_rows, slots):
        batch = min(slots, n_rows - r_lo)
        acc((batch, WIDE_PARTS), rows, r_lo, ap, ac, av, bp, bc, bv, w_vals, w_mark, n_j)
        count((batch, n_seg), w_mark, seg_cnt, n_j, n_seg, seg)
        compact((batch, n_seg), rows, r_lo, ub_off, w_vals, w_mark, seg_cnt, x_key, x_vals, cnt, n_j, n_seg, seg)


def _starts_capacity(n_i: int, nnz_a: int) -> int:
    """How many chunk starts ``spgemm_count`` places: enough for ``2 * HALF`` products a row, or ``HALF / 4``
    an entry of A, on average (a square of rows of 64 entries); more chunks take a second launch
    (``spgemm_starts``)."""
    return 2 * n_i + nnz_a // 4 + 2


def _sections(torch, sizes: Mapping[str, int], device) -> tuple[Any, dict[str, Any]]:
    """One zeroed int64 buffer cut into named sections of these sizes, each from an even element (16 bytes)."""
    starts, at = {}, 0
    for name, n in sizes.items():
        starts[name] = at
        at += n + n % 2
    meta = torch.zeros(max(at, 2), dtype=torch.int64, device=device)
    return meta, {name: meta[o:o + sizes[name]] for name, o in starts.items()}


@dataclass
class _Plan:
    """What ``A @ B`` needs that depends only on the operands' structure: products per row (as offsets),
    each entry's row, the lists of long rows, the chunks, and once computed C's row pointers and entry count."""

    ub_off: Any
    a_row: Any
    lists: Any
    starts: Any
    total: int
    n_large: int
    n_big: int
    wide: int
    cnt: Any
    c_pos: Any
    pos_state: Any
    nnz: int | None = None     # C's entry count, once read
