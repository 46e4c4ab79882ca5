"""Options and launch heuristics of the Triton backend (the knobs to tune on a real GPU).

:class:`TritonOptions` holds user-facing settings; set them process-wide with
:func:`set_options` or for a block with ``with options(precision="tf32"): ...``,
or through environment variables read once at import
(``SPARSEC_TRITON_PRECISION``, ``SPARSEC_TRITON_NUM_WARPS``, ``SPARSEC_TRITON_ROWS``,
``SPARSEC_TRITON_BLOCK``, ``SPARSEC_TRITON_BLOCK_N``, ``SPARSEC_TRITON_FAST=0``).

**Precision** (``precision="ieee" | "tf32" | "tf32x3"``) is the ``input_precision`` of
``tl.dot`` for float32 operands. The default ``"ieee"`` matches numpy; ``"tf32"``
uses the tensor cores' TF32 mode (about 3 decimal digits of mantissa in the
products, much faster). float16/bfloat16 ``tl.dot`` always multiplies in the input
type and accumulates in float32; float64 never uses ``tl.dot``. Precision is a
launch-time constant: changing it does not regenerate code.

:func:`choose_constexprs` turns cheap statistics of the operands (average nonzeros
per row from a ``pos`` array, dense extents) into the block sizes of the fast paths.
It is a plain function of (role, estimate) so autotuning can replace it later.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from typing import Iterator

from ...errors import BackendError
from .schedule import next_pow2

PRECISIONS = ("ieee", "tf32", "tf32x3")


@dataclass(frozen=True)
class TritonOptions:
    """Settings of the Triton backend.

    * ``precision``: ``tl.dot`` input precision for float32 (``ieee`` default, ``tf32``, ``tf32x3``).
    * ``num_warps``: fixed warps per program (None: heuristic); ``num_stages``: software
      pipelining stages of every launch (None: Triton's default).
    * ``rows`` / ``block`` / ``block_n`` / ``block_k`` / ``lanes``: fixed tile sizes of the fast
      paths (None: heuristic); powers of two.
    * ``tile``: target number of elements of a ``[ROWS, BLOCK]`` tile (heuristic input).
    * ``max_programs``: programs of a persistent grid (None: 4 per SM on a GPU, 2 on the CPU).
    * ``split_rows``: split rows into segments added atomically (True / False; None: when rows are
      skewed or too few); ``split_segments``: target segment count (None: 32 per SM for SpMM-like
      accumulator tiles); ``segment``: segment length in nonzeros (None: from those, or for
      SpMV-like row reductions the average row, 32..1024).
    * ``fast_paths``: False emits only the generic scalar lowering (for debugging).
    * ``dot_min_block``: smallest static block side that uses ``tl.dot`` (smaller blocks
      use broadcast-multiply + ``tl.sum``).
    """

    precision: str = "ieee"
    num_warps: int | None = None
    num_stages: int | None = None
    rows: int | None = None
    block: int | None = None
    block_n: int | None = None
    block_k: int | None = None
    lanes: int | None = None
    tile: int = 256
    max_programs: int | None = None
    split_rows: bool | None = None
    split_segments: int | None = None
    segment: int | None = None
    fast_paths: bool = True
    dot_min_block: int = 16

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise BackendError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("rows", "block", "block_n", "block_k", "lanes"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1 or v & (v - 1)):
                raise BackendError(f"{name} must be a power of two, got {v!r}")
        for name in ("split_segments", "segment"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise BackendError(f"{name} must be a positive integer, got {v!r}")


def _from_env() -> TritonOptions:
    kw: dict = {}
    env = os.environ
    if env.get("SPARSEC_TRITON_PRECISION"):
        kw["precision"] = env["SPARSEC_TRITON_PRECISION"]
    for key, name in (("SPARSEC_TRITON_NUM_WARPS", "num_warps"), ("SPARSEC_TRITON_ROWS", "rows"),
                      ("SPARSEC_TRITON_BLOCK", "block"), ("SPARSEC_TRITON_BLOCK_N", "block_n")):
        if env.get(key):
            kw[name] = int(env[key])
    if env.get("SPARSEC_TRITON_FAST", "1") == "0":
        kw["fast_paths"] = False
    return TritonOptions(**kw)


_OPTIONS = _from_env()
# Bumped on every change of _OPTIONS, so memoized launch set-ups can be keyed by it: an id() of the
# options object is not a safe key (a freed options object's id is handed to the next one).
_GENERATION = 0


def get_options() -> TritonOptions:
    """The options in force."""
    return _OPTIONS


def options_generation() -> int:
    """A number that changes whenever the options in force change (a memo key)."""
    return _GENERATION


def _install(new: TritonOptions) -> None:
    global _OPTIONS, _GENERATION
    _OPTIONS = new
    _GENERATION += 1


def set_options(**kw) -> TritonOptions:
    """Change options process-wide (``set_options(precision="tf32")``); returns the new options."""
    _install(replace(_OPTIONS, **kw))
    return _OPTIONS


@contextlib.contextmanager
def options(**kw) -> Iterator[TritonOptions]:
    """``with options(precision="tf32"): ...`` -- options for a block, restored after."""
    old = _OPTIONS
    _install(replace(old, **kw))
    try:
        yield _OPTIONS
    finally:
        _install(old)


def _pow2(n: float) -> int:
    """The power of two at or above an estimate (``n`` rounded up unless within 0.001 of an integer)."""
    return next_pow2(int(n + 0.999))


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


def choose_constexprs(specs, estimates: dict[str, float | None], opts: TritonOptions,
                      longest: dict[str, float | None] | None = None) -> dict[str, int]:
    """Block sizes of every fast path of a kernel.

    ``specs`` are :class:`~.schedule.ConstexprSpec`; ``estimates`` maps each spec name to
    its estimated trip count (average nonzeros per row for ``pos`` estimates, the
    exact extent for dense loops, None when unknown); ``longest``, the longest row for
    ``pos`` estimates (None when unknown).

    * rows + inner (CSR-vector SpMV, row reductions), see :func:`_row_tile`: ``BLOCK`` =
      the average row length rounded up to a power of two (4..256; 16 at most below 32
      nonzeros/row); ``ROWS`` fills a tile of ``opts.tile`` elements (1..128): 64 rows x 4
      at 4 nonzeros/row, 16 x 16 from 16 nonzeros/row, one row of 256 from 256 on.
      Skewed rows (the longest over 8x the average) get ``BLOCK`` = an eighth of the
      longest row (16..256) and a 4x larger tile, so a long row does not hold its
      program for hundreds of narrow steps.
    * rows alone (elementwise over the parallel loop): ``ROWS`` = ``opts.tile``.
    * lanes + inner (SDDMM): ``BLOCK`` = the dense extent (16..128); ``LANES`` = nonzeros
      per row (1..64) within a tile of ``8 * opts.tile``.
    * block (a reduction loop alone): its trip count (8..256).
    * block_n (SpMM's dense columns): the extent (16..128).
    * block_n grouped with block_k (CSR SpMM): the extent (16..256); block_k (the row walk):
      128 / BLOCK_N, at most the average row length (1..4).
    """
    out: dict[str, int] = {}
    by_group: dict[str, list] = {}
    for s in specs:
        by_group.setdefault(s.group or s.name, []).append(s)
    for group, members in by_group.items():
        roles = {m.role: m for m in members}
        if "rows" in roles:
            inner = roles.get("inner")
            if inner is not None:
                avg = estimates.get(inner.name) or estimates.get(roles["rows"].name) or 16.0
                top = (longest or {}).get(inner.name)
                block, rows = _row_tile(avg, top, opts.tile)
                block, rows = opts.block or block, opts.rows or rows
                out[inner.name] = block
            else:
                rows = opts.rows or opts.tile
            out[roles["rows"].name] = rows
        elif "lanes" in roles:
            inner = roles.get("inner")
            lanes_est = estimates.get(roles["lanes"].name) or 8.0
            if inner is not None:
                ext = estimates.get(inner.name) or 32.0
                block = opts.block or _clamp(_pow2(ext), 16, 128)
                lanes = opts.lanes or _clamp(min(_pow2(lanes_est), (8 * opts.tile) // block), 1, 64)
                out[inner.name] = block
            else:
                lanes = opts.lanes or _clamp(_pow2(lanes_est), 1, 256)
            out[roles["lanes"].name] = lanes
        if "block_k" in roles:
            # SpMM: a [BLOCK_K, BLOCK_N] gather of B per step of the row walk. Measured on an H100 (Triton 3.6,
            # fp32, N = 16..256, 7 shared matrices; benchmarks/tune_triton.py with TUNE_WARPS=1, results in
            # benchmarks/results/h100-tuning/spmm_tiles.txt): the whole row of B in one BLOCK_N (up to 256)
            # and ~128 tile elements per warp win: BLOCK_K = 4 / 4 / 2 / 1 / 1 at N = 16 / 32 / 64 / 128 / 256
            # (no more than the average row); at N = 256, 128 columns x 2 steps took 70-128 us where 256 x 1
            # took 28-95 (ca-HepPh 52 vs 70, cage11 95 vs 128).
            bn_spec = roles.get("block_n")
            bn = 1
            if bn_spec is not None:
                bn = max(bn_spec.minimum, opts.block_n or _clamp(_pow2(estimates.get(bn_spec.name) or 64.0), 16, 256))
                out[bn_spec.name] = bn
            avg = estimates.get(roles["block_k"].name) or 8.0
            bk = _clamp(min(128 // bn, _pow2(avg)), 1, 4)
            out[roles["block_k"].name] = opts.block_k or bk
        for m in members:
            if m.name in out:
                continue
            est = estimates.get(m.name)
            if m.role == "block":
                out[m.name] = opts.block or _clamp(_pow2(est or 32.0), 8, 256)
            elif m.role == "block_n":
                out[m.name] = max(m.minimum, opts.block_n or _clamp(_pow2(est or 64.0), 16, 128))
            else:
                out[m.name] = _clamp(_pow2(est or 32.0), 1, 256)
    return out


def _row_tile(avg: float, longest: float | None, tile: int) -> tuple[int, int]:
    """(BLOCK, ROWS) of a [ROWS, BLOCK] tile of CSR rows (nonzeros along BLOCK).

    Measured on an H100 (Triton 3.6, fp32 CSR SpMV, benchmarks/tune_triton.py): up to
    ~16 nonzeros/row BLOCK=16 with 16 rows per program wins (uniform 200k x 16: 36 us,
    cuSPARSE 51; cage11: 10 vs 23); long even rows want one row of 256 lanes per program
    (pruned 4096^2 at 50%: 38 us, cuSPARSE 57; at BLOCK=16 and 16 rows 119). Skewed rows
    make a program wait for its longest row: wiki-Vote (avg 12.5, longest 893) takes 38 us
    with 16x16 tiles and 10-12 us with 256-wide ones; memplus (avg 7, longest 574) 48 us
    vs 13 us at 64 x 16. Even rows of 8-16 nonzeros take BLOCK=8 and 32 rows (two steps
    along a row; benchmarks/results/h100-spmv-narrow): banded 500k x 11 50.2 -> 35.2 us
    (cuSPARSE 42-57), cage11 (14.3) 10.3 -> 9.4 us; at 16 per row BLOCK=16 stays (uniform
    200k x 16: 35.2 us, 36.8 at BLOCK=8).
    """
    if longest is not None and longest > 8 * avg and longest > 32:
        block = _clamp(_pow2(longest / 8), 16, 256)
        return block, _clamp((4 * tile) // block, 1, 64)
    block = _clamp(_pow2(avg), 4, 8 if avg < 16 else 16) if avg < 32 else _clamp(_pow2(avg), 32, 256)
    return block, _clamp(tile // block, 1, 128)


def choose_num_warps(constexprs: dict[str, int], uses_dot: bool, opts: TritonOptions, per_warp: int = 64) -> int:
    """Warps per program: about one warp per ``per_warp`` tile elements (1..8); 4 at least with tl.dot.

    SpMM's gather tiles pass 128 (one warp loads a [1, 128] slice of B as 32 x 4-wide vectors;
    on an H100 one warp beat two and four at N = 32..128, two won at N = 256).
    """
    if opts.num_warps:
        return opts.num_warps
    tile = 1
    for v in constexprs.values():
        tile = max(tile, v)
    groups = 1
    vals = sorted(constexprs.values(), reverse=True)
    if len(vals) >= 2:
        groups = vals[0] * vals[1]
    elems = max(tile, groups)
    w = _clamp(elems // per_warp, 1, 8)
    if uses_dot:
        w = max(w, 4)
    return 1 << (w.bit_length() - 1)
