"""Loop IR + GPU plan -> Triton source text.

The generated file is self-contained (``import triton``, ``import triton.language as
tl``, three small ``@triton.jit`` helpers, one kernel) and readable: variables and
buffers keep their loop-IR names (``i``, ``pA1``, ``A_pos1``), each loop is preceded
by a comment naming its index variable, and the scheduled loop IR heads the file.

Scalar lowering (works for every kernel): loop-IR statements become Python-syntax
Triton code on scalars -- ``for v in range(lo, hi)``, ``while``, ``if``,
``tl.load(ptr + idx)``, ``tl.store``. Types follow the IR exactly: every value has
the Triton type of its IR dtype (``index`` is ``tl.int32`` or ``tl.int64``, chosen
per launch), literals are typed with ``tl.full([], v, T)`` wherever Triton would
otherwise infer a different type, and variables that live across a loop or an
``if`` are declared before it (Triton needs loop-carried values typed up front).
Short-circuit ``and``/``or`` evaluate both sides, so loads on the right side are
masked by the left side (``tl.load(p, mask=left, other=0)``): never out of bounds.

Vector lowering (fast paths, see :mod:`.schedule`): a context maps some loop
variables to ``tl.arange`` axes; every vector value is kept *full rank*
(``[R, 1]``, ``[1, B]``, ``[R, B]``...) so broadcasting does the work, and each
value carries the set of axes it depends on, so each load is masked by exactly
the masks of those axes.
"""

from __future__ import annotations

import os

import keyword
import math
from dataclasses import dataclass

from ...ir import loop_ir as L
from ...ir.loop_printer import expr_text
from .schedule import AccTile, MapTile, NoFastPath, Plan, ReduceLoop, assigned, reads, scheduled_text

_TL = {"float16": "tl.float16", "bfloat16": "tl.bfloat16", "float32": "tl.float32", "float64": "tl.float64",
       "int8": "tl.int8", "int16": "tl.int16", "int32": "tl.int32", "int64": "tl.int64", "bool": "tl.int1",
       "uint8": "tl.uint8"}
_RESERVED = set(keyword.kwlist) | {"tl", "triton", "range", "float", "int", "min", "max", "abs", "print", "len",
                                   "bool", "math", "static_range"}
_SMALL_FLOATS = ("float16", "bfloat16")

HELPERS = '''
@triton.jit
def _sc_nanmax(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _sc_nanmin(a, b):
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _sc_idiv(a, b):
    # C integer division (truncates toward zero) whatever the signs
    q = tl.abs(a) // tl.abs(b)
    return tl.where((a < 0) != (b < 0), -q, q)
'''


def expr_vars_of(e: L.LExpr) -> set[str]:
    """Names of the variables an expression reads."""
    return {x.name for x in e.walk() if isinstance(x, L.Var)}


def py_name(name: str) -> str:
    """A loop-IR name as a Python identifier that cannot clash with generated names."""
    if name in _RESERVED or name.startswith("_t") or name.startswith("_sc"):
        return name + "_"
    return name


@dataclass(frozen=True)
class Val:
    """An emitted value: code, IR dtype, the vector axes it depends on, and weak (an untyped literal)."""

    code: str
    dtype: str
    deps: frozenset = frozenset()
    weak: bool = False
    py: object = None  # the Python value of a weak literal


def _lit(v, dtype: str) -> str:
    if dtype == "bool":
        return "True" if v else "False"
    if isinstance(v, float) or L.is_float(dtype):
        v = float(v)
        if math.isnan(v):
            return 'float("nan")'
        if math.isinf(v):
            return 'float("inf")' if v > 0 else '-float("inf")'
        return repr(v)
    return str(int(v))


def _paren(code: str) -> str:
    if code.replace("_", "").replace(".", "").isalnum() or (code.startswith("(") and _balanced_outer(code)):
        return code
    if code.endswith("]") and "[" in code:
        h = code.split("[", 1)[0]
        if h.replace("_", "").isalnum() and _balanced_outer(code[len(h):]):
            return code
    head = code.split("(", 1)[0]
    if code.endswith(")") and head and head.replace("_", "").replace(".", "").isalnum() and \
            _balanced_outer(code[len(head):]):
        return code
    return f"({code})"


def _balanced_outer(code: str) -> bool:
    depth = 0
    for k, ch in enumerate(code):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth == 0 and k != len(code) - 1:
                return False
    return True


