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
