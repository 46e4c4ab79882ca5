"""A JIT-compiled kernel and its call path from Python.

Each kernel's object code holds the kernel and its entry points (see :mod:`.codegen`): the kernel
itself (buffers as pointers, scalars as ``i64``) and an *entry point* that takes
the buffers as one Python tuple of numpy arrays plus a small ``sig`` array and
reads each array's data pointer (after checking its type, dtype object, rank and
flags) itself. Both are called through ``ctypes.CFUNCTYPE`` function objects,
which release the GIL during the call, so several threads can run kernels (the
same one included) at once; nothing in the call path is mutable.

**Why the entry point.** Getting a data pointer from numpy in Python is slow
(``arr.ctypes.data`` costs about 3 µs per array with numpy 2), while ctypes
passes a tuple as one pointer; the per-call cost is then building the tuple and
converting the scalars (passed as ``c_void_p``, the cheapest integer conversion
ctypes has; the ABI is the same as ``i64``). When the entry point rejects an
array (a subclass, a non-native dtype object, a strided view, a read-only
output...), the **checked path** validates every buffer in Python, raises a
:class:`~sparsec.errors.BackendError` naming a bad one, copies inputs that are
merely non-contiguous or unaligned, and calls the kernel with the pointers.

The object layouts the entry point relies on (where ``PyObject`` keeps its type,
where a tuple keeps its size and items, where ``PyArrayObject`` keeps ``data``,
``nd``, ``descr`` and ``flags``, the numpy ABI every C extension compiles against)
are *probed* once per process and passed in ``sig``; if a probe disagrees, the
entry point is never used and every call takes the checked path.

**Two more forms of the entry point** (same checks, same kernel):

* a ``METH_FASTCALL`` function that CPython calls as a builtin (:attr:`CPUKernel.entry`,
  used by :mod:`sparsec.fastcall`): Python ints in, a Python int out, the GIL released
  around the kernel. A ctypes call costs ~1.3 µs of the ~3 µs a small SpMV takes in
  all; the builtin ~0.3 µs. It reads the C-API functions it calls (int conversions,
  ``PyEval_SaveThread``/``RestoreThread``) from a table that :func:`load` fills after
  linking, so the cached object code names no interpreter symbol;
* a *packed* one, ``i32 packed(arrays, sig, int64 *scalars)``, one signature for every
  kernel: what the native thread team (:mod:`.team`) runs for each chunk.
"""

from __future__ import annotations

import ctypes
import operator
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BackendError
from ...ir import loop_ir as L
from . import codegen, jit, panels
from .jit import Compiled

_NP_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64, "int8": np.int8,
              "int16": np.int16, "int32": np.int32, "int64": np.int64, "index": np.int64, "bool": np.bool_}

# numpy's array flags (numpy/ndarraytypes.h), verified by the probe below.
_C_CONTIGUOUS = 0x0001
_ALIGNED = 0x0100
_WRITEABLE = 0x0400


def _probe_layout() -> tuple[int, ...] | None:
    """Offsets (ob_type, ndarray type address, tuple items, data, nd, descr, flags, tuple type address), or None."""
    try:
        def rd64(addr: int) -> int:
            return ctypes.c_int64.from_address(addr).value

        def rd32(addr: int) -> int:
            return ctypes.c_int32.from_address(addr).value

        head = object.__basicsize__
        ob_type = head - ctypes.sizeof(ctypes.c_void_p)
        items = tuple.__basicsize__
        # a tuple's size is the word before its items (PyVarObject.ob_size)
        for t in ((), (1,), (1, 2, 3)):
            if rd64(id(t) + items - 8) != len(t) or rd64(id(t) + ob_type) != id(tuple):
                return None
        data, nd, descr, flags = head, head + 8, head + 40, head + 48
        base = np.zeros(12, dtype=np.float64)
        probes = [base, base.reshape(3, 4), base[::2], np.arange(5, dtype=np.int32), base[1:]]
        ro = base[2:]
        ro.flags.writeable = False
        probes.append(ro)
        t = tuple(probes)
        for k, a in enumerate(probes):
            if rd64(id(t) + items + 8 * k) != id(a):
                return None
            if rd64(id(a) + ob_type) != id(np.ndarray):
                return None
            if rd64(id(a) + data) != a.ctypes.data or rd32(id(a) + nd) != a.ndim:
                return None
            if rd64(id(a) + descr) != id(a.dtype) or rd32(id(a) + flags) != a.flags.num:
                return None
            f = a.flags.num
            if bool(f & _C_CONTIGUOUS) != a.flags.c_contiguous or bool(f & _WRITEABLE) != a.flags.writeable \
                    or bool(f & _ALIGNED) != a.flags.aligned:
                return None
        return (ob_type, id(np.ndarray), items, data, nd, descr, flags, id(tuple))
    except Exception:  # pragma: no cover - an unusual interpreter: use the checked path
        return None


