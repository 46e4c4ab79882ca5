"""Write generated sources to the cache directory, import them, launch them.

``triton.jit`` needs a real source file (it reads the function's source with
``inspect``), so each generated kernel is written to
``$SPARSEC_CACHE_DIR/triton/<kernel>_<hash>.py`` (default ``~/.cache/sparsec/triton``),
named by the SHA-256 of its text, and imported with :mod:`importlib`. A file that
already exists with that name is reused (the name is the content), so several
processes can share the directory; writes go through a temporary file and an atomic
rename. Whether Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``) is
decided when the module is imported, so modules are cached per (hash, interpret),
at most ``$SPARSEC_KERNEL_CACHE_SIZE`` of them (an evicted module leaves ``sys.modules``;
kernels that hold its function keep it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

from ...errors import BackendError
from ...kernel_cache import LRUCache

def _forget(key: tuple[str, bool], mod: ModuleType) -> None:
    if sys.modules.get(mod.__name__) is mod:
        sys.modules.pop(mod.__name__, None)   # kernels holding its function keep it alive


#: imported source modules, at most $SPARSEC_KERNEL_CACHE_SIZE (sparsec.kernel_cache), LRU first out
_MODULES = LRUCache(on_evict=_forget)
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """``$SPARSEC_CACHE_DIR/triton`` or ``~/.cache/sparsec/triton`` (created on demand)."""
    root = os.environ.get("SPARSEC_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "sparsec"
    return base / "triton"


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def source_path(name: str, source: str) -> Path:
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    return cache_dir() / f"{name}_{digest}.py"


def load_kernel(name: str, source: str, fn_name: str):
    """The ``@triton.jit`` function ``fn_name`` defined by ``source`` (written and imported once)."""
    path = source_path(name, source)
    key = (str(path), interpreting())
    with _LOCK:
        mod = _MODULES.get(key)
        if mod is None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists() or path.read_text() != source:
                    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
                    with os.fdopen(fd, "w") as f:
                        f.write(source)
                    os.replace(tmp, path)
            except OSError as e:
                raise BackendError(f"cannot write the generated Triton source to {path}: {e}; "
                                   "set SPARSEC_CACHE_DIR to a writable directory") from None
            modname = f"sparsec_triton_{path.stem}_{'i' if key[1] else 'c'}"
            spec = importlib.util.spec_from_file_location(modname, path)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            sys.modules[modname] = mod
            spec.loader.exec_module(mod)
            _MODULES.put(key, mod)
    return getattr(mod, fn_name)


def _hooks_installed(hook) -> bool:
    """Triton >= 3.6 keeps launch hooks in an always-present HookChain; older ones use None."""
    if hook is None:
        return False
    calls = getattr(hook, "calls", None)
    return calls is None or len(calls) > 0


class DirectLaunch:
    """Launch an already compiled kernel without Triton's per-call argument binding.

    ``fn[grid](...)`` re-binds and re-specializes every argument (~10-17 us of Python on the
    GPU hosts). A memoized launch reuses the same input tensors, or tensors with the same
    alignment and the same specialization, and fresh outputs from torch's allocator (aligned),
    so the compiled kernel from the first launch is the right one: its ``run`` takes every
    argument in parameter order, constexprs included (Triton >= 3.3), which needs every
    constexpr after the runtime parameters. Used only when no launch hooks are installed; any
    failure disables it and falls back to ``fn[grid]``.
    """

    def __init__(self, ck, grid: tuple[int, ...], consts: list, driver, device: int):
        self.ck, self.consts, self.driver, self.device = ck, consts, driver, device
        self.grid = tuple(grid) + (1,) * (3 - len(grid))
        self.ok = True

    @staticmethod
    def make(ck, grid: tuple[int, ...], consts: list) -> "DirectLaunch | None":
        """A direct launcher of ``ck`` (the compiled kernel a ``fn[grid](...)`` call returned) over ``grid``
        with the constexpr values ``consts`` (signature order), or None where it cannot be used."""
        if ck is None or interpreting() or os.environ.get("SPARSEC_TRITON_DIRECT_LAUNCH", "1") == "0":
            return None
        try:
            from triton import knobs
            from triton.runtime import driver

            if _hooks_installed(knobs.runtime.launch_enter_hook) or _hooks_installed(knobs.runtime.launch_exit_hook):
                return None
            if not all(hasattr(ck, a) for a in ("run", "function", "packed_metadata")):
                return None
            return DirectLaunch(ck, grid, consts, driver, driver.active.get_current_device())
        except Exception:
            return None

    def __call__(self, args: list) -> bool:
        """Launch with the runtime arguments ``args`` (parameter order); False if it did not run."""
        if not self.ok:
            return False
        try:
            stream = self.driver.active.get_current_stream(self.device)
            ck = self.ck
            ck.run(*self.grid, stream, ck.function, ck.packed_metadata, None, None, None, *args, *self.consts)
            return True
        except Exception:
            self.ok = False
            return False
