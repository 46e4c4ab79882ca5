"""Caches of compiled kernels: statistics, the on-disk object cache and the in-memory LRU.

**Key.** :func:`kernel_key` hashes (SHA-256) everything the object code depends
on: the kernel's loop-IR text and the ``repr`` of its parameters and body (which
also carries every node's dtype), the host target triple, CPU name and feature
string, the LLVM and llvmlite versions, ``sparsec.__version__``,
:data:`~.codegen.CODEGEN_VERSION` / :data:`CACHE_FORMAT`, and a digest of the source of
the modules that generate the code (:data:`_GENERATORS`): an edited code generator whose
version was not bumped (a tuning constant, a work in progress) does not load the object
code of the previous one. (It did: a 1x1-convolution benchmark once timed a stale kernel.)

**Disk.** One file per kernel, ``<cache dir>/cpu/<key>.bin``, where the cache dir
is ``$SPARSEC_CACHE_DIR`` if set (an empty value disables the disk cache), else
``$XDG_CACHE_HOME/sparsec``, else ``~/.cache/sparsec``. A file is a 52-byte header
(magic ``SPARSECK``, u32 format version, u64 payload length, SHA-256 of the
payload) and a payload of length-prefixed sections: the key (checked against the
file name's key), the object code, the optimized LLVM IR and the assembly (empty
until the first ``dump("asm")``, which emits it from the optimized IR and
rewrites the entry, since emitting it on every compile would cost as much as the
object code itself). Files
are written to a unique temporary name in the same directory and renamed with
``os.replace``, so concurrent writers (threads or processes) never expose a
partial file. A file whose header, length, checksum or key does not match gives
a ``RuntimeWarning`` naming the file, is removed, and the kernel is recompiled
(and written again).

**Memory.** :class:`LRU` maps keys to loaded kernels; it holds at most
``$SPARSEC_CPU_CACHE_SIZE`` entries, else ``$SPARSEC_KERNEL_CACHE_SIZE`` (default
256; see :mod:`sparsec.kernel_cache`). Evicting an entry drops the cache's
reference to its JIT library; the library is unloaded once no compiled kernel
refers to it any more (llvmlite keeps ~10 KiB per linked library: its emptied
JITDylib cannot be removed from the session).
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...ir import loop_ir as L
from ...ir.loop_printer import kernel_text
from . import shortrows
from .codegen import CODEGEN_VERSION
from .jit import Compiled, Host

#: bump when the file layout changes.
CACHE_FORMAT = 1
_MAGIC = b"SPARSECK"
_HEADER = struct.Struct("<8sIQ32s")  # magic, format, payload length, sha256(payload)
_LEN = struct.Struct("<Q")


@dataclass
class Stats:
    """Counters of the CPU backend's caches (per process; thread-safe increments)."""

    compiles: int = 0        #: kernels compiled by LLVM (cache misses)
    memory_hits: int = 0     #: compile() answered from the in-memory cache
    disk_hits: int = 0       #: kernels loaded from the disk cache
    disk_writes: int = 0     #: cache files written
    corrupt_files: int = 0   #: cache files rejected (bad header, length, checksum or key)
    evictions: int = 0       #: entries dropped from the in-memory cache
    compile_seconds: float = 0.0  #: time spent in LLVM compiling (misses only)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: float = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def reset(self) -> None:
        """Zero every counter (tests)."""
        with self._lock:
            for n in ("compiles", "memory_hits", "disk_hits", "disk_writes", "corrupt_files", "evictions"):
                setattr(self, n, 0)
            self.compile_seconds = 0.0

    def snapshot(self) -> dict[str, float]:
        """The counters as a dict."""
        with self._lock:
            return {n: getattr(self, n) for n in ("compiles", "memory_hits", "disk_hits", "disk_writes",
                                                  "corrupt_files", "evictions", "compile_seconds")}


#: the CPU backend's counters (``sparsec.backends.cpu.stats``).
stats = Stats()


# ------------------------------------------------------------------------------------- key
#: the modules whose source decides the generated code (hashed into every key)
_GENERATORS = ("codegen.py", "regtile.py", "panels.py", "pack.py", "shortrows.py")
_SOURCE_DIGEST: str | None = None


def source_digest() -> str:
    """SHA-256 of the code generators' source (read once per process)."""
    global _SOURCE_DIGEST
    if _SOURCE_DIGEST is None:
        h = hashlib.sha256()
        here = Path(__file__).parent
        for name in _GENERATORS:
            try:
                h.update((here / name).read_bytes())
            except OSError:  # installed without sources: CODEGEN_VERSION alone tells the versions apart
                h.update(name.encode())
        _SOURCE_DIGEST = h.hexdigest()
    return _SOURCE_DIGEST

