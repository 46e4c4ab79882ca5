"""``singleton`` level: one coordinate per parent position (COO's trailing levels)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np

from ..errors import FormatError
from .base import Level, property_suffix, register
from ._helpers import check_coords_in_range, located_error

_I64 = np.dtype(np.int64)


@register
@dataclass(frozen=True)
class Singleton(Level):
    """Singleton level: position = parent position, coordinate = crd[position]."""

    kind = "singleton"
    buffers = ("crd",)
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
        return "singleton" + property_suffix(self.is_unique, self.is_ordered)

    single_child = True

    def position_range(self, cg, parent, parent_segment_end):
        from ..ir.loop_ir import binop

        # Under a non-unique parent (COO) the children of a run of equal coordinates are that run.
        if parent_segment_end is not None:
            return parent, parent_segment_end
        return parent, binop("add", parent, 1)

    def assemble(
        self, parent_pos: np.ndarray, coords: np.ndarray, num_parents: int, size: int, index_dtype: np.dtype
    ) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        """crd[parent] = coordinate; two different coordinates under one parent are an error."""
        parent_pos = np.asarray(parent_pos, dtype=_I64)
        if len(coords) > 1:
            clash = (parent_pos[1:] == parent_pos[:-1]) & (coords[1:] != coords[:-1])
            if clash.any():
                k = int(np.argmax(clash))
                raise located_error(
                    f"has two coordinates ({int(coords[k])} and {int(coords[k + 1])}), "
                    "but a singleton level stores one coordinate per parent",
                    int(parent_pos[k]),
                )
        if size == 0 and num_parents > 0:
            # a parent without a child keeps the filler coordinate 0, which an empty dimension does not have
            raise FormatError(f"{num_parents} parent positions need a coordinate each (a singleton level stores one "
                              "per parent position), but the dimension has extent 0")
        crd = np.zeros(num_parents, dtype=index_dtype)
        crd[parent_pos] = coords
        return {"crd": crd}, parent_pos, num_parents

    def expand(
        self, buffers: Mapping[str, np.ndarray], parent_pos: np.ndarray, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exactly one child per parent, at the parent's own position."""
        parent_pos = np.asarray(parent_pos, dtype=_I64)
        coords = buffers["crd"][parent_pos].astype(_I64)
        return np.arange(len(parent_pos), dtype=_I64), coords, parent_pos

    def validate(self, buffers: Mapping[str, np.ndarray], num_parents: int, size: int, where: str) -> int:
        """len(crd) == num_parents and every coordinate in [0, size)."""
        crd = buffers["crd"]
        if len(crd) != num_parents:
            raise FormatError(f"{where}: crd has {len(crd)} entries, expected {num_parents} (one per parent position)")
        check_coords_in_range(crd, size, where)
        return num_parents
