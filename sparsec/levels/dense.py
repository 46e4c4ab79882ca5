"""``dense`` level: stores nothing but its size; every coordinate is present."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np

from .base import Level, register

_I64 = np.dtype(np.int64)


@register
@dataclass(frozen=True)
class Dense(Level):
    """A dense level: position = parent_position * size + coordinate."""

    kind = "dense"
    buffers = ()
    is_full = True
    can_locate = True
    #: positions exist whether or not an entry was put there (absent ones hold 0),
    #: so a stored zero under this level is filler, not an explicit entry.
    fills: ClassVar[bool] = True

    def mlir(self) -> str:
        return "dense"

    def assemble(
        self, parent_pos: np.ndarray, coords: np.ndarray, num_parents: int, size: int, index_dtype: np.dtype
    ) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        """No buffers; all ``size`` positions of every parent exist."""
        child = np.asarray(parent_pos, dtype=_I64) * size + np.asarray(coords, dtype=_I64)
        return {}, child, num_parents * size

    def expand(
        self, buffers: Mapping[str, np.ndarray], parent_pos: np.ndarray, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every coordinate 0..size-1 under every parent."""
        parent_pos = np.asarray(parent_pos, dtype=_I64)
        n = len(parent_pos)
        parent_index = np.repeat(np.arange(n, dtype=_I64), size)
        coords = np.tile(np.arange(size, dtype=_I64), n)
        return parent_index, coords, np.repeat(parent_pos * size, size) + coords

    def validate(self, buffers: Mapping[str, np.ndarray], num_parents: int, size: int, where: str) -> int:
        """Nothing to check; the level has num_parents * size positions."""
        return num_parents * size
