"""Reference interpreter for loop IR: plain Python over numpy buffers, slow and obviously right.

Tests run a kernel here and through each backend and compare. Loops marked
parallel or block run serially; reducing stores accumulate in place.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import BackendError
from .loop_ir import (
    Assign, BinOp, Block, BufferParam, Cast, Comment, Const, For, If, Kernel, LExpr, Load, ScalarParam, Select,
    Stmt, Store, UnOp, Var, While, is_float,
)

_NP = {"float16": np.float16, "float32": np.float32, "float64": np.float64, "int8": np.int8, "int16": np.int16,
       "int32": np.int32, "int64": np.int64, "bool": np.bool_, "index": np.int64}


def _cast(value, dtype: str):
    if dtype == "bool":
        return bool(value)
    if dtype == "index":
        return int(value)
    if dtype == "bfloat16":
        return float(np.float32(value))
    return _NP[dtype](value)


def _fmax(a, b):
    if a != a or b != b:
        return a if a != a else b
    return a if a >= b else b


def _fmin(a, b):
    if a != a or b != b:
        return a if a != a else b
    return a if a <= b else b


class _Interp:
    def __init__(self, kernel: Kernel, buffers: Mapping[str, np.ndarray], scalars: Mapping[str, int]):
        self.buffers = buffers
        self.env: dict[str, object] = dict(scalars)
        self.kernel = kernel

    def ev(self, e: LExpr):
        if isinstance(e, Const):
            return _cast(e.value, e.dtype)
        if isinstance(e, Var):
            try:
                return self.env[e.name]
            except KeyError:
                raise BackendError(f"loop IR reads {e.name!r} before it is assigned") from None
        if isinstance(e, Load):
            idx = self.ev(e.index)
            buf = self.buffers[e.buffer]
            if not 0 <= idx < buf.shape[0]:
                raise BackendError(f"out-of-bounds load {e.buffer}[{idx}] (length {buf.shape[0]})")
            v = buf[idx]
            return int(v) if e.dtype == "index" else _cast(v, e.dtype)
        if isinstance(e, BinOp):
            a = self.ev(e.a)
            if e.op == "and":
                return bool(a) and bool(self.ev(e.b))
            if e.op == "or":
                return bool(a) or bool(self.ev(e.b))
            b = self.ev(e.b)
            return self._bin(e.op, a, b, e.a.dtype, e.dtype)
        if isinstance(e, UnOp):
            a = self.ev(e.a)
            return self._un(e.op, a, e.dtype)
        if isinstance(e, Select):
            return self.ev(e.a) if self.ev(e.cond) else self.ev(e.b)
        if isinstance(e, Cast):
            return _cast(self.ev(e.a), e.dtype)
        raise BackendError(f"interpreter: unknown expression {e!r}")

    @staticmethod
    def _bin(op: str, a, b, in_dtype: str, dtype: str):
        fl = is_float(in_dtype)
        with np.errstate(all="ignore"):
            if op == "add":
                r = a + b
            elif op == "sub":
                r = a - b
            elif op == "mul":
                r = a * b
            elif op == "div":
                if fl:
                    r = np.divide(a, b)
                else:
                    if b == 0:
                        raise BackendError("integer division by zero")
                    q = abs(a) // abs(b)          # exact C division (truncates toward zero)
                    r = q if (a >= 0) == (b >= 0) else -q
            elif op == "floordiv":
                r = a // b
            elif op == "shr":
                r = a >> b
            elif op == "bitand":
                r = a & b
            elif op == "mod":
                r = a % b
            elif op == "max":
                r = _fmax(a, b) if fl else max(a, b)
            elif op == "min":
                r = _fmin(a, b) if fl else min(a, b)
            elif op == "lt":
                return bool(a < b)
            elif op == "le":
                return bool(a <= b)
            elif op == "gt":
                return bool(a > b)
            elif op == "ge":
                return bool(a >= b)
            elif op == "eq":
                return bool(a == b)
            elif op == "ne":
                return bool(a != b)
            else:
                raise BackendError(f"interpreter: unknown binary op {op!r}")
        return _cast(r, dtype)

    @staticmethod
    def _un(op: str, a, dtype: str):
        with np.errstate(all="ignore"):
            if op == "neg":
                r = -a
            elif op == "not":
                return not a
            elif op == "abs":
                r = abs(a)
            elif op == "exp":
                r = np.exp(a)
            elif op == "log":
                r = np.log(a)
            elif op == "sqrt":
                r = np.sqrt(a)
            else:
                raise BackendError(f"interpreter: unknown unary op {op!r}")
        return _cast(r, dtype)

    def run(self, s: Stmt) -> None:
        if isinstance(s, Block):
            for c in s.stmts:
                self.run(c)
        elif isinstance(s, Assign):
            self.env[s.var.name] = _cast(self.ev(s.value), s.var.dtype)
        elif isinstance(s, Store):
            buf = self.buffers[s.buffer]
            idx = self.ev(s.index)
            if not 0 <= idx < buf.shape[0]:
                raise BackendError(f"out-of-bounds store {s.buffer}[{idx}] (length {buf.shape[0]})")
            v = self.ev(s.value)
            if s.reduce is None:
                buf[idx] = v
            elif s.reduce == "add":
                buf[idx] = buf[idx] + v
            elif s.reduce == "max":
                buf[idx] = _fmax(buf[idx].item(), v) if buf.dtype.kind == "f" else max(buf[idx], v)
            elif s.reduce == "min":
                buf[idx] = _fmin(buf[idx].item(), v) if buf.dtype.kind == "f" else min(buf[idx], v)
        elif isinstance(s, For):
            lo, hi = self.ev(s.lo), self.ev(s.hi)
            for v in range(lo, hi):
                self.env[s.var.name] = v
                self.run(s.body)
        elif isinstance(s, While):
            guard = 0
            while self.ev(s.cond):
                self.run(s.body)
                guard += 1
                if guard > 10**9:
                    raise BackendError("interpreter: runaway while loop")
        elif isinstance(s, If):
            self.run(s.then if self.ev(s.cond) else s.orelse)
        elif isinstance(s, Comment):
            pass
        else:
            raise BackendError(f"interpreter: unknown statement {s!r}")


def run_kernel(kernel: Kernel, buffers: Mapping[str, np.ndarray], scalars: Mapping[str, int]) -> None:
    """Execute ``kernel`` in place on ``buffers`` (1-D numpy arrays by parameter name).

    Missing parameters raise :class:`BackendError`; so do out-of-bounds accesses,
    which a correct kernel never makes.
    """
    for p in kernel.params:
        if isinstance(p, BufferParam) and p.name not in buffers:
            raise BackendError(f"kernel {kernel.name}: missing buffer {p.name!r}")
        if isinstance(p, ScalarParam) and p.name not in scalars:
            raise BackendError(f"kernel {kernel.name}: missing scalar {p.name!r}")
    _Interp(kernel, buffers, {k: int(v) for k, v in scalars.items()}).run(kernel.body)