def kernel_key(kernel: L.Kernel, host: Host) -> str:
    """Hex SHA-256 of everything the kernel's object code depends on."""
    import sparsec

    h = hashlib.sha256()
    for part in (f"sparsec {sparsec.__version__}", f"codegen {CODEGEN_VERSION} {source_digest()}",
                 f"short rows {shortrows.pays_off()}",
                 f"cache {CACHE_FORMAT}", host.identity(), kernel_text(kernel), repr(kernel.params),
                 repr(kernel.body)):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


# ------------------------------------------------------------------------------------- disk
def cache_dir() -> Path | None:
    """Directory of the disk cache (None when disabled by ``SPARSEC_CACHE_DIR=""``)."""
    env = os.environ.get("SPARSEC_CACHE_DIR")
    if env is not None:
        return Path(env).expanduser() if env.strip() else None
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sparsec"


def entry_path(key: str) -> Path | None:
    """File holding the kernel with ``key`` (it may not exist)."""
    d = cache_dir()
    return None if d is None else d / "cpu" / f"{key}.bin"


def _pack(key: str, c: Compiled) -> bytes:
    parts = [key.encode("ascii"), c.obj, c.llvm_ir.encode("utf-8"), c.asm.encode("utf-8")]
    payload = b"".join(_LEN.pack(len(p)) + p for p in parts)
    return _HEADER.pack(_MAGIC, CACHE_FORMAT, len(payload), hashlib.sha256(payload).digest()) + payload


def _unpack(data: bytes, key: str) -> Compiled:
    """Parse a cache file; raises ValueError saying what is wrong."""
    if len(data) < _HEADER.size:
        raise ValueError(f"truncated header ({len(data)} bytes)")
    magic, fmt, length, digest = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise ValueError("bad magic")
    if fmt != CACHE_FORMAT:
        raise ValueError(f"format {fmt}, expected {CACHE_FORMAT}")
    payload = data[_HEADER.size:]
    if len(payload) != length:
        raise ValueError(f"payload is {len(payload)} bytes, header says {length}")
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError("checksum mismatch")
    parts = []
    pos = 0
    for _ in range(4):
        if pos + _LEN.size > len(payload):
            raise ValueError("truncated section")
        (n,) = _LEN.unpack_from(payload, pos)
        pos += _LEN.size
        if pos + n > len(payload):
            raise ValueError("truncated section")
        parts.append(payload[pos:pos + n])
        pos += n
    if parts[0].decode("ascii", "replace") != key:
        raise ValueError("key mismatch")
    return Compiled(parts[1], parts[2].decode("utf-8"), parts[3].decode("utf-8"))


def disk_read(key: str) -> Compiled | None:
    """The cached compilation of ``key``, or None (missing, disabled, or corrupt: warns and removes)."""
    path = entry_path(key)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # no entry (or no cache dir: disk_write warns once)
        return None
    except OSError as e:
        warnings.warn(f"sparsec: cannot read kernel cache file {path}: {e}", RuntimeWarning, stacklevel=4)
        return None
    try:
        return _unpack(data, key)
    except ValueError as e:
        stats.add("corrupt_files")
        warnings.warn(f"sparsec: ignoring corrupt kernel cache file {path} ({e}); recompiling", RuntimeWarning,
                      stacklevel=4)
        try:
            path.unlink()
        except OSError:
            pass
        return None


_WRITE_WARNED = False


def disk_write(key: str, c: Compiled) -> bool:
    """Store a compilation atomically (temp file + ``os.replace``); False if the cache is unwritable."""
    global _WRITE_WARNED
    path = entry_path(key)
    if path is None:
        return False
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(_pack(key, c))
        os.replace(tmp, path)
        tmp = None
        stats.add("disk_writes")
        return True
    except OSError as e:
        if not _WRITE_WARNED:
            _WRITE_WARNED = True
            warnings.warn(f"sparsec: cannot write the kernel cache under {path.parent} ({e}); "
                          "compiled kernels will not be reused across processes", RuntimeWarning, stacklevel=4)
        return False
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


# ------------------------------------------------------------------------------------- memory
def _capacity() -> int:
    from ...kernel_cache import kernel_cache_size

    if os.environ.get("SPARSEC_CPU_CACHE_SIZE"):
        return kernel_cache_size("SPARSEC_CPU_CACHE_SIZE")
    return kernel_cache_size()


class LRU:
    """A thread-safe bounded mapping key -> loaded kernel, least recently used evicted first."""

    def __init__(self, capacity: int | None = None):
        self.capacity = capacity or _capacity()
        self._d: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: str, value: Any) -> None:
        evicted = []
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.capacity:
                evicted.append(self._d.popitem(last=False)[1])
        if evicted:
            stats.add("evictions", len(evicted))
        # ``evicted`` goes out of scope here, outside the lock: the last reference to a
        # JIT library may be dropped, which unloads it.

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def __len__(self) -> int:
        return len(self._d)
