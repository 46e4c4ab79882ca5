"""``singleton`` level: one coordinate per parent position (COO's trailing levels)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Level, property_suffix, register


@register
@dataclass(frozen=True)
class Singleton(Level):
    """Singleton level: position = parent position, coordinate = crd[position]."""

    kind = "singleton"
    buffers = ("crd",)
    is_unique: bool = True
    is_ordered: bool = True

    @property
    def unique(self) -> bool:
        return self.is_unique

    @property
    def ordered(self) -> bool:
        return self.is_ordered

    def mlir(self) -> str:
        return "singleton" + property_suffix(self.is_unique, self.is_ordered)