_LAYOUT: tuple[int, ...] | None = _probe_layout()


def fast_path_available() -> bool:
    """True when the entry point's object-layout probe succeeded in this process."""
    return _LAYOUT is not None


@dataclass(eq=False)
class Loaded:
    """A kernel's object code linked into the JIT: addresses, and the texts for ``dump``.

    Holds the JIT library's resource tracker; when the last reference goes, the
    library is handed to :func:`.jit.retire` to be unloaded.
    """

    tracker: Any
    kernel_addr: int
    entry_addr: int
    compiled: Compiled
    key: str = ""
    fastcall_addr: int = 0    # the entry point's METH_FASTCALL form (see _builtin); 0 if its C-API table is unset
    packed_addr: int = 0      # the entry point with packed scalars (what the native team runs per chunk)

    def asm(self) -> str:
        """The assembly, emitted from the optimized IR on first request (and written back to the disk cache)."""
        c = self.compiled
        if not c.asm:
            with _ASM_LOCK:
                if not c.asm:
                    c.asm = jit.emit_asm(c.llvm_ir)
                    if self.key:
                        from . import cache

                        cache.disk_write(self.key, c)
        return c.asm

    def __del__(self, _graveyard: list = jit._RETIRED) -> None:  # bound early: globals vanish at exit
        tr, self.tracker = self.tracker, None
        if tr is not None:
            _graveyard.append(tr)  # see jit.retire: unloaded later, under the LLVM lock


_ASM_LOCK = threading.Lock()


def load(kernel: L.Kernel, compiled: Compiled, key: str = "") -> Loaded:
    """Link compiled object code and look up the kernel and its entry points."""
    sym, ent = codegen.symbol_name(kernel), codegen.entry_name(kernel)
    fc, tbl, pk = codegen.fastcall_name(kernel), codegen.capi_table_name(kernel), codegen.packed_name(kernel)
    tracker, addrs = jit.load_object(compiled.obj, (sym, ent, fc, tbl, pk))
    loaded = Loaded(tracker, addrs[sym], addrs[ent], compiled, key)
    loaded.packed_addr = addrs[pk]
    if fill_capi_table(addrs[tbl]):
        loaded.fastcall_addr = addrs[fc]
    return loaded


# ---------------------------------------------------------------------------- the entry as a builtin
class _MethodDef(ctypes.Structure):
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p), ("ml_flags", ctypes.c_int),
                ("ml_doc", ctypes.c_char_p)]


_METH_FASTCALL = 0x0080
_CAPI: list | None = None


def _capi() -> list | None:
    """Addresses of the C-API functions in :data:`.codegen.CAPI` order, or None outside CPython."""
    global _CAPI
    if _CAPI is None:
        try:
            api = ctypes.pythonapi
            _CAPI = [ctypes.cast(getattr(api, n), ctypes.c_void_p).value for n in codegen.CAPI]
            new = api.PyCFunction_NewEx
            new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.py_object, ctypes.py_object]
        except (AttributeError, OSError):  # pragma: no cover - not CPython
            _CAPI = []
    return _CAPI or None


class _Owner:
    """The ``self`` of a fast-call builtin: keeps its ``PyMethodDef`` and JIT library alive as long as it."""

    __slots__ = ("__weakref__", "loaded", "mdef")

    def __init__(self, mdef: Any, loaded: Any):
        self.mdef = mdef
        self.loaded = loaded


def _builtin(loaded: Loaded, name: str) -> Any:
    """The library's fast-call function (see :func:`.codegen._emit_fastcall`) as a Python builtin, or None."""
    if not loaded.fastcall_addr or _LAYOUT is None:
        return None
    return make_builtin(loaded.fastcall_addr, loaded, name)


def make_builtin(address: int, keep: Any, name: str) -> Any:
    """The ``METH_FASTCALL`` function at ``address`` (see :func:`.codegen.emit_builtin`) as a Python
    builtin, or None where this interpreter cannot make one.

    The builtin's ``self`` (an :class:`_Owner`) holds the ``PyMethodDef`` it points into and
    ``keep`` (what keeps the code at ``address`` loaded), so neither goes while the builtin exists.
    """
    if _capi() is None:
        return None
    try:
        mdef = _MethodDef(name.encode()[:60], address, _METH_FASTCALL, None)
        return ctypes.pythonapi.PyCFunction_NewEx(ctypes.addressof(mdef), _Owner(mdef, keep), None)
    except Exception:  # noqa: BLE001  # pragma: no cover - no stable-ABI PyCFunction_NewEx
        return None


