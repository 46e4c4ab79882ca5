"""A native thread team for the chunks of a parallel CPU kernel: fork/join in microseconds.

The Python team (:mod:`sparsec.threads`) wakes a worker through a lock and runs
each chunk through Python, so a parallel call costs ~15 µs when the workers are
warm and ~100 µs on a 2-vCPU VM when they sleep: only kernels of ~1 ms gain from
a second core. MKL and OpenMP runtimes keep their workers spinning for a while
after a parallel region; this team does the same, in native code, with no Python
(and no GIL) on the workers' side:

* each worker is a Python thread that calls the team's ``worker`` function (LLVM
  IR below, compiled once per process) through ctypes and never returns;
* a parallel call (:meth:`NativeTeam.run`) is one ctypes call of ``run``, which
  publishes the task, wakes sleeping workers (futex), takes chunks itself, and
  waits for the chunks the workers took;
* chunks are claimed one at a time from a single atomic word ``(count << 32) |
  next`` (compare-and-swap), so a worker that is not scheduled takes no chunk and
  is never waited for; a claimed chunk is always finished before the task's fields
  change, so a late worker never reads a stale task;
* a chunk is the kernel's *packed* entry point (:func:`.codegen._emit_packed`):
  the arrays tuple, the ``sig`` of the entry point, and its row of scalars (its own
  ``sc_lo``/``sc_hi``); it validates the arrays like every entry point call (a
  rejected array returns its code, and nothing runs);
* an idle worker spins :data:`SPIN_US` µs (``pause``, timed by the TSC), then sleeps on a
  futex. Waking a sleeping worker is expensive on a VM: the ``FUTEX_WAKE`` costs the
  caller ~40 µs (an IPI to a halted vCPU), and the worker starts later still. Between
  two calls of a kernel the caller spends a while in Python (allocating and zeroing the
  output: ~400 µs for SpMM's 10 MB ``C``), so a worker that slept after ~50 µs was woken
  at almost every call; spinning through such gaps is what OpenMP runtimes do too (Intel's
  for 200 ms by default).

Linux on x86-64 only (futex, ``pause``); elsewhere :func:`team` returns None and
the Python team is used.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import platform
import sys
import threading
import time

import numpy as np
from llvmlite import ir

from . import codegen

#: slots of the shared state (int64 words; the hot ones a cache line apart)
SEQ, SLEEPERS, QUIT = 0, 1, 2            # line 0: the task generation (futex word), sleepers, quit
DONE = 8                                 # line 1: chunks finished
FN, TUPLE, SIG, SCALARS, NSC, RC, NTHREADS = 16, 17, 18, 19, 20, 21, 22   # line 2: the task
SPIN_TICKS = 23                          # line 2: how long an idle worker spins, in TSC ticks (set once)
CLAIMS = 24                              # line 3 on: thread t's claim word at CLAIMS + 8 * t
MAX_THREADS = 64
WORDS = CLAIMS + 8 * MAX_THREADS
#: leading words of a row of ``zero_then`` (see :func:`_module`): packed entry, address, bytes per row,
#: rows per step, the slots of sc_lo and sc_hi, the first and end row to zero
ZERO_WORDS = 8

#: microseconds an idle worker spins before it sleeps on the futex (see the module docs).
#: Measured on the 2-vCPU VM (SpMM N=16, 160k nonzeros, 0.5 ms a call): with ~50 µs the
#: worker slept before every call and 2 threads were no faster than 1; with 1-2 ms, 1.7x.
SPIN_US = 2000
#: pause iterations the joining caller spins before it yields its CPU (~50 µs)
SPIN = 2000
_SYS_FUTEX = 202
_FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 128, 129

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_PTR = ir.PointerType()


def _module() -> str:
    m = ir.Module(name="sparsec_team")
    packed_ty = ir.FunctionType(_I32, [_PTR, _PTR, _PTR])
    syscall = ir.Function(m, ir.FunctionType(_I64, [_I64], var_arg=True), name="syscall")
    pause = ir.Function(m, ir.FunctionType(ir.VoidType(), []), name="llvm.x86.sse2.pause")
    sched_yield = ir.Function(m, ir.FunctionType(_I32, []), name="sched_yield")
    tsc = ir.Function(m, ir.FunctionType(_I64, []), name="llvm.readcyclecounter")

    def slot(b: ir.IRBuilder, state: ir.Value, k: ir.Value | int) -> ir.Value:
        k = ir.Constant(_I64, k) if isinstance(k, int) else k
        return b.gep(state, [k], inbounds=True, source_etype=_I64)

    def claim_slot(b: ir.IRBuilder, state: ir.Value, t: ir.Value) -> ir.Value:
        """Thread ``t``'s claim word (its own cache line)."""
        return slot(b, state, b.add(ir.Constant(_I64, CLAIMS), b.mul(t, ir.Constant(_I64, 8))))

    def drain(fn: ir.Function, b: ir.IRBuilder, state: ir.Value, word: ir.Value) -> None:
        """Claim and run the chunks of one claim word ``(end << 32) | next`` until it is exhausted."""
        head = fn.append_basic_block("claim")
        run = fn.append_basic_block("run")
        out = fn.append_basic_block("drained")
        b.branch(head)
        b.position_at_end(head)
        w = b.load_atomic(word, "acquire", 8, typ=_I64)
        nxt = b.and_(w, ir.Constant(_I64, 0xFFFFFFFF))
        end = b.lshr(w, ir.Constant(_I64, 32))
        more = fn.append_basic_block("more")
        b.cbranch(b.icmp_unsigned("<", nxt, end), more, out)
        b.position_at_end(more)
        pair = b.cmpxchg(word, w, b.add(w, ir.Constant(_I64, 1)), "acq_rel", "acquire")
        b.cbranch(b.extract_value(pair, 1), run, head)
        b.position_at_end(run)
        f = b.inttoptr(b.load(slot(b, state, FN), typ=_I64), packed_ty.as_pointer())  # prints as ``ptr``
        tup = b.inttoptr(b.load(slot(b, state, TUPLE), typ=_I64), _PTR)
        sig = b.inttoptr(b.load(slot(b, state, SIG), typ=_I64), _PTR)
        sc = b.load(slot(b, state, SCALARS), typ=_I64)
        nsc = b.load(slot(b, state, NSC), typ=_I64)
        row = b.inttoptr(b.add(sc, b.mul(nxt, b.mul(nsc, ir.Constant(_I64, 8)))), _PTR)
        rc = b.call(f, [tup, sig, row])
        nonzero = fn.append_basic_block("failed")
        finish = fn.append_basic_block("finish")
        b.cbranch(b.icmp_signed("!=", rc, ir.Constant(_I32, 0)), nonzero, finish)
        b.position_at_end(nonzero)
        b.cmpxchg(slot(b, state, RC), ir.Constant(_I64, 0), b.sext(rc, _I64), "acq_rel", "acquire")
        b.branch(finish)
        b.position_at_end(finish)
        b.atomic_rmw("add", slot(b, state, DONE), ir.Constant(_I64, 1), "release")
        b.branch(head)
        b.position_at_end(out)

    def work(fn: ir.Function, b: ir.IRBuilder, state: ir.Value, me: ir.Value) -> None:
        """Thread ``me`` runs its own chunks, then the chunks the other threads have not claimed yet."""
        nthreads = b.load(slot(b, state, NTHREADS), typ=_I64)
        pre = b.block
        loop = fn.append_basic_block("steal")
        done = fn.append_basic_block("stolen")
        b.branch(loop)
        b.position_at_end(loop)
        k = b.phi(_I64, name="k")
        k.add_incoming(ir.Constant(_I64, 0), pre)
        t = b.urem(b.add(me, k), nthreads)
        drain(fn, b, state, claim_slot(b, state, t))
        k1 = b.add(k, ir.Constant(_I64, 1))
        k.add_incoming(k1, b.block)
        b.cbranch(b.icmp_unsigned("<", k1, nthreads), loop, done)
        b.position_at_end(done)

    # void worker(i64 *state, i64 me): returns when QUIT is set
    wk = ir.Function(m, ir.FunctionType(ir.VoidType(), [_PTR, _I64]), name="sparsec_team_worker")
    state, me = wk.args
    b = ir.IRBuilder(wk.append_basic_block("entry"))
    last0 = b.load_atomic(slot(b, state, SEQ), "acquire", 8, typ=_I64)
    top = wk.append_basic_block("top")
    entry_bb = b.block
    b.branch(top)
    b.position_at_end(top)
    last = b.phi(_I64, name="last")
    last.add_incoming(last0, entry_bb)
    spin = wk.append_basic_block("spin")
    got = wk.append_basic_block("got")
    sleep = wk.append_basic_block("sleep")
    until = b.add(b.call(tsc, []), b.load(slot(b, state, SPIN_TICKS), typ=_I64))
    b.branch(spin)
    b.position_at_end(spin)
    s = b.load_atomic(slot(b, state, SEQ), "acquire", 8, typ=_I64)
    keep = wk.append_basic_block("keep")
    b.cbranch(b.icmp_unsigned("!=", s, last), got, keep)
    b.position_at_end(keep)
    b.call(pause, [])
    b.cbranch(b.icmp_signed("<", b.sub(b.call(tsc, []), until), ir.Constant(_I64, 0)), spin, sleep)
    b.position_at_end(sleep)
    b.atomic_rmw("add", slot(b, state, SLEEPERS), ir.Constant(_I64, 1), "seq_cst")
    s2 = b.load_atomic(slot(b, state, SEQ), "seq_cst", 8, typ=_I64)
    wait = wk.append_basic_block("wait")
    woke = wk.append_basic_block("woke")
    b.cbranch(b.icmp_unsigned("!=", s2, last), woke, wait)
    b.position_at_end(wait)
    b.call(syscall, [ir.Constant(_I64, _SYS_FUTEX), b.ptrtoint(slot(b, state, SEQ), _I64),
                     ir.Constant(_I64, _FUTEX_WAIT_PRIVATE), b.and_(last, ir.Constant(_I64, 0xFFFFFFFF)),
                     ir.Constant(_I64, 0)])
    b.branch(woke)
    b.position_at_end(woke)
    b.atomic_rmw("sub", slot(b, state, SLEEPERS), ir.Constant(_I64, 1), "seq_cst")
    last.add_incoming(last, woke)
    b.branch(top)
    b.position_at_end(got)
    quit_ = wk.append_basic_block("quit")
    cont = wk.append_basic_block("work")
    b.cbranch(b.icmp_signed("!=", b.load_atomic(slot(b, state, QUIT), "acquire", 8, typ=_I64),
                            ir.Constant(_I64, 0)), quit_, cont)
    b.position_at_end(quit_)
    b.ret_void()
    b.position_at_end(cont)
    skip = wk.append_basic_block("not_mine")
    mine = wk.append_basic_block("mine")
    # a task for fewer threads than this one's index: nothing of its own, but it may steal
    b.branch(mine)
    b.position_at_end(mine)
    work(wk, b, state, me)
    b.branch(skip)
    b.position_at_end(skip)
    last.add_incoming(s, b.block)
    b.branch(top)

    # i64 run(i64 *state, fn, tuple, sig, scalars, nsc, nthreads, i64 *claims, total): publish the task
    # (its fields first, then each thread's claim word, then the generation), work, wait; the first failure
    rn = ir.Function(m, ir.FunctionType(_I64, [_PTR] + [_I64] * 6 + [_PTR, _I64]), name="sparsec_team_run")
    state, f, tup, sig, sc, nsc, nth, claims, count = rn.args
    b = ir.IRBuilder(rn.append_basic_block("entry"))
    for k_, v in ((FN, f), (TUPLE, tup), (SIG, sig), (SCALARS, sc), (NSC, nsc), (NTHREADS, nth), (DONE + 1, count)):
        b.store(v, slot(b, state, k_))
    # (atomic exchanges: llvmlite's atomic store wants typed pointers)
    b.atomic_rmw("xchg", slot(b, state, RC), ir.Constant(_I64, 0), "release")
    b.atomic_rmw("xchg", slot(b, state, DONE), ir.Constant(_I64, 0), "release")
    pre = b.block
    cl = rn.append_basic_block("claims")
    cl_done = rn.append_basic_block("claims_set")
    b.branch(cl)
    b.position_at_end(cl)
    t = b.phi(_I64, name="t")
    t.add_incoming(ir.Constant(_I64, 0), pre)
    w = b.load(b.gep(claims, [t], inbounds=True, source_etype=_I64), typ=_I64)
    b.atomic_rmw("xchg", claim_slot(b, state, t), w, "release")
    t1 = b.add(t, ir.Constant(_I64, 1))
    t.add_incoming(t1, cl)
    b.cbranch(b.icmp_unsigned("<", t1, nth), cl, cl_done)
    b.position_at_end(cl_done)
    b.atomic_rmw("add", slot(b, state, SEQ), ir.Constant(_I64, 1), "seq_cst")
    sleepers = b.load_atomic(slot(b, state, SLEEPERS), "seq_cst", 8, typ=_I64)
    wake = rn.append_basic_block("wake")
    help_ = rn.append_basic_block("help")
    b.cbranch(b.icmp_signed(">", sleepers, ir.Constant(_I64, 0)), wake, help_)
    b.position_at_end(wake)
    b.call(syscall, [ir.Constant(_I64, _SYS_FUTEX), b.ptrtoint(slot(b, state, SEQ), _I64),
                     ir.Constant(_I64, _FUTEX_WAKE_PRIVATE), ir.Constant(_I64, 0x7FFFFFFF)])
    b.branch(help_)
    b.position_at_end(help_)
    work(rn, b, state, ir.Constant(_I64, 0))
    help_end = b.block
    join = rn.append_basic_block("join")
    wait_bb = rn.append_basic_block("join_wait")
    done_bb = rn.append_basic_block("done")
    b.branch(join)
    b.position_at_end(join)
    waits = b.phi(_I64, name="waits")
    waits.add_incoming(ir.Constant(_I64, 0), help_end)
    total = b.load(slot(b, state, DONE + 1), typ=_I64)   # the chunk count, set with the claim words
    d = b.load_atomic(slot(b, state, DONE), "acquire", 8, typ=_I64)
    b.cbranch(b.icmp_unsigned("<", d, total), wait_bb, done_bb)
    b.position_at_end(wait_bb)
    b.call(pause, [])
    # a worker that shares this CPU needs it to finish its chunk: after a while, give the CPU up
    yield_bb = rn.append_basic_block("join_yield")
    again = rn.append_basic_block("join_again")
    w1 = b.add(waits, ir.Constant(_I64, 1))
    b.cbranch(b.icmp_unsigned(">", w1, ir.Constant(_I64, SPIN)), yield_bb, again)
    b.position_at_end(yield_bb)
    b.call(sched_yield, [])
    b.branch(again)
    b.position_at_end(again)
    waits.add_incoming(w1, again)
    b.branch(join)
    b.position_at_end(done_bb)
    b.ret(b.load_atomic(slot(b, state, RC), "acquire", 8, typ=_I64))

    # i32 zero_then(ptr arrays_tuple, ptr sig, ptr row): a packed chunk that zeroes its own rows of
    # the output as it goes. ``row`` is ``[packed, address, rowbytes, step, ilo, ihi, zlo, zhi,
    # the kernel's scalars...]``: the chunk's rows [klo, khi) are scalars[ilo], scalars[ihi]; it zeroes
    # rows [zlo, klo) and [khi, zhi) (rows outside the parallel range, first and last chunks), then,
    # ``step`` rows at a time, zeroes rows [a, b) and runs packed(arrays_tuple, sig, scalars) over
    # them (while they are still in this core's cache), stopping at the first nonzero code.
    fn = ir.Function(m, packed_ty, name="sparsec_team_zero_then")
    tup, sig, row = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    memset = ir.Function(m, ir.FunctionType(ir.VoidType(), [_PTR, ir.IntType(8), _I64, ir.IntType(1)]),
                         name="llvm.memset.p0.i64")
    packed, addr, rowbytes, step, ilo, ihi, zlo, zhi = [b.load(slot(b, row, k), typ=_I64) for k in range(ZERO_WORDS)]
    one = ir.Constant(_I64, 1)
    step = b.select(b.icmp_signed("<", step, one), one, step)   # at least one row a step: always progress
    scalars = slot(b, row, ZERO_WORDS)
    lo_slot, hi_slot = slot(b, scalars, ilo), slot(b, scalars, ihi)
    klo, khi = b.load(lo_slot, typ=_I64), b.load(hi_slot, typ=_I64)

    def zero(b: ir.IRBuilder, r0: ir.Value, r1: ir.Value) -> None:
        dst = b.inttoptr(b.add(addr, b.mul(r0, rowbytes)), _PTR)
        b.call(memset, [dst, ir.Constant(ir.IntType(8), 0), b.mul(b.sub(r1, r0), rowbytes),
                        ir.Constant(ir.IntType(1), 0)])

    zero(b, zlo, klo)
    zero(b, khi, zhi)
    f = b.inttoptr(packed, packed_ty.as_pointer())
    entry_bb = b.block
    head = fn.append_basic_block("head")
    body = fn.append_basic_block("body")
    ok = fn.append_basic_block("ok")
    fail = fn.append_basic_block("fail")
    done = fn.append_basic_block("done")
    b.branch(head)
    b.position_at_end(head)
    a_ = b.phi(_I64, name="a")
    a_.add_incoming(klo, entry_bb)
    b.cbranch(b.icmp_signed("<", a_, khi), body, done)
    b.position_at_end(body)
    nxt = b.add(a_, step)
    e_ = b.select(b.icmp_signed("<", nxt, khi), nxt, khi)
    zero(b, a_, e_)
    b.store(a_, lo_slot)
    b.store(e_, hi_slot)
    rc = b.call(f, [tup, sig, scalars])
    b.cbranch(b.icmp_signed("!=", rc, ir.Constant(_I32, 0)), fail, ok)
    b.position_at_end(ok)
    a_.add_incoming(e_, ok)
    b.branch(head)
    b.position_at_end(fail)
    b.ret(rc)
    b.position_at_end(done)
    b.ret(ir.Constant(_I32, 0))

    # i64 tsc(): the time-stamp counter, to calibrate SPIN_TICKS
    fn = ir.Function(m, ir.FunctionType(_I64, []), name="sparsec_team_tsc")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.ret(b.call(tsc, []))

    # run as a Python builtin (the arrays tuple passed as the object itself): ~0.2 µs a call, ctypes ~2 µs
    codegen.emit_builtin(m, rn, "sparsec_team_run_builtin", "sparsec_team_capi",
                         ["pointer", "int", "object", "int", "int", "int", "int", "pointer", "int"])
    return str(m)