class Emitter:
    """Expression emitter for one context (scalar when ``env``/``masks`` are empty)."""

    def __init__(self, cg: "Codegen", env: dict[str, Val] | None = None,
                 masks: dict[str, tuple[str, frozenset]] | None = None, promote: bool = True):
        self.cg = cg
        self.env = env if env is not None else {}
        self.masks = masks if masks is not None else {}
        self.promote = promote

    # -- typing ------------------------------------------------------------------------------
    def T(self, dtype: str) -> str:
        return self.cg.T(dtype, self.promote)

    def typed(self, v: Val, dtype: str | None = None) -> str:
        dtype = dtype or v.dtype
        if v.weak:
            py = v.py
            if dtype == "bool":
                return f"tl.full([], {_lit(bool(py), 'bool')}, tl.int1)"
            if L.is_float(dtype):
                return f"tl.full([], {_lit(float(py), dtype)}, {self.T(dtype)})"
            return f"tl.full([], {int(py)}, {self.T(dtype)})"
        if self.T(v.dtype) != self.T(dtype):
            if dtype == "bool":
                return f"({v.code} != 0)"
            return f"tl.cast({v.code}, {self.T(dtype)})"
        return v.code

    def mask_for(self, deps, guard: Val | None = None) -> tuple[str | None, frozenset]:
        parts: list[str] = []
        all_deps = set(deps)
        for a in sorted(deps):
            if a in self.masks:
                code, mdeps = self.masks[a]
                if code not in parts:
                    parts.append(code)
                all_deps |= mdeps
        if guard is not None and not guard.weak:
            parts.append(_paren(guard.code))
            all_deps |= guard.deps
        if not parts:
            return None, frozenset(all_deps)
        return " & ".join(parts), frozenset(all_deps)

    # -- expressions -------------------------------------------------------------------------
    def emit(self, e: L.LExpr, guard: Val | None = None) -> Val:
        if isinstance(e, L.Const):
            v = e.value
            if e.dtype == "bool":
                v = bool(v)
            elif L.is_float(e.dtype):
                v = float(v)
            else:
                v = int(v)
            return Val(_lit(v, e.dtype), e.dtype, frozenset(), True, v)
        if isinstance(e, L.Var):
            if e.name in self.env:
                return self.env[e.name]
            return Val(self.cg.scalar_name(e.name), e.dtype)
        if isinstance(e, L.Load):
            idx = self.emit(e.index, guard)
            buf = py_name(e.buffer)
            mask, deps = self.mask_for(idx.deps, guard)
            icode = idx.code if not idx.weak else str(idx.py)
            ptr = f"{buf} + {_paren(icode)}" if icode != "0" else buf
            up = ".to(tl.float32)" if self.promote and e.dtype in _SMALL_FLOATS else ""
            if mask is None:
                return Val(f"tl.load({ptr}){up}", e.dtype, deps)
            return Val(f"tl.load({ptr}, mask={mask}, other=0){up}", e.dtype, deps)
        if isinstance(e, L.BinOp):
            return self.binop(e, guard)
        if isinstance(e, L.UnOp):
            return self.unop(e, guard)
        if isinstance(e, L.Select):
            c = self.emit(e.cond, guard)
            a = self.emit(e.a, guard)
            b = self.emit(e.b, guard)
            if c.weak:
                return a if c.py else b
            ac = self.typed(a, e.dtype) if a.weak or self.T(a.dtype) != self.T(e.dtype) else a.code
            bc = self.typed(b, e.dtype) if b.weak or self.T(b.dtype) != self.T(e.dtype) else b.code
            return Val(f"tl.where({c.code}, {ac}, {bc})", e.dtype, c.deps | a.deps | b.deps)
        if isinstance(e, L.Cast):
            a = self.emit(e.a, guard)
            if a.weak:
                py = a.py
                if e.dtype == "bool":
                    py = bool(py)
                elif L.is_float(e.dtype):
                    py = float(py)
                else:
                    py = int(py)
                return Val(_lit(py, e.dtype), e.dtype, frozenset(), True, py)
            if e.dtype == "bool":
                return Val(f"({a.code} != 0)", "bool", a.deps)
            if self.T(a.dtype) == self.T(e.dtype):
                return Val(a.code, e.dtype, a.deps)
            return Val(f"tl.cast({a.code}, {self.T(e.dtype)})", e.dtype, a.deps)
        raise TypeError(f"not a loop-IR expression: {e!r}")

    def binop(self, e: L.BinOp, guard: Val | None) -> Val:
        op = e.op
        a = self.emit(e.a, guard)
        if op in ("and", "or"):
            if a.weak:
                if (op == "and") == bool(a.py):
                    return self.emit(e.b, guard)
                return a
            cond = a if op == "and" else Val(f"({a.code} == 0)", "bool", a.deps)
            g = cond if guard is None or guard.weak else Val(f"{_paren(guard.code)} & {_paren(cond.code)}", "bool",
                                                             guard.deps | cond.deps)
            b = self.emit(e.b, g)
            if b.weak:
                if (op == "and") == bool(b.py):
                    return a
                return b
            sym = "&" if op == "and" else "|"
            return Val(f"{_paren(a.code)} {sym} {_paren(b.code)}", "bool", a.deps | b.deps)
        b = self.emit(e.b, guard)
        in_dt = e.a.dtype
        fl = L.is_float(in_dt)
        if a.weak and b.weak:
            r = _fold(op, a.py, b.py, fl)
            if r is not None:
                dt = "bool" if op in L.CMP_OPS else e.dtype
                return Val(_lit(r, dt), dt, frozenset(), True, r)
        deps = a.deps | b.deps
        if op in L.CMP_OPS:
            sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}[op]
            ac, bc = a.code, b.code
            if self.cg.idx64 is False and in_dt == "index" and (_has_var_product(e.a) or _has_var_product(e.b)):
                ac, bc = f"{_paren(self.typed(a, 'index'))}.to(tl.int64)", f"{_paren(self.typed(b, 'index'))}.to(tl.int64)"
            if a.weak and b.weak:
                ac = self.typed(a, in_dt)
            return Val(f"{_paren(ac)} {sym} {_paren(bc)}", "bool", deps)
        dt = e.dtype
        if op in ("max", "min"):
            ac, bc = self.typed(a, dt), self.typed(b, dt)
            if fl:
                return Val(f"_sc_nan{op}({ac}, {bc})", dt, deps)
            return Val(f"tl.{'maximum' if op == 'max' else 'minimum'}({ac}, {bc})", dt, deps)
        if op in ("add", "sub", "mul"):
            sym = {"add": "+", "sub": "-", "mul": "*"}[op]
            ac = a.code if not a.weak else (a.code if not b.weak else self.typed(a, dt))
            bc = b.code
            if not a.weak and self.T(a.dtype) != self.T(dt):
                ac = self.typed(a, dt)
            if not b.weak and self.T(b.dtype) != self.T(dt):
                bc = self.typed(b, dt)
            if b.weak and isinstance(b.py, (int, float)) and b.py < 0:
                bc = f"({bc})"
            return Val(f"{_paren(ac)} {sym} {_paren(bc)}", dt, deps)
        if op == "div":
            if fl:
                ac, bc = self.typed(a, dt), self.typed(b, dt)
                if dt == "float32":
                    return Val(f"tl.div_rn({ac}, {bc})", dt, deps)
                if dt in _SMALL_FLOATS:
                    return Val(f"({_paren(ac)}.to(tl.float32) / {_paren(bc)}.to(tl.float32)).to({self.T(dt)})", dt, deps)
                return Val(f"{_paren(ac)} / {_paren(bc)}", dt, deps)
            return Val(f"_sc_idiv({self.typed(a, dt)}, {self.typed(b, dt)})", dt, deps)
        if op in ("floordiv", "mod"):
            if fl:
                ac, bc = self.typed(a, dt), self.typed(b, dt)
                q = f"tl.floor({_paren(ac)} / {_paren(bc)})"
                if op == "floordiv":
                    return Val(q, dt, deps)
                return Val(f"{_paren(ac)} - {_paren(bc)} * {q}", dt, deps)
            sym = "//" if op == "floordiv" else "%"
            ac = a.code if not a.weak else self.typed(a, dt)
            return Val(f"{_paren(ac)} {sym} {_paren(b.code)}", dt, deps)
        if op in ("shr", "bitand"):  # bitmap levels: non-negative 64-bit words
            sym = ">>" if op == "shr" else "&"
            return Val(f"{_paren(self.typed(a, dt))} {sym} {_paren(self.typed(b, dt))}", dt, deps)
        raise TypeError(f"unknown binary op {op!r}")

    def unop(self, e: L.UnOp, guard: Val | None) -> Val:
        a = self.emit(e.a, guard)
        dt = e.dtype
        if a.weak:
            r = _fold_un(e.op, a.py)
            if r is not None:
                return Val(_lit(r, dt), dt, frozenset(), True, r)
        ac = self.typed(a, dt if e.op != "not" else "bool")
        if e.op == "neg":
            return Val(f"-{_paren(ac)}", dt, a.deps)
        if e.op == "not":
            return Val(f"({_paren(ac)} == 0)", "bool", a.deps)
        if e.op == "abs":
            return Val(f"tl.abs({ac})", dt, a.deps)
        # the function runs in float32 (16-bit floats too) or float64 (integers too); tl.sqrt_rn (IEEE-rounded:
        # tl.sqrt is approximate in float32) takes float32 only
        md = "float32" if dt in _SMALL_FLOATS or dt == "float32" else "float64"
        fn = {"exp": "tl.exp", "log": "tl.log", "sqrt": "tl.sqrt_rn" if md == "float32" else "tl.sqrt"}[e.op]
        if md == dt:
            return Val(f"{fn}({ac})", dt, a.deps)
        return Val(f"{fn}({_paren(ac)}.to({_TL[md]})).to({self.T(dt)})", dt, a.deps)


def loop_comment(s: L.For, note: str = "") -> str:
    """``# for v in [lo, hi) kind -- comment`` for a loop (ties it to its index variable)."""
    kind = f" {s.kind}" if str(s.kind) else ""
    text = f"# for {s.var.name} in [{expr_text(s.lo)}, {expr_text(s.hi)}){kind}"
    if s.comment:
        text += f"  -- {s.comment}"
    return text + note


def _has_var_product(e: L.LExpr) -> bool:
    for x in e.walk():
        if isinstance(x, L.BinOp) and x.op == "mul" and not isinstance(x.a, L.Const) and not isinstance(x.b, L.Const):
            return True
    return False


def _fold(op: str, a, b, fl: bool):
    try:
        if op == "add":
            return a + b
        if op == "sub":
            return a - b
        if op == "mul":
            return a * b
        if op == "div":
            return a / b if fl else int(a / b)
        if op == "floordiv":
            return a // b
        if op == "mod":
            return a % b
        if op == "max":
            return max(a, b)
        if op == "min":
            return min(a, b)
        if op in L.CMP_OPS:
            return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b, "eq": a == b, "ne": a != b}[op]
    except (ZeroDivisionError, OverflowError):
        return None
    return None


