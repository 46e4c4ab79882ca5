"""``n_out_of_m(n, m)`` level: n in-block coordinates for every block of m (2:4 sparsity).

It sits under a ``floordiv m`` dense level of the same dimension and is addressed
as ``dim mod m``. Each parent position owns exactly ``n`` slots: positions
``parent * n .. parent * n + n - 1``; ``crd`` holds the in-block coordinate
(0 <= crd < m) of each slot, strictly increasing within a block. Blocks with fewer
than n nonzeros are padded with explicit zeros at unused in-block coordinates
(smallest unused first). In the last block of a dimension that is not a multiple
of m, a padding coordinate may lie past the dimension's extent; kernels guard
against it and the tensor layer drops such entries when enumerating.
MLIR spells it ``structured[n, m]``.

``packed=True`` (``nm(2, 4, packed)``; encoding text ``structured[2, 4, packed]``, which
MLIR does not have) stores each in-block coordinate in the fewest of 1, 2 or 4 bits
that hold ``m - 1``, several to a byte: slot ``p``'s coordinate is bits
``(p % per) * bits ..`` of byte ``p // per`` (``per = 8 // bits``; unused bits of the
last byte are zero). The ``crd`` buffer is then int8 whatever the format's
``crdWidth``, and a 2:4 float16 weight moves 1.25 bytes per weight (values 1, the
coordinates 0.25) instead of 1.5 with 8-bit coordinates. It needs ``m <= 16``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np

from ..errors import FormatError
from .base import MAX_FACTOR, Level, register
from ._helpers import check_coords_in_range, distinct_children, located_error

_I64 = np.dtype(np.int64)


@register
@dataclass(frozen=True)
class NOutOfM(Level):
    """N:M structured level with fixed n slots per block of m coordinates."""

    kind = "n_out_of_m"
    buffers = ("crd",)
    #: padding slots hold zeros that are not real entries.
    fills: ClassVar[bool] = True
    n: int = 2
    m: int = 4
    #: coordinates packed at :attr:`crd_bits` bits each, several to an int8 byte
    packed: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.m, int)) or not 0 < self.n <= self.m:
            raise FormatError(f"n_out_of_m needs integers 0 < n <= m, got n={self.n!r}, m={self.m!r}")
        if self.m > MAX_FACTOR:
            raise FormatError(f"n_out_of_m: block size m={self.m} is too large (at most {MAX_FACTOR})")
        if self.packed and self.m > 16:
            raise FormatError(f"structured[{self.n}, {self.m}, packed] needs m <= 16: packed in-block coordinates "
                              f"take 1, 2 or 4 bits, and {self.m - 1} needs more")

    @property
    def crd_bits(self) -> int:
        """Bits per stored coordinate when :attr:`packed` (1, 2 or 4: the fewest that hold ``m - 1``)."""
        return next(b for b in (1, 2, 4) if self.m <= 1 << b)

    @property
    def per_byte(self) -> int:
        """Packed coordinates per byte of ``crd``."""
        return 8 // self.crd_bits

    def mlir(self) -> str:
        return f"structured[{self.n}, {self.m}{', packed' if self.packed else ''}]"

    def buffer_width(self, part: str, pos_width: int, crd_width: int) -> int:
        """Packed coordinates live in bytes (int8) whatever the format's ``crdWidth``."""
        if self.packed and part == "crd":
            return 8
        return super().buffer_width(part, pos_width, crd_width)

    def num_positions(self, buffers: Mapping[str, np.ndarray], num_parents: int, size: int) -> int:
        """n slots per block."""
        return num_parents * self.n

    def position_range(self, cg, parent, parent_segment_end):
        from ..ir.loop_ir import binop

        lo = binop("mul", parent, self.n)
        return lo, binop("add", lo, self.n)

    def coordinate(self, cg, position):
        """``crd[position]``, or when packed: the ``crd_bits`` bits of slot ``position`` in its byte.

        The byte loads sign-extended (int8), but the bits read lie inside it, so the sign does not reach them."""
        if not self.packed:
            return super().coordinate(cg, position)
        from ..ir.loop_ir import binop

        shift = self.per_byte.bit_length() - 1
        byte = cg.load_index(cg.buffer("crd"), binop("shr", position, shift))
        at = binop("mul", binop("bitand", position, self.per_byte - 1), self.crd_bits)
        return binop("bitand", binop("shr", byte, at), (1 << self.crd_bits) - 1)

    def pack(self, crd: np.ndarray) -> np.ndarray:
        """Unpacked coordinates (one per slot) as the packed int8 ``crd`` buffer."""
        per, bits = self.per_byte, self.crd_bits
        c = np.asarray(crd, dtype=np.uint8)
        padded = np.zeros(-(-len(c) // per) * per, dtype=np.uint8)
        padded[: len(c)] = c
        shifts = (np.arange(per, dtype=np.uint8) * bits)[None, :]
        return np.bitwise_or.reduce(padded.reshape(-1, per) << shifts, axis=1).astype(np.uint8).view(np.int8)

    def unpack(self, crd: np.ndarray, slots: int) -> np.ndarray:
        """The first ``slots`` coordinates of a packed ``crd`` buffer, as int64."""
        per, bits = self.per_byte, self.crd_bits
        arr = np.asarray(crd)
        raw = arr.view(np.uint8) if arr.dtype.itemsize == 1 else arr.astype(np.uint8)
        shifts = (np.arange(per, dtype=np.uint8) * bits)[None, :]
        out = (raw[:, None] >> shifts) & ((1 << bits) - 1)
        return out.reshape(-1)[:slots].astype(_I64)

    def assemble(
        self, parent_pos: np.ndarray, coords: np.ndarray, num_parents: int, size: int, index_dtype: np.dtype
    ) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        """n slots per block: the block's entries plus the smallest unused coordinates as padding.

        Raises FormatError (with the block's parent position) when a block holds more
        than n entries: the pattern is not n:m.
        """
        n, m = self.n, self.m
        child, seg_parent, seg_coords = distinct_children(parent_pos, coords, True)
        counts = np.bincount(seg_parent, minlength=num_parents) if len(seg_parent) else np.zeros(num_parents, _I64)
        over = counts > n
        if over.any():
            p = int(np.argmax(over))
            raise located_error(
                f"has {int(counts[p])} nonzeros, but {self.mlir()} stores at most {n} per block of {m}: "
                f"the pattern is not {n}:{m}",
                p,
            )
        # used[p, c]: block p stores in-block coordinate c; pad with the first unused ones.
        used = np.zeros((num_parents, m), dtype=bool)
        used[seg_parent, seg_coords] = True
        rank_dtype = np.uint8 if m < 255 else _I64
        unused_rank = np.cumsum(~used, axis=1, dtype=rank_dtype)
        chosen = used | (~used & (unused_rank <= (n - counts)[:, None]))
        crd = np.nonzero(chosen)[1].astype(index_dtype)
        slot_rank = np.cumsum(chosen, axis=1, dtype=rank_dtype)[seg_parent, seg_coords].astype(_I64) - 1
        slots = seg_parent * n + slot_rank
        return {"crd": self.pack(crd) if self.packed else crd}, slots[child], num_parents * n

    def expand(
        self, buffers: Mapping[str, np.ndarray], parent_pos: np.ndarray, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All n slots of every block, padding included."""
        parent_pos = np.asarray(parent_pos, dtype=_I64)
        positions = (parent_pos[:, None] * self.n + np.arange(self.n, dtype=_I64)).ravel()
        parent_index = np.repeat(np.arange(len(parent_pos), dtype=_I64), self.n)
        crd = buffers["crd"]
        if self.packed:
            crd = self.unpack(crd, int(positions.max()) + 1 if len(positions) else 0)
        return parent_index, crd[positions].astype(_I64), positions

    def validate(self, buffers: Mapping[str, np.ndarray], num_parents: int, size: int, where: str) -> int:
        """len(crd) == n * num_parents, crd in [0, m), strictly increasing within a block.

        Packed: ``crd`` holds ``ceil(n * num_parents / per_byte)`` bytes whose unused last bits are zero."""
        crd = buffers["crd"]
        n = self.n
        if self.packed:
            per, slots = self.per_byte, num_parents * n
            nbytes = -(-slots // per)
            if len(crd) != nbytes:
                raise FormatError(f"{where}: crd has {len(crd)} bytes, expected {nbytes} ({n} per block, "
                                  f"{per} packed {self.crd_bits}-bit coordinates per byte)")
            if crd.dtype.itemsize > 1 and len(crd):
                # a byte given in a wider integer: int8 (-128..127) or uint8 (0..255) values only, else
                # the cast to the int8 buffer would keep its low 8 bits and drop the rest silently
                wide = np.asarray(crd, dtype=_I64) if crd.dtype.kind in "iu" else crd
                off = (wide < -128) | (wide > 255)
                if off.any():
                    k = int(np.argmax(off))
                    raise FormatError(f"{where}: crd[{k}]={int(wide[k])} is not a byte (packed coordinates come "
                                      "as int8 or uint8 values)")
            every = self.unpack(crd, nbytes * per)
            if every[slots:].any():
                raise FormatError(f"{where}: the unused bits after the last coordinate of crd are not zero")
            crd = every[:slots]
        elif len(crd) != num_parents * n:
            raise FormatError(f"{where}: crd has {len(crd)} entries, expected {num_parents * n} ({n} per block)")

        def named(k: int) -> str:   # a packed coordinate by its slot and the byte that holds it
            if not self.packed:
                return f"crd[{k}]={int(crd[k])}"
            return f"coordinate {k} (byte {k // self.per_byte} of crd)={int(crd[k])}"
        if not self.packed:
            check_coords_in_range(crd, min(size, self.m), where)
        elif (crd >= min(size, self.m)).any():   # unpacked bits: never negative
            k = int(np.argmax(crd >= min(size, self.m)))
            raise FormatError(f"{where}: {named(k)} is out of range [0, {min(size, self.m)})")
        if n > 1 and len(crd):
            blocks = crd.reshape(num_parents, n)
            bad = blocks[:, 1:] <= blocks[:, :-1]
            if bad.any():
                p, k = np.unravel_index(int(np.argmax(bad)), bad.shape)
                a = int(p) * n + int(k)
                raise FormatError(f"{where}: crd is not strictly increasing within block {int(p)}: "
                                  f"{named(a)}, {named(a + 1)}")
        return num_parents * n
