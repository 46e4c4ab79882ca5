"""The reference backend: runs loop IR in the Python interpreter (slow, obviously right)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..ir import loop_ir as L
from ..ir.interp import run_kernel
from ..ir.loop_printer import kernel_text


@dataclass
class InterpKernel:
    """A loop-IR kernel executed by :func:`sparsec.ir.interp.run_kernel`."""

    kernel: L.Kernel

    def __call__(self, buffers: Mapping[str, Any], scalars: Mapping[str, int]) -> None:
        run_kernel(self.kernel, buffers, scalars)

    def dump(self, stage: str) -> str:
        return kernel_text(self.kernel)


class InterpBackend:
    """Backend ``interp``: no code generation at all."""

    name = "interp"
    threads = False
    stages: tuple[str, ...] = ()

    def compile(self, kernel: L.Kernel) -> InterpKernel:
        return InterpKernel(kernel)
