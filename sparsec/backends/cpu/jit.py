"""LLVM for the host: target machine, O3 pipeline, object code, and the ORC JIT that loads it.

Everything here goes through llvmlite's binding layer:

* one process-wide :class:`Host` (created on first use, under a lock): the native
  target initialized once, a ``TargetMachine`` for the host triple, CPU name and
  features at ``opt=3``, and an ORC ``LLJIT`` instance;
* :func:`compile_ir` parses the generated IR into a fresh LLVM context (disposed
  afterwards, so compiling thousands of kernels does not grow the global
  context), runs the new pass manager's ``default<O3>`` pipeline with loop
  vectorization, SLP vectorization, interleaving and unrolling on, and emits the
  object code and the assembly text;
* :func:`load_object` links object code into a fresh JIT library (the current
  process is on its search path, so ``exp``/``log``/``memset``... resolve to libm
  and libc) and returns its :class:`~llvmlite.binding.ResourceTracker` and the
  function's address. Dropping the last reference to the tracker unloads the
  library.

Object code is what the disk cache stores, so a cache hit skips parsing,
optimization and code generation entirely and only links.

llvmlite objects are not documented as thread-safe, so every call into LLVM
here holds :data:`LLVM_LOCK` (calls of compiled kernels never do).
"""

from __future__ import annotations

import atexit
import itertools
import threading
from dataclasses import dataclass
from typing import Any

import llvmlite
import llvmlite.binding as llvm

from ...errors import BackendError

#: serializes all use of llvmlite's binding layer (parsing, passes, codegen, JIT linking).
LLVM_LOCK = threading.RLock()

_HOST: Host | None = None
_LIB_IDS = itertools.count()


@dataclass
class Host:
    """The process's LLVM target machine, JIT and the strings that identify them."""

    triple: str
    cpu: str
    features: str
    data_layout: str
    llvm_version: str
    target_machine: Any
    jit: Any

    def identity(self) -> str:
        """Everything about the host and toolchain that object code depends on (for cache keys)."""
        return "\n".join([self.triple, self.cpu, self.features, f"llvm {self.llvm_version}",
                          f"llvmlite {llvmlite.__version__}"])


def host() -> Host:
    """The process-wide :class:`Host`, initializing LLVM's native target on first use."""
    global _HOST
    if _HOST is not None:
        return _HOST
    with LLVM_LOCK:
        if _HOST is None:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            triple = llvm.get_process_triple()
            cpu = llvm.get_host_cpu_name()
            try:
                features = llvm.get_host_cpu_features().flatten()
            except RuntimeError:  # some platforms cannot report features
                features = ""
            target = llvm.Target.from_triple(triple)
            tm = target.create_target_machine(cpu=cpu, features=features, opt=3, jit=True)
            jit = llvm.create_lljit_compiler(tm)
            ver = ".".join(map(str, llvm.llvm_version_info))
            _HOST = Host(triple, cpu, features, str(tm.target_data), ver, tm, jit)
            atexit.register(_leak_at_exit, _HOST)
    return _HOST


def _leak_at_exit(h: Host) -> None:
    """At interpreter exit, never dispose the JIT: finalizers of kernels may still unload libraries
    from it in any order, so it must outlive them (the process is ending anyway)."""
    h.jit.detach()
    h.target_machine.detach()


def _pass_builder(h: Host) -> Any:
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_interleaving = True
    pto.loop_unrolling = True
    return llvm.create_pass_builder(h.target_machine, pto)


def _dispose_pass_manager(mpm: Any) -> None:
    """Free a new-PM ModulePassManager and every pass in it.

    llvmlite's ``ModulePassManager`` lists ``ObjectRef`` before ``NewPassManager`` in
    its bases, so ``close()`` finds ``ObjectRef``'s no-op ``_dispose``: the O3 pipeline,
    with the state its passes keep (GVN's value tables...), leaked ~110 KiB per
    compiled kernel. Dispose it by hand while llvmlite has that bug.
    """
    if type(mpm)._dispose is llvm.ffi.ObjectRef._dispose and not mpm.closed:
        llvm.ffi.lib.LLVMPY_DisposeNewModulePassManger(mpm)
        mpm.detach()
    else:
        mpm.close()


