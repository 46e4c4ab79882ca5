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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np

from ..errors import FormatError
from .base import Level, register
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

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.m, int)) or not 0 < self.n <= self.m:
            raise FormatError(f"n_out_of_m needs integers 0 < n <= m, got n={self.n!r}, m={self.m!r}")

    def mlir(self) -> str:
        return f"structured[{self.n}, {self.m}]"

    def position_range(self, cg, parent, parent_segment_end):
        from ..ir.loop_ir import binop

        lo = binop("mul", parent, self.n)
        return lo, binop("add", lo, self.n)

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
        return {"crd": crd}, slots[child], num_parents * n

    def expand(
        self, buffers: Mapping[str, np.ndarray], parent_pos: np.ndarray, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All n slots of every block, padding included."""
        parent_pos = np.asarray(parent_pos, dtype=_I64)
        positions = (parent_pos[:, None] * self.n + np.arange(self.n, dtype=_I64)).ravel()
        parent_index = np.repeat(np.arange(len(parent_pos), dtype=_I64), self.n)
        return parent_index, buffers["crd"][positions].astype(_I64), positions

    def validate(self, buffers: Mapping[str, np.ndarray], num_parents: int, size: int, where: str) -> int:
        """len(crd) == n * num_parents, crd in [0, m), strictly increasing within a block."""
        crd = buffers["crd"]
        n = self.n
        if len(crd) != num_parents * n:
            raise FormatError(f"{where}: crd has {len(crd)} entries, expected {num_parents * n} ({n} per block)")
        check_coords_in_range(crd, min(size, self.m), where)
        if n > 1 and len(crd):
            blocks = crd.reshape(num_parents, n)
            bad = blocks[:, 1:] <= blocks[:, :-1]
            if bad.any():
                p, k = np.unravel_index(int(np.argmax(bad)), bad.shape)
                a = int(p) * n + int(k)
                raise FormatError(
                    f"{where}: crd is not strictly increasing within block {int(p)}: "
                    f"crd[{a}]={int(crd[a])}, crd[{a + 1}]={int(crd[a + 1])}"
                )
        return num_parents * n
