"""``n_out_of_m(n, m)`` level: n in-block coordinates for every block of m (2:4 sparsity).

It sits under a ``floordiv m`` dense level of the same dimension and is addressed
as ``dim mod m``. Each parent position owns exactly ``n`` slots: positions
``parent * n .. parent * n + n - 1``; ``crd`` holds the in-block coordinate
(0 <= crd < m) of each slot, strictly increasing within a block. Blocks with fewer
than n nonzeros are padded with explicit zeros at unused in-block coordinates.
MLIR spells it ``structured[n, m]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FormatError
from .base import Level, register


@register
@dataclass(frozen=True)
class NOutOfM(Level):
    """N:M structured level with fixed n slots per block of m coordinates."""

    kind = "n_out_of_m"
    buffers = ("crd",)
    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.m, int)) or not 0 < self.n <= self.m:
            raise FormatError(f"n_out_of_m needs integers 0 < n <= m, got n={self.n!r}, m={self.m!r}")

    def mlir(self) -> str:
        return f"structured[{self.n}, {self.m}]"
