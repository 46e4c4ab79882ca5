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

Names (kernel, parameters, locals) only reach the IR through llvmlite's API,
which quotes them.
"""

from __future__ import annotations

import re

from llvmlite import ir

from ...errors import BackendError
from ...ir import loop_ir as L

#: bump when generated code changes, so stale disk-cache entries are not reused.
CODEGEN_VERSION = "2"

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
        argtys = [_PTR if isinstance(p, L.BufferParam) else _I64 for p in kernel.params]
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
        self._declare_locals(kernel)
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
        hints = _loop_hints(s.kind)
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

    def finish(self) -> None:
        self.stmt(self.kernel.body)
        self.b.ret_void()


# ---------------------------------------------------------------------------- the entry point
#: layout of the ``sig`` array the entry point reads (int64 slots); see :func:`_emit_entry`.
SIG_OB_TYPE, SIG_NDARRAY, SIG_TUPLE_ITEMS, SIG_DATA, SIG_ND, SIG_DESCR, SIG_FLAGS, SIG_HEADER = range(8)


def _emit_entry(module: ir.Module, kernel: L.Kernel, kernel_fn: ir.Function, symbol: str) -> None:
    """``i32 entry(ptr arrays_tuple, ptr sig, i64 scalars...)``: the fast call path.

    ctypes converts a Python tuple of numpy arrays to one pointer much faster than
    it converts each array's data pointer, so the host passes the arrays as a tuple
    and this function reads each array's data pointer out of the ``PyArrayObject``
    itself. It first checks, per array, that it is exactly an ``ndarray``, 1-D, with
    the expected dtype object and flags (C-contiguous, aligned, writeable for
    outputs); on any mismatch it returns ``k + 1`` for the first bad array ``k``
    without running the kernel, and the host falls back to its checked slow path.
    Object layout offsets and the expected type/dtype addresses come in ``sig``
    (computed and verified by probing when the process starts), so nothing
    process-specific is compiled into the (cached) object code.
    """
    nbuf = len(kernel.buffers)
    scalars = kernel.scalars
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(i32, [_PTR, _PTR] + [_I64] * len(scalars))
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
        want_descr = sig_at(SIG_HEADER + 2 * k)
        want_flags = b.trunc(sig_at(SIG_HEADER + 2 * k + 1), i32)
        ok = b.icmp_unsigned("==", b.ptrtoint(field(obj, off_descr, _PTR), _I64), want_descr)
        ok = b.and_(ok, b.icmp_signed("==", field(obj, off_nd, i32), ir.Constant(i32, 1)))
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
    b.call(kernel_fn, args)
    b.ret(ir.Constant(i32, 0))


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


def generate_text(kernel: L.Kernel) -> str:
    """:func:`generate` as LLVM IR text, with loop-hint markers turned into real loop IDs."""
    module = generate(kernel)
    text = str(module)
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
    # Keep the kernel a separate function: inlining it into the entry would double the code.
    fb.fn.attributes.add("noinline")
    _emit_entry(module, kernel, fb.fn, entry_name(kernel))
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
