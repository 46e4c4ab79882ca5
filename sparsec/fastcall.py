"""The fast call path: a precomputed plan that skips the general runtime when it can.

A compiled kernel's per-call cost matters for small problems (a 10x10 SpMV runs
in well under a microsecond; scipy's call costs about 4 µs). The general runtime
(:mod:`sparsec.runtime`) rebuilds tensors, re-derives extents and evaluates loop
bounds through the interpreter on every call. :class:`FastCall` does that work
once, at the first call, for the common case:

* one statement, no conversions, no temporaries, no workspaces;
* a dense output in identity dimension order, or an output sharing an input's
  pattern (SDDMM-like);
* operands given as :class:`sparsec.Tensor` in exactly the declared format and
  dtype, or as C-contiguous numpy arrays for dense operands.

Anything else -- a different format, a dtype to cast, a shape mismatch (which the
general path reports with a precise message) -- returns :data:`FALLBACK` and the
general runtime runs instead. The results are the same either way; the tests run
every kernel both ways.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Mapping

import numpy as np

from .ir import loop_ir as L
from . import runtime
from .runtime import StatementRunner, chunk_bounds, get_num_threads, tensor_buffers
from .threads import TEAM
from .tensor import Tensor

FALLBACK = object()

HostExpr = Callable[[Mapping[str, Any], Mapping[str, int]], int]


def host_value(e: L.LExpr) -> int | str | HostExpr:
    """A loop bound as an int (constant), a str (a scalar parameter) or a closure (anything else)."""
    if isinstance(e, L.Const):
        return int(e.value)
    if isinstance(e, L.Var):
        return e.name
    return host_expr(e)


def host_expr(e: L.LExpr) -> HostExpr:
    """Compile an index-typed loop-IR expression (loop bounds) into a Python closure."""
    if isinstance(e, L.Const):
        v = int(e.value)
        return lambda b, s: v
    if isinstance(e, L.Var):
        n = e.name
        return lambda b, s: s[n]
    if isinstance(e, L.Cast):
        return host_expr(e.a)
    if isinstance(e, L.Load):
        buf, idx = e.buffer, host_expr(e.index)
        return lambda b, s: int(b[buf][idx(b, s)])
    if isinstance(e, L.BinOp):
        ops = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "floordiv": operator.floordiv,
               "mod": operator.mod, "max": max, "min": min}
        f, a, c = ops[e.op], host_expr(e.a), host_expr(e.b)
        return lambda b, s: f(a(b, s), c(b, s))
    raise TypeError(f"not a host-evaluable bound: {e!r}")


class FastCall:
    """A call plan for one kernel; ``plan(given)`` returns the result or :data:`FALLBACK`."""

    @staticmethod
    def build(runner: StatementRunner, program, threads: bool) -> "FastCall | None":
        """The plan for ``runner``'s statement, or None when the statement needs the general path."""
        low = runner.low
        sp = low.space
        if low.strategy not in ("dense", "same_pattern") or sp.conversions or low.workspaces:
            return None
        if sp.output_conversion is not None or low.symbolic is not None:
            return None
        if low.parallel is not None and low.parallel.private:
            return None  # per-chunk output copies: the general path
        out = sp.output
        if low.strategy == "dense" and [e.dim for e in out.fmt.exprs] != list(range(out.fmt.ndim)):
            return None
        try:
            return FastCall(runner, program, threads)
        except TypeError:
            return None

    def __init__(self, runner: StatementRunner, program, threads: bool):
        low = runner.low
        self.runner = runner
        self.low = low
        self.threads = threads
        self.kernel_fn = runner.numeric
        sp = low.space
        self.inputs = [o for o in sp.operands]
        self.decls = {o.tensor: program.decl(o.tensor) for o in self.inputs}
        self.np_dtype = {o.tensor: np.dtype(self.decls[o.tensor].dtype) for o in self.inputs}
        self.identity_dense = {o.tensor: [e.dim for e in o.fmt.exprs] == list(range(o.fmt.ndim)) and not o.fmt.is_sparse
                               for o in self.inputs}
        # (operand, dimension) -> extent parameter, and the output's shape parameters
        self.dims = [(o.tensor, d, low.dim_params[v]) for o in self.inputs for d, v in enumerate(o.dim_vars)]
        self.params = sorted(set(low.dim_params.values()))
        out = sp.output
        self.out_prefix = out.prefix
        self.out_shape = [low.dim_params[v] for v in out.dim_vars]
        self.out_fmt = out.fmt
        self.out_name = out.tensor
        self.cdt = np.dtype(low.compute_dtype)
        self.pattern = low.pattern_source
        names = {p.name for p in low.numeric.params}
        self.parallel = low.parallel if "sc_lo" in names else None
        if self.parallel is not None:
            self.lo = host_value(self.parallel.lo)
            self.hi = host_value(self.parallel.hi)
            self.balance = self.parallel.balance
        # per input: (name, is_identity_dense, declared format, numpy dtype, ndim)
        self.checks = [(o.tensor, self.identity_dense[o.tensor], self.decls[o.tensor].format, self.np_dtype[o.tensor],
                        self.decls[o.tensor].ndim) for o in self.inputs]
        self._cache: dict[str, tuple[Any, dict, Any, Any]] = {}
        self.fill_needs_scalars = low.reduce_op in ("max", "min")
        self.writes_all = low.writes_all

    def _tensor_buffers(self, name: str, x: Tensor, fmt, dtype) -> dict | None:
        # The memo is keyed by the tensor *and* its values / levels objects: a tensor whose
        # ``values`` or ``levels`` attribute was rebound gets its buffers looked up again.
        hit = self._cache.get(name)
        if hit is not None and hit[0] is x and hit[2] is x.values and hit[3] is x.levels:
            return hit[1]
        if x.format != fmt or x.values.dtype != dtype:
            return None
        bufs = tensor_buffers(x, name)
        self._cache[name] = (x, bufs, x.values, x.levels)
        return bufs

    def __call__(self, given: Mapping[str, Any]) -> Any:
        buffers: dict[str, Any] = {}
        for name, dense, fmt, dtype, ndim in self.checks:
            x = given[name]
            tx = type(x)
            if tx is Tensor:
                b = self._tensor_buffers(name, x, fmt, dtype)
                if b is None:
                    return FALLBACK
                buffers.update(b)
            elif tx is np.ndarray and dense and x.dtype == dtype and x.ndim == ndim and x.flags.c_contiguous:
                buffers[name + "_vals"] = x.reshape(-1)
            else:
                return FALLBACK
        scalars: dict[str, int] = {}
        for name, d, param in self.dims:
            n = given[name].shape[d]
            if scalars.setdefault(param, n) != n:
                return FALLBACK  # the general path raises the ShapeError naming both operands
        if len(scalars) != len(self.params):
            return FALLBACK
        shape = tuple([scalars[p] for p in self.out_shape])
        fill = self.runner.fill_value(scalars) if self.fill_needs_scalars else 0
        if self.pattern is not None:
            size = given[self.pattern.tensor].values.shape[0]
        else:
            size = 1
            for n in shape:
                size *= n
        if self.writes_all:
            vals = runtime.uninitialized(size, self.cdt)
        else:
            vals = np.zeros(size, self.cdt) if fill == 0 else np.full(size, fill, self.cdt)
        buffers[self.out_prefix + "_vals"] = vals
        if self.parallel is None:
            self.kernel_fn(buffers, scalars)
        else:
            self._launch(buffers, scalars)
        if self.pattern is not None:
            src = given[self.pattern.tensor]
            return Tensor.from_buffers(self.out_fmt, shape, [dict(lv) for lv in src.levels], vals,
                                       name=self.out_name, validate=False)
        return vals.reshape(shape)

    def _launch(self, buffers: dict, scalars: dict) -> None:
        fn = self.kernel_fn
        lo, hi = self.lo, self.hi
        lo = lo if type(lo) is int else scalars[lo] if type(lo) is str else lo(buffers, scalars)
        hi = hi if type(hi) is int else scalars[hi] if type(hi) is str else hi(buffers, scalars)
        if hi <= lo:
            return
        balance = buffers[self.balance] if self.balance else None
        work = (hi - lo) + (int(balance[hi]) - int(balance[lo]) if balance is not None else 0)
        if work < runtime.MIN_PARALLEL_WORK or not self.threads or (nthreads := get_num_threads()) == 1:
            scalars["sc_lo"], scalars["sc_hi"] = lo, hi
            fn(buffers, scalars)
            return
        chunks = chunk_bounds(lo, hi, nthreads, balance)
        TEAM.run([functools.partial(fn, buffers, {**scalars, "sc_lo": a, "sc_hi": b}) for a, b in chunks])