def _fold_un(op: str, a):
    try:
        if op == "neg":
            return -a
        if op == "not":
            return not a
        if op == "abs":
            return abs(a)
        if op == "exp":
            return math.exp(a)
        if op == "log":
            return math.log(a)
        if op == "sqrt":
            return math.sqrt(a)
    except (ValueError, OverflowError):
        return None
    return None


_IDENT = {"add": 0, "max": float("-inf"), "min": float("inf")}
#: extents (n_*) specialized by Triton (divisibility by 16): SPARSEC_TRITON_SPECIALIZE_DIMS=0 passes them unspecialized
SPECIALIZE_DIMS = os.environ.get("SPARSEC_TRITON_SPECIALIZE_DIMS", "1") != "0"
#: memory order of the atomic adds / max / min that combine partial results into the output (here and in the
#: tile templates' split-K adds): nothing reads the output inside the kernel, so their order does not matter
#: ("relaxed"); Triton's default is "acq_rel"
ATOMIC_SEM = os.environ.get("SPARSEC_TRITON_ATOMIC_SEM", "relaxed")
if ATOMIC_SEM not in ("relaxed", "acquire", "release", "acq_rel"):
    raise ValueError(f"SPARSEC_TRITON_ATOMIC_SEM={ATOMIC_SEM!r}: expected relaxed, acquire, release or acq_rel")
#: the Triton atomic that combines a partial result into the output, by reduction
_ATOMIC_FN = {"add": "atomic_add", "max": "atomic_max", "min": "atomic_min"}


def identity(op: str, dtype: str):
    if op == "add":
        return 0.0 if L.is_float(dtype) else 0
    if L.is_float(dtype):
        return _IDENT[op]
    bits = 64 if dtype in ("int64", "index") else int(dtype[3:]) if dtype.startswith("int") else 32
    return -(2 ** (bits - 1)) if op == "max" else 2 ** (bits - 1) - 1


def _local_renames(k: L.Kernel) -> dict[str, str]:
    """New names for the kernel's variables that would shadow one of its parameters in Python (an index
    named ``A_vals`` beside the buffer ``A_vals``: both are one namespace in the generated function)."""
    params = {py_name(p.name) for p in k.params} | {py_name(p.name) for p in k.scalars}
    scalars = {p.name for p in k.scalars}
    local = [v for v in L.assigned(k.body) if v not in scalars]
    taken = params | {py_name(v) for v in local}
    renames: dict[str, str] = {}
    for v in local:
        if py_name(v) in params:
            n = 1
            while f"{py_name(v)}_v{n}" in taken:
                n += 1
            renames[v] = f"{py_name(v)}_v{n}"
            taken.add(renames[v])
    return renames


