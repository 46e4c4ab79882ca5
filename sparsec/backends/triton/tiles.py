"""Tile templates: "load sparse, compute dense" SpMM for bitmap and N:M weights on tensor cores.

The generic lowering runs ``C[i,j] += A[i,k] * B[k,j]`` with ``A`` in ``bitmap`` or
``nm(n, m)`` as scalar loops (one coordinate or slot at a time), which is correct but
far from the hardware. Both formats can instead be expanded *in registers* into a dense
``[BM, BK]`` tile of ``A`` and multiplied with ``tl.dot``, as Flash-LLM / SpInfer do:

* **bitmap**: for 64 columns of ``BM`` rows, one 64-bit word per row says which
  entries are present; an entry's value sits at ``row_base + popcount(bits below it)``
  (the values of a row are packed in column order), so the tile is one masked gather;
* **nm(n, m)**: the ``n`` slots of a group hold values and in-block coordinates at
  fixed positions, so the tile is ``n`` compare-and-selects per element (the slots of a
  group have distinct coordinates, so at most one of them lands on an element). With
  ``n`` a power of two a step loads its slots as one contiguous block per buffer and
  splits them apart in registers (``tl.split``); declare 8-bit coordinates
  (``nm(2,4)[pos32,crd8]``, as ``sparsec.nn`` does) and a 2:4 float16 weight moves 1.5
  bytes per weight instead of 3; ``nm(2,4,packed)`` (2-bit coordinates) moves 1.25, but
  its decode costs more than the bytes it saves (see :func:`_nm_body`).

``B`` is read once per tile (not once per nonzero, as the CSR gather kernel does), and
the memory traffic is the format's: 1 bit + the values for a bitmap (2.6 bytes per
nonzero at 80 % zeros in float16, against 6 for CSR). For skinny ``B`` (few columns)
the rows x column-blocks grid is too small for the GPU, so ``K`` is also split across
programs (*split-K*), which add their partial tiles atomically; that needs a float32
``C`` (declare the output float32), else the kernel runs unsplit. For bitmaps, the
value offset where each split starts is precomputed once per weight (memoized, like
the row-split work array).

The zero-skipping template (``skip``, for ``Schedule.skip_zeros`` on a dense ``A``) also
takes ``A`` thresholded in the kernel, ``where(abs(A[i,k]) > t, A[i,k], 0) * B[k,j]`` with
``t`` a 0-d operand or a literal: entries at or under the threshold are skipped like zeros,
so the activations need no separate thresholding pass.

**Matching** (:func:`match`) is exact and conservative: the kernel's loop IR, with
every name renamed in order of appearance, must equal the loop IR that sparsec
generates for ``C[i,j] = A[i,k] * B[k,j]`` (or its thresholded form) with the same format,
dtypes and index widths (dense row-major ``B`` and ``C``, no schedule). Anything else (another loop
order, a fused expression, float64) keeps the generic code. ``SPARSEC_TRITON_TILES=0``
turns the templates off; ``SPARSEC_TRITON_TILE="BM,BN,S,WARPS"`` fixes the launch
configuration (for tuning).
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Mapping

from ...ir import loop_ir as L
from ...memo import OwnedMemo, tensor_version
from .schedule import next_pow2

_IDENT = re.compile(r"[A-Za-z_][A-Za-z_0-9]*|\S")
_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------ matching
def _canonical(kernel: L.Kernel) -> tuple[tuple[str, ...], dict[str, str]]:
    """The kernel body's loop-IR text as tokens with every kernel-defined name renamed in order of
    appearance (``v0``, ``v1``, ...), and the renaming (kernel name, doc and parameter order left out)."""
    from dataclasses import replace

    from ...ir.loop_printer import kernel_text

    names = {p.name for p in kernel.params} | {p.tensor for p in kernel.buffers if p.tensor}
    for s in kernel.body.walk():
        if isinstance(s, (L.For, L.Assign)):
            names.add(s.var.name)
    renamed: dict[str, str] = {}
    out = []
    for tok in _IDENT.findall(kernel_text(replace(kernel, name="k", doc="", params=()))):
        if tok in names:
            tok = renamed.setdefault(tok, f"v{len(renamed)}")
        out.append(tok)
    return tuple(out), renamed


#: the reference statement; its parameter names are the roles of the templates
_REF_TEXT = "C[i,j] = A[i,k] * B[k,j]"
#: the reference of the zero-skipping template with the activations thresholded in the kernel
_REF_THRESHOLD = "C[i,j] = where(abs(A[i,k]) > {}, A[i,k], 0) * B[k,j]"


@functools.lru_cache(maxsize=64)
def _reference(fmt_text: str, dtypes: tuple[str, ...], pos_width: int, crd_width: int, threshold: str = ""):
    """(canonical tokens, renaming, parameter names) of sparsec's own lowering of :data:`_REF_TEXT`.

    ``threshold``: lower :data:`_REF_THRESHOLD` instead, with this literal or with the 0-d tensor ``T``
    (``"T"``; its dtype is ``dtypes[3]``).
    """
    from ...api import build_program
    from ...formats import parse_format
    from ...frontend import parse_program
    from ...passes.pipeline import lower_program

    fmt = parse_format(fmt_text, 2).with_widths(pos_width, crd_width)
    text = _REF_THRESHOLD.format(threshold) if threshold else _REF_TEXT
    dts = dict(zip("ABCT", dtypes))
    prog = build_program(list(parse_program(text)), {"A": fmt}, dts)
    low = lower_program(prog, dtypes[2], "kernel")
    if len(low.statements) != 1:
        return None
    k = low.statements[0].numeric
    tokens, renamed = _canonical(k)
    return tokens, renamed, tuple(p.name for p in k.params)


@dataclass(frozen=True)
class Match:
    """A recognized SpMM: the template kind, N:M parameters, and the kernel's parameter for each role.

    Roles are the parameter names of the reference kernel: ``A_pos1``, ``A_bits1`` (bitmap) or
    ``A_crd2`` (N:M), ``A_vals``, ``B_vals``, ``C_vals``, ``n_i``, ``n_j``, ``n_k``, ``sc_lo``, ``sc_hi``.
    """

    kind: str                          # "bitmap", "nm" or "skip"
    n: int
    m: int
    roles: tuple[tuple[str, str], ...]  # (role, the kernel's parameter name)
    a_dtype: str
    c_dtype: str
    #: skip with a threshold: "T" (the 0-d tensor in role ``T_vals``) or a literal's Python text; "" without
    threshold: str = ""
    #: the dtype the threshold comparison runs in (the kernel's)
    compare_dtype: str = ""
    #: N:M with packed in-block coordinates (``nm(n, m, packed)``)
    packed: bool = False

    @property
    def level(self):
        """The N:M level (:class:`sparsec.levels.NOutOfM`): its packing (``crd_bits``, ``per_byte``)."""
        from ...levels import NOutOfM

        return NOutOfM(self.n, self.m, self.packed)

    def param(self, role: str) -> str:
        return dict(self.roles)[role]


def match(kernel: L.Kernel) -> Match | None:
    """The template for ``kernel`` if it is exactly a bitmap / N:M SpMM (see the module docs), else None."""
    if os.environ.get("SPARSEC_TRITON_TILES", "1") == "0":
        return None
    bufs = kernel.buffers
    parts = [p.part for p in bufs]
    threshold = compare = ""
    packed = False
    if parts in (["vals"] * 3, ["vals"] * 4):
        if dict(kernel.hints).get("skip_zeros") != bufs[0].tensor:   # dense GEMM: only to skip A's zeros
            return None
        kind, n, m = "skip", 0, 0
        fmt_text = "dense"
        found_thr = _threshold(kernel)
        if found_thr is not None:
            threshold, compare = found_thr
        if (threshold == "T") != (len(parts) == 4):
            return None
    elif parts == ["pos1", "bits1", "vals", "vals", "vals"]:
        kind, n, m = "bitmap", 0, 0
        fmt_text = "bitmap"
    elif parts == ["crd2", "vals", "vals", "vals"]:
        from ...ir.loop_printer import kernel_text

        found = re.search(r"structured\[(\d+), (\d+)(, packed)?\]", kernel_text(kernel))
        if found is None:
            return None
        kind, n, m, packed = "nm", int(found.group(1)), int(found.group(2)), found.group(3) is not None
        fmt_text = f"nm({n},{m}{',packed' if packed else ''})"
    else:
        return None
    a, b, c = bufs[0] if kind == "skip" else bufs[-3], bufs[-2], bufs[-1]
    if a.dtype not in ("float16", "bfloat16", "float32") or b.dtype != a.dtype or \
            c.dtype not in (a.dtype, "float32") or c.role != "out":
        return None
    idx = bufs[:-3]
    pos_w = max((int(p.dtype[3:]) for p in idx if p.part.startswith("pos")), default=32)   # int8 .. int64
    crd_w = max((int(p.dtype[3:]) for p in idx if p.part.startswith("crd")), default=32)
    dtypes = (a.dtype, b.dtype, c.dtype) + ((bufs[1].dtype,) if threshold == "T" else ())
    try:
        ref = _reference(fmt_text, dtypes, pos_w, crd_w, threshold)
    except Exception:  # the reference lowering itself failed: keep the generic code
        return None
    tokens, renamed = _canonical(kernel)
    if ref is None or tokens != ref[0] or len(kernel.params) != len(ref[2]):
        return None
    ours = {v: k for k, v in renamed.items()}
    roles = {r: ours[ref[1][r]] for r in ref[2] if r in ref[1] and ref[1][r] in ours}
    left_ref = [r for r in ref[2] if r not in roles]
    left_ours = [p.name for p in kernel.params if p.name not in roles.values()]
    if len(left_ref) > 1 or len(left_ref) != len(left_ours):   # at most one parameter unused by the body
        return None
    roles.update(zip(left_ref, left_ours))
    if threshold and threshold != "T":
        threshold = _rounded(float(threshold), compare)
        if threshold is None:
            return None
    return Match(kind, n, m, tuple(roles.items()), a.dtype, c.dtype, threshold, compare, packed)


def _threshold(kernel: L.Kernel) -> tuple[str, str] | None:
    """(``"T"`` or the literal's Python text, comparison dtype) of the kernel's ``select(abs(..) > thr, ..)``.

    Only what the template needs beyond the exact match (which checks the rest): the literal
    (``repr`` of its value: the reference is lowered from it) and the dtype of the comparison.
    """
    for st in kernel.body.walk():
        if not isinstance(st, L.Store):
            continue
        for e in st.value.walk():
            if isinstance(e, L.Select) and isinstance(e.cond, L.BinOp) and e.cond.op == "gt":
                rhs = e.cond.b
                if isinstance(rhs, L.Const) and type(rhs.value) in (int, float) and math.isfinite(rhs.value):
                    return repr(rhs.value), e.cond.a.dtype
                if isinstance(rhs, (L.Load, L.Cast)):
                    return "T", e.cond.a.dtype
                return None
    return None


def _rounded(value: float, dtype: str) -> str | None:
    """``value`` rounded to ``dtype`` (float16, bfloat16 or float32) as Python text, exact in float32.

    The template compares in float32 with this constant: the same outcome as comparing in ``dtype``
    (the absolute value of an entry is exact in either).
    """
    import torch

    if dtype not in ("float16", "bfloat16", "float32"):
        return None
    v = torch.tensor(value, dtype=getattr(torch, dtype)).item()
    return repr(float(v)) if math.isfinite(v) else None


# ------------------------------------------------------------------------------------ source
_POPC = '''
@triton.jit
def _sc_popc32(x, LIBDEVICE: tl.constexpr):
    # number of set bits of each uint32 (libdevice on the GPU; SWAR in the interpreter)
    if LIBDEVICE:
        return tl.extra.cuda.libdevice.popc(x.to(tl.int32, bitcast=True))
    else:
        x = x - ((x >> 1) & 0x55555555)
        x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
        x = (x + (x >> 4)) & 0x0F0F0F0F
        return ((x * 0x01010101) >> 24).to(tl.int32)
'''

_HEAD = '''
    pid = tl.program_id(0)
    n_tn = tl.cdiv(N, BN)
    nrows = HI - LO
    n_tiles = n_tn * tl.cdiv(nrows, BM)
    ks = pid // n_tiles
    pm = (pid % n_tiles) // n_tn
    pn = pid % n_tn
    rows = LO + pm * BM + tl.arange(0, BM)
    rm = rows < HI
    cols = pn * BN + tl.arange(0, BN)
    cm = cols < N
    acc = tl.zeros([BM, BN], dtype=tl.float32)
'''

_TAIL = '''
    out = C + rows[:, None].to(tl.int64) * N + cols[None, :]
    omask = rm[:, None] & cm[None, :]
    if SPLIT > 1:
        tl.atomic_add(out, acc, mask=omask, sem=SEM)   # the splits' order does not matter
    else:
        tl.store(out, (tl.load(out, mask=omask, other=0).to(tl.float32) + acc).to(C.dtype.element_ty), mask=omask)
'''

_BITMAP_BODY = '''
    # the k range of this split, in whole 64-column chunks; where its values start in each row
    k_lo = ks * KPS
    k_hi = tl.minimum(k_lo + KPS, K)
    base = tl.load(SPLIT_BASE + rows.to(tl.int64) * SPLIT + ks, mask=rm, other=0)
    c = tl.arange(0, 64)
    sh = (c & 31).to(tl.uint32)
    below = (tl.full([64], 1, tl.uint32) << sh) - 1
    upper = c >= 32
    n_words = tl.cdiv(MTOT.to(tl.int64) * K, 64)
    rowbit = rows.to(tl.int64) * K
    for k0 in range(k_lo, k_hi, 64):
        b0 = rowbit + k0
        w0 = b0 >> 6
        word = tl.load(BITS + w0, mask=rm, other=0).to(tl.uint64, bitcast=True)
        s = (b0 & 63).to(tl.uint64)
        nxt = tl.load(BITS + w0 + 1, mask=rm & (s != 0) & (w0 + 1 < n_words), other=0).to(tl.uint64, bitcast=True)
        word = tl.where(s == 0, word, (word >> s) | (nxt << ((64 - s) & 63)))   # the row's 64 bits from k0
        left = (k_hi - k0).to(tl.uint64)
        word = tl.where(left >= 64, word, word & ((tl.full([BM], 1, tl.uint64) << (left & 63)) - 1))
        lo = (word & 0xFFFFFFFF).to(tl.uint32)
        hi = (word >> 32).to(tl.uint32)
        half = tl.where(upper[None, :], hi[:, None], lo[:, None])
        present = ((half >> sh[None, :]) & 1) != 0
        n_lo = _sc_popc32(lo, LIBDEVICE)
        rank = _sc_popc32(half & below[None, :], LIBDEVICE) + tl.where(upper[None, :], n_lo[:, None], 0)
        a = tl.load(A_VALS + base[:, None] + rank, mask=present & rm[:, None], other=0)
        kk = k0 + c
        b = tl.load(B + kk[:, None].to(tl.int64) * N + cols[None, :], mask=(kk < k_hi)[:, None] & cm[None, :],
                    other=0)
        acc += DOT
        base += n_lo + _sc_popc32(hi, LIBDEVICE)
'''

_NM_BODY = """
    # groups of M_ columns handled by this split, BG groups (BG * MP columns) per step; EVEN: every step is
    # whole (the groups are a multiple of BG), so the loads need no column masks and move as wide vectors
    G = tl.cdiv(K, M_)
    g_lo = ks * GPS
    g_hi = tl.minimum(g_lo + GPS, G)
    for g0 in tl.range(g_lo, g_hi, BG, num_stages=1):   # not software-pipelined: measured slower (probes)
@TILE@@KROWS@        b = tl.load(B + kk[:, None].to(tl.int64) * N + cols[None, :], mask=km[:, None] & cm[None, :], other=0)
        acc += DOT
"""

#: the rows of B a step multiplies: ``m`` a power of two, consecutive; else ``MP - m`` padding rows a group
_NM_KROWS_POW2 = """        kk = g0 * M_ + tl.arange(0, BG * MP)
        if EVEN:
            km = kk < K
        else:
            km = (kk < K) & (kk < g_hi * M_)
"""
_NM_KROWS_PADDED = """        j = tl.arange(0, MP)
        kk = (g0 + tl.arange(0, BG))[:, None] * M_ + j[None, :]
        km = tl.reshape((j < M_)[None, :] & (kk < K) & ((g0 + tl.arange(0, BG)) < g_hi)[:, None], [BG * MP])
        kk = tl.reshape(kk, [BG * MP])
"""

#: n a power of two: a step's slots load as one contiguous ``[BM, BG * n]`` block per buffer (values and
#: coordinates of a row's groups are consecutive)
_NM_CONTIGUOUS = """sl = g0 * N_ + tl.arange(0, BG * N_)
at = rows[:, None].to(tl.int64) * G * N_ + sl[None, :]
if EVEN:
    lm = rm[:, None]
else:
    lm = rm[:, None] & (sl < g_hi * N_)[None, :]
v = tl.load(A_VALS + at, mask=lm, other=0)
"""
#: packed coordinates of rows that start on a byte: the step's bytes load as one contiguous block
_NM_PACKED_BYTES = """sb = g0 * N_ // PER + tl.arange(0, BG * N_ // PER)
if EVEN:
    bm_ = rm[:, None]
else:
    bm_ = rm[:, None] & (sb < (g_hi * N_ + PER - 1) // PER)[None, :]
w = tl.load(A_CRD + rows[:, None].to(tl.int64) * (G * N_ // PER) + sb[None, :], mask=bm_, other=0).to(tl.int32)
"""
#: any n: one strided ``[BM, BG]`` load per slot and buffer
_NM_STRIDED = """gg = g0 + tl.arange(0, BG)
gm = rm[:, None] & (gg < g_hi)[None, :]
slot0 = (rows[:, None].to(tl.int64) * G + gg[None, :]) * N_
"""


def _interleaved(names: list[str]) -> str:
    """Triton expression: the ``[BM, BG]`` tiles ``names`` (a power of two of them) interleaved along a new
    minor axis with ``tl.join`` (its flattening puts tile ``t``'s column ``g`` at ``g * len(names) + t``)."""
    if len(names) == 1:
        return names[0]
    return f"tl.join({_interleaved(names[0::2])}, {_interleaved(names[1::2])})"


def _split(x: str, count: int) -> tuple[list[str], list[str]]:
    """Lines splitting the ``[BM, BG * count]`` tile ``x`` (``count`` a power of two) into ``count`` ``[BM, BG]``
    tiles, and their names (tile ``i`` holds columns ``i::count``; their order does not matter to the caller).

    Halving the minor axis with ``tl.split`` splits off the last bit of the index first."""
    lines, names, width = [], [x], count
    while width > 1:
        for y in names:
            lines.append(f"{y}0, {y}1 = tl.split(tl.reshape({y}, [BM, BG * {width // 2}, 2]))")
        names = [y + d for y in names for d in "01"]
        width //= 2
    if count == 1:
        lines.append(f"{x} = tl.reshape({x}, [BM, BG])")
    return lines, names


def _dense_tiles(slots: list[tuple[str, str]], m: int) -> list[str]:
    """Lines building ``a``, the ``[BM, BG * MP]`` dense operand, from the (value, coordinate) ``[BM, BG]``
    tiles of the n slots of every group: one tile per in-block offset, interleaved with ``tl.join``."""
    lines = ["zero = tl.zeros([BM, BG], dtype=A_VALS.dtype.element_ty)"]
    names = []
    for t in range(next_pow2(m)):
        expr = "zero"
        if t < m:
            for v, c in slots:
                expr = f"tl.where({c} == {t}, {v}, {expr})"
        lines.append(f"d{t} = {expr}")
        names.append(f"d{t}")
    return lines + [f"a = tl.reshape({_interleaved(names)}, [BM, BG * MP])"]


def _nm_step(n: int, m: int, crd: str) -> list[str]:
    """The lines of one step that build ``a``; ``crd`` says how coordinates are stored: ``"int"`` (one
    integer per slot), ``"bytes"`` (packed, rows starting on a byte) or ``"bits"`` (packed, any start)."""
    mask = "(2 ** BITS - 1)"
    if n & (n - 1):   # n slots, one strided load per slot and buffer
        lines = _NM_STRIDED.splitlines()
        slots = []
        for s in range(n):
            lines.append(f"v{s} = tl.load(A_VALS + slot0 + {s}, mask=gm, other=0)")
            if crd == "int":
                lines.append(f"c{s} = tl.load(A_CRD + slot0 + {s}, mask=gm, other=-1)")
            else:
                lines.append(f"c{s} = (tl.load(A_CRD + (slot0 + {s}) // PER, mask=gm, other=0).to(tl.int32) >> "
                             f"(((slot0 + {s}) % PER) * BITS).to(tl.int32)) & {mask}")
            slots.append((f"v{s}", f"c{s}"))
        return lines + _dense_tiles(slots, m)
    lines = _NM_CONTIGUOUS.splitlines()
    if crd == "int":
        lines.append("c = tl.load(A_CRD + at, mask=lm, other=-1)")
    elif crd == "bytes":   # the step's bytes in one load, each spread into its PER coordinates in registers
        lines += _NM_PACKED_BYTES.splitlines()
        lines.append(f"c = tl.reshape((w[:, :, None] >> (tl.arange(0, PER) * BITS)[None, None, :]) & {mask}, "
                     f"[BM, BG * N_])")
    else:   # each slot reads its own byte
        lines.append(f"c = (tl.load(A_CRD + at // PER, mask=lm, other=0).to(tl.int32) >> "
                     f"((at % PER) * BITS).to(tl.int32)) & {mask}")
    vl, vs = _split("v", n)
    cl, cs = _split("c", n)
    return lines + vl + cl + _dense_tiles(list(zip(vs, cs)), m)


def _indent(lines: list[str], depth: int) -> str:
    return "".join(" " * depth + line + "\n" for line in lines)


def _nm_body(n: int, m: int, packed: bool = False) -> str:
    """:data:`_NM_BODY` for ``n`` slots per group of ``m`` (``packed``: coordinates packed BITS to a bit field).

    The slots come as ``[BM, BG]`` tiles (value and coordinate of slot ``s`` of each group):
    split in registers from one contiguous load per buffer when ``n`` is a power of two, else
    one strided load each. Each in-block offset ``t`` then gets its ``[BM, BG]`` tile of the
    dense weight (``n`` compare-and-selects: the slots of a group have distinct coordinates,
    padding slots hold zeros), and the ``m`` tiles are interleaved with ``tl.join`` into the
    ``[BM, BG * m]`` operand of ``tl.dot``: all of it register-local. Measured on an H100
    (4096x4096 float16 2:4, 8-bit coordinates; hand-written probes, see
    benchmarks/results/h100-dl-item2): N = 8: 30 us, against 42 us for a broadcast
    ``[BM, BG, m]`` select and 104 us for strided loads with one ``tl.dot`` per offset; N = 64:
    34 against 51 us; dense cuBLAS 21 us.

    Packed coordinates of rows that start on a byte (``ALIGNED``) load as one block of bytes
    per step, spread into one coordinate per slot in registers; other rows read each slot's
    byte. On an H100 (4096x4096 / 11008x4096 2:4 float16, N = 16 and 64, kernels alone with a
    warm L2; benchmarks/results/h100-dl-item2-packed) the spread took 16-71 us where 8-bit
    coordinates took 14-51 us; tiles covering whole bytes of groups (no spread) took 21-81 us,
    and a byte read per slot 56-183 us: this kernel is bound by its decode, not by memory, so
    the fewer bytes do not pay yet.
    """
    if not packed:
        tile = _indent(_nm_step(n, m, "int"), 8)
    elif n & (n - 1):
        tile = _indent(_nm_step(n, m, "bits"), 8)
    else:
        tile = "        if ALIGNED:\n" + _indent(_nm_step(n, m, "bytes"), 12) + \
            "        else:\n" + _indent(_nm_step(n, m, "bits"), 12)
    krows = _NM_KROWS_POW2 if next_pow2(m) == m else _NM_KROWS_PADDED
    return _NM_BODY.replace("@TILE@", tile).replace("@KROWS@", krows)


_SKIP_BODY = '''
    # the k range of this split; each step of BK columns loads the block of the right operand only
    # at the k where some row of the left one is nonzero (masked-off rows cost no memory traffic)
    k_lo = ks * KPS
    k_hi = tl.minimum(k_lo + KPS, K)
    kc = tl.arange(0, BK)
@SETUP@    for k0 in range(k_lo, k_hi, BK):
        kk = k0 + kc
        km = kk < k_hi
        a = tl.load(A_VALS + rows[:, None].to(tl.int64) * K + kk[None, :], mask=rm[:, None] & km[None, :], other=0)
@APPLY@        live = tl.max((a != 0).to(tl.int32), axis=0) != 0
        b = tl.load(B + kk[:, None].to(tl.int64) * N + cols[None, :], mask=live[:, None] & cm[None, :], other=0)
        acc += tl.sum(a.to(tl.float32)[:, :, None] * b.to(tl.float32)[None, :, :], axis=1)
'''


def _skip_body(mt: Match, t_vals: str | None) -> str:
    """:data:`_SKIP_BODY` with the threshold of ``mt`` (if any) applied to each loaded block of A."""
    setup = apply = ""
    if mt.threshold == "T":
        cmp = f"tl.{mt.compare_dtype}"
        setup = f"    thr = tl.load({t_vals}).to({cmp})\n"
        apply = f"        a = tl.where(tl.abs(a).to({cmp}) > thr, a, 0)   # at or under the threshold: a zero\n"
    elif mt.threshold:
        apply = f"        a = tl.where(tl.abs(a.to(tl.float32)) > {mt.threshold}, a, 0)   # at or under: a zero\n"
    return _SKIP_BODY.replace("@SETUP@", setup).replace("@APPLY@", apply)


def _py(name: str) -> str:
    from .codegen import py_name

    return py_name(name)


def source(mt: Match, kernel_name: str, params: tuple[str, ...], libdevice: bool) -> str:
    """Triton source of the template for ``mt``.

    ``params`` are the kernel's parameter names in signature order (the launcher passes them so).
    """
    r = {role: _py(name) for role, name in mt.roles}
    bits, avals, bvals, cvals = r.get("A_bits1"), r["A_vals"], r["B_vals"], r["C_vals"]
    n_i, n_j, n_k, lo, hi = r["n_i"], r["n_j"], r["n_k"], r["sc_lo"], r["sc_hi"]
    p = [_py(name) for name in params]
    if mt.kind == "bitmap":
        roles = {"BITS": bits, "A_VALS": avals, "SPLIT_BASE": "_t_split_base"}
        body = _BITMAP_BODY
        consts = ["BM", "BN", "KPS", "SPLIT", "LIBDEVICE"]
        internal = ["_t_split_base"]
    elif mt.kind == "skip":
        roles = {"A_VALS": avals}
        body = _skip_body(mt, r.get("T_vals"))
        consts = ["BM", "BN", "BK", "KPS", "SPLIT"]
        internal = []
    else:
        roles = {"A_CRD": r["A_crd2"], "A_VALS": avals}
        body = _nm_body(mt.n, mt.m, mt.packed)
        roles.update({"N_": str(mt.n), "M_": str(mt.m), "MP": str(next_pow2(mt.m))})
        if mt.packed:
            roles.update({"BITS": str(mt.level.crd_bits), "PER": str(mt.level.per_byte)})
        consts = ["BM", "BN", "BG", "GPS", "SPLIT", "EVEN"] + (["ALIGNED"] if mt.packed else [])
        internal = []
    dot = "tl.dot(a, b, input_precision=PREC)" if mt.a_dtype == "float32" else "tl.dot(a, b)"
    if mt.a_dtype == "bfloat16" and not libdevice:  # Triton's interpreter gets bfloat16 tl.dot wrong
        dot = "tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision='ieee')"
    from .codegen import ATOMIC_SEM   # the split-K adds take the memory order of the general lowering's atomics

    roles.update({"B": bvals, "C": cvals, "N": n_j, "K": n_k, "LO": lo, "HI": hi, "MTOT": n_i, "DOT": dot,
                  "SEM": repr(ATOMIC_SEM)})
    text = re.sub(r"\b(" + "|".join(sorted(roles, key=len, reverse=True)) + r")\b", lambda g: roles[g.group(1)],
                  _HEAD + body + _TAIL)
    params = p + internal + [f"{c}: tl.constexpr" for c in consts] + \
        (["PREC: tl.constexpr"] if mt.a_dtype == "float32" else [])
    # the column and K extents are specialized (Triton then knows when they are multiples of 16): the
    # column mask of a B row is constant over 16 lanes and its loads are vectors, not scalars
    from .codegen import SPECIALIZE_DIMS

    scalars = [n_i, lo, hi] if SPECIALIZE_DIMS else [n_i, n_j, n_k, lo, hi]
    what = {"bitmap": "bitmap SpMM, load sparse -> dense tile in registers -> tl.dot",
            "skip": "dense A x B skipping the zeros of A (rows of B loaded only for nonzeros of A)" +
                    (", A thresholded (|a| > t) in the kernel" if mt.threshold else ""),
            }.get(mt.kind, f"nm({mt.n}, {mt.m}{', packed' if mt.packed else ''}) SpMM, load sparse -> dense tile "
                           f"in registers -> tl.dot")
    head = (f"# Generated by sparsec (Triton backend, tile template: {what}).\n"
            f"# Do not edit: see sparsec/backends/triton/tiles.py.\n\n"
            f"import triton\nimport triton.language as tl\n" + (_POPC if mt.kind == "bitmap" else "") + "\n\n"
            f"@triton.jit(do_not_specialize={scalars!r})\n"
            f"def {_py(kernel_name)}({', '.join(params)}):\n")
    return head + text.lstrip("\n")


# ------------------------------------------------------------------------------------ launching
@dataclass(frozen=True)
class Config:
    """Launch configuration of a template: tile rows/columns, K splits, warps."""

    bm: int
    bn: int
    split: int
    warps: int


def _fixed_config(mt: Match) -> Config | None:
    """The configuration ``SPARSEC_TRITON_TILE="BM,BN,S,WARPS"`` fixes (split 1 without a float32 output)."""
    fixed = os.environ.get("SPARSEC_TRITON_TILE", "")
    if not fixed:
        return None
    bm, bn, split, warps = (int(v) for v in fixed.split(","))
    return Config(bm, bn, split if mt.c_dtype == "float32" else 1, warps)


def _k_splits(mt: Match, tiles: int, steps: int, sms: int, cap: int, per_sm: int = 4) -> int:
    """K splits (a power of two, at most ``cap`` and ``steps``) for about ``per_sm`` programs per SM.

    Split-K needs atomic float32 adds, so it is used only with a float32 output.
    """
    split = 1
    if mt.c_dtype == "float32":
        while split * 2 <= steps and tiles * split * 2 <= per_sm * sms and split < cap:
            split *= 2
    return split


def _steps_per_split(steps: int, split: int, multiple: int = 1) -> tuple[int, int]:
    """(steps per split, rounded up to ``multiple``; the number of splits that leaves) for ``steps`` steps."""
    per = -(-steps // split)
    per = -(-per // multiple) * multiple
    return per, -(-steps // per)


def choose_config(mt: Match, rows: int, n: int, k: int, sms: int) -> Config:
    """Tiles of 64 rows x up to 64 columns; K split so that about 4 programs per SM are busy (8 for N:M).

    N:M on an H100 (benchmarks/results/h100-dl-item2-packed, 2:4 float16, kernels alone): an 11008-row
    weight took 43.6 us at N = 16 with the 2 splits that 4 programs per SM give, 37.7 us with 8; at
    4096 rows 8, 16 and 32 splits were within 2 % of each other (stream_probe.py there).
    """
    fixed = _fixed_config(mt)
    if fixed is not None:
        return fixed
    bn = max(16, min(64, next_pow2(n)))
    bm = 64
    tiles = -(-rows // bm) * -(-n // bn)
    per_sm = 8 if mt.kind == "nm" else 4
    return Config(bm, bn, _k_splits(mt, tiles, max(1, -(-k // 64)), sms, 64, per_sm), 4)


@dataclass(frozen=True)
class SkipConfig(Config):
    """Launch configuration of the zero-skipping template: also the K step (rows of B per load)."""

    bk: int = 32


def choose_skip_config(mt: Match, rows: int, n: int, k: int, sms: int) -> SkipConfig:
    """Few rows of A (a batch of activations) by up to 256 columns of B; K split for ~8 programs per SM.

    A step loads a ``[BK, BN]`` block of B of which only the rows under a nonzero of A are
    read; the product is a broadcast multiply (A has too few rows for ``tl.dot``). Each
    program has only a few steps, so more of them hide more latency: on an H100 (fp16,
    50 % zeros, threshold fused; benchmarks/results/h100-dl-item5-sweep) 8 programs per SM
    instead of 4 took a 4096 x 11008 GEMV from 34.7 to 30.8 us, and 4096 x 4096 from 18.3
    to about 17.8 us; wider tiles, other K steps, warps and pipeline depths did not beat it.
    """
    bm = min(8, next_pow2(rows))
    bn = max(16, min(256, next_pow2(n)))
    bk = max(8, min(64, 8192 // (bm * bn)))
    tiles = -(-rows // bm) * -(-n // bn)
    return SkipConfig(bm, bn, _k_splits(mt, tiles, max(1, -(-k // bk)), sms, 256, per_sm=8), 4, bk)


class TileKernel:
    """The launcher of a template for one :class:`~sparsec.backends.triton.TritonKernel`."""

    def __init__(self, mt: Match, kernel: L.Kernel):
        self.mt = mt
        self.kernel = kernel
        self._params = tuple(p.name for p in kernel.params)
        self._fns: dict[bool, Any] = {}
        self._base_memo = OwnedMemo(16)

    def source(self, libdevice: bool = True) -> str:
        """The template's Triton source (``libdevice``: popcount from libdevice, as on a GPU)."""
        return source(self.mt, self.kernel.name, self._params, libdevice)

    def fn(self, libdevice: bool):
        """The loaded ``@triton.jit`` function (one per popcount flavour)."""
        with _LOCK:
            f = self._fns.get(libdevice)
            if f is None:
                from .launch import load_kernel

                f = self._fns[libdevice] = load_kernel(self.kernel.name, self.source(libdevice),
                                                       _py(self.kernel.name))
            return f

    def split_base(self, pos, bits, rows: int, k: int, kps: int, split: int):
        """Per row and split, the offset of the split's first value (pos[row] + bits set before it)."""
        import torch

        key = (bits.data_ptr(), bits.numel(), tensor_version(bits), pos.data_ptr(), rows, k, kps, split)
        hit = self._base_memo.get(bits, key)
        if hit is not None:
            return hit
        if split == 1:
            base = pos[:rows].to(torch.int32).reshape(rows, 1).contiguous()
        else:
            bytes_ = bits.view(torch.uint8)
            shifts = torch.arange(8, device=bits.device, dtype=torch.uint8)
            present = ((bytes_[:, None] >> shifts) & 1).reshape(-1)[: rows * k].reshape(rows, k)
            edges = torch.arange(0, split - 1, device=bits.device) * kps + kps   # split starts after the first
            counts = present.to(torch.int32).cumsum(1)[:, (edges - 1).clamp_max(k - 1)]
            base = torch.cat([torch.zeros(rows, 1, dtype=torch.int32, device=bits.device), counts], 1)
            base = (base + pos[:rows].to(torch.int32)[:, None]).contiguous()
        return self._base_memo.put(bits, key, base)

    def setup(self, bufs: Mapping[str, Any], scal: Mapping[str, int], precision: str):
        """(fn, grid, warps, kwargs, internal) for one launch, as ``TritonKernel.__call__`` returns them."""
        from .device import sm_count
        from .launch import interpreting

        mt = self.mt
        n_i, n_j, n_k, lo, hi = (int(scal[mt.param(x)]) for x in ("n_i", "n_j", "n_k", "sc_lo", "sc_hi"))
        rows = hi - lo
        if rows <= 0 or n_j <= 0:
            return None
        interp = interpreting()
        dev = bufs[mt.param("A_vals")].device
        sms = sm_count(dev, 4)
        cfg = choose_skip_config(mt, rows, n_j, n_k, sms) if mt.kind == "skip" else \
            choose_config(mt, rows, n_j, n_k, sms)
        internal: list[Any] = []
        kwargs: dict[str, Any] = {"BM": cfg.bm, "BN": cfg.bn}
        if mt.kind == "skip":
            per, split = _steps_per_split(max(1, -(-n_k // cfg.bk)), cfg.split)
            kwargs.update(BK=cfg.bk, KPS=per * cfg.bk, SPLIT=split)
        elif mt.kind == "bitmap":
            per, split = _steps_per_split(max(1, -(-n_k // 64)), cfg.split)
            kwargs.update(KPS=per * 64, SPLIT=split, LIBDEVICE=not interp)
            internal.append(self.split_base(bufs[mt.param("A_pos1")], bufs[mt.param("A_bits1")], n_i, n_k, per * 64,
                                            split))
        else:
            groups = max(1, -(-n_k // mt.m))
            bg = max(1, min(next_pow2(max(1, 128 // mt.m)), next_pow2(groups)))   # 128 columns a step: the probes' best
            # tl.dot needs 16 rows of B a step; a packed step reads whole bytes of coordinates
            bg = max(bg, 16 // next_pow2(mt.m), mt.level.per_byte // mt.n if mt.packed else 1)
            per, split = _steps_per_split(groups, cfg.split, bg)
            kwargs.update(BG=bg, GPS=per, SPLIT=split, EVEN=groups % bg == 0)
            if mt.packed:   # rows start on a byte: their coordinates load as whole bytes
                kwargs["ALIGNED"] = (groups * mt.n) % mt.level.per_byte == 0
        if mt.a_dtype == "float32":
            kwargs["PREC"] = precision
        tiles = -(-rows // cfg.bm) * -(-n_j // cfg.bn)
        return self.fn(not interp), tiles * kwargs["SPLIT"], cfg.warps, kwargs, internal
