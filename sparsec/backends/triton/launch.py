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

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

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
    def make(ck, grid: tuple[int, ...], consts: list | None) -> "DirectLaunch | None":
        """A direct launcher of ``ck`` (the compiled kernel a ``fn[grid](...)`` call returned) over ``grid``
        with the constexpr values ``consts`` (signature order, :func:`constexpr_values`), or None where it
        cannot be used (``consts`` None included)."""
        if ck is None or consts is None or interpreting() or \
                os.environ.get("SPARSEC_TRITON_DIRECT_LAUNCH", "1") == "0":
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

    def __call__(self, args: list, grid: tuple[int, ...] | None = None) -> bool:
        """Launch with the runtime arguments ``args`` (parameter order) over ``grid`` (default: the one
        given at construction); False if it did not run."""
        if not self.ok:
            return False
        try:
            stream = self.driver.active.get_current_stream(self.device)
            ck = self.ck
            g = self.grid if grid is None else tuple(grid) + (1,) * (3 - len(grid))
            ck.run(*g, stream, ck.function, ck.packed_metadata, None, None, None, *args, *self.consts)
            return True
        except Exception:
            self.ok = False
            return False


def constexpr_values(fn: Any, kwargs: Mapping[str, Any]) -> list | None:
    """The values ``kwargs`` gives ``fn``'s ``tl.constexpr`` parameters, in signature order: what a compiled
    kernel's ``run`` takes after the runtime arguments. None unless every constexpr is given and they
    all follow the runtime parameters (other keys, such as ``num_warps``, are launch options)."""
    names, positions = getattr(fn, "arg_names", None), getattr(fn, "constexprs", None)
    if names is None or positions is None:      # not a Triton JITFunction
        return None
    consts = [names[i] for i in sorted(positions)]
    if consts != names[len(names) - len(consts):] or any(n not in kwargs for n in consts):
        return None
    return [kwargs[n] for n in consts]


def specialization(args: Sequence[Any]) -> tuple:
    """What a launch's compiled kernel depends on in its runtime arguments, at least as finely as Triton
    specializes them: a tensor's dtype and 16-byte alignment; an integer's width (32 or 64 bits,
    signed or not), whether it is 1 and whether it is a multiple of 16; a float or bool's type; None.
    Two launches with equal keys (and equal constexprs, options and current device) run the same
    compiled kernel. Kept cheap: it runs on every launch (about 0.3 us per argument)."""
    key = []
    add = key.append
    for a in args:
        t = type(a)
        if t is int:
            add(2 if a == 1 else 3 + (a % 16 == 0) + 2 * (-2**31 <= a < 2**31) + 4 * (a < 2**63))
        elif t is bool or t is float or a is None:
            add(t)
        elif hasattr(a, "data_ptr"):
            add((a.dtype, a.data_ptr() % 16 == 0))
        else:
            add((t, a))     # anything else only matches itself
    return tuple(key)


def _current_device() -> int:
    """The current CUDA device index (compiled kernels are per device); 0 without a GPU."""
    import torch

    return torch.cuda.current_device() if _cuda_present() else 0


@functools.cache
def _cuda_present() -> bool:
    """torch sees a CUDA device (asked once: each ask reads the environment and NVML)."""
    import torch

    return torch.cuda.is_available()


class SpecializedLaunches:
    """Launches of one ``@triton.jit`` function with fixed constexprs and options, each argument
    specialization's compiled kernel launched directly (:class:`DirectLaunch`) after its first call.

    For templates whose arguments change from call to call (new operands, other sizes): the first
    launch of a specialization goes through ``fn[grid]`` (Triton binds, compiles or finds the kernel);
    later ones with the same :func:`specialization` of their runtime arguments skip Triton's binding.
    ``fn``'s constexprs must all follow its runtime parameters; otherwise every launch is ``fn[grid]``.
    """

    def __init__(self, fn, consts: Mapping[str, Any], **options: Any):
        self.fn, self.consts, self.options = fn, dict(consts), options
        self.ordered = constexpr_values(fn, self.consts)     # None: every launch binds
        self._compiled: dict[tuple, Any] = {}

    def __call__(self, grid: tuple[int, ...], *args: Any) -> None:
        """Launch over ``grid`` with the runtime arguments ``args`` (parameter order) on the current device."""
        key = (_current_device(), specialization(args)) if self.ordered is not None else None
        direct = self._compiled.get(key) if key is not None else None
        if direct is not None and direct(list(args), grid):
            return
        ck = self.fn[grid](*args, **self.consts, **self.options)
        if key is not None and direct is None:
            if len(self._compiled) >= 64:
                self._compiled.clear()
            made = DirectLaunch.make(ck, grid, self.ordered)
            if made is not None:
                self._compiled[key] = made
