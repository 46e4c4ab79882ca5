"""``compressed`` level: ``pos`` (segment bounds per parent) and ``crd`` arrays.

"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..errors import FormatError
from ._helpers import (
    check_coords_in_range, check_pos_array, check_segment_order, distinct_children, segment_ranges,
)
from .base import Level, property_suffix, register

_I64 = np.dtype(np.int64)


@register
@dataclass(frozen=True)
class Compressed(Level):
    """Compressed level (CSR's columns): children of parent p are crd[pos[p]:pos[p+1]]."""

    kind = "compressed"
    buffers = ("pos", "crd")
    is_unique: bool = True
    is_ordered: bool = True

    @property
    def unique(self) -> bool:
        return self.is_unique

    @property
    def ordered(self) -> bool:
        return self.is_ordered

    def mlir(self) -> str:
        return "compressed" + property_suffix(self.is_unique, self.is_ordered)

    balance_part = "pos"

    def position_range(self, cg, parent, parent_segment_end):
        from ..ir.loop_ir import binop

        pos = cg.buffer("pos")
        return cg.load_index(pos, parent), cg.load_index(pos, binop("add", parent, 1))

    def assemble(
        self, parent_pos: np.ndarray, coords: np.ndarray, num_parents: int, size: int, index_dtype: np.dtype
    ) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        """Segments per parent; a unique level stores each (parent, coordinate) once."""
        child, seg_parent, seg_coords = distinct_children(parent_pos, coords, self.is_unique)
        counts = np.bincount(seg_parent, minlength=num_parents) if len(seg_parent) else np.zeros(num_parents, _I64)
        pos = np.zeros(num_parents + 1, dtype=index_dtype)
        np.cumsum(counts, out=pos[1:])
        crd = np.asarray(seg_coords).astype(index_dtype, copy=True)
        return {"pos": pos, "crd": crd}, child, len(crd)

    def expand(
        self, buffers: Mapping[str, np.ndarray], parent_pos: np.ndarray, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Children of each parent: positions pos[p] .. pos[p+1]-1."""
        pos, crd = buffers["pos"], buffers["crd"]
        parent_pos = np.asarray(parent_pos, dtype=_I64)
        parent_index, positions = segment_ranges(pos[parent_pos], pos[parent_pos + 1])
        n = len(positions)
        if n and positions[-1] - positions[0] == n - 1:  # one contiguous run (monotone pos): slice, no gather
            return parent_index, crd[positions[0] : positions[0] + n].astype(_I64), positions
        return parent_index, crd[positions].astype(_I64), positions

    def validate(self, buffers: Mapping[str, np.ndarray], num_parents: int, size: int, where: str) -> int:
        """pos length/monotonicity, pos[-1] == len(crd), crd range, order and uniqueness."""
        pos, crd = buffers["pos"], buffers["crd"]
        check_pos_array(pos, num_parents + 1, where)
        if int(pos[-1]) != len(crd):
            raise FormatError(f"{where}: pos[{len(pos) - 1}]={int(pos[-1])}, but crd has {len(crd)} entries")
        check_coords_in_range(crd, size, where)
        if len(crd) > 1:
            starts = np.zeros(len(crd), dtype=bool)
            starts[pos[:-1][pos[:-1] < len(crd)]] = True
            positions = np.arange(len(crd), dtype=_I64)
            check_segment_order(crd, positions, ~starts[1:], self.is_unique, self.is_ordered, where)
        return len(crd)
