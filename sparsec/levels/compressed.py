"""``compressed`` level: ``pos`` (segment bounds per parent) and ``crd`` arrays."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Level, property_suffix, register


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
