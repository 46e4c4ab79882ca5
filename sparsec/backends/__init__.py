"""Backends turn one loop-IR kernel into something the runtime can call.

A backend is an object with ``name``, ``threads`` (True when the runtime should
split parallel loops across CPU threads; False when the backend parallelizes
itself, as a GPU grid does) and ``compile(kernel) -> CompiledKernel``. A
compiled kernel is called as ``ck(buffers, scalars)`` and can ``dump(stage)``
its generated code. Targets:

* ``"cpu"``: LLVM IR through llvmlite, JIT-compiled, vectorized (:mod:`.cpu`)
* ``"triton"``: generated Triton source (:mod:`.triton`); on a machine without a
  GPU it runs in Triton's interpreter when ``TRITON_INTERPRET=1``
* ``"interp"``: the reference loop-IR interpreter (slow; for tests)
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from ..errors import BackendError
from ..ir import loop_ir as L


class CompiledKernel(Protocol):
    """A kernel ready to run: ``ck(buffers, scalars)``; ``ck.dump(stage)`` shows generated code."""

    kernel: L.Kernel

    def __call__(self, buffers: Mapping[str, Any], scalars: Mapping[str, int]) -> None: ...

    def dump(self, stage: str) -> str: ...


class Backend(Protocol):
    name: str
    threads: bool
    stages: tuple[str, ...]

    def compile(self, kernel: L.Kernel) -> CompiledKernel: ...


_BACKENDS: dict[str, Any] = {}


def get_backend(target: str) -> Backend:
    """The backend for ``target`` (``cpu``, ``triton`` or ``interp``), created once."""
    if not isinstance(target, str):
        raise BackendError(f"target must be a string, got {type(target).__name__}")
    key = target.lower()
    if key not in _BACKENDS:
        if key == "interp":
            from .interp import InterpBackend

            _BACKENDS[key] = InterpBackend()
        elif key == "cpu":
            from .cpu import CPUBackend

            _BACKENDS[key] = CPUBackend()
        elif key in ("triton", "gpu", "cuda"):
            from .triton import TritonBackend

            _BACKENDS[key] = TritonBackend()
        else:
            raise BackendError(f"unknown target {target!r}; use 'cpu', 'triton' or 'interp'")
    return _BACKENDS[key]