@dataclass
class Compiled:
    """Result of compiling one module: object code plus the texts shown by ``dump``.

    ``asm`` is empty until someone asks for it: emitting assembly costs as much as
    emitting the object code, so :func:`compile_ir` skips it and :func:`emit_asm`
    produces it later from the optimized IR.
    """

    obj: bytes
    llvm_ir: str
    asm: str = ""


def compile_ir(ir_text: str, name: str, with_asm: bool = False) -> Compiled:
    """Parse, verify, optimize at O3 and emit object code (and, if asked, assembly) for ``ir_text``."""
    h = host()
    with LLVM_LOCK:
        ctx = llvm.create_context()
        mod = None
        try:
            try:
                mod = llvm.parse_assembly(ir_text, context=ctx)
                mod.verify()
            except RuntimeError as e:
                raise BackendError(f"cpu backend: LLVM rejected the IR of kernel {name!r}: {e}") from None
            mod.triple = h.triple
            mod.data_layout = h.data_layout
            pb = _pass_builder(h)
            try:
                mpm = pb.getModulePassManager()
                try:
                    mpm.run(mod, pb)
                finally:
                    _dispose_pass_manager(mpm)
            finally:
                pb.close()
            opt_text = str(mod)
            obj = bytes(h.target_machine.emit_object(mod))
            asm = h.target_machine.emit_assembly(mod) if with_asm else ""
        finally:
            if mod is not None:
                mod.close()
            ctx.close()
    return Compiled(obj, opt_text, asm)


def emit_asm(opt_ir_text: str) -> str:
    """Host assembly for already-optimized IR (what :func:`compile_ir` emitted as object code)."""
    h = host()
    with LLVM_LOCK:
        ctx = llvm.create_context()
        mod = None
        try:
            mod = llvm.parse_assembly(opt_ir_text, context=ctx)
            return h.target_machine.emit_assembly(mod)
        finally:
            if mod is not None:
                mod.close()
            ctx.close()


#: JIT libraries whose last user is gone, unloaded at the next call into LLVM (under the lock).
_RETIRED: list[Any] = []


def retire(tracker: Any) -> None:
    """Schedule a JIT library for unloading.

    Called from finalizers, which may run at any moment on any thread (even one
    holding :data:`LLVM_LOCK`), so this only appends to a list; the libraries are
    disposed under the lock by :func:`collect_retired`.
    """
    _RETIRED.append(tracker)


def collect_retired() -> int:
    """Unload every retired JIT library now; returns how many."""
    n = 0
    with LLVM_LOCK:
        while _RETIRED:
            _RETIRED.pop().close()
            n += 1
    return n


def load_object(obj: bytes, symbols: tuple[str, ...]) -> tuple[Any, dict[str, int]]:
    """Link object code into a new JIT library; returns (resource tracker, address of each symbol)."""
    h = host()
    with LLVM_LOCK:
        collect_retired()
        lib = f"sparsec_lib{next(_LIB_IDS)}"
        builder = llvm.JITLibraryBuilder().add_object_img(obj).add_current_process()
        for s in symbols:
            builder.export_symbol(s)
        try:
            tracker = builder.link(h.jit, lib)
        except RuntimeError as e:
            raise BackendError(f"cpu backend: could not load the object code of {symbols[0]!r}: {e}") from None
        addrs = {s: tracker[s] for s in symbols}
    missing = [s for s, a in addrs.items() if not a]
    if missing:
        raise BackendError(f"cpu backend: symbol(s) {missing} not found in the object code")
    return tracker, addrs
