"""Target ``cpu``: loop IR -> LLVM IR (llvmlite) -> O3, vectorized, host-tuned object code in an ORC JIT.

Modules, one job each:

* :mod:`.codegen` — loop IR -> ``llvmlite.ir`` module (the kernel + its entry points, Python builtins)
* :mod:`.regtile`, :mod:`.panels`, :mod:`.pack` — register tiles of SpMM-like nests, their column
  panels (and per-thread column windows), aligned copies of the dense rows they read
* :mod:`.shortrows` — loops that sum a row's nonzeros, versioned by trip count (masked vectors when short)
* :mod:`.jit` — host target machine, O3 pass pipeline, object/assembly emission, JIT linking
* :mod:`.cache` — cache key, on-disk object cache, in-memory LRU, :data:`stats`
* :mod:`.kernel` — :class:`CPUKernel`, the call paths (Python builtin where CPython allows, ctypes else)
* :mod:`.team` — the native thread team that runs a parallel call's chunks

``CPUBackend().compile(kernel)`` looks the kernel up in memory, then on disk,
and only then generates and compiles it; ``stats`` counts each outcome.
"""

from __future__ import annotations

import threading
import time

from ...ir import loop_ir as L
from . import cache, codegen, jit
from .cache import LRU, stats
from .kernel import CPUKernel, fast_path_available, load

__all__ = ["CPUBackend", "CPUKernel", "clear_memory_cache", "fast_path_available", "stats"]

_MEMORY = LRU()
_COMPILE_LOCK = threading.Lock()


def clear_memory_cache() -> None:
    """Forget every kernel compiled in this process (kernels still referenced keep working)."""
    _MEMORY.clear()


def compile_kernel(kernel: L.Kernel) -> CPUKernel:
    """Compile (or fetch from the caches) one loop-IR kernel for the host CPU."""
    host = jit.host()
    key = cache.kernel_key(kernel, host)
    loaded = _MEMORY.get(key)
    if loaded is None:
        with _COMPILE_LOCK:
            loaded = _MEMORY.get(key)  # another thread may have finished it meanwhile
            if loaded is None:
                compiled = cache.disk_read(key)
                if compiled is not None:
                    try:
                        loaded = load(kernel, compiled, key)
                        stats.add("disk_hits")
                    except Exception as e:  # a cache entry LLVM cannot link: recompile
                        import warnings

                        warnings.warn(f"sparsec: cached object code for kernel {kernel.name!r} "
                                      f"({cache.entry_path(key)}) could not be loaded ({e}); recompiling",
                                      RuntimeWarning, stacklevel=3)
                        loaded = None
                if loaded is None:
                    t0 = time.perf_counter()
                    compiled = jit.compile_ir(codegen.generate_text(kernel), kernel.name)
                    loaded = load(kernel, compiled, key)
                    stats.add("compiles")
                    stats.add("compile_seconds", time.perf_counter() - t0)
                    cache.disk_write(key, compiled)
                _MEMORY.put(key, loaded)
                return CPUKernel(kernel, loaded)
    stats.add("memory_hits")
    return CPUKernel(kernel, loaded)


class CPUBackend:
    """Backend ``cpu``: JIT-compiled, vectorized kernels; the runtime runs parallel loops on threads."""

    name = "cpu"
    threads = True
    stages: tuple[str, ...] = ("llvm", "asm")

    def compile(self, kernel: L.Kernel) -> CPUKernel:
        return compile_kernel(kernel)