def _ticks_per_us(tsc: "ctypes._CFuncPtr", seconds: float = 0.002) -> float:
    """TSC ticks per microsecond, measured against ``time.perf_counter`` over ``seconds``."""
    t0, c0 = time.perf_counter(), tsc()
    time.sleep(seconds)
    t1, c1 = time.perf_counter(), tsc()
    rate = (c1 - c0) / max((t1 - t0) * 1e6, 1e-3)
    return rate if 1.0 <= rate <= 1e5 else 3000.0   # an implausible rate: assume 3 GHz


class NativeTeam:
    """Native workers and their shared state (see the module docs)."""

    def __init__(self, nworkers: int):
        from . import jit, kernel

        compiled = jit.compile_ir(_module(), "sparsec_team")
        self._tracker, addrs = jit.load_object(compiled.obj, ("sparsec_team_worker", "sparsec_team_run",
                                                              "sparsec_team_tsc", "sparsec_team_zero_then",
                                                              "sparsec_team_run_builtin", "sparsec_team_capi"))
        #: a packed chunk function that zeroes a slice of the output first (see :func:`_module`)
        self.zero_then = addrs["sparsec_team_zero_then"]
        self._state = np.zeros(WORDS, dtype=np.int64)
        self._addr = self._state.ctypes.data
        tsc = ctypes.CFUNCTYPE(ctypes.c_int64)(addrs["sparsec_team_tsc"])
        self._state[SPIN_TICKS] = int(SPIN_US * _ticks_per_us(tsc))
        self._worker = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(addrs["sparsec_team_worker"])
        self._run = ctypes.CFUNCTYPE(ctypes.c_int64, *[ctypes.c_void_p] * 9)(addrs["sparsec_team_run"])
        #: the same function as a Python builtin taking the arrays tuple itself (None outside CPython)
        self._run_builtin = None
        if kernel.fill_capi_table(addrs["sparsec_team_capi"]):
            self._run_builtin = kernel.make_builtin(addrs["sparsec_team_run_builtin"], self._tracker, "sparsec_team_run")
        self._busy = threading.Lock()
        self._claims: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
        self._threads = []
        self.size = 1
        self.grow(nworkers)

    def grow(self, nworkers: int) -> None:
        """Have at least ``nworkers`` workers (besides the calling thread)."""
        while len(self._threads) < min(nworkers, MAX_THREADS - 1):
            t = threading.Thread(target=self._worker, args=(self._addr, len(self._threads) + 1), daemon=True,
                                 name=f"sparsec-native-{len(self._threads) + 1}")
            t.start()
            self._threads.append(t)
        self.size = len(self._threads) + 1

    def run(self, packed: int, arrays: tuple, sig: int, scalars: np.ndarray, nthreads: int,
            address: int | None = None) -> int:
        """Run ``packed(arrays, sig, row)`` for every row of ``scalars`` (int64, C order) on ``nthreads`` threads.

        ``address``: ``scalars.ctypes.data`` where the caller has it already (reading it costs ~2 µs).

        Thread ``t`` owns the ``t``-th contiguous share of the rows (the same share at every
        call, so its data stays in that core's caches) and takes the others' unclaimed rows
        when done with its own. Returns 0, or the first nonzero code a chunk returned. A
        caller that finds the team busy (another thread's parallel call) runs its chunks
        itself, on the same code path.
        """
        nchunks, nsc = scalars.shape
        nthreads = max(1, min(nthreads, self.size, nchunks))
        claims = self._claims.get((nchunks, nthreads)) or self._new_claims(nchunks, nthreads)
        if not self._busy.acquire(blocking=False):
            return _serial(self, packed, arrays, sig, scalars)
        if address is None:
            address = scalars.ctypes.data
        try:
            if self._run_builtin is not None:
                return self._run_builtin(self._addr, packed, arrays, sig, address, nsc, nthreads, claims[1], nchunks)
            return int(self._run(self._addr, packed, id(arrays), sig, address, nsc, nthreads, claims[1], nchunks))
        finally:
            self._busy.release()

    def _new_claims(self, nchunks: int, nthreads: int) -> tuple[np.ndarray, int]:
        """Each thread's first claim word ``(end << 32) | start`` for ``nchunks`` chunks, and its address.

        Remembered per (chunks, threads): building the words costs a few µs of a call that
        takes tens of µs in all.
        """
        cuts = [nchunks * t // nthreads for t in range(nthreads + 1)]
        words = np.array([(b << 32) | a for a, b in itertools.pairwise(cuts)], dtype=np.int64)
        if len(self._claims) >= 64:
            self._claims.clear()
        claims = self._claims[(nchunks, nthreads)] = (words, words.ctypes.data)
        return claims


def _serial(team: NativeTeam, packed: int, arrays: tuple, sig: int, scalars: np.ndarray) -> int:
    """The chunks one after another on the calling thread (a private state, so no worker joins in)."""
    state = np.zeros(WORDS, dtype=np.int64)
    nchunks, nsc = scalars.shape
    claims = np.array([nchunks << 32], dtype=np.int64)
    return int(team._run(state.ctypes.data, packed, id(arrays), sig, scalars.ctypes.data, nsc, 1,
                         claims.ctypes.data, nchunks))


_TEAM: NativeTeam | None = None
_TEAM_LOCK = threading.Lock()
_FAILED = False


def available() -> bool:
    """Whether this platform can run the native team (Linux, x86-64, CPython)."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64") and \
        os.environ.get("SPARSEC_NO_NATIVE_TEAM", "") in ("", "0") and sys.implementation.name == "cpython"


def team(nworkers: int) -> NativeTeam | None:
    """The process's native team with at least ``nworkers`` workers, or None where unavailable."""
    global _TEAM, _FAILED
    t = _TEAM
    if t is not None and t.size > nworkers:
        return t
    if _FAILED or not available():
        return None
    with _TEAM_LOCK:
        try:
            if _TEAM is None:
                _TEAM = NativeTeam(nworkers)
            else:
                _TEAM.grow(nworkers)
        except Exception as e:  # noqa: BLE001  # pragma: no cover - a toolchain that cannot build it
            import warnings

            warnings.warn(f"sparsec: native thread team unavailable ({e}); using Python threads", RuntimeWarning)
            _FAILED = True
            return None
        return _TEAM
