"""``loose_compressed`` level: ``pos`` holds (lo, hi) pairs, so segments may have gaps.

sparsec builds it ELL-style: every parent gets ``width`` slots (the longest
segment), ``lo = parent * width`` and ``hi = lo + count``; padding slots hold
coordinate 0 and value 0. Buffers handed in by users may use any (lo, hi) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np

from ..errors import FormatError
from .base import Level, property_suffix, register
from ._helpers import check_coords_in_range, check_segment_order, distinct_children, segment_ranges

_I64 = np.dtype(np.int64)


@register
@dataclass(frozen=True)
class LooseCompressed(Level):
    """Loose compressed level: children of parent p are crd[pos[2p]:pos[2p+1]]."""

    kind = "loose_compressed"
    buffers = ("pos", "crd")
    is_unique: bool = True
    is_ordered: bool = True
    fills: ClassVar[bool] = False

    @property
    def unique(self) -> bool:
        return self.is_unique

    @property
    def ordered(self) -> bool:
        return self.is_ordered

    def mlir(self) -> str:
        return "loose_compressed" + property_suffix(self.is_unique, self.is_ordered)

    def position_range(self, cg, parent, parent_segment_end):
        from ..ir.loop_ir import binop

        pos, two = cg.buffer("pos"), binop("mul", parent, 2)
        return cg.load_index(pos, two), cg.load_index(pos, binop("add", two, 1))

    def assemble(
        self, parent_pos: np.ndarray, coords: np.ndarray, num_parents: int, size: int, index_dtype: np.dtype
    ) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        """ELL layout: ``width`` slots per parent, the first ``count`` of them used."""
        child, seg_parent, seg_coords = distinct_children(parent_pos, coords, self.is_unique)
        counts = np.bincount(seg_parent, minlength=num_parents) if len(seg_parent) else np.zeros(num_parents, _I64)
        width = int(counts.max()) if num_parents and len(seg_parent) else 0
        starts = np.cumsum(counts) - counts
        rank = np.arange(len(seg_parent), dtype=_I64) - starts[seg_parent]
        slot = seg_parent * width + rank
        crd = np.zeros(num_parents * width, dtype=index_dtype)
        crd[slot] = seg_coords
        lo = np.arange(num_parents, dtype=_I64) * width
        pos = np.empty(2 * num_parents, dtype=index_dtype)
        pos[0::2] = lo
        pos[1::2] = lo + counts
        return {"pos": pos, "crd": crd}, slot[child], num_parents * width

    def expand(
        self, buffers: Mapping[str, np.ndarray], parent_pos: np.ndarray, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Children of parent p: positions pos[2p] .. pos[2p+1]-1 (padding slots are skipped)."""
        pos, crd = buffers["pos"], buffers["crd"]
        parent_pos = np.asarray(parent_pos, dtype=_I64)
        parent_index, positions = segment_ranges(pos[2 * parent_pos], pos[2 * parent_pos + 1])
        return parent_index, crd[positions].astype(_I64), positions

    def validate(self, buffers: Mapping[str, np.ndarray], num_parents: int, size: int, where: str) -> int:
        """pos has 2*num_parents entries, 0 <= lo <= hi <= len(crd), stored crd in range and ordered."""
        pos, crd = buffers["pos"], buffers["crd"]
        if len(pos) != 2 * num_parents:
            raise FormatError(
                f"{where}: pos has {len(pos)} entries, expected {2 * num_parents} (a lo, hi pair per parent position)"
            )
        lo, hi = pos[0::2], pos[1::2]
        for bad, msg in (
            (lo < 0, lambda p: f"pos[{2 * p}]={int(lo[p])} is negative"),
            (lo > hi, lambda p: f"lo > hi for parent {p}: pos[{2 * p}]={int(lo[p])} > pos[{2 * p + 1}]={int(hi[p])}"),
            (hi > len(crd), lambda p: f"pos[{2 * p + 1}]={int(hi[p])} is past the end of crd ({len(crd)} entries)"),
        ):
            if bad.any():
                raise FormatError(f"{where}: {msg(int(np.argmax(bad)))}")
        seg, positions = segment_ranges(lo, hi)
        check_coords_in_range(crd, size, where, positions)
        same = seg[1:] == seg[:-1]
        check_segment_order(crd, positions, same, self.is_unique, self.is_ordered, where)
        return len(crd)
