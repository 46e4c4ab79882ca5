"""``dense`` level: stores nothing but its size; every coordinate is present."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Level, register


@register
@dataclass(frozen=True)
class Dense(Level):
    """A dense level: position = parent_position * size + coordinate."""

    kind = "dense"
    buffers = ()
    is_full = True
    can_locate = True

    def mlir(self) -> str:
        return "dense"
