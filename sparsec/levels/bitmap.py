"""``bitmap`` level: one bit per coordinate, the present entries' values packed.

Buffers: ``bits`` (int64 words; bit ``b % 64`` of word ``b // 64`` is coordinate
``b - parent * size`` of parent ``parent = b // size``) and ``pos`` (per parent, the
number of set bits before it, as CSR's ``pos``: the values of parent ``p`` are
``values[pos[p]:pos[p+1]]`` in coordinate order). It suits data that is neither very
sparse nor dense (activation maps, KV-cache masks): 1 bit per coordinate instead of
a 32-bit coordinate per entry.

A bitmap cannot name the coordinate of a position without counting bits, so loops
over it visit every coordinate and test its bit (:attr:`positions_iterable` is
False): the sparsifier then emits a dense loop with a cursor, as for a union with a
dense operand. It is spelled ``bitmap`` in encoding text: ``(i, j) -> (i : dense,
j : bitmap)``; the short name ``bitmap`` is that 2-D format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np

from ..errors import FormatError
from ._helpers import check_pos_array
from .base import Level, register

_I64 = np.dtype(np.int64)


def _unpack(bits: np.ndarray, nbits: int) -> np.ndarray:
    """The first ``nbits`` bits of int64 words as a bool array (bit 0 of word 0 first)."""
    if nbits == 0:
        return np.zeros(0, dtype=bool)
    raw = np.ascontiguousarray(bits, dtype=np.int64).view(np.uint8)
    return np.unpackbits(raw, bitorder="little")[:nbits].astype(bool)


def _pack(mask: np.ndarray) -> np.ndarray:
    """A bool array as int64 words (little-endian bit order), padded to whole words."""
    nwords = -(-mask.shape[0] // 64)
    padded = np.zeros(nwords * 64, dtype=bool)
    padded[: mask.shape[0]] = mask
    return np.packbits(padded, bitorder="little").view(np.int64).copy()


@register
@dataclass(frozen=True)
class Bitmap(Level):
    """Bitmap level: coordinate c of parent p is present iff bit p * size + c is set."""

    kind = "bitmap"
    buffers = ("pos", "bits")
    balance_part = "pos"
    #: a position's coordinate is not stored: loops visit every coordinate and test its bit
    positions_iterable: ClassVar[bool] = False
    fills: ClassVar[bool] = False

    def mlir(self) -> str:
        return "bitmap"

    # -- compiler hooks ----------------------------------------------------------------
    def position_range(self, cg, parent, parent_segment_end):
        from ..ir.loop_ir import binop

        pos = cg.buffer("pos")
        return cg.load_index(pos, parent), cg.load_index(pos, binop("add", parent, 1))

    def present(self, cg, parent, coord):
        """Loop IR for "coordinate ``coord`` of parent ``parent`` is stored"."""
        from ..ir.loop_ir import Cast, Load, binop, const

        b = binop("add", binop("mul", parent, cg.size()), coord)
        # the test stays in int64: narrowing the word to a 32-bit index would drop bits 32-63
        word = Load(cg.buffer("bits"), binop("shr", b, const(6)), "int64")
        shift = Cast(binop("bitand", b, const(63)), "int64")
        bit = binop("bitand", binop("shr", word, shift), const(1, "int64"))
        return binop("ne", bit, const(0, "int64"))

    def coordinate(self, cg, position):
        raise NotImplementedError("a bitmap level does not store coordinates per position")

    # -- runtime hooks -----------------------------------------------------------------
    def num_positions(self, buffers, num_parents, size):
        pos = buffers["pos"]
        return int(pos[-1]) if len(pos) else 0

    def assemble(self, parent_pos, coords, num_parents, size, index_dtype):
        parent_pos = np.asarray(parent_pos, dtype=_I64)
        coords = np.asarray(coords, dtype=_I64)
        counts = np.bincount(parent_pos, minlength=num_parents) if parent_pos.size else np.zeros(num_parents, _I64)
        pos = np.zeros(num_parents + 1, dtype=index_dtype)
        np.cumsum(counts, out=pos[1:])
        mask = np.zeros(num_parents * size, dtype=bool)
        mask[parent_pos * size + coords] = True
        # entries arrive sorted by (parent, coordinate) and unique: entry e is position e
        return {"pos": pos, "bits": _pack(mask)}, np.arange(coords.shape[0], dtype=_I64), int(coords.shape[0])

    def expand(self, buffers, parent_pos, size):
        parent_pos = np.asarray(parent_pos, dtype=_I64)
        pos = np.asarray(buffers["pos"], dtype=_I64)
        nparents = pos.shape[0] - 1
        mask = _unpack(buffers["bits"], nparents * size).reshape(nparents, size)
        rows = mask[parent_pos]                       # (len(parent_pos), size)
        parent_index, coords = np.nonzero(rows)
        # positions: pos[parent] + rank of the coordinate among that parent's set bits
        rank = np.cumsum(rows, axis=1)[parent_index, coords] - 1 if rows.size else np.zeros(0, _I64)
        positions = pos[parent_pos[parent_index]] + rank
        return parent_index.astype(_I64), coords.astype(_I64), positions.astype(_I64)

    def validate(self, buffers: Mapping[str, np.ndarray], num_parents: int, size: int, where: str) -> int:
        pos, bits = buffers["pos"], buffers["bits"]
        check_pos_array(pos, num_parents + 1, where)
        words = -(-num_parents * size // 64)
        if np.asarray(bits).shape != (words,):
            raise FormatError(f"{where}: bits must hold {words} int64 words for {num_parents} x {size} "
                              f"coordinates, got shape {np.asarray(bits).shape}")
        mask = _unpack(bits, words * 64)
        if mask[num_parents * size:].any():
            raise FormatError(f"{where}: bits set beyond the last coordinate (bit "
                              f"{int(np.flatnonzero(mask[num_parents * size:])[0]) + num_parents * size})")
        per_parent = mask[: num_parents * size].reshape(num_parents, size).sum(axis=1) if num_parents else \
            np.zeros(0, _I64)
        counts = np.diff(np.asarray(pos, dtype=_I64))
        bad = np.flatnonzero(per_parent != counts)
        if bad.size:
            p = int(bad[0])
            raise FormatError(f"{where}: parent position {p} has {int(per_parent[p])} bits set but pos says "
                              f"{int(counts[p])} entries")
        return int(np.asarray(pos)[-1]) if num_parents else 0