def fill_capi_table(address: int) -> bool:
    """Write the C-API addresses into a loaded module's table (see :data:`.codegen.CAPI`); False outside CPython."""
    api = _capi()
    if api is None:
        return False
    ctypes.memmove(address, (ctypes.c_void_p * len(api))(*api), ctypes.sizeof(ctypes.c_void_p) * len(api))
    return True


_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def _getter(names: tuple[str, ...]) -> Any:
    """``mapping -> tuple of mapping[name]`` for ``names``, as fast as Python allows (C itemgetter)."""
    if len(names) >= 2:
        return operator.itemgetter(*names)
    if len(names) == 1:
        (n,) = names
        return lambda m: (m[n],)
    return lambda m: ()


class CPUKernel:
    """A loop-IR kernel compiled for the host CPU: ``ck(buffers, scalars)``; ``ck.dump("llvm"|"asm")``."""

    stages = ("llvm", "asm")

    def __init__(self, kernel: L.Kernel, loaded: Loaded):
        self.kernel = kernel
        self._loaded = loaded  # keeps the JIT library alive as long as this kernel
        self._bparams = kernel.buffers
        self._bnames = tuple(p.name for p in self._bparams)
        self._snames = tuple(p.name for p in kernel.scalars)
        self._np_dtypes = tuple(np.dtype(_NP_DTYPES[p.dtype]) for p in self._bparams)
        self._writes = tuple(p.role in ("out", "work") for p in self._bparams)
        tiled = codegen.tiling(kernel)
        #: the column window (see panels.column_window): ``(lo, hi)`` of the panels' columns, each an int or
        #: a scalar's name; the packed entry then takes ``[window_lo, window_hi)`` after the scalars. Or None.
        self.column_window: tuple[int | str, int | str] | None = None if tiled.window is None else tuple(
            b.value if isinstance(b, L.Const) else b.name for b in (tiled.window.lo, tiled.window.hi))
        argtypes = [ctypes.c_void_p] * (len(kernel.params) + (2 if tiled.window is not None else 0))
        self._plain = ctypes.CFUNCTYPE(None, *argtypes)(loaded.kernel_addr)
        self._get_buffers = _getter(self._bnames)
        self._get_scalars = _getter(self._snames)
        self._order = tuple((isinstance(p, L.BufferParam), p.name) for p in kernel.params)
        self._entry = None
        self._fast_entry = None
        self._sig = None
        #: buffers whose rows the register tiles load with the widest vectors (see .regtile): a
        #: 64-byte aligned copy spares them the masked vector of each row's misaligned start
        self.aligned_loads: frozenset[str] = frozenset(
            ld.buffer for plan in tiled.plans.values()
            if any(v.masked for v in plan.variants) for ld in plan.vector_loads())
        #: outputs whose rows the code writes whole from zeroed register tiles (see codegen.tiling):
        #: the host need not zero them where a call covers every row
        self.fresh_rows: tuple = tiled.fresh
        if _LAYOUT is not None:
            self._sig_array = self.signature()
            self._sig = self._sig_array.ctypes.data
            entry_types = [ctypes.py_object, ctypes.c_void_p] + [ctypes.c_void_p] * len(self._snames)
            self._entry = ctypes.CFUNCTYPE(ctypes.c_int32, *entry_types)(loaded.entry_addr)
            # the same entry point as a Python builtin: ~1 µs less per call than through ctypes
            builtin = _builtin(loaded, f"{kernel.name}_entry") if os.environ.get(
                "SPARSEC_NO_BUILTIN_ENTRY", "") in ("", "0") else None
            self._fast_entry = builtin if builtin is not None else self._entry

    def signature(self, any_rank: frozenset[int] = frozenset()) -> np.ndarray:
        """The ``sig`` array the entry point checks the buffers against (see :func:`.codegen._emit_entry`).

        Buffers whose positions are in ``any_rank`` may be C-contiguous arrays of any rank
        (the caller has checked their shapes); the others must be 1-D. Keep the array alive
        while its address is in use.
        """
        assert _LAYOUT is not None
        sig = list(_LAYOUT)
        for k, (dt, w) in enumerate(zip(self._np_dtypes, self._writes)):
            sig += [id(dt), _C_CONTIGUOUS | _ALIGNED | (_WRITEABLE if w else 0), -1 if k in any_rank else 1]
        return np.array(sig, dtype=np.int64)

    @property
    def entry(self) -> Any:
        """``entry(arrays_tuple, sig_address, *scalars) -> int`` (0: ran; k + 1: buffer k rejected), or None.

        Where the interpreter allows it this is the entry point as a Python builtin
        (``METH_FASTCALL``, see :func:`.codegen._emit_fastcall`), ~0.3 µs a call against
        ~1.3 µs through ctypes; else the ctypes function. Every run of the kernel goes
        through :meth:`__call__`, through this function (the fast call path of
        :mod:`sparsec.fastcall` looks it up at each call) or, for chunks of a parallel
        call, through :attr:`packed_entry` on the native team (:mod:`.team`).
        """
        return self._fast_entry

    @property
    def packed_entry(self) -> int:
        """Address of ``i32 packed(arrays_tuple, sig, int64 *scalars)`` (see :mod:`.team`), or 0."""
        return self._loaded.packed_addr if self._entry is not None else 0

    @property
    def buffer_params(self) -> tuple[L.BufferParam, ...]:
        """The buffer parameters, in the order the entry point takes them."""
        return self._bparams

    @property
    def scalar_names(self) -> tuple[str, ...]:
        """The scalar parameters' names, in the order the entry point takes them."""
        return self._snames

    # ------------------------------------------------------------------ calling
    def __call__(self, buffers: Mapping[str, Any], scalars: Mapping[str, int]) -> None:
        try:
            arrays = self._get_buffers(buffers)
            svals = self._get_scalars(scalars)
        except KeyError as e:
            raise self._missing(buffers, scalars) from e
        entry = self._entry
        if entry is not None:
            # Scalars are extents and chunk bounds (Python ints far below 2**63); ctypes would
            # truncate a larger int silently, but checking costs more than the rest of the call.
            try:
                if not entry(arrays, self._sig, *svals):
                    return
            except ctypes.ArgumentError:
                pass  # a scalar that is not a plain int: the checked path converts it or explains
        self._checked_call(arrays, svals)

    def _missing(self, buffers: Mapping[str, Any], scalars: Mapping[str, int]) -> BackendError:
        for n in self._bnames:
            if n not in buffers:
                return BackendError(f"kernel {self.kernel.name}: missing buffer {n!r}")
        for n in self._snames:
            if n not in scalars:
                return BackendError(f"kernel {self.kernel.name}: missing scalar {n!r}")
        return BackendError(f"kernel {self.kernel.name}: missing argument")  # pragma: no cover

    def _checked_call(self, arrays: tuple, svals: tuple) -> None:
        """Validate every argument, then call the kernel on data pointers."""
        name = self.kernel.name
        keep = []
        ptrs = {}
        for a, p, dt, w in zip(arrays, self._bparams, self._np_dtypes, self._writes):
            if not isinstance(a, np.ndarray):
                raise BackendError(f"kernel {name}: buffer {p.name!r} must be a numpy array, "
                                   f"got {type(a).__name__}")
            if a.dtype != dt:
                raise BackendError(f"kernel {name}: buffer {p.name!r} has dtype {a.dtype}, expected {dt}")
            if a.ndim != 1:
                raise BackendError(f"kernel {name}: buffer {p.name!r} must be 1-D, got shape {a.shape}")
            if not (a.flags.c_contiguous and a.flags.aligned):
                if w:
                    raise BackendError(f"kernel {name}: output buffer {p.name!r} must be contiguous and aligned")
                a = np.ascontiguousarray(a)
                if not a.flags.aligned:  # pragma: no cover - ascontiguousarray aligns
                    a = a.copy()
            if w and not a.flags.writeable:
                raise BackendError(f"kernel {name}: output buffer {p.name!r} is read-only")
            keep.append(a)
            ptrs[p.name] = a.ctypes.data
        ints = {}
        for n, v in zip(self._snames, svals):
            try:
                iv = int(v.__index__())
            except (AttributeError, TypeError):
                raise BackendError(f"kernel {name}: scalar {n!r} must be an integer, got {type(v).__name__}") \
                    from None
            if not _I64_MIN <= iv <= _I64_MAX:
                raise BackendError(f"kernel {name}: scalar {n!r}={iv} does not fit in 64 bits")
            ints[n] = iv
        args = [ptrs[n] if is_buf else ints[n] for is_buf, n in self._order]
        if self.column_window is not None:
            args += panels.WHOLE_WINDOW
        self._plain(*args)
        del keep

    # ------------------------------------------------------------------ dumps
    def dump(self, stage: str = "llvm") -> str:
        """``llvm``: the optimized LLVM IR; ``asm``: the host assembly."""
        if stage == "llvm":
            return self._loaded.compiled.llvm_ir
        if stage == "asm":
            return self._loaded.asm()
        raise ValueError(f"unknown stage {stage!r}; the cpu backend has {', '.join(self.stages)}")

    def __repr__(self) -> str:
        return f"<CPUKernel {self.kernel.name} ({len(self._bnames)} buffers, {len(self._snames)} scalars)>"
