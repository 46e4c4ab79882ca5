"""``loose_compressed`` level: ``pos`` holds (lo, hi) pairs, so segments may have gaps.

sparsec builds it ELL-style: every parent gets ``width`` slots (the longest
segment), ``lo = parent * width`` and ``hi = lo + count``; padding slots hold
coordinate 0 and value 0. Buffers handed in by users may use any (lo, hi) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Level, property_suffix, register


@register
@dataclass(frozen=True)
class LooseCompressed(Level):
    """Loose compressed level: children of parent p are crd[pos[2p]:pos[2p+1]]."""

    kind = "loose_compressed"
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
        return "loose_compressed" + property_suffix(self.is_unique, self.is_ordered)