class Codegen:
    """Generates the Triton source of one planned kernel for one index width."""

    def __init__(self, plan: Plan, idx64: bool):
        self.plan = plan
        self.k = plan.kernel
        self.idx64 = idx64
        self.split = False
        self.lines: list[str] = []
        self.n = 0
        self.total_reads = reads(self.k.body)
        self.scalars = {p.name for p in self.k.scalars}
        self.bufdt = {p.name: p.dtype for p in self.k.buffers}
        self.atomic = False
        self.uses_dot = False
        self.uses_prec = False
        self.notes: list[str] = []
        self.renames: dict[str, str] = _local_renames(self.k)
        #: grid tiling of the top loop's accumulator tile: (id of its For, open Axis) when planned,
        #: and the Axis once emitted (the launcher multiplies the grid by that axis's tile count)
        self.tile_request: tuple[int, object] | None = None
        #: the grid-tiled programs go block-major (consecutive programs share a block, not a row): see tile_grid
        self.tile_major = False
        self.grid_tiles = None
        #: (m, n) sizes (ints or constexpr names) of the largest tl.dot accumulator, for the warp count
        self.dot_shape: tuple | None = None
        #: depth of one tl.dot step when a block's reduction axis is split into sub-steps (see dot_k_steps)
        self.dot_k_step: int | None = None

    # -- small helpers -----------------------------------------------------------------------
    def T(self, dtype: str, promote: bool = True) -> str:
        """The Triton type holding values of an IR dtype (float16/bfloat16 compute in float32)."""
        if dtype == "index":
            return "tl.int64" if self.idx64 else "tl.int32"
        if promote and dtype in _SMALL_FLOATS:
            return "tl.float32"
        return _TL[dtype]

    def stored(self, code: str, dtype: str) -> str:
        """A float32 register value narrowed to a 16-bit buffer's type (explicit for clarity)."""
        return f"tl.cast({code}, {_TL[dtype]})" if dtype in _SMALL_FLOATS else code

    def fresh(self) -> int:
        self.n += 1
        return self.n

    def scalar_name(self, name: str) -> str:
        return self.renames.get(name, py_name(name))

    def out(self, ind: int, text: str) -> None:
        self.lines.append("    " * ind + text)

    def read_outside(self, s: L.Stmt) -> set[str]:
        inside = reads(s)
        return {v for v, n in self.total_reads.items() if n > inside.get(v, 0)}

    def zero(self, dtype: str) -> str:
        if dtype == "bool":
            return "tl.full([], False, tl.int1)"
        if L.is_float(dtype):
            return f"tl.full([], 0.0, {self.T(dtype)})"
        return f"tl.full([], 0, {self.T(dtype)})"

    def predeclare(self, s: L.Stmt, ind: int, defined: set[str]) -> None:
        asg = assigned(s)
        need = (set(asg) & self.read_outside(s)) - defined
        for v in sorted(need):
            self.out(ind, f"{self.scalar_name(v)} = {self.zero(asg[v])}")
            defined.add(v)

    # -- statements --------------------------------------------------------------------------
    def block(self, stmts, ind: int, defined: set[str]) -> None:
        start = len(self.lines)
        for s in stmts:
            self.stmt(s, ind, defined)
        if len(self.lines) == start or all(line.strip().startswith("#") for line in self.lines[start:]):
            self.out(ind, "pass")

    def stmt(self, s: L.Stmt, ind: int, defined: set[str]) -> None:
        E = Emitter(self)
        if isinstance(s, L.Block):
            for c in s.stmts:
                self.stmt(c, ind, defined)
        elif isinstance(s, L.Assign):
            v = E.emit(s.value)
            self.out(ind, f"{self.scalar_name(s.var.name)} = {E.typed(v, s.var.dtype)}")
            defined.add(s.var.name)
        elif isinstance(s, L.Store):
            self.store(E, s, ind)
        elif isinstance(s, L.Comment):
            self.out(ind, f"# {s.text}")
        elif isinstance(s, L.For):
            self.predeclare(s, ind, defined)
            t = self.plan.fast.get(id(s))
            if t is not None:
                mark = len(self.lines)
                saved_n = self.n
                try:
                    self.fast(t, ind, set(defined))
                    return
                except NoFastPath as why:
                    del self.lines[mark:]
                    self.n = saved_n
                    self.notes.append(f"fast path for loop {s.var.name} not taken: {why}")
            self.scalar_for(s, ind, defined)
        elif isinstance(s, L.While):
            self.predeclare(s, ind, defined)
            c = E.emit(s.cond)
            note = f"  # {s.comment}" if s.comment else ""
            self.out(ind, f"while {E.typed(c, 'bool') if c.weak else c.code}:{note}")
            self.block(s.body.stmts, ind + 1, set(defined))
        elif isinstance(s, L.If):
            self.predeclare(s, ind, defined)
            c = E.emit(s.cond)
            if c.weak:
                self.block((s.then if c.py else s.orelse).stmts, ind, defined)
                return
            self.out(ind, f"if {c.code}:")
            self.block(s.then.stmts, ind + 1, set(defined))
            if s.orelse.stmts:
                self.out(ind, "else:")
                self.block(s.orelse.stmts, ind + 1, set(defined))
        else:
            raise TypeError(f"not a loop-IR statement: {s!r}")

    def loop_header(self, s: L.For, ind: int, defined: set[str], lo: str, hi: str, step: str | None = None,
                    note: str = "") -> set[str]:
        self.out(ind, loop_comment(s, note))
        inner = set(defined)
        name = self.scalar_name(s.var.name)
        rng = f"range({lo}, {hi}{', ' + step if step else ''})"
        if s.var.name in defined:
            it = f"_t_it{self.fresh()}"
            self.out(ind, f"for {it} in {rng}:")
            self.out(ind + 1, f"{name} = tl.cast({it}, {self.T('index')})")
        else:
            self.out(ind, f"for {name} in {rng}:")
        inner.add(s.var.name)
        return inner

    def bounds(self, E: "Emitter", lo: L.LExpr, hi: L.LExpr) -> tuple[str, str]:
        """Loop bounds: typed where needed so the induction variable gets the index type."""
        lv, hv = E.emit(lo), E.emit(hi)
        if lv.weak and hv.weak:
            return E.typed(lv, "index"), hv.code
        return (lv.code if lv.weak else E.typed(lv, "index")), (hv.code if hv.weak else E.typed(hv, "index"))

    def scalar_for(self, s: L.For, ind: int, defined: set[str]) -> None:
        E = Emitter(self)
        lo, hi = self.bounds(E, s.lo, s.hi)
        inner = self.loop_header(s, ind, defined, lo, hi)
        self.block(s.body.stmts, ind + 1, inner)

    def store(self, E: Emitter, s: L.Store, ind: int, mask: str | None = None, idx: Val | None = None,
              val: Val | None = None) -> None:
        idx = idx or E.emit(s.index)
        val = val or E.emit(s.value)
        buf = py_name(s.buffer)
        bdt = self.bufdt[s.buffer]
        icode = idx.code if not idx.weak else str(idx.py)
        ptr = f"{buf} + {_paren(icode)}" if icode != "0" else buf
        m = f", mask={mask}" if mask else ""
        v = self.stored(E.typed(val, bdt), bdt)
        if s.reduce is None and self._map_split() and id(s) == self.plan.split.store_id:
            self.out(ind, f"tl.atomic_add({ptr}, {v}{m}, sem={ATOMIC_SEM!r})  # a segment's partial sum (the output "
                          "was zeroed)")
            return
        if s.reduce is None:
            self.out(ind, f"tl.store({ptr}, {v}{m})")
            return
        if self.atomic:
            fn = _ATOMIC_FN[s.reduce]
            self.out(ind, f"tl.{fn}({ptr}, {v}{m}, sem={ATOMIC_SEM!r})")
            return
        old = f"tl.load({ptr}{m}{', other=0' if mask else ''})"
        if bdt in _SMALL_FLOATS:
            old += ".to(tl.float32)"
        self.out(ind, f"tl.store({ptr}, {self.stored(self.combine(s.reduce, old, E.typed(val, bdt), bdt), bdt)}{m})")

    def combine(self, op: str, a: str, b: str, dtype: str) -> str:
        if op == "add":
            return f"{a} + {_paren(b)}"
        if L.is_float(dtype):
            return f"_sc_nan{op}({a}, {b})"
        return f"tl.{'maximum' if op == 'max' else 'minimum'}({a}, {b})"

    # -- fast paths --------------------------------------------------------------------------
    def fast(self, t, ind: int, defined: set[str]) -> None:
        if isinstance(t, MapTile):
            self.map_tile(t, ind, defined)
        elif isinstance(t, ReduceLoop):
            self.reduce_loop(t, Emitter(self), ind, defined, lanes=None)
        elif isinstance(t, AccTile):
            self.acc_tile(t, ind, defined)
        else:  # pragma: no cover
            raise NoFastPath(f"unknown template {type(t).__name__}")

    def vec_name(self, name: str, defined: set[str]) -> str:
        base = self.scalar_name(name)
        return f"{base}_v" if name in defined else base

    def map_tile(self, t: MapTile, ind: int, defined: set[str]) -> None:
        loop = t.loop
        two = t.red is not None
        R = t.lanes
        ar = f"tl.arange(0, {R})" + ("[:, None]" if two else "")
        E = Emitter(self)
        n = self.fresh()
        v = self.vec_name(loop.var.name, defined)
        lo = E.typed(E.emit(loop.lo), "index")
        hi = E.typed(E.emit(loop.hi), "index")
        mr = f"_t_m{n}"
        body_ind = ind
        self.out(ind, loop_comment(loop, f"  [{R} lanes]"))
        if t.top and self._map_split():
            self.out(ind, f"# rows split into segments: lane -> (row, lo, hi) of _t_work, {R} segments per program")
            self.out(ind, f"_t_w = {self.pid()} * {R} + {ar}")
            self.out(ind, f"{mr} = _t_w < _t_nwork")
            self.out(ind, f"{v} = tl.load(_t_work + 3 * _t_w, mask={mr}, other=0).to({self.T('index')})")
        elif t.top:
            self.out(ind, f"{v} = {_paren(lo)} + {self.pid()} * {R} + {ar}")
            self.out(ind, f"{mr} = {v} < {_paren(hi)}")
        else:
            self.out(ind, f"_t_hi{n} = {hi}")
            self.out(ind, f"for _t_b{n} in range({lo}, _t_hi{n}, {R}):")
            body_ind = ind + 1
            self.out(body_ind, f"{v} = _t_b{n} + {ar}")
            self.out(body_ind, f"{mr} = {v} < _t_hi{n}")
        env = {loop.var.name: Val(v, loop.var.dtype, frozenset({"r"}))}
        masks = {"r": (mr, frozenset({"r"}))}
        VE = Emitter(self, env, masks)
        local = set(defined)
        for it in t.items:
            if isinstance(it, L.Assign):
                val = VE.emit(it.value)
                name = self.vec_name(it.var.name, defined)
                self.out(body_ind, f"{name} = {VE.typed(val, it.var.dtype)}")
                env[it.var.name] = Val(name, it.var.dtype, val.deps)
                local.add(it.var.name)
            elif isinstance(it, L.Store):
                idx = VE.emit(it.index)
                val = VE.emit(it.value)
                if "r" not in idx.deps:
                    raise NoFastPath(f"store to {it.buffer} is not indexed by the lanes")
                mask, _ = VE.mask_for(idx.deps | val.deps)
                self.store(VE, it, body_ind, mask, idx, val)
            elif isinstance(it, ReduceLoop):
                self.reduce_loop(it, VE, body_ind, local, lanes=R)
            else:  # pragma: no cover
                raise NoFastPath("unexpected item")

    def pid(self) -> str:
        return "tl.program_id(0).to(tl.int64)" if self.idx64 else "tl.program_id(0)"

    def reduce_loop(self, r: ReduceLoop, E: Emitter, ind: int, defined: set[str], lanes: str | None) -> None:
        loop = r.loop
        n = self.fresh()
        B = r.block
        two = lanes is not None
        lo = E.emit(loop.lo)
        hi = E.emit(loop.hi)
        acc_dt = r.acc.dtype
        work_dt = "float32" if acc_dt in _SMALL_FLOATS else acc_dt
        if self._split_loop(loop):  # this lane's segment of its row
            lane = E.masks["r"]
            seg = "tl.load(_t_work + 3 * _t_w + {}, mask=" + lane[0] + ", other=0)"
            lo = Val(seg.format(1), loop.lo.dtype, lane[1])
            hi = Val(seg.format(2), loop.hi.dtype, lane[1])
        self.out(ind, loop_comment(loop, f"  [{B} lanes, vector accumulator]"))
        self.out(ind, f"_t_lo{n} = {E.typed(lo, 'index')}")
        self.out(ind, f"_t_hi{n} = {E.typed(hi, 'index')}")
        shape = f"[{lanes}, {B}]" if two else f"[{B}]"
        ident = identity(r.op, work_dt)
        self.out(ind, f"_t_acc{n} = tl.full({shape}, {_lit(ident, work_dt)}, {self.T(work_dt)})")
        bdeps = lo.deps | hi.deps
        if bdeps:
            lane_mask, _ = E.mask_for(bdeps)
            self.out(ind, f"_t_n{n} = tl.max(tl.where({lane_mask}, _t_hi{n} - _t_lo{n}, 0))")
        else:
            self.out(ind, f"_t_n{n} = _t_hi{n} - _t_lo{n}")
        self.out(ind, f"for _t_o{n} in range(0, _t_n{n}, {B}):")
        bi = ind + 1
        arb = f"tl.arange(0, {B})" + ("[None, :]" if two else "")
        v = self.vec_name(loop.var.name, defined)
        self.out(bi, f"{v} = _t_lo{n} + _t_o{n} + {arb}")
        mb = f"_t_m{n}"
        self.out(bi, f"{mb} = {v} < _t_hi{n}")
        deps = frozenset({"b"}) | bdeps
        env = dict(E.env)
        env[loop.var.name] = Val(v, loop.var.dtype, deps)
        masks = dict(E.masks)
        masks["b"] = (mb, deps)
        VE = Emitter(self, env, masks)
        for a in r.assigns:
            val = VE.emit(a.value)
            name = self.vec_name(a.var.name, defined)
            self.out(bi, f"{name} = {VE.typed(val, a.var.dtype)}")
            env[a.var.name] = Val(name, a.var.dtype, val.deps)
        val = VE.emit(r.value)
        all_axes = set(masks)
        mask, _ = VE.mask_for(frozenset(all_axes))
        vc = VE.typed(val, work_dt)
        if r.op == "add":
            self.out(bi, f"_t_acc{n} = _t_acc{n} + tl.where({mask}, {vc}, 0)")
        else:
            fn = f"_sc_nan{r.op}" if L.is_float(work_dt) else f"tl.{'maximum' if r.op == 'max' else 'minimum'}"
            self.out(bi, f"_t_acc{n} = tl.where({mask}, {fn}(_t_acc{n}, {vc}), _t_acc{n})")
        axis = 1 if two else 0
        kd = ", keep_dims=True" if two else ""
        if r.op == "add":
            red = f"tl.sum(_t_acc{n}, axis={axis}{kd})"
        elif L.is_float(work_dt):
            red = f"tl.reduce(_t_acc{n}, {axis}, _sc_nan{r.op}{kd})"
        else:
            red = f"tl.{r.op}(_t_acc{n}, axis={axis}{kd})"
        acc_v = E.emit(r.acc)
        acc_code = E.typed(acc_v, r.acc.dtype)
        if work_dt != acc_dt:
            acc_code = f"{_paren(acc_code)}.to({self.T(work_dt)})"
        comb = self.combine(r.op, acc_code, red, work_dt)
        if work_dt != acc_dt:
            comb = f"({comb}).to({self.T(acc_dt)})"
        name = acc_v.code if r.acc.name in E.env else self.scalar_name(r.acc.name)
        self.out(ind, f"{name} = {comb}")
        if two:
            E.env[r.acc.name] = Val(name, r.acc.dtype, acc_v.deps | (E.masks.get("r", ("", frozenset()))[1]))

    def _split_loop(self, f: L.For) -> bool:
        return self.split and self.plan.split is not None and id(f) == self.plan.split.loop_id

    def _map_split(self) -> bool:
        return self.split and self.plan.split is not None and self.plan.split.kind == "map"

    def loop_bounds(self, E: "Emitter", f: L.For) -> tuple[str, str]:
        """Bounds of a loop; a split row's accumulator loop takes its segment from _t_work."""
        if self._split_loop(f):
            T = self.T("index")
            return f"tl.load(_t_work + _t_w + 1).to({T})", f"tl.load(_t_work + _t_w + 2).to({T})"
        return self.bounds(E, f.lo, f.hi)

    def acc_tile(self, t: AccTile, ind: int, defined: set[str]) -> None:
        if self._split_loop(t.rloops[0]) and not self.atomic:
            self.atomic = True  # segments of one row add into the same output row
            try:
                return self.acc_tile(t, ind, defined)
            finally:
                self.atomic = False
        n = self.fresh()
        E = Emitter(self)
        axes = list(t.axes)
        d = len(axes)
        acc_dt = self.bufdt[t.store.buffer]
        op = t.store.reduce
        work_dt = "float32" if acc_dt in _SMALL_FLOATS else acc_dt
        if t.variant == "dot":
            self.uses_dot = True
        names = [self.vec_name(ax.loop.var.name, defined) for ax in axes]
        mnames = [f"_t_m{n}_{py_name(ax.loop.var.name)}" for ax in axes]
        # the open axis (if any) loops over blocks around the whole tile, or takes its block from the grid
        tiled = self.tile_request is not None and self.tile_request[0] == id(t.rloops[0]) and self.grid_tiles is None
        tiled_ax = None
        for q, ax in enumerate(axes):
            if ax.static is None:
                lo, hi = self.bounds(E, ax.lo, ax.hi)
                self.out(ind, loop_comment(ax.loop, f"  [{ax.size} lanes]"))
                if tiled:
                    self.out(ind, f"_t_jb{n} = {_paren(lo)} + _t_tile * {ax.size}  # this program's block")
                    tiled_ax = ax
                else:
                    self.out(ind, f"for _t_jb{n} in range({lo}, {hi}, {ax.size}):")
                    ind += 1
        desc = ", ".join(f"{a.loop.var.name} ({a.role}, {a.size})" for a in axes)
        self.out(ind, f"# register tile over {desc}: {t.store.buffer}[...] {op}= ... accumulated over "
                      f"{', '.join(f.var.name for f in t.rloops)}")

        def axis_vectors(roles: tuple[str, ...], at: int, steps: dict[int, int] | None = None) -> None:
            for q, ax in enumerate(axes):
                if ax.role not in roles:
                    continue
                rng = f"tl.arange(0, {ax.size})"
                if steps and q in steps:   # this sub-step's slice of a block's reduction axis (lo is 0)
                    start = f"(_t_q{n} % {steps[q]}) * {DOT_K_STEP}"
                    rng = f"tl.arange(0, {DOT_K_STEP})"
                elif ax.static is None:
                    start = f"_t_jb{n}"
                else:
                    lo = E.emit(ax.lo)
                    start = "" if lo.weak and lo.py == 0 else E.typed(lo, "index")
                self.out(at, f"{names[q]} = {_paren(start) + ' + ' + rng if start else rng}")
                hi = E.typed(E.emit(lane_bound(ax)), "index")
                self.out(at, f"{mnames[q]} = {names[q]} < {_paren(hi)}")

        def ctx(dims: list[int], promote: bool = True) -> Emitter:
            env: dict[str, Val] = {}
            masks: dict[str, tuple[str, frozenset]] = {}
            for pos, q in enumerate(dims):
                rs = "" if len(dims) == 1 else "[" + ", ".join(":" if p == pos else "None" for p in range(len(dims))) + "]"
                env[axes[q].loop.var.name] = Val(names[q] + rs, "index", frozenset({f"a{q}"}))
                masks[f"a{q}"] = (mnames[q] + rs, frozenset({f"a{q}"}))
            return Emitter(self, env, masks, promote)

        axis_vectors(("out",), ind)
        k_steps = 1
        if t.variant == "dot":
            x, y, m_ax, k_ax, n_ax = t.dot
            qm, qk, qn = axes.index(m_ax), axes.index(k_ax), axes.index(n_ax)
            self.dot_shape = (m_ax.size, n_ax.size)
            if t.rloops and t.block_k is None:
                k_steps = dot_k_steps(k_ax)
            if k_steps > 1:
                self.dot_k_step = DOT_K_STEP
            shape = f"[{m_ax.size}, {n_ax.size}]"
        else:
            shape = "[" + ", ".join(str(a.size) if a.role == "out" else "1" for a in axes) + "]"
            if d == 1:   # one axis: a vector over output lanes, or a scalar summed over reduction lanes
                shape = f"[{axes[0].size}]" if axes[0].role == "out" else "[]"
        ident = identity(op, work_dt)
        self.out(ind, f"_t_acc{n} = tl.full({shape}, {_lit(ident, work_dt)}, {self.T(work_dt)})")
        inner = set(defined)
        cur = ind
        blocked = t.block_k is not None and t.variant == "sum" and all(a.role == "out" for a in axes)
        scalar_loops = list(zip(t.rloops, t.raassigns))
        if blocked:
            scalar_loops = scalar_loops[:-1]
        for q, (f, asg) in enumerate(scalar_loops):
            lo, hi = self.loop_bounds(E, f)
            if k_steps > 1 and q == len(scalar_loops) - 1:
                inner = self.sub_step_header(f, n, k_steps, cur, inner, lo, hi)
            else:
                inner = self.loop_header(f, cur, inner, lo, hi)
            cur += 1
            for a in asg:
                self.stmt(a, cur, inner)
        axis_vectors(("red",), cur, {qk: k_steps} if k_steps > 1 else None)
        if blocked:
            self.blocked_reduction(t, n, axes, names, mnames, cur, inner, acc_dt, work_dt, op)
        elif t.variant == "dot":
            X = ctx([qm, qk], promote=False).emit(x)
            Y = ctx([qk, qn], promote=False).emit(y)
            self.out(cur, f"_t_x{n} = {X.code}")
            self.out(cur, f"_t_y{n} = {Y.code}")
            from .launch import interpreting

            if x.dtype == "float32":
                self.uses_prec = True
                self.out(cur, f"_t_acc{n} += tl.dot(_t_x{n}, _t_y{n}, input_precision=PREC)")
            elif x.dtype == "bfloat16" and interpreting():   # the interpreter gets bfloat16 tl.dot wrong
                self.out(cur, f"_t_acc{n} += tl.dot(_t_x{n}.to(tl.float32), _t_y{n}.to(tl.float32), "
                              "input_precision='ieee')")
            else:
                self.out(cur, f"_t_acc{n} += tl.dot(_t_x{n}, _t_y{n})")
        else:
            VE = ctx(list(range(d)))
            val = VE.emit(t.value)
            mask, _ = VE.mask_for(frozenset(f"a{q}" for q in range(d)))
            fill = "0" if op == "add" else _lit(ident, work_dt)
            term = f"tl.where({mask}, {VE.typed(val, work_dt)}, {fill})"
            for q, ax in enumerate(axes):
                if ax.role == "red":
                    axis = q if d > 1 else 0
                    kd = ", keep_dims=True" if d > 1 else ""
                    if op == "add":
                        term = f"tl.sum({term}, axis={axis}{kd})"
                    elif L.is_float(work_dt):
                        term = f"tl.reduce({term}, {axis}, _sc_nan{op}{kd})"
                    else:
                        term = f"tl.{op}({term}, axis={axis}{kd})"
            self.out(cur, f"_t_acc{n} = {self.combine(op, f'_t_acc{n}', term, work_dt)}")
        SE = ctx([qm, qn]) if t.variant == "dot" and not blocked else ctx(list(range(d)))
        idx = SE.emit(t.index)
        out_deps = frozenset(f"a{q}" for q, a in enumerate(axes) if a.role == "out")
        if not out_deps <= idx.deps:
            raise NoFastPath("store index does not cover every output axis")
        mask, _ = SE.mask_for(out_deps)
        buf = py_name(t.store.buffer)
        self.out(ind, f"_t_p{n} = {buf} + {_paren(idx.code)}")
        if tiled_ax is not None:  # emitted in full: the launcher splits the grid by this axis
            self.grid_tiles = tiled_ax
        if self.atomic:
            fn = _ATOMIC_FN[op]
            self.out(ind, f"tl.{fn}(_t_p{n}, {self.stored(f'_t_acc{n}', acc_dt)}, mask={mask}, sem={ATOMIC_SEM!r})")
            return
        if op == "add" and self._sole_store(t):
            self.out(ind, f"tl.store(_t_p{n}, {self.stored(f'_t_acc{n}', acc_dt)}, mask={mask})  "
                          "# the one store of these elements into the zeroed output")
            return
        old = f"tl.load(_t_p{n}, mask={mask}, other=0)"
        if acc_dt in _SMALL_FLOATS:
            old += ".to(tl.float32)"
        new = self.stored(self.combine(op, old, f"_t_acc{n}", work_dt), acc_dt)
        self.out(ind, f"tl.store(_t_p{n}, {new}, mask={mask})")

    def sub_step_header(self, f: L.For, n: int, steps: int, ind: int, defined: set[str], lo: str,
                        hi: str) -> set[str]:
        """The innermost reduction loop of a tl.dot tile, flattened with the ``steps`` sub-steps of each
        block: ``_t_q`` runs over ``steps`` values per position and the position is ``_t_q // steps``
        (one loop, so Triton's pipeliner overlaps the loads of the next sub-step or block)."""
        self.out(ind, loop_comment(f, f"  [{steps} tl.dot steps of {DOT_K_STEP} per position]"))
        self.out(ind, f"for _t_q{n} in range({_paren(lo)} * {steps}, {_paren(hi)} * {steps}):")
        self.out(ind + 1, f"{self.scalar_name(f.var.name)} = _t_q{n} // {steps}")
        return set(defined) | {f.var.name}

    def _sole_store(self, t: AccTile) -> bool:
        """True when the tile's store is the only write of its elements in the whole launch: the
        tile is the one loop of a grid program's row (rows are exclusive to their program, and
        nothing else in the row stores). The runtime zeroes a summed output before the launch,
        so ``out = 0 + acc`` needs no load of the old value."""
        return not self.atomic and self.row_tile() is t

    def row_tile(self) -> AccTile | None:
        """The accumulator tile that is a grid row's whole work: the top loop (itself no fast
        path) holds scalar assignments around one loop, and that loop is the tile's outermost."""
        plan = self.plan
        if plan.mode != "grid" or plan.top is None or plan.fast.get(id(plan.top)) is not None:
            return None
        loops = [s for s in plan.top.body.stmts if not isinstance(s, (L.Comment, L.Assign))]
        if len(loops) != 1 or not isinstance(loops[0], L.For):
            return None
        t = plan.fast.get(id(loops[0]))
        return t if isinstance(t, AccTile) and t.rloops[0] is loops[0] else None

    def blocked_reduction(self, t: AccTile, n: int, axes, names, mnames, cur: int, defined: set[str],
                          acc_dt: str, work_dt: str, op: str) -> None:
        """The innermost reduction loop of an accumulator tile, BLOCK_K positions at a time.

        CSR SpMM: instead of one nonzero (one [BLOCK_N] slice of B) per iteration, gather a
        [BLOCK_K, BLOCK_N] tile of B rows, so the loads of BLOCK_K rows are in flight together.
        A sum accumulates the whole [BLOCK_K, BLOCK_N] tile and reduces its first axis once,
        after the loop (a reduction across lanes per step costs shuffles and a barrier).
        """
        rf, rasg = t.rloops[-1], t.raassigns[-1]
        E = Emitter(self)
        lo, hi = self.loop_bounds(E, rf)
        defer = op == "add"
        if defer:
            sizes = ", ".join(str(ax.size) for ax in axes)
            self.out(cur, f"_t_kacc{n} = tl.zeros([{t.block_k}, {sizes}], {self.T(work_dt)})")
        self.out(cur, f"_t_khi{n} = {hi}")
        self.out(cur, loop_comment(rf, f"  [{t.block_k} positions at a time]"))
        self.out(cur, f"for _t_kb{n} in range({lo}, _t_khi{n}, {t.block_k}):")
        cur += 1
        kname = self.vec_name(rf.var.name, defined)
        kmask = f"_t_mk{n}"
        self.out(cur, f"{kname} = _t_kb{n} + tl.arange(0, {t.block_k})")
        self.out(cur, f"{kmask} = {kname} < _t_khi{n}")
        d = len(axes)
        rank = d + 1

        def sfx(pos: int) -> str:
            return "[" + ", ".join(":" if p == pos else "None" for p in range(rank)) + "]"

        # per-position values (k = crd[p], ...) as [BLOCK_K] vectors
        env1 = {rf.var.name: Val(kname, "index", frozenset({"k"}))}
        masks1 = {"k": (kmask, frozenset({"k"}))}
        vec_vars: dict[str, tuple[str, str]] = {}
        for a in rasg:
            v = Emitter(self, dict(env1), dict(masks1)).emit(a.value)
            vname = self.vec_name(a.var.name, defined)
            self.out(cur, f"{vname} = {v.code}")
            env1[a.var.name] = Val(vname, v.dtype, v.deps | frozenset({"k"}))
            vec_vars[a.var.name] = (vname, v.dtype)
        env: dict[str, Val] = {rf.var.name: Val(kname + sfx(0), "index", frozenset({"k"}))}
        for var, (vname, dt) in vec_vars.items():
            env[var] = Val(vname + sfx(0), dt, frozenset({"k"}))
        masks: dict[str, tuple[str, frozenset]] = {"k": (kmask + sfx(0), frozenset({"k"}))}
        for q, ax in enumerate(axes):
            env[ax.loop.var.name] = Val(names[q] + sfx(q + 1), "index", frozenset({f"a{q}"}))
            masks[f"a{q}"] = (mnames[q] + sfx(q + 1), frozenset({f"a{q}"}))
        VE = Emitter(self, env, masks, True)
        val = VE.emit(t.value)
        mask, _ = VE.mask_for(frozenset({"k"} | {f"a{q}" for q in range(d)}))
        if defer:
            self.out(cur, f"_t_kacc{n} += tl.where({mask}, {VE.typed(val, work_dt)}, 0)")
            self.out(cur - 1, f"_t_acc{n} = _t_acc{n} + tl.sum(_t_kacc{n}, axis=0)")
            return
        term = f"tl.sum(tl.where({mask}, {VE.typed(val, work_dt)}, 0), axis=0)"
        self.out(cur, f"_t_acc{n} = {self.combine(op, f'_t_acc{n}', term, work_dt)}")

    # -- grid tiling of the open axis ---------------------------------------------------------
    def plan_tiling(self) -> None:
        """Ask for the open axis of an accumulator tile to be split across programs.

        Applies when the grid loop's body is scalar assignments around one accumulator tile
        with one open (dynamic-extent) axis whose bounds are kernel scalars: program ``p``
        then takes row ``p // T`` and block ``p % T`` of that axis (T blocks), instead of one
        program walking every block of its row. Without it a BSR SpMM with N = 4096 runs one
        program per block row (128 programs for a 4096-row matrix in 32-row blocks, too few
        for a GPU). Consecutive programs share their row, so its nonzeros are re-read from L2;
        for a ``tl.dot`` tile they share their block instead (``tile_major``): then the dense
        operand's ``[BLOCK_K, BLOCK_N]`` tiles are what L2 keeps, and these are the bulk of the
        traffic (an H100 BSR SpMM, 4096^3 fp16 at 90 % block sparsity: 1.05 / 1.14 / 1.18 / 1.04x
        faster at b = 16 / 32 / 64 / 128, benchmarks/results/h100-dl-item3-tile-order).
        """
        t = self.row_tile()
        if t is None:
            return
        open_axes = [ax for ax in t.axes if ax.static is None]
        if len(open_axes) != 1:
            return
        ax = open_axes[0]
        if not (expr_vars_of(ax.lo) | expr_vars_of(ax.hi)) <= self.scalars:
            return
        self.tile_request = (id(t.rloops[0]), ax)
        self.tile_major = t.variant == "dot"

    def dot_warps(self, consts) -> int:
        """Warps for the tl.dot accumulator: about 64 float32 registers per thread (4..8).

        A BSR(128, 128) tile with BLOCK_N = 128 is a 128 x 128 accumulator: with 4 warps that is
        128 registers per thread before the operands, and multiplied as whole blocks the kernel
        spilled (measured 0.46x of dense at 90 % zero blocks on an H100, below the smaller blocks).
        In 64-deep steps (:func:`dot_k_steps`) the operands are half as large and 4 warps won
        (50.2 against 54.0 us, ``benchmarks/tune_bsr.py``).
        """
        if self.dot_shape is None:
            return 1
        m, n = (consts[v] if isinstance(v, str) else int(v) for v in self.dot_shape)
        if self.dot_k_step is not None:   # operands of 64-deep steps: 128 x 128 ran faster on 4 warps
            return 8 if m * n > 128 * 128 else 4
        return 8 if m * n >= 128 * 128 else 4

    def dot_block_n(self, consts: dict[str, int], estimates: dict[str, float | None]) -> dict[str, int]:
        """A wider ``BLOCK_N`` (256) for a ``tl.dot`` tile when the columns allow it; 64-row tiles keep theirs.

        Measured on an H100 (Triton 3.6, float16 BSR SpMM, 4096 x 4096 weights with 90 % of the
        blocks zero, N = 4096; ``benchmarks/tune_bsr.py``) with the block-major grid (``tile_grid``;
        benchmarks/results/h100-dl-item3-tile-order/tune_bsr.txt): 256 columns beat 128 for 16-,
        32- and 128-row blocks (123 vs 133, 75 vs 80, 57 vs 62 us at Triton's default 3 stages)
        and tie for 64-row blocks (52 vs 52 us), where 128 stays. Blocks run in 64-deep steps
        (:func:`dot_k_steps`) keep 128 too (50.2 us against 56.9 at 256 for 128 x 128 blocks).
        """
        if self.dot_shape is None:
            return {}
        m, n = self.dot_shape
        if not isinstance(n, str) or isinstance(m, str) or (estimates.get(n) or 0) < 256:
            return {}
        return {n: 256} if m != 64 and self.dot_k_step is None else {}

    def tile_count(self, bufs, scal, consts) -> int:
        """Blocks of the grid-tiled axis for a launch, as the generated ``_t_ntile`` computes them."""
        from .device import host_eval

        ax = self.grid_tiles
        size = consts[ax.size] if isinstance(ax.size, str) else int(ax.size)
        extent = host_eval(ax.hi, bufs, scal) - host_eval(ax.lo, bufs, scal)
        return max(-(-extent // size), 1)

    def tile_grid(self, ind: int, E: "Emitter") -> str:
        """Emit the program -> (row, block) split; returns the row's program number."""
        ax = self.tile_request[1]
        lo = E.typed(E.emit(ax.lo), "index")
        hi = E.typed(E.emit(ax.hi), "index")
        self.out(ind, f"_t_ntile = tl.maximum(tl.cdiv({_paren(hi)} - {_paren(lo)}, {ax.size}), 1)")
        if self.tile_major:
            self.out(ind, f"# grid: {ax.loop.var.name} blocks across programs, consecutive programs share a block "
                          "(its columns of the dense operand stay in L2)")
            self.out(ind, "_t_nrow = tl.num_programs(0) // _t_ntile")
            self.out(ind, f"_t_tile = {self.pid()} // _t_nrow")
            self.out(ind, f"_t_row = {self.pid()} % _t_nrow")
        else:
            self.out(ind, f"# grid: {ax.loop.var.name} blocks across programs, consecutive programs share a row")
            self.out(ind, f"_t_tile = {self.pid()} % _t_ntile")
            self.out(ind, f"_t_row = {self.pid()} // _t_ntile")
        return "_t_row"

    # -- the kernel --------------------------------------------------------------------------
    def source(self, constexprs: list[str], internal: list[str]) -> str:
        plan = self.plan
        k = self.k
        body_lines: list[str] = []
        self.lines = body_lines
        defined: set[str] = set(self.scalars)
        ind = 1
        for p in k.scalars:
            self.out(ind, f"{py_name(p.name)} = tl.cast({py_name(p.name)}, {self.T('index')})")
        for name in internal:
            self.out(ind, f"{name} = {name}.to({self.T('index')})")
        if plan.mode == "single":
            self.block(k.body.stmts, ind, defined)
        else:
            top = plan.top
            for s in plan.pre:
                self.stmt(s, ind, defined)
            self.atomic = plan.atomic
            E = Emitter(self)
            t = plan.fast.get(id(top))
            done = False
            if plan.mode == "grid" and t is not None:
                mark = len(self.lines)
                try:
                    self.map_tile(t, ind, set(defined))
                    done = True
                except NoFastPath as why:
                    del self.lines[mark:]
                    self.notes.append(f"map tile over {top.var.name} not taken: {why}")
                    plan.fast.pop(id(top), None)
            if not done:
                name = self.scalar_name(top.var.name)
                lo = E.typed(E.emit(top.lo), "index")
                hi = E.typed(E.emit(top.hi), "index")
                self.out(ind, loop_comment(top))
                if plan.mode == "persistent":
                    for q, w in enumerate(plan.workspaces):
                        self.out(ind, f"{py_name(w)} = {py_name(w)} + {self.pid()} * _t_ws{q}")
                    step = "tl.num_programs(0).to(tl.int64)" if self.idx64 else "tl.num_programs(0)"
                    self.out(ind, f"for {name} in range({_paren(lo)} + {self.pid()}, {hi}, {step}):")
                    self.block(top.body.stmts, ind + 1, defined | {top.var.name})
                elif plan.mode == "atomic":
                    self.out(ind, f"{name} = _t_lo + {self.pid()}")
                    self.block(top.body.stmts, ind, defined | {top.var.name})
                else:
                    pid = self.pid()
                    if self.tile_request is not None:
                        pid = self.tile_grid(ind, E)
                    if self.split:
                        self.out(ind, "# rows split into segments: program -> (row, lo, hi) of _t_work")
                        self.out(ind, f"_t_w = 3 * {pid}")
                        self.out(ind, f"{name} = tl.load(_t_work + _t_w).to({self.T('index')})")
                    else:
                        self.out(ind, f"{name} = {_paren(lo)} + {pid}")
                    self.block(top.body.stmts, ind, defined | {top.var.name})
        split_params = (["_t_work", "_t_nwork"] if self._map_split() else ["_t_work"]) if self.split else []
        params = [py_name(p.name) for p in k.params] + internal + split_params + \
            [f"{c}: tl.constexpr" for c in constexprs]
        if self.uses_prec:
            params.append("PREC: tl.constexpr")
        # extents are specialized (Triton notes which are multiples of 16: a row stride that is one lets a
        # dense operand's rows load as 128-bit vectors); loop bounds and internal counts vary per call
        scal = [py_name(p.name) for p in k.scalars if not (SPECIALIZE_DIMS and p.name.startswith("n_"))] + \
            internal + (["_t_nwork"] if self._map_split() else [])
        header = [
            "# Generated by sparsec (Triton backend). Do not edit: regenerated from the loop IR.",
            f"# index arithmetic: {'int64' if self.idx64 else 'int32'}",
            "#",
        ]
        header += ["# " + line for line in scheduled_text(plan).splitlines()]
        header += [f"# note: {x}" for x in self.notes]
        out = header + ["", "import triton", "import triton.language as tl", "", HELPERS.strip("\n"), "", ""]
        out.append(f"@triton.jit(do_not_specialize={scal!r})")
        out.append(f"def {py_name(k.name)}({', '.join(params)}):")
        if k.doc:
            out.append(f'    """{k.doc}"""')
        out += body_lines
        return "\n".join(out) + "\n"


def lane_bound(ax) -> L.LExpr:
    """The bound that a tile axis's lanes are masked by: ``hi``, or ``x`` for ``hi = min(x, c)`` when the
    axis has exactly ``c`` lanes (they stop at ``c`` already).

    Measured on an H100 (BSR SpMM, float16 4096^3, 90 % of the blocks zero, one process;
    ``benchmarks/results/h100-dl-item3-k-steps``): b = 128 51.1 -> 49.5 us, b = 64 52.9 -> 52.2 us,
    b = 16 and 32 unchanged. The assumed reason, not checked in the compiled code: Triton widens a
    masked load only where it can prove the mask constant over each vector, and it can follow the
    divisibility of ``x = n_k - k_blk * 128`` but not of a ``min``.
    """
    hi = ax.hi
    if ax.static is None or ax.size != ax.static or not (isinstance(hi, L.BinOp) and hi.op == "min"):
        return hi
    for side, other in ((hi.a, hi.b), (hi.b, hi.a)):
        if isinstance(side, L.Const) and side.value == ax.static:
            return other
    return hi


#: depth of one tl.dot step over a stored block's reduction axis (see :func:`dot_k_steps`)
DOT_K_STEP = 64


def dot_k_steps(k_ax) -> int:
    """Sub-steps that a ``tl.dot`` tile's block reduction axis is split into (1: none).

    A ``bsr(128, 128)`` block multiplied whole is a ``[128, 128] x [128, BLOCK_N]`` step: its
    operands take 96 KB of shared memory per pipeline stage at 256 columns, so one program fits
    per SM and the loads of the next block wait for this one. In steps of :data:`DOT_K_STEP`
    rows each stage is half that, and 128 columns on 4 warps beat 256 on 8. Measured on an H100
    (float16 4096^3, 90 % of the blocks zero; ``benchmarks/results/h100-dl-item3-k-steps``): the
    generated kernel 57.1 -> 51.1 us in one process (49.5 with :func:`lane_bound`); a hand-written
    probe of the loop found steps of 64 best (47.9 us, against 58.9 in steps of 32). Blocks of at
    most 64 along the reduction run whole.
    """
    size = k_ax.size
    if k_ax.static is None or not isinstance(size, int) or size <= DOT_K_STEP or size % DOT_K_STEP:
        return 1
    if not (isinstance(k_ax.lo, L.Const) and k_ax.lo.value == 0):   # the sub-step vectors start at 0
        return 1
    return size // DOT_K_STEP


def generate(plan: Plan, idx64: bool, constexprs: list[str], internal: list[str],
             split: bool = False) -> tuple[str, Codegen]:
    """Triton source for ``plan`` (and the generator, which records what it used).

    ``split``: the row-split variant (``plan.split``): each program takes a segment
    ``(row, lo, hi)`` of the work array ``_t_work`` and adds its partial sums atomically.
    """
    cg = Codegen(plan, idx64)
    cg.split = split and plan.split is not None
    cg.plan_tiling()
    src = cg.source(constexprs, internal)
    if cg.tile_request is not None and cg.grid_tiles is None:  # the tile fell back to scalar code: no tiling
        cg = Codegen(plan, idx64)
        cg.split = split and plan.split is not None
        src = cg.source(constexprs, internal)
    return src, cg
