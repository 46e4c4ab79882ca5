"""Loop IR -> LLVM IR: an ``llvmlite.ir.Module`` holding the kernel and its entry point.

The kernel function (:func:`symbol_name`) takes the kernel's parameters in
``Kernel.params`` order: every buffer as an opaque pointer marked ``noalias`` and
``captures(none)`` (sparsec buffers never alias, which is what lets LLVM vectorize
without runtime checks), every scalar as ``i64``. It returns nothing. A second
function, the entry point (:func:`entry_name`, see :func:`_emit_entry`), is the
fast call path from Python: it takes the numpy arrays themselves and checks them.

Lowering choices (the semantics are those of :mod:`sparsec.ir.interp`):

* **Locals** live in ``alloca`` slots of the entry block, one per name (scalar
  parameters included, initialized from the argument); ``mem2reg`` promotes them.
  A name used with two dtypes of different machine types is rejected.
* **Loops**: ``For`` evaluates ``lo``/``hi`` once, guards ``lo < hi``, and runs a
  rotated loop whose induction variable is a phi (``add nsw``, ``icmp slt``) stored
  into the loop variable's slot at the top of each iteration: preheader, header,
  single latch: the form LLVM's loop passes and vectorizers expect. ``While`` is a
  header that tests the condition, a body and a back edge.
* **and / or** short-circuit through branches and a phi whenever the right operand
  contains a load; a right operand without loads cannot fault and is evaluated
  directly (``and i1``), which keeps simple conditions branch-free.
* **Integers**: ``index`` is ``i64``; index ``add``/``sub``/``mul`` carry ``nsw``
  (index arithmetic never overflows, and SCEV needs it to see affine subscripts);
  value dtypes (int8..int64) wrap like numpy. ``div`` is C division, ``floordiv``
  / ``mod`` are Python's; a zero divisor gives 0 (numpy's answer, where the
  interpreter raises) and ``INT_MIN / -1`` wraps instead of trapping, so no input
  can crash the process.
* **Floats**: every ``fadd``/``fsub``/``fmul`` carries ``contract`` (FMA
  formation). The update of a reduction (``acc = acc + e`` / ``acc = e * acc``,
  and the read-modify-write of a ``+=`` store) also carries ``reassoc`` so the
  loop vectorizer may reorder it. Never ``nnan``/``ninf``: NaN and Inf propagate
  exactly as in the interpreter. ``max``/``min`` use ``llvm.maximum``/``minimum``
  (NaN-propagating, like ``np.maximum``); ``exp``/``log``/``sqrt``/``abs`` are
  LLVM intrinsics. Float -> int casts use ``llvm.fptosi.sat`` (defined for NaN and
  out-of-range values, where plain ``fptosi`` is poison).
* **bool** is ``i1`` in registers and ``i8`` (0/1) in memory.
* **Atomics**: reducing stores inside a ``parallel ... atomic`` loop become
  ``atomicrmw`` (integer add/max/min, float add) or a ``cmpxchg`` loop (float
  max/min).
* Loop annotations become LLVM loop metadata on the loop's latch: ``vector(w)``
  sets ``llvm.loop.vectorize.width`` to w with interleave count 1 (``vector(1)``
  disables vectorization), ``unroll(n)`` sets ``llvm.loop.unroll.count``. Other
  loops are left to LLVM's cost model. llvmlite cannot build the self-referencing
  ``distinct`` node a loop ID needs, so the latch gets a marker node that
  :func:`generate_text` rewrites.
* **Short rows**: a serial loop that only sums into a local (SpMV's loop over a row's
  nonzeros) is versioned on its trip count: short trips run as masked vectors (LLVM
  folds the tail into the vector loop), long ones as LLVM vectorizes them; see
  :mod:`.shortrows`.

* **Register tiles**: a loop over nonzeros (or a dense reduction loop) whose body
  accumulates into a unit-stride row of the output (SpMM, GEMM rows) is interchanged
  with that row's loop per tile of vector registers; see :mod:`.regtile`, which finds
  these nests, and :meth:`_FunctionBuilder.tiled_loop`, which emits them. The row loop
  around such a nest runs per column panel (:mod:`.panels`), and where the dense rows the
  tiles read do not start 64-byte aligned, over a packed aligned copy of them
  (:mod:`.pack`, :meth:`_FunctionBuilder.panel_loop`).

Besides the kernel, the module holds its entry points: :func:`_emit_entry` (arrays
as a Python tuple, checked), :func:`_emit_fastcall` (the same as a ``METH_FASTCALL``
Python builtin) and :func:`_emit_packed` (scalars in an array, for the native thread
team of :mod:`.team`).

Names (kernel, parameters, locals) only reach the IR through llvmlite's API,
which quotes them.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import NamedTuple

from llvmlite import ir

from ...errors import BackendError
from ...ir import loop_ir as L
from . import pack, panels, regtile, shortrows

#: bump when generated code changes, so stale disk-cache entries are not reused.
CODEGEN_VERSION = "11"

_I1 = ir.IntType(1)
_I8 = ir.IntType(8)
_I64 = ir.IntType(64)
_PTR = ir.PointerType()

_INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64, "index": 64}
_FLOAT_TYPES = {"float16": ir.HalfType(), "float32": ir.FloatType(), "float64": ir.DoubleType()}
_FLOAT_RANK = {"float16": 0, "float32": 1, "float64": 2}

#: fast-math flags of every float add/sub/mul, and of the update of a reduction.
FM_ANY = ("contract",)
FM_REDUCE = ("reassoc", "contract")


def check_dtype(dtype: str, what: str) -> None:
    """Raise :class:`BackendError` for dtypes this backend cannot compile."""
    if dtype in _INT_BITS or dtype in _FLOAT_TYPES or dtype == L.BOOL:
        return
    raise BackendError(f"cpu backend: {what} has dtype {dtype!r}, which is not supported "
                       f"(supported: {', '.join(list(_FLOAT_TYPES) + list(_INT_BITS) + ['bool'])})")


def reg_type(dtype: str) -> ir.Type:
    """LLVM type of a value of ``dtype`` held in a register."""
    if dtype in _INT_BITS:
        return ir.IntType(_INT_BITS[dtype])
    if dtype in _FLOAT_TYPES:
        return _FLOAT_TYPES[dtype]
    if dtype == L.BOOL:
        return _I1
    raise BackendError(f"cpu backend: unsupported dtype {dtype!r}")


def mem_type(dtype: str) -> ir.Type:
    """LLVM type of one element of a buffer of ``dtype`` (bool is a byte)."""
    return _I8 if dtype == L.BOOL else reg_type(dtype)


def _kind(dtype: str) -> str:
    if dtype == L.BOOL:
        return "b"
    if dtype in _FLOAT_TYPES:
        return "f"
    return "i"


#: element sizes in bytes (the natural alignment of numpy buffers).
_SIZES = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "index": 8, "float16": 2, "float32": 4, "float64": 8,
          "bool": 1}


def _common(a: str, b: str) -> str:
    """The dtype both operands of a comparison are converted to."""
    if a == b:
        return a
    ka, kb = _kind(a), _kind(b)
    if ka == "f" or kb == "f":
        fa = a if ka == "f" else None
        fb = b if kb == "f" else None
        if fa and fb:
            return fa if _FLOAT_RANK[fa] >= _FLOAT_RANK[fb] else fb
        return fa or fb  # type: ignore[return-value]
    if ka == "b":
        return b
    if kb == "b":
        return a
    return a if _INT_BITS[a] >= _INT_BITS[b] else b


def _has_load(e: L.LExpr) -> bool:
    return any(isinstance(n, L.Load) for n in e.walk())


class _TileMasks(NamedTuple):
    """The lane masks of a masked tile's vectors (None: every lane in range), and whether its vector loads
    are aligned to their size."""

    lanes: list
    aligned: bool


class _FunctionBuilder:
    """Emits one kernel's function into a module."""

    def __init__(self, module: ir.Module, kernel: L.Kernel, symbol: str):
        self.module = module
        self.kernel = kernel
        for p in kernel.params:
            check_dtype(p.dtype, f"parameter {p.name!r} of kernel {kernel.name!r}")
            if isinstance(p, L.ScalarParam) and p.dtype not in _INT_BITS:
                raise BackendError(f"cpu backend: scalar parameter {p.name!r} of kernel {kernel.name!r} has dtype "
                                   f"{p.dtype!r}; scalars are passed as 64-bit integers")
        tiled = tiling(kernel)
        #: the panel whose columns the two trailing arguments clip (see panels.column_window), or None
        self.window = tiled.window
        argtys = [_PTR if isinstance(p, L.BufferParam) else _I64 for p in kernel.params]
        argtys += [_I64, _I64] if self.window is not None else []
        self.fn = ir.Function(module, ir.FunctionType(ir.VoidType(), argtys), name=symbol)
        self.fn.attributes.add("nounwind")
        self.fn.attributes.add("norecurse")
        self.buffers: dict[str, tuple[ir.Argument, str]] = {}
        self.slots: dict[str, tuple[ir.AllocaInstr, str]] = {}
        entry = self.fn.append_basic_block("entry")
        self.b = ir.IRBuilder(entry)
        self.atomic_depth = 0
        for arg, p in zip(self.fn.args, kernel.params):
            arg.name = p.name
            if isinstance(p, L.BufferParam):
                arg.add_attribute("noalias")
                arg.add_attribute("captures(none)")
                self.buffers[p.name] = (arg, p.dtype)
        if self.window is not None:
            self.fn.args[-2].name, self.fn.args[-1].name = "sc.window.lo", "sc.window.hi"
        kernel, self.panels, self.plans = tiled.kernel, tiled.panels, tiled.plans
        #: stores whose register tiles start from zero instead of loading the output (see regtile.fresh_rows)
        self.fresh = {id(f.store) for f in tiled.fresh}
        self.kernel = kernel
        self._declare_locals(kernel)
        self.packs = self._find_packs()
        self.pack_active: dict[int, regtile.TilePlan] = {}
        self._declare_tile_slots()
        for arg, p in zip(self.fn.args, kernel.params):
            if isinstance(p, L.ScalarParam) and p.name in self.slots:
                slot, dt = self.slots[p.name]
                self.b.store(self.convert(self.convert(arg, "int64", p.dtype), p.dtype, dt), slot)

    # ------------------------------------------------------------------ locals
    def _declare_locals(self, kernel: L.Kernel) -> None:
        seen: dict[str, str] = {}

        def note(name: str, dtype: str) -> None:
            check_dtype(dtype, f"local {name!r} of kernel {kernel.name!r}")
            prev = seen.get(name)
            if prev is None:
                seen[name] = dtype
            elif prev != dtype and reg_type(prev) != reg_type(dtype):
                raise BackendError(f"cpu backend: kernel {kernel.name!r} uses {name!r} both as {prev} and as "
                                   f"{dtype}")

        for p in kernel.scalars:
            note(p.name, p.dtype)
        for s in kernel.body.walk():
            if isinstance(s, (L.Assign, L.For)):
                note(s.var.name, s.var.dtype)
        for name, dt in seen.items():
            self.slots[name] = (self.b.alloca(reg_type(dt), name=name), dt)

    # ------------------------------------------------------------------ helpers
    def _intrinsic(self, name: str, types: list[ir.Type], ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        return self.module.declare_intrinsic(name, types, ir.FunctionType(ret, args))

    def convert(self, v: ir.Value, src: str, dst: str) -> ir.Value:
        """Convert a register value of dtype ``src`` to ``dst`` (interpreter cast rules)."""
        if src == dst:
            return v
        ks, kd = _kind(src), _kind(dst)
        b = self.b
        ts, td = reg_type(src), reg_type(dst)
        if kd == "b":
            if ks == "f":
                return b.fcmp_unordered("!=", v, ir.Constant(ts, 0.0))
            return b.icmp_signed("!=", v, ir.Constant(ts, 0))
        if ks == "b":
            return b.uitofp(v, td) if kd == "f" else b.zext(v, td)
        if ks == "i" and kd == "i":
            if ts.width == td.width:
                return v
            return b.sext(v, td) if ts.width < td.width else b.trunc(v, td)
        if ks == "i" and kd == "f":
            return b.sitofp(v, td)
        if ks == "f" and kd == "i":
            fn = self._intrinsic("llvm.fptosi.sat", [td, ts], td, [ts])
            return b.call(fn, [v])
        # float -> float
        if _FLOAT_RANK[src] < _FLOAT_RANK[dst]:
            return b.fpext(v, td)
        if _FLOAT_RANK[src] > _FLOAT_RANK[dst]:
            return b.fptrunc(v, td)
        return v

    def ev_as(self, e: L.LExpr, dtype: str) -> ir.Value:
        return self.convert(self.ev(e), e.dtype, dtype)

    def cond(self, e: L.LExpr) -> ir.Value:
        return self.ev_as(e, L.BOOL)

    def index(self, e: L.LExpr) -> ir.Value:
        return self.ev_as(e, L.INDEX)

    def element_ptr(self, buffer: str, idx: L.LExpr) -> tuple[ir.Value, str]:
        try:
            arg, dt = self.buffers[buffer]
        except KeyError:
            raise BackendError(f"cpu backend: kernel {self.kernel.name!r} accesses unknown buffer {buffer!r}") \
                from None
        i = self.index(idx)
        return self.b.gep(arg, [i], inbounds=True, source_etype=mem_type(dt)), dt

    def load_elem(self, ptr: ir.Value, dt: str) -> ir.Value:
        v = self.b.load(ptr, typ=mem_type(dt), align=_SIZES[dt])
        if dt == L.BOOL:
            v = self.b.icmp_unsigned("!=", v, ir.Constant(_I8, 0))
        return v

    def store_elem(self, v: ir.Value, ptr: ir.Value, dt: str) -> None:
        if dt == L.BOOL:
            v = self.b.zext(v, _I8)
        self.b.store(v, ptr, align=_SIZES[dt])

    # ------------------------------------------------------------------ expressions
    def ev(self, e: L.LExpr) -> ir.Value:
        if isinstance(e, L.Const):
            check_dtype(e.dtype, "a constant")
            t = reg_type(e.dtype)
            if e.dtype == L.BOOL:
                return ir.Constant(t, int(bool(e.value)))
            if _kind(e.dtype) == "f":
                return ir.Constant(t, float(e.value))
            bits = t.width
            val = int(e.value) & ((1 << bits) - 1)
            if val >= 1 << (bits - 1):
                val -= 1 << bits
            return ir.Constant(t, val)
        if isinstance(e, L.Var):
            if e.name not in self.slots:
                raise BackendError(f"cpu backend: kernel {self.kernel.name!r} reads {e.name!r}, which is never "
                                   "assigned")
            slot, dt = self.slots[e.name]
            return self.convert(self.b.load(slot, typ=reg_type(dt)), dt, e.dtype)
        if isinstance(e, L.Load):
            check_dtype(e.dtype, f"a load from {e.buffer!r}")
            ptr, dt = self.element_ptr(e.buffer, e.index)
            return self.convert(self.load_elem(ptr, dt), dt, e.dtype)
        if isinstance(e, L.BinOp):
            check_dtype(e.dtype, f"the result of {e.op!r}")
            return self.binop(e)
        if isinstance(e, L.UnOp):
            check_dtype(e.dtype, f"the result of {e.op!r}")
            return self.unop(e)
        if isinstance(e, L.Select):
            check_dtype(e.dtype, "a select")
            c = self.cond(e.cond)
            a = self.ev_as(e.a, e.dtype)
            b = self.ev_as(e.b, e.dtype)
            return self.b.select(c, a, b)
        if isinstance(e, L.Cast):
            check_dtype(e.dtype, "a cast")
            return self.ev_as(e.a, e.dtype)
        raise BackendError(f"cpu backend: unknown expression {e!r}")

    def _logic(self, e: L.BinOp) -> ir.Value:
        a = self.cond(e.a)
        if not _has_load(e.b):
            rhs = self.cond(e.b)
            return self.b.and_(a, rhs) if e.op == "and" else self.b.or_(a, rhs)
        start = self.b.block
        rhs_bb = self.fn.append_basic_block(f"{e.op}.rhs")
        merge_bb = self.fn.append_basic_block(f"{e.op}.end")
        if e.op == "and":
            self.b.cbranch(a, rhs_bb, merge_bb)
        else:
            self.b.cbranch(a, merge_bb, rhs_bb)
        self.b.position_at_end(rhs_bb)
        rhs = self.cond(e.b)
        rhs_end = self.b.block
        self.b.branch(merge_bb)
        self.b.position_at_end(merge_bb)
        phi = self.b.phi(_I1)
        phi.add_incoming(ir.Constant(_I1, 0 if e.op == "and" else 1), start)
        phi.add_incoming(rhs, rhs_end)
        return phi

    def binop(self, e: L.BinOp) -> ir.Value:
        op = e.op
        if op in ("and", "or"):
            return self._logic(e)
        if op in L.CMP_OPS:
            dt = _common(e.a.dtype, e.b.dtype)
            a, b = self.ev_as(e.a, dt), self.ev_as(e.b, dt)
            sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}[op]
            k = _kind(dt)
            if k == "f":
                if op == "ne":
                    return self.b.fcmp_unordered(sym, a, b)
                return self.b.fcmp_ordered(sym, a, b)
            if k == "b":
                return self.b.icmp_unsigned(sym, a, b)
            return self.b.icmp_signed(sym, a, b)
        dt = e.dtype
        a, b = self.ev_as(e.a, dt), self.ev_as(e.b, dt)
        return self.arith(op, a, b, dt, divisor=e.b)

    def arith(self, op: str, a: ir.Value, b: ir.Value, dt: str, reduction: bool = False,
              divisor: L.LExpr | None = None) -> ir.Value:
        """``a op b`` for an arithmetic op on two registers of dtype ``dt``."""
        bld = self.b
        k = _kind(dt)
        t = reg_type(dt)
        if k == "f":
            fm = FM_REDUCE if reduction else FM_ANY
            if op == "add":
                return bld.fadd(a, b, flags=fm)
            if op == "sub":
                return bld.fsub(a, b, flags=fm)
            if op == "mul":
                return bld.fmul(a, b, flags=fm)
            if op == "div":
                return bld.fdiv(a, b)
            if op in ("max", "min"):
                name = "llvm.maximum" if op == "max" else "llvm.minimum"
                return bld.call(self._intrinsic(name, [t], t, [t, t]), [a, b])
            if op == "mod":
                return self._fmod_py(a, b, t)
            if op == "floordiv":
                q = bld.fdiv(a, b)
                return bld.call(self._intrinsic("llvm.floor", [t], t, [t]), [q])
            raise BackendError(f"cpu backend: unknown float op {op!r}")
        if k == "b":
            table = {"add": bld.or_, "max": bld.or_, "mul": bld.and_, "min": bld.and_, "sub": bld.xor}
            if op in table:
                return table[op](a, b)
            raise BackendError(f"cpu backend: op {op!r} is not defined on bool")
        nsw = ("nsw",) if dt == L.INDEX else ()
        if op == "add":
            return bld.add(a, b, flags=nsw)
        if op == "sub":
            return bld.sub(a, b, flags=nsw)
        if op == "mul":
            return bld.mul(a, b, flags=nsw)
        if op in ("max", "min"):
            name = "llvm.smax" if op == "max" else "llvm.smin"
            return bld.call(self._intrinsic(name, [t], t, [t, t]), [a, b])
        if op in ("div", "floordiv", "mod"):
            return self._int_div(op, a, b, t, divisor)
        if op == "shr":
            return bld.lshr(a, b)
        if op == "bitand":
            return bld.and_(a, b)
        raise BackendError(f"cpu backend: unknown integer op {op!r}")

    def _int_div(self, op: str, a: ir.Value, b: ir.Value, t: ir.IntType, divisor: L.LExpr | None) -> ir.Value:
        bld = self.b
        zero, one, mone = ir.Constant(t, 0), ir.Constant(t, 1), ir.Constant(t, -1)
        known = isinstance(divisor, L.Const) and _kind(divisor.dtype) == "i" and int(divisor.value) not in (0, -1)
        if known:
            sb = b
        else:
            bad = bld.or_(bld.icmp_signed("==", b, zero), bld.icmp_signed("==", b, mone))
            sb = bld.select(bad, one, b)
        q = bld.sdiv(a, sb)
        r = bld.srem(a, sb)
        if op == "div":
            res = q
        else:
            # Python semantics: adjust when the remainder and divisor differ in sign.
            adjust = bld.and_(bld.icmp_signed("!=", r, zero),
                              bld.icmp_signed("<", bld.xor(r, sb), zero))
            if op == "floordiv":
                res = bld.sub(q, bld.zext(adjust, t))
            else:
                res = bld.add(r, bld.select(adjust, sb, zero))
        if not known:
            # b == -1: a / -1 = -a (wrapping), a % -1 = 0; b == 0: 0 (numpy's answer)
            neg = bld.sub(zero, a)
            res = bld.select(bld.icmp_signed("==", b, mone), zero if op == "mod" else neg, res)
            res = bld.select(bld.icmp_signed("==", b, zero), zero, res)
        return res

    def _fmod_py(self, a: ir.Value, b: ir.Value, t: ir.Type) -> ir.Value:
        """``np.remainder`` for floats: fmod with the sign of the divisor."""
        bld = self.b
        z = ir.Constant(t, 0.0)
        m = bld.frem(a, b)
        fix = bld.and_(bld.fcmp_ordered("!=", m, z),
                       bld.xor(bld.fcmp_ordered("<", b, z), bld.fcmp_ordered("<", m, z)))
        return bld.select(fix, bld.fadd(m, b), m)

    def unop(self, e: L.UnOp) -> ir.Value:
        bld = self.b
        op, dt = e.op, e.dtype
        if op == "not":
            return bld.not_(self.cond(e.a))
        k = _kind(dt)
        if op in ("exp", "log", "sqrt") and k != "f":
            # numpy computes these in float64; the interpreter then casts to the dtype.
            v = self.ev_as(e.a, "float64")
            t = reg_type("float64")
            r = bld.call(self._intrinsic(f"llvm.{op}", [t], t, [t]), [v])
            return self.convert(r, "float64", dt)
        a = self.ev_as(e.a, dt)
        t = reg_type(dt)
        if op == "neg":
            if k == "f":
                return bld.fneg(a)
            if k == "b":
                return a
            return bld.sub(ir.Constant(t, 0), a)
        if op == "abs":
            if k == "f":
                return bld.call(self._intrinsic("llvm.fabs", [t], t, [t]), [a])
            if k == "b":
                return a
            return bld.call(self._intrinsic("llvm.abs", [t], t, [t, _I1]), [a, ir.Constant(_I1, 0)])
        if op in ("exp", "log", "sqrt"):
            return bld.call(self._intrinsic(f"llvm.{op}", [t], t, [t]), [a])
        raise BackendError(f"cpu backend: unknown unary op {op!r}")

    # ------------------------------------------------------------------ statements
    def stmt(self, s: L.Stmt) -> None:
        if isinstance(s, L.Block):
            for c in s.stmts:
                self.stmt(c)
        elif isinstance(s, L.Assign):
            slot, dt = self.slots[s.var.name]
            v = s.value
            if isinstance(v, L.BinOp) and v.op in ("add", "sub", "mul", "max", "min"):
                # ``acc = acc op e``: the update of a reduction gets ``reassoc``.
                check_dtype(v.dtype, f"the result of {v.op!r}")
                a, b = self.ev_as(v.a, v.dtype), self.ev_as(v.b, v.dtype)
                red = any(isinstance(x, L.Var) and x.name == s.var.name for x in (v.a, v.b))
                val = self.arith(v.op, a, b, v.dtype, red)
            else:
                val = self.ev(v)
            val = self.convert(val, v.dtype, s.var.dtype)
            self.b.store(self.convert(val, s.var.dtype, dt), slot)
        elif isinstance(s, L.Store):
            self.store(s)
        elif isinstance(s, L.For):
            plan = self.plans.get(id(s))
            if id(s) in self.pack_active:
                self.packed_loop(self.pack_active[id(s)])
            elif plan is not None:
                self.tiled_loop(plan)
            elif id(s) in self.panels:
                self.panel_loop(self.panels[id(s)])
            else:
                self.for_loop(s)
        elif isinstance(s, L.While):
            self.while_loop(s)
        elif isinstance(s, L.If):
            self.if_stmt(s)
        elif isinstance(s, L.Comment):
            pass
        else:
            raise BackendError(f"cpu backend: unknown statement {s!r}")

    def store(self, s: L.Store) -> None:
        ptr, dt = self.element_ptr(s.buffer, s.index)
        check_dtype(s.value.dtype, f"the value stored to {s.buffer!r}")
        v = self.ev_as(s.value, dt)
        if s.reduce is None:
            self.store_elem(v, ptr, dt)
            return
        if s.reduce not in L.REDUCE_STORE_OPS:
            raise BackendError(f"cpu backend: unknown reducing store {s.reduce!r}")
        if self.atomic_depth:
            self.atomic_store(s.reduce, ptr, v, dt)
            return
        old = self.load_elem(ptr, dt)
        self.store_elem(self.arith(s.reduce, old, v, dt, reduction=True), ptr, dt)

    def atomic_store(self, op: str, ptr: ir.Value, v: ir.Value, dt: str) -> None:
        bld = self.b
        k = _kind(dt)
        if k == "b":
            bld.atomic_rmw("or" if op in ("add", "max") else "and", ptr, bld.zext(v, _I8), "monotonic")
            return
        if k == "i":
            bld.atomic_rmw({"add": "add", "max": "max", "min": "min"}[op], ptr, v, "monotonic")
            return
        if op == "add":
            bld.atomic_rmw("fadd", ptr, v, "monotonic")
            return
        # float max/min: compare-exchange loop on the bit pattern.
        t = reg_type(dt)
        it = ir.IntType(_SIZES[dt] * 8)
        start = bld.block
        loop = self.fn.append_basic_block("atomic.loop")
        done = self.fn.append_basic_block("atomic.done")
        init = bld.load(ptr, typ=it, align=_SIZES[dt])
        bld.branch(loop)
        bld.position_at_end(loop)
        cur = bld.phi(it)
        cur.add_incoming(init, start)
        new = self.arith(op, bld.bitcast(cur, t), v, dt)
        pair = bld.cmpxchg(ptr, cur, bld.bitcast(new, it), "monotonic", "monotonic")
        seen = bld.extract_value(pair, 0)
        ok = bld.extract_value(pair, 1)
        cur.add_incoming(seen, loop)
        bld.cbranch(ok, done, loop)
        bld.position_at_end(done)

    def for_loop(self, s: L.For) -> None:
        bld = self.b
        lo = self.index(s.lo)
        hi = self.index(s.hi)
        if not (shortrows.is_short_row_sum(s) and shortrows.pays_off()):
            self.counted_loop(s, lo, hi, _loop_hints(s.kind))
            return
        # versioned on the trip count: short rows as masked vectors, long ones as LLVM vectorizes them
        short = self.fn.append_basic_block(f"for.{s.var.name}.short")
        long_ = self.fn.append_basic_block(f"for.{s.var.name}.long")
        join = self.fn.append_basic_block(f"for.{s.var.name}.joined")
        bld.cbranch(bld.icmp_signed("<", bld.sub(hi, lo), ir.Constant(_I64, shortrows.LONG_ROW)), short, long_)
        for block, hints in ((short, shortrows.hints()), (long_, [])):
            bld.position_at_end(block)
            self.counted_loop(s, lo, hi, hints)
            bld.branch(join)
        bld.position_at_end(join)

    def counted_loop(self, s: L.For, lo: ir.Value, hi: ir.Value, hints: list[str]) -> None:
        """``s`` over ``[lo, hi)`` (already evaluated) with the given LLVM loop metadata on its latch."""
        bld = self.b
        slot, vdt = self.slots[s.var.name]
        pre = bld.block
        body = self.fn.append_basic_block(f"for.{s.var.name}")
        done = self.fn.append_basic_block(f"for.{s.var.name}.end")
        bld.cbranch(bld.icmp_signed("<", lo, hi), body, done)
        bld.position_at_end(body)
        iv = bld.phi(_I64, name=f"{s.var.name}.iv")
        iv.add_incoming(lo, pre)
        bld.store(self.convert(iv, L.INDEX, vdt), slot)
        atomic = s.kind.kind == "parallel" and s.kind.atomic
        self.atomic_depth += atomic
        self.stmt(s.body)
        self.atomic_depth -= atomic
        nxt = bld.add(iv, ir.Constant(_I64, 1), flags=("nsw",))
        iv.add_incoming(nxt, bld.block)
        latch = bld.cbranch(bld.icmp_signed("<", nxt, hi), body, done)
        if hints:
            marker = f"sparsec.loop.{len(self.module.loop_hints)}"
            self.module.loop_hints[marker] = hints
            latch.set_metadata("llvm.loop", self.module.add_metadata([ir.MetaDataString(self.module, marker)]))
        bld.position_at_end(done)

    def while_loop(self, s: L.While) -> None:
        bld = self.b
        head = self.fn.append_basic_block("while.cond")
        body = self.fn.append_basic_block("while.body")
        done = self.fn.append_basic_block("while.end")
        bld.branch(head)
        bld.position_at_end(head)
        bld.cbranch(self.cond(s.cond), body, done)
        bld.position_at_end(body)
        self.stmt(s.body)
        bld.branch(head)
        bld.position_at_end(done)

    def if_stmt(self, s: L.If) -> None:
        bld = self.b
        c = self.cond(s.cond)
        then = self.fn.append_basic_block("if.then")
        done = self.fn.append_basic_block("if.end")
        other = self.fn.append_basic_block("if.else") if s.orelse.stmts else done
        bld.cbranch(c, then, other)
        bld.position_at_end(then)
        self.stmt(s.then)
        bld.branch(done)
        if s.orelse.stmts:
            bld.position_at_end(other)
            self.stmt(s.orelse)
            bld.branch(done)
        bld.position_at_end(done)

    # ------------------------------------------------------------------ register tiles (see regtile)
    def _declare_tile_slots(self) -> None:
        for plan in self.plans.values():
            for v in plan.variants:
                vt = ir.VectorType(reg_type(plan.dtype), v.lanes)
                v.slots["acc"] = [[self.b.alloca(vt, name=f"acc{v.bits}.{r}.{u}") for u in range(v.tiles[0])]
                                  for r in range(max(v.splits))]
                self.vector_bits = max(getattr(self, "vector_bits", 0), v.bits)
            plan.slots["jt"] = self.b.alloca(_I64, name="jt")
            plan.slots["p"] = self.b.alloca(_I64, name="p")
            self.slots[plan.tail_var] = (self.b.alloca(_I64, name="jtail"), L.INDEX)
        for pn in self.panels.values():
            for name in (pn.lo_var, pn.hi_var):
                self.slots[name] = (self.b.alloca(_I64, name=name), L.INDEX)
        for pk in self.packs.values():
            for name in pk.locals:
                self.slots[name] = (self.b.alloca(_I64, name=name), L.INDEX)
            pk.plan.slots["pack"] = {"raw": self.b.alloca(_PTR, name=f"{pk.copy}.raw"),
                                     "r": self.b.alloca(_I64, name=f"{pk.copy}.r"),
                                     "j": self.b.alloca(_I64, name=f"{pk.copy}.j")}

    def _find_packs(self) -> dict[int, pack.Pack]:
        """The :mod:`.pack` packings of the panels' dense operands, keyed by ``id`` of the panel's row loop."""
        dtypes = {p.name: p.dtype for p in self.kernel.buffers}
        packs: dict[int, pack.Pack] = {}
        for key, pn in self.panels.items():
            nz = [c for c in pn.rows.body.stmts if not isinstance(c, L.Comment)][-1]
            plan = self.plans.get(id(nz))
            found = None if plan is None else pack.find_pack(pn.rows, plan, pn.lo_var, dtypes, len(packs))
            if found is not None:
                packs[key] = found
        return packs

    def _while(self, cond, body) -> None:
        """``while cond(): body()`` as blocks (LLVM rotates it)."""
        bld = self.b
        head = self.fn.append_basic_block("rt.cond")
        loop = self.fn.append_basic_block("rt.body")
        done = self.fn.append_basic_block("rt.end")
        bld.branch(head)
        bld.position_at_end(head)
        bld.cbranch(cond(), loop, done)
        bld.position_at_end(loop)
        body()
        bld.branch(head)
        bld.position_at_end(done)

    def _when(self, cond, body, orelse=None) -> None:
        bld = self.b
        then = self.fn.append_basic_block("rt.then")
        other = self.fn.append_basic_block("rt.else") if orelse is not None else None
        done = self.fn.append_basic_block("rt.done")
        bld.cbranch(cond, then, other or done)
        bld.position_at_end(then)
        body()
        bld.branch(done)
        if orelse is not None:
            bld.position_at_end(other)
            orelse()
            bld.branch(done)
        bld.position_at_end(done)

    def _vintrinsic(self, name: str, vt: ir.VectorType, nargs: int) -> ir.Function:
        et = vt.element
        suffix = f"v{vt.count}" + (f"i{et.width}" if isinstance(et, ir.IntType) else
                                   {"half": "f16", "float": "f32", "double": "f64"}[str(et)])
        full = f"{name}.{suffix}"
        try:
            return self.module.get_global(full)
        except KeyError:
            return ir.Function(self.module, ir.FunctionType(vt, [vt] * nargs), name=full)

    def _splat(self, v: ir.Value, lanes: int) -> ir.Value:
        vt = ir.VectorType(v.type, lanes)
        undef = ir.Constant(vt, ir.Undefined)
        one = self.b.insert_element(undef, v, ir.Constant(ir.IntType(32), 0))
        return self.b.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))

    def _vconvert(self, v: ir.Value, src: str, dst: str, lanes: int) -> ir.Value:
        ts, td = reg_type(src), reg_type(dst)
        if ts == td:
            return v
        vt = ir.VectorType(td, lanes)
        ks, kd = _kind(src), _kind(dst)
        if ks == "f" and kd == "f":
            return self.b.fpext(v, vt) if _FLOAT_RANK[src] < _FLOAT_RANK[dst] else self.b.fptrunc(v, vt)
        if ks == "i" and kd == "f":
            return self.b.sitofp(v, vt)
        if ks == "i" and kd == "i":
            return self.b.sext(v, vt) if ts.width < td.width else self.b.trunc(v, vt)
        raise BackendError(f"cpu backend: no vector conversion from {src} to {dst}")  # pragma: no cover

    def _varith(self, op: str, a: ir.Value, b: ir.Value, dt: str, reduction: bool = False) -> ir.Value:
        bld = self.b
        if op in ("max", "min"):
            if _kind(dt) == "f":
                name = "llvm.maximum" if op == "max" else "llvm.minimum"
            else:
                name = "llvm.smax" if op == "max" else "llvm.smin"
            return bld.call(self._vintrinsic(name, a.type, 2), [a, b])
        if _kind(dt) == "f":
            fm = FM_REDUCE if reduction else FM_ANY
            fn = {"add": bld.fadd, "sub": bld.fsub, "mul": bld.fmul}.get(op)
            return fn(a, b, flags=fm) if fn is not None else bld.fdiv(a, b)
        return {"add": bld.add, "sub": bld.sub, "mul": bld.mul}[op](a, b)

    def _masked_load(self, ptr: ir.Value, vt: ir.VectorType, align: int, mask: ir.Value) -> ir.Value:
        """``llvm.masked.load``: masked-off lanes are never read (and come back as 0)."""
        et = vt.element
        suffix = f"v{vt.count}" + (f"i{et.width}" if isinstance(et, ir.IntType) else
                                   {"half": "f16", "float": "f32", "double": "f64"}[str(et)])
        name = f"llvm.masked.load.{suffix}.p0"
        mt = mask.type
        try:
            fn = self.module.get_global(name)
        except KeyError:
            fn = ir.Function(self.module, ir.FunctionType(vt, [_PTR, ir.IntType(32), mt, vt]), name=name)
        zero = ir.Constant(vt, [ir.Constant(et, 0.0 if not isinstance(et, ir.IntType) else 0)] * vt.count)
        return self.b.call(fn, [ptr, ir.Constant(ir.IntType(32), align), mask, zero])

    def _masked_store(self, v: ir.Value, ptr: ir.Value, align: int, mask: ir.Value) -> None:
        vt = v.type
        et = vt.element
        suffix = f"v{vt.count}" + (f"i{et.width}" if isinstance(et, ir.IntType) else
                                   {"half": "f16", "float": "f32", "double": "f64"}[str(et)])
        name = f"llvm.masked.store.{suffix}.p0"
        try:
            fn = self.module.get_global(name)
        except KeyError:
            fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [vt, _PTR, ir.IntType(32), mask.type]),
                             name=name)
        self.b.call(fn, [v, ptr, ir.Constant(ir.IntType(32), align), mask])

    def _vev(self, e: L.LExpr, plan: regtile.TilePlan, W: int, nvec: int, jt: ir.Value,
             masks: list | None = None) -> ir.Value | list:
        """``e`` along the inner variable: a scalar (invariant) or ``nvec`` vectors of ``W`` lanes at ``jt``.

        With ``masks`` (a masked variant), vector loads are masked (and aligned to their size when
        ``masks.aligned``).
        """
        iv = plan.inner.var.name
        if iv not in L.var_reads(e):
            return self.ev(e)
        bld = self.b
        if isinstance(e, L.Load):
            arg, dt = self.buffers[e.buffer]
            base = bld.add(self.index(regtile.affine(e.index, iv)[0]), jt, flags=("nsw",))
            vt = ir.VectorType(mem_type(dt), W)
            out = []
            for u in range(nvec):
                idx = bld.add(base, ir.Constant(_I64, u * W), flags=("nsw",)) if u else base
                mask = None if masks is None else masks.lanes[u]
                if mask is None:
                    ptr = bld.gep(arg, [idx], inbounds=True, source_etype=mem_type(dt))
                    align = W * _SIZES[dt] if masks is not None and masks.aligned else _SIZES[dt]
                    v = bld.load(ptr, typ=vt, align=align)
                else:  # the first vector of a row may start before the buffer: no inbounds
                    ptr = bld.gep(arg, [idx], inbounds=False, source_etype=mem_type(dt))
                    align = W * _SIZES[dt] if masks.aligned else _SIZES[dt]
                    v = self._masked_load(ptr, vt, align, mask)
                out.append(self._vconvert(v, dt, e.dtype, W))
            return out
        if isinstance(e, L.Cast):
            a = self._vev(e.a, plan, W, nvec, jt, masks)
            if not isinstance(a, list):  # pragma: no cover - invariant operands were handled above
                return self.convert(a, e.a.dtype, e.dtype)
            return [self._vconvert(v, e.a.dtype, e.dtype, W) for v in a]
        if isinstance(e, L.UnOp):
            a = self._as_vectors(self._vev(e.a, plan, W, nvec, jt, masks), e.a.dtype, e.dtype, nvec, W)
            if e.op == "neg":
                return [bld.fneg(v) for v in a]
            name = {"abs": "llvm.fabs", "sqrt": "llvm.sqrt"}[e.op]
            return [bld.call(self._vintrinsic(name, v.type, 1), [v]) for v in a]
        assert isinstance(e, L.BinOp)
        a = self._as_vectors(self._vev(e.a, plan, W, nvec, jt, masks), e.a.dtype, e.dtype, nvec, W)
        b = self._as_vectors(self._vev(e.b, plan, W, nvec, jt, masks), e.b.dtype, e.dtype, nvec, W)
        return [self._varith(e.op, x, y, e.dtype) for x, y in zip(a, b)]

    def _as_vectors(self, v: ir.Value | list, src: str, dst: str, nvec: int, W: int) -> list:
        if isinstance(v, list):
            return [self._vconvert(x, src, dst, W) for x in v]
        s = self._splat(self.convert(v, src, dst), W)
        return [s] * nvec

    def _tile_step(self, plan: regtile.TilePlan, W: int, p: ir.Value, accs: list, nvec: int,
                   jt: ir.Value, masks: list | None) -> None:
        """One outer iteration ``p`` of a tile: definitions, then ``acc[u] op= value``."""
        bld = self.b
        slot, vdt = self.slots[plan.outer.var.name]
        bld.store(self.convert(p, L.INDEX, vdt), slot)
        for s in plan.pre:
            self.stmt(s)
        vals = self._as_vectors(self._vev(plan.value, plan, W, nvec, jt, masks), plan.value.dtype, plan.dtype,
                                nvec, W)
        vt = ir.VectorType(reg_type(plan.dtype), W)
        for u in range(nvec):
            acc = bld.load(accs[u], typ=vt)
            bld.store(self._varith(plan.reduce, acc, vals[u], plan.dtype, reduction=True), accs[u])

    def _tile_masks(self, var: regtile.Variant, nvec: int, jt: ir.Value, bounds: tuple | None,
                    lower: bool) -> _TileMasks | None:
        """Lane masks of the tile at ``jt`` (None: unmasked). ``bounds``: the inner loop's ``(lo, hi)``.

        ``lower``: the tile may start before ``lo`` (a shifted grid), so every vector is masked at
        both ends; else only the vectors past ``hi - W`` can hold lanes out of range, and the tiles
        are laid so that only the last vector of the row does (see :meth:`_tiles`).
        """
        if bounds is None:
            return None
        bld, W = self.b, var.lanes
        masks = _TileMasks([], var.aligned)
        lanes = ir.Constant(ir.VectorType(_I64, W), list(range(W)))
        if not lower:
            # the tile ends past hi only in its last vector: lanes jt + (nvec-1) W + l < hi
            last = bld.sub(bounds[1], bld.add(jt, ir.Constant(_I64, (nvec - 1) * W), flags=("nsw",)), flags=("nsw",))
            masks.lanes.extend([None] * (nvec - 1) + [bld.icmp_signed("<", lanes, self._splat(last, W))])
            return masks
        lo_v, hi_v = self._splat(bounds[0], W), self._splat(bounds[1], W)
        for u in range(nvec):
            cols = bld.add(self._splat(bld.add(jt, ir.Constant(_I64, u * W)), W), lanes)
            masks.lanes.append(bld.and_(bld.icmp_signed(">=", cols, lo_v), bld.icmp_signed("<", cols, hi_v)))
        return masks

    def _tile(self, plan: regtile.TilePlan, var: regtile.Variant, nvec: int, jt: ir.Value,
              bounds: tuple | None = None, lower: bool = True) -> None:
        """The columns ``[jt, jt + nvec * lanes)`` of the nest, accumulated in registers.

        ``bounds`` (masked variant): the inner loop's ``(lo, hi)``; lanes outside are masked off
        (see :meth:`_tile_masks` for ``lower``).
        """
        bld = self.b
        W, dt = var.lanes, plan.dtype
        K = var.splits[var.tiles.index(nvec)]
        vt = ir.VectorType(reg_type(dt), W)
        accs = var.slots["acc"]
        out_arg, out_dt = self.buffers[plan.store.buffer]
        base = bld.add(self.index(plan.out_base), jt, flags=("nsw",))
        masks = self._tile_masks(var, nvec, jt, bounds, lower)
        lane_masks = [None] * nvec if masks is None else masks.lanes
        ptrs = [bld.gep(out_arg, [bld.add(base, ir.Constant(_I64, u * W), flags=("nsw",)) if u else base],
                        inbounds=lane_masks[u] is None, source_etype=mem_type(out_dt)) for u in range(nvec)]
        fresh = id(plan.store) in self.fresh
        for u in range(nvec):
            if fresh:   # the host zeroed the output and no other iteration adds to these elements
                v = ir.Constant(vt, None)
            else:
                v = bld.load(ptrs[u], typ=vt, align=_SIZES[dt]) if lane_masks[u] is None else \
                    self._masked_load(ptrs[u], vt, _SIZES[dt], lane_masks[u])
            bld.store(v, accs[0][u])
        zero = ir.Constant(vt, [ir.Constant(vt.element, -0.0 if _kind(dt) == "f" else 0)] * W)
        for r in range(1, K):
            for u in range(nvec):
                bld.store(zero, accs[r][u])
        lo, hi = self.index(plan.outer.lo), self.index(plan.outer.hi)
        pslot = plan.slots["p"]
        bld.store(lo, pslot)

        def load_p() -> ir.Value:
            return bld.load(pslot, typ=_I64)

        if K > 1:
            def unrolled() -> None:
                p = load_p()
                for r in range(K):
                    pr = bld.add(p, ir.Constant(_I64, r), flags=("nsw",)) if r else p
                    self._tile_step(plan, W, pr, accs[r], nvec, jt, masks)
                bld.store(bld.add(p, ir.Constant(_I64, K), flags=("nsw",)), pslot)

            self._while(lambda: bld.icmp_signed("<=", bld.add(load_p(), ir.Constant(_I64, K), flags=("nsw",)), hi),
                        unrolled)

            # the remaining (fewer than K) outer iterations, one by one (not a loop LLVM would unroll)
            def rest(r: int) -> None:
                p = load_p()
                self._tile_step(plan, W, p, accs[r], nvec, jt, masks)
                bld.store(bld.add(p, ir.Constant(_I64, 1), flags=("nsw",)), pslot)
                if r + 1 < K - 1:
                    self._when(bld.icmp_signed("<", load_p(), hi), lambda: rest(r + 1))

            self._when(bld.icmp_signed("<", load_p(), hi), lambda: rest(0))
        else:
            def single() -> None:
                p = load_p()
                self._tile_step(plan, W, p, accs[0], nvec, jt, masks)
                bld.store(bld.add(p, ir.Constant(_I64, 1), flags=("nsw",)), pslot)

            self._while(lambda: bld.icmp_signed("<", load_p(), hi), single)
        for u in range(nvec):
            parts = [bld.load(accs[r][u], typ=vt) for r in range(K)]
            while len(parts) > 1:
                parts = [self._varith(plan.reduce, parts[i], parts[i + 1], dt, reduction=True)
                         if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
            if lane_masks[u] is None:
                bld.store(parts[0], ptrs[u], align=_SIZES[dt])
            else:
                self._masked_store(parts[0], ptrs[u], _SIZES[dt], lane_masks[u])

    def _multiple_of(self, e: L.LExpr, d: int, assigned: frozenset) -> ir.Value | bool:
        """A sufficient condition (i1 value, or a Python bool) for the index ``e`` to be a multiple of ``d``."""
        if isinstance(e, L.Const):
            return int(e.value) % d == 0
        if isinstance(e, L.Var):
            if e.name in assigned or e.dtype not in ("index", "int64", "int32", "int16", "int8"):
                return False
            v = self.index(e)
            return self.b.icmp_signed("==", self.b.and_(v, ir.Constant(_I64, d - 1)), ir.Constant(_I64, 0))
        if isinstance(e, L.Cast) and e.dtype in ("index", "int64"):
            return self._multiple_of(e.a, d, assigned)
        if isinstance(e, L.BinOp) and e.op in ("add", "sub", "mul"):
            a = self._multiple_of(e.a, d, assigned)
            b = self._multiple_of(e.b, d, assigned)
            return self._cond("or" if e.op == "mul" else "and", a, b)
        return False

    def _cond(self, op: str, a: ir.Value | bool, b: ir.Value | bool) -> ir.Value | bool:
        """``a and b`` / ``a or b`` (``op``) of conditions that are i1 values or Python bools, folded where
        one is a bool: the absorbing value (False for and, True for or) wins, the other one drops out."""
        absorbing = op == "or"
        if a is absorbing or b is absorbing:
            return absorbing
        if a is (not absorbing):
            return b
        if b is (not absorbing):
            return a
        return self.b.or_(a, b) if op == "or" else self.b.and_(a, b)

    def _grid_shift(self, plan: regtile.TilePlan, var: regtile.Variant, jlo: ir.Value) -> tuple | None:
        """``(ok, shift)`` for the masked variant: tiles starting at ``jlo - shift`` load aligned vectors.

        ``ok`` (an i1 value) holds when every vector-loaded row starts at the same offset from
        a vector-size boundary: each load's row index is a multiple of the lanes and its
        buffer sits at the same offset as the first one's. None when that cannot hold.
        """
        bld = self.b
        W = var.lanes
        iv = plan.inner.var.name
        ok: ir.Value | bool = True
        shift = None
        for ld in plan.vector_loads():
            arg, dt = self.buffers[ld.buffer]
            nbytes = W * _SIZES[dt]
            if nbytes & (nbytes - 1):
                return None
            mult = self._multiple_of(regtile.affine(ld.index, iv)[0], W, plan.assigned)
            if mult is False:
                return None
            # the buffer's offset from a vector boundary, in elements
            off = bld.udiv(bld.and_(bld.ptrtoint(arg, _I64), ir.Constant(_I64, nbytes - 1)),
                           ir.Constant(_I64, _SIZES[dt]))
            if shift is None:
                shift = off
                same = True
            else:
                same = bld.icmp_signed("==", off, shift)
            ok = self._cond("and", self._cond("and", ok, mult), same)
        if shift is None:
            return None
        if ok is True:
            ok = ir.Constant(_I1, 1)
        # first tile column j0 <= jlo with (offset + j0) % W == 0
        s = bld.and_(bld.add(shift, jlo), ir.Constant(_I64, W - 1))
        return ok, s

    def _tiles(self, plan: regtile.TilePlan, var: regtile.Variant, jlo: ir.Value, jhi: ir.Value,
               masked: bool, lower: bool = False) -> None:
        """Tiles from the column in the ``jt`` slot to ``jhi``: the widest while they fit, then (masked) one
        tile as wide as the rest, its last vector masked at ``jhi``, or (unmasked) narrower ones.

        ``lower`` (masked): the first tile may start before ``jlo`` (a shifted grid), and every tile is
        masked at both ends.
        """
        bld = self.b
        W = var.lanes
        jslot = plan.slots["jt"]
        bounds = (jlo, jhi) if masked else None

        def fits(nvec: int) -> ir.Value:
            return bld.icmp_signed("<=", bld.add(bld.load(jslot, typ=_I64), ir.Constant(_I64, nvec * W),
                                                 flags=("nsw",)), jhi)

        def tile(nvec: int, bounds: tuple | None = bounds):
            def run() -> None:
                jt = bld.load(jslot, typ=_I64)
                self._tile(plan, var, nvec, jt, bounds, lower)
                bld.store(bld.add(jt, ir.Constant(_I64, nvec * W), flags=("nsw",)), jslot)
            return run

        widest, *narrower = var.tiles
        # a whole tile within [jlo, jhi) needs no masks
        self._while(lambda: fits(widest), tile(widest, bounds if lower else None))
        if not masked:
            for nvec in narrower:
                self._when(fits(nvec), tile(nvec))
            return
        # the last columns: one tile of as many vectors as they need, masked at its end
        rem = bld.sub(jhi, bld.load(jslot, typ=_I64), flags=("nsw",))
        need = bld.sdiv(bld.add(rem, ir.Constant(_I64, W - 1), flags=("nsw",)), ir.Constant(_I64, W))
        for nvec in var.tiles:
            self._when(bld.icmp_signed("==", need, ir.Constant(_I64, nvec)), tile(nvec))

    def tiled_loop(self, plan: regtile.TilePlan) -> None:
        """An outer loop matched by :func:`regtile.find_plans`: tiles of the inner range, then the rest."""
        bld = self.b
        jlo, jhi = self.index(plan.inner.lo), self.index(plan.inner.hi)
        jslot = plan.slots["jt"]
        variants = list(plan.variants)

        def unmasked(var: regtile.Variant) -> None:
            bld.store(jlo, jslot)
            self._tiles(plan, var, jlo, jhi, False)

        def emit(k: int) -> None:
            var = variants[k]
            if not var.masked:
                unmasked(var)
                return
            if not var.aligned:  # tiles from the range's start, the last one masked at its end
                bld.store(jlo, jslot)
                self._tiles(plan, var, jlo, jhi, True)
                return
            grid = self._grid_shift(plan, var, jlo)
            if grid is None:
                if k + 1 < len(variants):
                    emit(k + 1)
                return

            def masked(lower: bool) -> None:
                bld.store(bld.sub(jlo, grid[1]), jslot)
                self._tiles(plan, var, jlo, jhi, True, lower)

            if k + 1 < len(variants):
                # only where the tile grid needs no shift (see regtile._variants): a shifted grid
                # loads one vector more per row, and the next variant's narrower tiles are faster
                aligned = bld.and_(grid[0], bld.icmp_signed("==", grid[1], ir.Constant(_I64, 0)))
                self._when(aligned, lambda: masked(False), lambda: emit(k + 1))
            else:
                masked(True)

        emit(0)
        start = bld.load(jslot, typ=_I64)
        bld.store(start, self.slots[plan.tail_var][0])
        inner = replace(plan.inner, lo=L.Var(plan.tail_var, L.INDEX))
        rest = replace(plan.outer, body=L.Block(tuple(plan.pre) + (inner,)))

        def remainder() -> None:
            if id(plan.store) in self.fresh:   # the original nest adds into the output: zero its columns first
                self._zero_columns(plan, start, jhi)
            self.for_loop(rest)

        self._when(bld.icmp_signed("<", start, jhi), remainder)

    def _zero_columns(self, plan: regtile.TilePlan, jlo: ir.Value, jhi: ir.Value) -> None:
        """Store zeros into the output elements ``out_base + [jlo, jhi)`` of ``plan``'s store."""
        bld = self.b
        out_arg, out_dt = self.buffers[plan.store.buffer]
        base = self.index(plan.out_base)
        jslot = plan.slots["jt"]
        bld.store(jlo, jslot)

        def step() -> None:
            j = bld.load(jslot, typ=_I64)
            at = bld.gep(out_arg, [bld.add(base, j, flags=("nsw",))], inbounds=True, source_etype=mem_type(out_dt))
            bld.store(ir.Constant(mem_type(out_dt), None), at)
            bld.store(bld.add(j, ir.Constant(_I64, 1), flags=("nsw",)), jslot)

        self._while(lambda: bld.icmp_signed("<", bld.load(jslot, typ=_I64), jhi), step)

    def panel_loop(self, pn: panels.Panel) -> None:
        """A row loop cut into column panels (see :mod:`.panels`): per panel, every row over its columns;
        over a packed copy of the dense operand where :mod:`.pack` applies."""
        bld = self.b
        lo, hi = self.index(pn.lo), self.index(pn.hi)
        if pn is self.window:  # this call's share of the columns
            win_lo, win_hi = self.fn.args[-2], self.fn.args[-1]
            lo = bld.select(bld.icmp_signed("<", lo, win_lo), win_lo, lo)
            hi = bld.select(bld.icmp_signed(">", hi, win_hi), win_hi, hi)
            hi = bld.select(bld.icmp_signed("<", hi, lo), lo, hi)
        cols = bld.sub(hi, lo, flags=("nsw",))
        short = bld.icmp_signed("<", cols, ir.Constant(_I64, panels.MIN_COLUMNS))
        if pn.dense_rows:   # a panel's block of the dense operands would stay in no cache: one panel
            rows = self.index(L.Var(pn.dense_rows[0], L.INDEX))
            for name in pn.dense_rows[1:]:
                rows = bld.add(rows, self.index(L.Var(name, L.INDEX)))
            slab = bld.mul(rows, ir.Constant(_I64, panels.PANEL_BYTES))
            short = bld.or_(short, bld.icmp_signed(">", slab, ir.Constant(_I64, panels.PANEL_SLAB_BYTES)))
        width = bld.select(short, cols, ir.Constant(_I64, max(panels.PANEL_BYTES // _SIZES[pn.dtype], 1)))
        lo_slot, hi_slot = self.slots[pn.lo_var][0], self.slots[pn.hi_var][0]
        pk = self.packs.get(id(pn.rows))

        def run(copy: ir.Value | None) -> None:
            bld.store(lo, lo_slot)

            def panel() -> None:
                start = bld.load(lo_slot, typ=_I64)
                end = bld.add(start, width, flags=("nsw",))
                end = bld.select(bld.icmp_signed("<", end, hi), end, hi)
                bld.store(end, hi_slot)
                if copy is None:
                    self.for_loop(pn.rows)
                else:
                    self._pack_rows(pk, copy, start, end)
                    self.buffers[pk.copy] = (copy, pk.plan.dtype)
                    self.pack_active[id(pk.plan.outer)] = pk.packed
                    self.for_loop(pn.rows)
                    del self.pack_active[id(pk.plan.outer)]
                bld.store(end, lo_slot)

            self._while(lambda: bld.icmp_signed("<", bld.load(lo_slot, typ=_I64), hi), panel)

        if pk is None:
            run(None)
            return
        raw = self._pack_alloc(pk, lo, width)
        null = ir.Constant(_PTR, None)

        def packed() -> None:
            # the copy starts at the first 64-byte boundary of the allocation
            skew = bld.and_(bld.sub(ir.Constant(_I64, 0), bld.ptrtoint(raw, _I64)), ir.Constant(_I64, 63))
            run(bld.gep(raw, [skew], inbounds=True, source_etype=_I8))
            bld.call(self._libc("free", ir.VoidType(), [_PTR]), [raw])

        self._when(bld.icmp_unsigned("!=", raw, null), packed, lambda: run(None))

    # ------------------------------------------------------------------ packed rows (see pack)
    def _libc(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        """The C library function ``name`` (the JIT resolves it in the process)."""
        try:
            return self.module.get_global(name)
        except KeyError:
            fn = ir.Function(self.module, ir.FunctionType(ret, args), name=name)
            fn.attributes.add("nounwind")
            return fn

    def _pack_alloc(self, pk: pack.Pack, lo: ir.Value, width: ir.Value) -> ir.Value:
        """The ``malloc``-ed block for the packed copy of ``pk``'s operand (64 bytes more than the copy,
        to align it), or null where the rows are aligned already or packing does not pay (module docs)."""
        bld = self.b
        W, size = pk.variant.lanes, _SIZES[pk.plan.dtype]
        slots = pk.plan.slots["pack"]
        bld.store(ir.Constant(_PTR, None), slots["raw"])
        mask = ir.Constant(_I64, W - 1)

        def survey() -> None:
            slot = {name: self.slots[name][0] for name in pk.locals}
            bld.store(ir.Constant(_I64, 2 ** 63 - 1), slot[pk.vmin])
            bld.store(ir.Constant(_I64, -2 ** 63), slot[pk.vmax])
            bld.store(ir.Constant(_I64, 0), slot[pk.count])
            self.stmt(pk.survey())
            vmin, vmax, count = (bld.load(slot[n], typ=_I64) for n in (pk.vmin, pk.vmax, pk.count))
            sp = bld.and_(bld.add(width, mask), ir.Constant(_I64, -W))
            bld.store(sp, slot[pk.width])
            span = bld.add(bld.sub(vmax, vmin), ir.Constant(_I64, 1))
            most = ir.Constant(_I64, pack.MAX_BYTES // size)
            ok = bld.and_(bld.icmp_signed(">", count, ir.Constant(_I64, 0)),
                          bld.icmp_signed(">=", count, bld.mul(span, ir.Constant(_I64, pack.MIN_REUSE))))
            ok = bld.and_(ok, bld.and_(bld.icmp_signed("<=", span, most), bld.icmp_signed("<=", sp, most)))
            ok = bld.and_(ok, bld.icmp_signed("<=", bld.mul(span, sp), most))

            def allocate() -> None:
                nbytes = bld.add(bld.mul(bld.mul(span, sp), ir.Constant(_I64, size)), ir.Constant(_I64, 64))
                bld.store(bld.call(self._libc("malloc", _PTR, [_I64]), [nbytes]), slots["raw"])

            self._when(ok, allocate)

        self._when(bld.not_(self._rows_aligned(pk, lo)), survey)
        return bld.load(slots["raw"], typ=_PTR)

    def _rows_aligned(self, pk: pack.Pack, lo: ir.Value) -> ir.Value:
        """Whether every row of ``pk``'s operand starts on a vector boundary at column ``lo``: the
        operand's offset from one plus ``offset + lo`` and the row stride are multiples of the lanes."""
        bld = self.b
        W, size = pk.variant.lanes, _SIZES[pk.plan.dtype]
        arg = self.buffers[pk.buffer][0]
        skew = bld.udiv(bld.and_(bld.ptrtoint(arg, _I64), ir.Constant(_I64, W * size - 1)), ir.Constant(_I64, size))
        first = bld.add(bld.add(skew, self.index(pk.offset)), lo)
        return bld.icmp_signed("==", bld.and_(bld.or_(first, self.index(pk.stride)), ir.Constant(_I64, W - 1)),
                               ir.Constant(_I64, 0))

    def _pack_rows(self, pk: pack.Pack, copy: ir.Value, pl: ir.Value, ph: ir.Value) -> None:
        """Copy columns ``[pl, ph)`` of the operand's rows ``vmin..vmax`` to ``copy``, rows ``width`` apart."""
        bld = self.b
        W, dt = pk.variant.lanes, pk.plan.dtype
        vt = ir.VectorType(mem_type(dt), W)
        slots = pk.plan.slots["pack"]
        vmin, vmax, sp = (bld.load(self.slots[n][0], typ=_I64) for n in (pk.vmin, pk.vmax, pk.width))
        stride, offset = self.index(pk.stride), self.index(pk.offset)
        ncols = bld.sub(ph, pl, flags=("nsw",))
        lanes = ir.Constant(ir.VectorType(_I64, W), list(range(W)))
        arg = self.buffers[pk.buffer][0]
        bld.store(ir.Constant(_I64, 0), slots["r"])

        def row() -> None:
            r = bld.load(slots["r"], typ=_I64)
            src = bld.add(bld.add(bld.mul(bld.add(vmin, r), stride), offset), pl)
            dst = bld.mul(r, sp)
            bld.store(ir.Constant(_I64, 0), slots["j"])

            def vector(masked: bool) -> None:
                j = bld.load(slots["j"], typ=_I64)
                at = bld.gep(arg, [bld.add(src, j)], inbounds=True, source_etype=mem_type(dt))
                if masked:
                    v = self._masked_load(at, vt, _SIZES[dt], bld.icmp_signed(
                        "<", lanes, self._splat(bld.sub(ncols, j), W)))
                else:
                    v = bld.load(at, typ=vt, align=_SIZES[dt])
                to = bld.gep(copy, [bld.add(dst, j)], inbounds=True, source_etype=mem_type(dt))
                bld.store(v, to, align=W * _SIZES[dt])
                bld.store(bld.add(j, ir.Constant(_I64, W)), slots["j"])

            self._while(lambda: bld.icmp_signed("<=", bld.add(bld.load(slots["j"], typ=_I64),
                                                               ir.Constant(_I64, W)), ncols), lambda: vector(False))
            self._when(bld.icmp_signed("<", bld.load(slots["j"], typ=_I64), ncols), lambda: vector(True))
            bld.store(bld.add(r, ir.Constant(_I64, 1)), slots["r"])

        self._while(lambda: bld.icmp_signed("<=", bld.load(slots["r"], typ=_I64), bld.sub(vmax, vmin)), row)

    def packed_loop(self, plan: regtile.TilePlan) -> None:
        """A nonzero loop whose tiles read the packed copy (:mod:`.pack`): aligned, masked at the row's end."""
        bld = self.b
        jlo, jhi = self.index(plan.inner.lo), self.index(plan.inner.hi)
        bld.store(jlo, plan.slots["jt"])
        self._tiles(plan, plan.variants[0], jlo, jhi, True)

    def finish(self) -> None:
        self.stmt(self.kernel.body)
        self.b.ret_void()


# ---------------------------------------------------------------------------- the entry point
#: layout of the ``sig`` array the entry point reads (int64 slots); see :func:`_emit_entry`. After the
#: header, ``SIG_PER_BUFFER`` slots per buffer: dtype object address, required flags, rank (-1: any).
SIG_OB_TYPE, SIG_NDARRAY, SIG_TUPLE_ITEMS, SIG_DATA, SIG_ND, SIG_DESCR, SIG_FLAGS, SIG_TUPLE, SIG_HEADER = range(9)
SIG_PER_BUFFER = 3


def _emit_entry(module: ir.Module, kernel: L.Kernel, kernel_fn: ir.Function, symbol: str,
                windowed: bool = False) -> ir.Function:
    """``i32 entry(ptr arrays_tuple, ptr sig, i64 scalars...)``: the fast call path.

    ctypes converts a Python tuple of numpy arrays to one pointer much faster than
    it converts each array's data pointer, so the host passes the arrays as a tuple
    and this function reads each array's data pointer out of the ``PyArrayObject``
    itself. It first checks, per array, that it is exactly an ``ndarray`` of the
    expected rank (1; any rank where ``sig`` says -1, which the fast call path of
    :mod:`sparsec.fastcall` uses for C-contiguous N-D operands and outputs), with
    the expected dtype object and flags (C-contiguous, aligned, writeable for
    outputs); on any mismatch it returns ``k + 1`` for the first bad array ``k`` (``nbuf + 1``
    when ``arrays`` is not a tuple of ``nbuf`` items)
    without running the kernel, and the host falls back to its checked slow path.
    Object layout offsets and the expected type/dtype addresses come in ``sig``
    (computed and verified by probing when the process starts), so nothing
    process-specific is compiled into the (cached) object code.

    ``windowed``: the kernel function takes a column window (:func:`panels.column_window`)
    after its parameters; the entry takes it after the scalars too.
    """
    nbuf = len(kernel.buffers)
    scalars = kernel.scalars
    i32 = ir.IntType(32)
    extra = 2 if windowed else 0
    fnty = ir.FunctionType(i32, [_PTR, _PTR] + [_I64] * (len(scalars) + extra))
    fn = ir.Function(module, fnty, name=symbol)
    fn.attributes.add("nounwind")
    tup, sig = fn.args[0], fn.args[1]
    tup.name, sig.name = "arrays", "sig"
    for arg, p in zip(fn.args[2:], scalars):
        arg.name = p.name
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def sig_at(k: int) -> ir.Value:
        return b.load(b.gep(sig, [ir.Constant(_I64, k)], inbounds=True, source_etype=_I64), typ=_I64, align=8)

    def field(obj: ir.Value, off: ir.Value, ty: ir.Type) -> ir.Value:
        return b.load(b.gep(obj, [off], inbounds=True, source_etype=_I8), typ=ty)

    ob_type, ndarray, items = sig_at(SIG_OB_TYPE), sig_at(SIG_NDARRAY), sig_at(SIG_TUPLE_ITEMS)
    off_data, off_nd, off_descr, off_flags = sig_at(SIG_DATA), sig_at(SIG_ND), sig_at(SIG_DESCR), sig_at(SIG_FLAGS)
    # the arrays come as a tuple of exactly one item per buffer (its size sits just before its items)
    not_tuple = fn.append_basic_block("bad_tuple")
    with b.goto_block(not_tuple):
        b.ret(ir.Constant(i32, nbuf + 1))
    is_tuple = b.icmp_unsigned("==", b.ptrtoint(field(tup, ob_type, _PTR), _I64), sig_at(SIG_TUPLE))
    size_ok = b.icmp_signed("==", field(tup, b.sub(items, ir.Constant(_I64, 8)), _I64), ir.Constant(_I64, nbuf))
    tuple_ok = fn.append_basic_block("tuple_ok")
    b.cbranch(b.and_(is_tuple, size_ok), tuple_ok, not_tuple)
    b.position_at_end(tuple_ok)
    data: list[ir.Value] = []
    for k in range(nbuf):
        bad = fn.append_basic_block(f"bad{k}")
        with b.goto_block(bad):
            b.ret(ir.Constant(i32, k + 1))
        obj = field(tup, b.add(items, ir.Constant(_I64, 8 * k)), _PTR)
        is_nd = b.icmp_unsigned("==", b.ptrtoint(field(obj, ob_type, _PTR), _I64), ndarray)
        fields = fn.append_basic_block(f"fields{k}")
        b.cbranch(is_nd, fields, bad)
        b.position_at_end(fields)
        want_descr = sig_at(SIG_HEADER + SIG_PER_BUFFER * k)
        want_flags = b.trunc(sig_at(SIG_HEADER + SIG_PER_BUFFER * k + 1), i32)
        want_nd = b.trunc(sig_at(SIG_HEADER + SIG_PER_BUFFER * k + 2), i32)
        ok = b.icmp_unsigned("==", b.ptrtoint(field(obj, off_descr, _PTR), _I64), want_descr)
        # rank: exactly want_nd, or any (want_nd < 0: a C-contiguous array of any rank is its flat buffer)
        nd_ok = b.or_(b.icmp_signed("<", want_nd, ir.Constant(i32, 0)),
                      b.icmp_signed("==", field(obj, off_nd, i32), want_nd))
        ok = b.and_(ok, nd_ok)
        flags = field(obj, off_flags, i32)
        ok = b.and_(ok, b.icmp_unsigned("==", b.and_(flags, want_flags), want_flags))
        good = fn.append_basic_block(f"ok{k}")
        b.cbranch(ok, good, bad)
        b.position_at_end(good)
        data.append(field(obj, off_data, _PTR))
    args: list[ir.Value] = []
    it_data, it_scalar = iter(data), iter(fn.args[2:])
    for p in kernel.params:
        args.append(next(it_data) if isinstance(p, L.BufferParam) else next(it_scalar))
    b.call(kernel_fn, args + list(fn.args[len(fn.args) - extra:]))
    b.ret(ir.Constant(i32, 0))
    return fn


def _emit_whole_window(module: ir.Module, windowed_fn: ir.Function, symbol: str) -> ir.Function:
    """The entry point without a window: ``windowed_fn`` over every column (``panels.WHOLE_WINDOW``)."""
    ty = windowed_fn.function_type
    fn = ir.Function(module, ir.FunctionType(ty.return_type, list(ty.args[:-2])), name=symbol)
    fn.attributes.add("nounwind")
    for arg, inner in zip(fn.args, windowed_fn.args):
        arg.name = inner.name
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.ret(b.call(windowed_fn, list(fn.args) + [ir.Constant(_I64, w) for w in panels.WHOLE_WINDOW]))
    return fn


#: slots of the C-API table the fast-call function reads (filled by the host after linking).
CAPI = ("PyLong_AsLongLong", "PyLong_AsVoidPtr", "PyLong_FromLong", "PyErr_Occurred", "PyEval_SaveThread",
        "PyEval_RestoreThread")


def _emit_fastcall(module: ir.Module, kernel: L.Kernel, entry_fn: ir.Function, symbol: str, table: str) -> None:
    """The entry point as a Python builtin (see :func:`emit_builtin`): the arrays tuple, the ``sig``
    address and the kernel's scalars, all Python ints but the tuple."""
    emit_builtin(module, entry_fn, symbol, table, ["object", "pointer"] + ["int"] * len(kernel.scalars))


def emit_builtin(module: ir.Module, target: ir.Function, symbol: str, table: str, kinds: list[str]) -> None:
    """``PyObject *symbol(PyObject *self, PyObject *const *args, Py_ssize_t nargs)``: ``target`` as a
    Python builtin (``METH_FASTCALL``), which Python calls for ~0.1 µs where a ctypes call costs ~1-2 µs.

    One Python argument per parameter of ``target``, converted by its entry in ``kinds``:
    ``"object"`` passes the object's address (``PyObject *``), ``"pointer"`` a Python int through
    ``PyLong_AsVoidPtr``, ``"int"`` through ``PyLong_AsLongLong``. The result is ``target``'s
    (integer) return value as a Python int, -1 for a wrong argument count, or NULL with the
    exception of a failed int conversion. The GIL is released around ``target``, as ctypes does.
    The C-API functions come from a table (``table``, :data:`CAPI` order) that the host fills
    after linking, so the object code names no symbol of the interpreter.
    """
    i32 = ir.IntType(32)
    tbl = ir.GlobalVariable(module, ir.ArrayType(_PTR, len(CAPI)), name=table)
    tbl.initializer = ir.Constant(ir.ArrayType(_PTR, len(CAPI)), None)
    fn = ir.Function(module, ir.FunctionType(_PTR, [_PTR, _PTR, _I64]), name=symbol)
    fn.attributes.add("nounwind")
    _, args, nargs = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def call(name: str, ret: ir.Type, argtys: list, vals: list) -> ir.Value:
        slot = b.gep(tbl, [ir.Constant(i32, 0), ir.Constant(i32, CAPI.index(name))], inbounds=True)
        f = b.load(slot, typ=ir.FunctionType(ret, argtys).as_pointer())  # prints as ``ptr``
        return b.call(f, vals)

    def arg(k: int) -> ir.Value:
        return b.load(b.gep(args, [ir.Constant(_I64, k)], inbounds=True, source_etype=_PTR), typ=_PTR)

    bad = fn.append_basic_block("nargs")
    ok = fn.append_basic_block("convert")
    b.cbranch(b.icmp_signed("==", nargs, ir.Constant(_I64, len(kinds))), ok, bad)
    with b.goto_block(bad):
        b.ret(call("PyLong_FromLong", _PTR, [_I64], [ir.Constant(_I64, -1)]))
    b.position_at_end(ok)
    vals: list[ir.Value] = []
    suspect: ir.Value = ir.Constant(_I1, 0)
    for k, (kind, ty) in enumerate(zip(kinds, target.function_type.args)):
        if kind == "object":
            v = arg(k)
        elif kind == "pointer":
            v = call("PyLong_AsVoidPtr", _PTR, [_PTR], [arg(k)])
            suspect = b.or_(suspect, b.icmp_unsigned("==", b.ptrtoint(v, _I64), ir.Constant(_I64, 0)))
        else:
            v = call("PyLong_AsLongLong", _I64, [_PTR], [arg(k)])
            suspect = b.or_(suspect, b.icmp_signed("==", v, ir.Constant(_I64, -1)))
        if isinstance(ty, ir.PointerType) and v.type == _I64:
            v = b.inttoptr(v, ty)
        elif ty == _I64 and isinstance(v.type, ir.PointerType):
            v = b.ptrtoint(v, _I64)
        vals.append(v)
    check = fn.append_basic_block("check")
    run = fn.append_basic_block("run")
    b.cbranch(suspect, check, run)
    with b.goto_block(check):
        err = call("PyErr_Occurred", _PTR, [], [])
        fail = fn.append_basic_block("fail")
        b.cbranch(b.icmp_unsigned("!=", b.ptrtoint(err, _I64), ir.Constant(_I64, 0)), fail, run)
        with b.goto_block(fail):
            b.ret(ir.Constant(_PTR, None))
    b.position_at_end(run)
    ts = call("PyEval_SaveThread", _PTR, [], [])
    rc = b.call(target, vals)
    call("PyEval_RestoreThread", ir.VoidType(), [_PTR], [ts])
    if rc.type != _I64:
        rc = b.sext(rc, _I64)
    b.ret(call("PyLong_FromLong", _PTR, [_I64], [rc]))


def _emit_packed(module: ir.Module, entry_fn: ir.Function, symbol: str) -> None:
    """``i32 packed(ptr arrays_tuple, ptr sig, ptr scalars)``: the entry point with its scalars in an
    int64 array, one signature for every kernel (what the native thread team calls per chunk); a
    windowed kernel's column window follows its scalars in the array."""
    fn = ir.Function(module, ir.FunctionType(ir.IntType(32), [_PTR, _PTR, _PTR]), name=symbol)
    fn.attributes.add("nounwind")
    tup, sig, sc = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vals = [b.load(b.gep(sc, [ir.Constant(_I64, k)], inbounds=True, source_etype=_I64), typ=_I64)
            for k in range(len(entry_fn.args) - 2)]
    b.ret(b.call(entry_fn, [tup, sig] + vals))


def packed_name(kernel: L.Kernel) -> str:
    """The symbol of the packed entry point (see :func:`_emit_packed`)."""
    return f"sparsec_{kernel.name}__packed"


def fastcall_name(kernel: L.Kernel) -> str:
    """The symbol of the Python-builtin entry point (see :func:`_emit_fastcall`)."""
    return f"sparsec_{kernel.name}__fastcall"


def capi_table_name(kernel: L.Kernel) -> str:
    """The symbol of the C-API table :func:`_emit_fastcall`'s function reads."""
    return f"sparsec_{kernel.name}__capi"


def symbol_name(kernel: L.Kernel) -> str:
    """The kernel function's symbol: the kernel name behind a fixed prefix (no clash with libc)."""
    return f"sparsec_{kernel.name}"


def entry_name(kernel: L.Kernel) -> str:
    """The symbol of the fast entry point (see :func:`_emit_entry`)."""
    return f"sparsec_{kernel.name}__entry"


def _loop_hints(kind: L.LoopKind) -> list[str]:
    """LLVM loop-metadata properties for a loop annotation (empty: leave it to LLVM)."""
    if kind.kind == "vector" and kind.width:
        if kind.width == 1:
            return ['!{!"llvm.loop.vectorize.enable", i1 0}']
        return ['!{!"llvm.loop.vectorize.enable", i1 1}', f'!{{!"llvm.loop.vectorize.width", i32 {kind.width}}}',
                '!{!"llvm.loop.interleave.count", i32 1}']
    if kind.kind == "unroll" and kind.width:
        return [f'!{{!"llvm.loop.unroll.count", i32 {kind.width}}}']
    return []


def vector_bits() -> int:
    """Width in bits of the host's widest vector registers (what register tiles use)."""
    from .jit import host

    feats = set(host().features.split(","))
    if "+avx512f" in feats:
        return 512
    if "+avx" in feats:
        return 256
    return 128


class Tiling(NamedTuple):
    """How a kernel's row nests are emitted: the kernel with its column panels cut (:mod:`.panels`), the
    panels, the register tiles of that kernel (:mod:`.regtile`), the tiled stores that start from zero
    (:func:`regtile.fresh_rows`), and the column window (:func:`panels.column_window`) or None."""

    kernel: L.Kernel
    panels: dict
    plans: dict
    fresh: tuple
    window: panels.Panel | None


def tiling(kernel: L.Kernel) -> Tiling:
    """The :class:`Tiling` of ``kernel`` (the code generator's and :class:`.kernel.CPUKernel`'s one source).

    Zero-start stores are found on the kernel as written and kept where the panel rewrite
    (which keeps the store objects) leaves them tiled, so that the host may skip zeroing
    their rows exactly when the code does not read them.
    """
    bits = vector_bits()
    plans = regtile.find_plans(kernel, bits)
    found = regtile.fresh_rows(kernel, plans)
    cut, pans = panels.find_panels(kernel, bits, plans) if plans else (kernel, {})
    if pans:
        plans = regtile.find_plans(cut, bits)
    tiled = {id(p.store) for p in plans.values()}
    return Tiling(cut, pans, plans, tuple(f for f in found if id(f.store) in tiled), panels.column_window(cut, pans))


def generate_text(kernel: L.Kernel) -> str:
    """:func:`generate` as LLVM IR text, with loop-hint markers turned into real loop IDs."""
    module = generate(kernel)
    text = str(module)
    if module.min_vector_bits > 256:
        # 512-bit register tiles: without this the x86 backend splits them into 256-bit halves
        sym = re.escape(symbol_name(kernel))
        text = re.sub(rf'^(define void @"{sym}"\(.*\)[^\n]*)$',
                      lambda m: m.group(1) + f' "min-legal-vector-width"="{module.min_vector_bits}"',
                      text, count=1, flags=re.MULTILINE)
    if not module.loop_hints:
        return text
    ids = [int(m) for m in re.findall(r"^!(\d+) =", text, flags=re.M)]
    nxt = max(ids, default=-1) + 1
    extra: list[str] = []
    for marker, hints in module.loop_hints.items():
        m = re.search(rf'^!(\d+) = !{{ *!"{re.escape(marker)}" *}}$', text, flags=re.M)
        if m is None:  # pragma: no cover - llvmlite changed its metadata printing
            raise RuntimeError(f"loop-hint marker {marker} not found in the LLVM IR")
        node = m.group(1)
        refs = []
        for h in hints:
            extra.append(f"!{nxt} = {h}")
            refs.append(f"!{nxt}")
            nxt += 1
        text = text[: m.start()] + f"!{node} = distinct !{{!{node}, {', '.join(refs)}}}" + text[m.end():]
    return text + "\n" + "\n".join(extra) + "\n"


def generate(kernel: L.Kernel) -> ir.Module:
    """An LLVM module holding the kernel (:func:`symbol_name`) and its entry point (:func:`entry_name`)."""
    module = ir.Module(name=kernel.name)
    module.loop_hints = {}  # marker -> properties (see generate_text)
    fb = _FunctionBuilder(module, kernel, symbol_name(kernel))
    fb.finish()
    module.min_vector_bits = getattr(fb, "vector_bits", 0)
    # Keep the kernel a separate function: inlining it into the entry would double the code.
    fb.fn.attributes.add("noinline")
    if fb.window is None:
        entry = windowed = _emit_entry(module, kernel, fb.fn, entry_name(kernel))
    else:
        windowed = _emit_entry(module, kernel, fb.fn, entry_name(kernel) + "__window", windowed=True)
        entry = _emit_whole_window(module, windowed, entry_name(kernel))
    _emit_fastcall(module, kernel, entry, fastcall_name(kernel), capi_table_name(kernel))
    _emit_packed(module, windowed, packed_name(kernel))
    return module


__all__ = [
    "CODEGEN_VERSION",
    "FM_ANY",
    "FM_REDUCE",
    "check_dtype",
    "entry_name",
    "generate",
    "mem_type",
    "reg_type",
    "symbol_name",
]
