"""The fast call path: a precomputed plan that skips the general runtime when it can.

A compiled kernel's per-call cost matters for small problems (a 10x10 SpMV runs
in well under a microsecond; scipy's call costs about 3 µs). The general runtime
(:mod:`sparsec.runtime`) rebuilds tensors, re-derives extents and evaluates loop
bounds through the interpreter on every call. :class:`FastCall` does that work
once, at construction, for the common case:

* one statement, no conversions, no temporaries, no workspaces;
* a dense output in identity dimension order, or an output sharing an input's
  pattern (SDDMM-like);
* operands given as :class:`sparsec.Tensor` in exactly the declared format and
  dtype, as scipy CSR/CSC matrices that are views of such a tensor (validated
  once per matrix, see :func:`sparsec.api._scipy_view`), or as C-contiguous
  numpy arrays for dense operands (dense CPU torch tensors are passed in as numpy
  views by :func:`sparsec.api._fast_with_torch_views`, the result handed back as
  a torch tensor).

Anything else -- a different format, a dtype to cast, a shape mismatch (which the
general path reports with a precise message), sparse torch tensors -- returns
:data:`FALLBACK` and the general runtime runs instead. The results are the same
either way; the tests run every kernel both ways.

**The CPU plan is straight-line code.** For a kernel of the CPU backend, the plan
is a small Python function generated for the kernel (:meth:`FastCall._generate`):
per operand a type test and attribute reads, the extents unpacked from the
shapes and compared, the output allocated in its final shape, and one call of
the kernel's entry point (:mod:`sparsec.backends.cpu.kernel`) with the buffers
as a tuple, which checks every array's type, dtype, rank and flags in native
code (a rejected array falls back to the general path, which casts or copies it,
or explains). Nothing of the user's reaches that source: operand names, level
buffer names, formats and helpers are bound as values in the function's globals;
the source only holds generated identifiers (``x0``, ``b3``, ``e1``) and integers.
Other backends (the reference interpreter) use the generic plan
(:meth:`FastCall._generic`), which does the same through dicts.
"""

from __future__ import annotations

import functools
import operator
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import runtime
from .memo import OwnedMemo
from .backends.cpu import panels
from .backends.cpu import team as _team
from .ir import loop_ir as L
from .runtime import StatementRunner, chunk_bounds, get_num_threads, tensor_buffers
from .tensor import Tensor
from .threads import TEAM

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


_SCIPY: list = []   # [scipy.sparse.issparse, sparsec.api._scipy_view], imported on first use


def _scipy_view(x: Any, name: str) -> Tensor | None:
    """A validated Tensor view of a scipy sparse matrix (memoized per matrix by :mod:`sparsec.api`), or None."""
    if not type(x).__module__.startswith("scipy"):
        return None
    if not _SCIPY:
        import scipy.sparse

        from .api import _scipy_view as view

        _SCIPY[:] = [scipy.sparse.issparse, view]
    issparse, view = _SCIPY
    return view(x, name) if issparse(x) else None


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
            self.balance_chain = self.parallel.balance_chain
            self._chain_js: tuple[int, ...] = ()   # their places in the generated plan's arrays
        # per input: (name, is_identity_dense, declared format, numpy dtype, ndim)
        self.checks = [(o.tensor, self.identity_dense[o.tensor], self.decls[o.tensor].format, self.np_dtype[o.tensor],
                        self.decls[o.tensor].ndim) for o in self.inputs]
        self.fill_needs_scalars = low.reduce_op in ("max", "min")
        self.writes_all = low.writes_all or self._kernel_writes_every_row()
        self._work_memo = OwnedMemo(ROWS_MEMO_SIZE)   # per pos array and range: rows + nonzeros
        self._rows_memo = OwnedMemo(ROWS_MEMO_SIZE)
        self.zero_rows = self._zero_rows_params(threads)
        self._work_factor = self._inner_work_params()
        #: elements of one 512-bit vector operation in the compute dtype (the work unit of a nonzero's
        #: inner loop: SpMM N=16 float32 costs per nonzero about what SpMV does, ~0.87 ns on the 2-core VM)
        self.vector = max(1, 64 // self.cdt.itemsize)
        self._fn = self._generate() or self._generic

    def __call__(self, given: Mapping[str, Any]) -> Any:
        return self._fn(given)

    def _kernel_writes_every_row(self) -> bool:
        """Whether the compiled kernel itself writes every element of the 2-D dense output (so the
        host may leave it uninitialized): its register tiles start from zero over whole rows
        (``CPUKernel.fresh_rows``, see :func:`sparsec.backends.cpu.regtile.fresh_rows`) and its row
        loop runs over every row of the output. Measured on the 2-core VM (1x1 convolution as SpMM,
        128 x 3136 float32 output): 1 thread ~410 -> ~326 µs, 2 threads ~352 -> ~265 µs, the memset
        and the tiles' loads of the zeroed rows gone."""
        rows = [f for f in getattr(self.kernel_fn, "fresh_rows", ()) if f.buffer == self.out_prefix + "_vals"]
        low = self.low
        if len(rows) != 1 or low.strategy != "dense" or self.pattern is not None or self.fill_needs_scalars or \
                len(self.out_shape) != 2 or self.out_fmt.is_sparse:
            return False
        f = rows[0]

        def names(e: L.LExpr, param: str) -> bool:
            return isinstance(e, L.Var) and e.name == param

        par = self.parallel is not None
        starts = (isinstance(f.rows_lo, L.Const) and f.rows_lo.value == 0) or \
            (par and names(f.rows_lo, "sc_lo") and type(self.lo) is int and self.lo == 0)
        ends = names(f.rows_hi, self.out_shape[0]) or (par and names(f.rows_hi, "sc_hi") and self.hi == self.out_shape[0])
        if not (starts and ends and names(f.extent, self.out_shape[1])):
            return False
        try:
            return self.runner.fill_value({}) == 0
        except Exception:  # noqa: BLE001 - a fill that needs extents
            return False

    def _zero_rows_params(self, threads: bool) -> list[str] | None:
        """The extents of a row of the output when the parallel chunks may zero their own rows, else None.

        A summed dense output (zero-filled before the launch, not ``writes_all``) whose first
        (outermost, row-major) dimension is the parallel loop's variable: chunk ``[a, b)``
        writes only rows ``a..b-1``, elements ``a * R .. b * R`` with ``R`` the product of the
        other extents, so the plan allocates it uninitialized and each chunk zeroes its rows
        first, in parallel, instead of a serial ``np.zeros`` on the calling thread (SpMM N=64
        of 50k rows: ~500 µs of memset). The rows outside ``[lo, hi)`` are zeroed by the
        first and last chunks. Only for the native team's path (see :meth:`_parallel_entry`);
        every other path zeroes the whole output before the kernel runs.
        """
        par = self.parallel
        low = self.low
        out = low.space.output
        if par is None or not threads or self.pattern is not None or self.writes_all or self.fill_needs_scalars:
            return None
        if low.strategy != "dense" or out.fmt.is_sparse or not out.dim_vars or par.var != out.dim_vars[0]:
            return None
        if [e.dim for e in out.fmt.exprs] != list(range(out.fmt.ndim)) or getattr(par, "private", False):
            return None
        if type(self.lo) is not int or self.lo < 0 or self.hi != self.out_shape[0]:
            return None
        # the kernel's parallel loop: top level, over [sc_lo, sc_hi), no atomics (rows owned by one chunk)
        loops = [s for s in low.numeric.body.stmts if isinstance(s, L.For) and s.kind.kind == "parallel"]
        if len(loops) != 1 or loops[0].kind.atomic or loops[0].var.name != par.var:
            return None
        if not (isinstance(loops[0].lo, L.Var) and loops[0].lo.name == "sc_lo" and
                isinstance(loops[0].hi, L.Var) and loops[0].hi.name == "sc_hi"):
            return None
        try:
            if self.runner.fill_value({}) != 0:
                return None
        except Exception:  # noqa: BLE001 - a fill that needs extents: not this path
            return None
        return list(self.out_shape[1:])

    # ------------------------------------------------------------------ work estimate for threads
    def _inner_work_params(self) -> list[str]:
        """Extent parameters of the work done per nonzero (or per iteration) of the parallel loop.

        Parameters of dimensions the balancing operand does not index (SpMM's columns of
        B, SDDMM's inner dimension) multiply the work of each of its nonzeros; without a
        balancing operand, every parameter but the parallel loop's.
        """
        if self.parallel is None:
            return []
        low = self.low
        bal = self.balance
        owner = next((o for o in self.inputs if bal and bal.startswith(o.prefix + "_")), None)
        if owner is not None:
            own = {low.dim_params[v] for v in owner.dim_vars}
            return sorted(p for p in self.params if p not in own)
        hi = self.hi
        return sorted(p for p in self.params if p != hi)

    def _work(self, balance: Any, lo: int, hi: int, scalars: Mapping[str, int], per_element: bool = False,
              chain: Sequence[Any] = ()) -> int:
        """Iterations plus nonzeros of ``[lo, hi)``, times the inner work per nonzero (memoized per pos array).

        The inner work counts 512-bit vector operations (``self.vector`` elements: 16 float32,
        8 float64; the unit the parallel threshold was measured in), or elements with ``per_element``.
        """
        if balance is None:
            base = hi - lo
        else:
            key = (id(balance), lo, hi, *map(id, chain))
            base = self._work_memo.get(balance, key)
            if base is None:
                base = self._work_memo.put(balance, key, (hi - lo) + runtime.balanced_entries(balance, chain, lo, hi))
        factor = 1
        for p in self._work_factor:
            factor *= scalars[p]
        # a nonzero's inner work of n elements is one vector operation per self.vector of them
        return base * (factor if per_element else max(1, factor // self.vector))

    # ------------------------------------------------------------------ the generic plan (dicts)
    def _tensor_buffers(self, name: str, x: Tensor, fmt, dtype) -> dict | None:
        # Looked up at every call: a memo of them would keep the last operand's arrays alive (the
        # interp target's path: a matrix the user freed stayed resident) or go stale when rebound.
        if x.format != fmt or x.values.dtype != dtype:
            return None
        if not x._length_checked:
            x.check_values_length(name)
        if x._duplicates is not False and x.has_duplicate_entries():
            return None          # the general path sums them
        return tensor_buffers(x, name)

    def _generic(self, given: Mapping[str, Any]) -> Any:
        buffers: dict[str, Any] = {}
        for name, dense, fmt, dtype, ndim in self.checks:
            x = given[name]
            tx = type(x)
            if tx is not Tensor and tx is not np.ndarray:
                x = _scipy_view(x, name) or x
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
            src = given[self.pattern.tensor]
            if type(src) is not Tensor:
                src = _scipy_view(src, self.pattern.tensor)
            size = src.values.shape[0]
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
        if not self.threads or (nthreads := get_num_threads()) == 1 or \
                self._work(balance, lo, hi, scalars, chain=[buffers[n] for n in self.balance_chain]) < \
                runtime.MIN_PARALLEL_WORK:
            scalars["sc_lo"], scalars["sc_hi"] = lo, hi
            fn(buffers, scalars)
            return
        chunks = chunk_bounds(lo, hi, nthreads, balance)
        TEAM.run([functools.partial(fn, buffers, {**scalars, "sc_lo": a, "sc_hi": b}) for a, b in chunks])

    # ------------------------------------------------------------------ the generated plan (CPU)
    def _generate(self) -> Callable[[Mapping[str, Any]], Any] | None:
        """Straight-line plan code for a CPU kernel (see the module docs), or None where it does not apply."""
        ck = self.kernel_fn
        entry = getattr(ck, "entry", None)
        if entry is None or self.fill_needs_scalars:
            return None
        if self.parallel is not None and not (type(self.lo) in (int, str) and type(self.hi) in (int, str)):
            return None
        params = set(self.params)
        if any(n not in params and n not in ("sc_lo", "sc_hi") for n in ck.scalar_names):
            return None
        by_prefix = {o.prefix: o for o in self.inputs}
        if len(by_prefix) != len(self.inputs):
            return None
        # where each kernel buffer comes from: (operand index, level, part) / output
        sources: list[tuple[int, int | None, str] | None] = []
        for p in ck.buffer_params:
            if p.role == "out" and p.tensor == self.out_prefix and p.part == "vals":
                sources.append(None)
                continue
            o = by_prefix.get(p.tensor)
            if p.role != "in" or o is None:
                return None
            k = self.inputs.index(o)
            if p.part == "vals":
                sources.append((k, None, "vals"))
                continue
            m = re.fullmatch(r"(.+?)(\d+)", p.part)
            if m is None:
                return None
            level, part = int(m.group(2)), m.group(1)
            fmt = self.decls[o.tensor].format
            if level >= fmt.rank or part not in fmt.levels[level].buffers:
                return None
            sources.append((k, level, part))
        if sum(s is None for s in sources) != 1:
            return None

        ns: dict[str, Any] = {"Tensor": Tensor, "ndarray": np.ndarray, "FALLBACK": FALLBACK, "CK": ck,
                              "CDT": self.cdt, "len": len}
        lines = ["def fast(given):"]
        emit = lines.append
        bufvar: dict[int, str] = {}     # kernel buffer index -> variable
        any_rank = set()
        for k, o in enumerate(self.inputs):
            name = o.tensor
            decl = self.decls[name]
            mine = [(j, s) for j, s in enumerate(sources) if s is not None and s[0] == k]
            ns[f"N{k}"] = name
            ns[f"FOK{k}"] = [decl.format]
            ns[f"SLOW{k}"] = functools.partial(self._slow_operand, name, decl.format, tuple(
                (lv, part) for _, (_, lv, part) in mine), self.identity_dense[name], decl.ndim)
            emit(f"    x{k} = given[N{k}]")
            tk = f"t{k}" if self.pattern is not None and o.prefix == self.pattern.prefix else "_"
            if tk != "_":
                emit(f"    {tk} = x{k}")
            dense_array = self.identity_dense[name]
            if dense_array:
                # a dense operand as a numpy array: the array is its flat buffer (any rank, C order)
                emit(f"    if type(x{k}) is ndarray:")
                emit(f"        s{k} = x{k}.shape")
                for j, _ in mine:
                    emit(f"        b{j} = x{k}")
                    any_rank.add(j)
            # a Tensor in the declared format: its buffers, read each call (cheap; no memo to go stale)
            ns[f"FMTOK{k}"] = functools.partial(_format_ok, ns[f"FOK{k}"], decl.format)
            emit(f"    {'elif' if dense_array else 'if'} type(x{k}) is Tensor and "
                 f"(x{k}.format is FOK{k}[0] or FMTOK{k}(x{k}.format)):")
            emit(f"        s{k} = x{k}.shape")
            # a Tensor built by the plain constructor may hold too few values: checked once per tensor
            emit(f"        if not x{k}._length_checked:")
            emit(f"            x{k}.check_values_length(N{k})")
            emit(f"        if x{k}._duplicates is not False and x{k}.has_duplicate_entries():")
            emit("            return FALLBACK")        # entries sharing coordinates: the general path sums them
            if any(lv is not None for _, (_, lv, _) in mine):
                emit(f"        v{k} = x{k}.levels")
            for j, (_, lv, part) in mine:
                bufvar[j] = f"b{j}"
                if lv is None:
                    emit(f"        b{j} = x{k}.values")
                else:
                    ns[f"P{j}"] = part
                    emit(f"        b{j} = v{k}[{lv}][P{j}]")
            emit("    else:")
            emit(f"        r = SLOW{k}(x{k})")
            emit("        if r is None:")
            emit("            return FALLBACK")
            emit(f"        s{k}, {tk}, ({''.join(f'b{j}, ' for j, _ in mine)}) = r")
            emit(f"    if len(s{k}) != {decl.ndim}:")
            emit("        return FALLBACK")
        # extents: the first dimension that names a parameter defines it, the others must agree
        pvar: dict[str, str] = {}
        for k, o in enumerate(self.inputs):
            for d, v in enumerate(o.dim_vars):
                param = self.low.dim_params[v]
                if param not in pvar:
                    pvar[param] = f"e{len(pvar)}"
                    emit(f"    {pvar[param]} = s{k}[{d}]")
                else:
                    emit(f"    if s{k}[{d}] != {pvar[param]}:")
                    emit("        return FALLBACK")
        if set(pvar) != params:
            return None
        shape = "(" + "".join(f"{pvar[p]}, " for p in self.out_shape) + ")"
        # the output
        out_j = sources.index(None)
        any_rank.add(out_j)
        bufvar[out_j] = "out"
        zero = self.zero_rows is not None   # (set only for a threaded, parallel, non-pattern plan)
        if self.writes_all or zero:
            if runtime.POISON:
                ns["ALLOC"] = lambda n, dt: np.full(n, runtime.poison_value(dt), dtype=dt)
            else:
                ns["ALLOC"] = np.empty
        else:
            fill = self.runner.fill_value({})
            ns["ALLOC"] = np.zeros if fill == 0 else functools.partial(_full, fill)
        if self.pattern is not None:
            pk = next(k for k, o in enumerate(self.inputs) if o.prefix == self.pattern.prefix)
            vals_j = next((j for j, s in enumerate(sources) if s == (pk, None, "vals")), None)
            if vals_j is None:
                return None
            emit(f"    out = ALLOC(len(b{vals_j}), CDT)")
        else:
            emit(f"    out = ALLOC({shape}, CDT)")
        # scalars in the kernel's order
        svals = []
        for n in ck.scalar_names:
            svals.append("lo" if n == "sc_lo" else "hi" if n == "sc_hi" else pvar[n])
        arrays = "(" + "".join(f"{bufvar[j]}, " for j in range(len(sources))) + ")"
        sig = ck.signature(frozenset(any_rank))
        self._sig_array = sig            # keeps the array alive
        self._sig = ns["SIG"] = sig.ctypes.data
        if self.parallel is not None:
            lo, hi = self.lo, self.hi
            emit(f"    lo = {lo if type(lo) is int else pvar[lo]}")
            emit(f"    hi = {hi if type(hi) is int else pvar[hi]}")
            bal_j = None
            if self.balance:
                js = {p.name: j for j, p in enumerate(ck.buffer_params)}   # the plan's arrays by buffer name
                if any(n not in js for n in (self.balance, *self.balance_chain)):
                    return None
                bal_j = js[self.balance]
                self._chain_js = tuple(js[n] for n in self.balance_chain)
            bal = bufvar[bal_j] if bal_j is not None else "None"
            # dense operands the kernel reads with wide vectors: 64-byte aligned copies when reused a lot
            aligned = getattr(ck, "aligned_loads", frozenset())
            for j in sorted(any_rank):
                if ck.buffer_params[j].name in aligned and j != out_j:
                    ns["ALIGN"] = self._aligned_operand
                    emit(f"    if {bufvar[j]}.size >= {_ALIGN_MIN_SIZE}:")
                    emit(f"        {bufvar[j]} = ALIGN({bufvar[j]}, lo, hi, {bal}, [{', '.join(svals)}])")
            if self.threads:
                ns["NTHREADS"] = get_num_threads
                ns["PAR"] = self._parallel_entry
                ns["RT"] = runtime
                # an upper bound of the work (all of the balancing operand's entries, not the range's)
                # keeps small calls off the parallel path without reading the pos array
                bound = "(hi - lo)"
                owner = next((k for k, o in enumerate(self.inputs)
                              if self.balance and self.balance.startswith(o.prefix + "_")), None)
                vals_j = next((j for j, s_ in enumerate(sources) if s_ == (owner, None, "vals")), None)
                if vals_j is not None:
                    bound = f"(hi - lo + len(b{vals_j}))"
                if self._work_factor:
                    bound += f" * max(1, {' * '.join(pvar[p] for p in self._work_factor)} // {self.vector})"
                ns["NATIVE_SHARE"] = NATIVE_WORK_SHARE
                emit(f"    if hi - lo > 1 and {bound} >= RT.MIN_PARALLEL_WORK * NATIVE_SHARE and NTHREADS() > 1:")
                if zero:
                    # the output is uninitialized: PAR zeroes it (in the chunks, or before a serial call)
                    rowsize = " * ".join(pvar[p] for p in self.zero_rows) or "1"
                    emit(f"        if PAR({arrays}, [{', '.join(svals)}], lo, hi, {bal}, out, {rowsize}):")
                    emit("            return FALLBACK")
                    emit("    else:")
                    emit("        out.fill(0)")
                    emit("        if CK.entry(" + arrays + ", SIG, " + ", ".join(svals) + "):")
                    emit("            return FALLBACK")
                else:
                    emit(f"        if PAR({arrays}, [{', '.join(svals)}], lo, hi, {bal}):")
                    emit("            return FALLBACK")
                    emit("    elif CK.entry(" + arrays + ", SIG, " + ", ".join(svals) + "):")
                    emit("        return FALLBACK")
            else:
                emit(f"    if CK.entry({arrays}, SIG, {', '.join(svals)}):")
                emit("        return FALLBACK")
        else:
            emit(f"    if CK.entry({arrays}, SIG{''.join(', ' + v for v in svals)}):")
            emit("        return FALLBACK")
        if self.pattern is not None:
            ns["PATTERN"] = self._pattern_result
            emit(f"    return PATTERN(t{pk}, out, {shape})")
        else:
            emit("    return out")
        self._scalar_slots = {n: i for i, n in enumerate(ck.scalar_names)}
        self._param_of_slot = [(n, i) for i, n in enumerate(ck.scalar_names) if n in params]
        self._source = "\n".join(lines) + "\n"
        code = compile(self._source, f"<sparsec fast call of {ck.kernel.name}>", "exec")
        exec(code, ns)  # noqa: S102 - generated identifiers and integers only; see the module docs
        return ns["fast"]

    def _slow_operand(self, name: str, fmt, parts: tuple, dense: bool, ndim: int, x: Any) -> tuple | None:
        """``(shape, tensor, buffers)`` for an operand the straight-line code did not take, or None."""
        t = x if type(x) is Tensor else _scipy_view(x, name)
        if t is None or (t.format is not fmt and t.format != fmt):
            return None
        bufs = tuple([t.values if lv is None else t.levels[lv][part] for lv, part in parts])
        return t.shape, t, bufs

    def _aligned_operand(self, arr: np.ndarray, lo: int, hi: int, balance: Any, svals: list) -> np.ndarray:
        """``arr``, or a 64-byte aligned copy of it when the kernel reads it many times over.

        Register tiles (see :mod:`sparsec.backends.cpu.regtile`) load each row with aligned
        512-bit vectors, masking the row's ends; a row that does not start on a 64-byte
        boundary (numpy's arrays are 16-byte aligned) needs one vector more: for SpMM's B
        with 16 columns, two instead of one. The copy pays off when each element is read by
        many nonzeros (measured: from ~16 per column of A on; at 8-14 it costs more than
        it saves).
        """
        if arr.__array_interface__["data"][0] % 64 == 0:
            return arr
        scalars = {n: svals[i] for n, i in self._param_of_slot}
        if self._work(balance, lo, hi, scalars, per_element=True) < _ALIGN_REUSE * arr.size:
            return arr
        flat = np.empty(arr.size + 64 // arr.itemsize, arr.dtype)
        k = (-flat.__array_interface__["data"][0] % 64) // arr.itemsize
        out = flat[k: k + arr.size]
        np.copyto(out, arr.reshape(-1))
        return out

    def _parallel_entry(self, arrays: tuple, svals: list, lo: int, hi: int, balance: Any,
                        out: np.ndarray | None = None, rowsize: int = 0) -> int:
        """Run the kernel over ``[lo, hi)`` split into chunks on a thread team when the work is large.

        With the native team where there is one (:mod:`sparsec.backends.cpu.team`: fork/join
        in a few µs, no Python per chunk), from ``NATIVE_WORK_SHARE`` of
        ``runtime.MIN_PARALLEL_WORK`` on, in :data:`CHUNKS_PER_THREAD` chunks per thread
        balanced by nonzeros, each thread taking its own share first (the same rows at every
        call, so they stay in its core's caches) and then the others' unclaimed chunks (a
        thread the OS does not schedule leaves its share to the others); else with the
        Python team from ``runtime.MIN_PARALLEL_WORK`` on, one chunk per thread. A kernel
        that takes a column window (a pruned 1x1 convolution) may instead give each thread
        every row over one window of the columns (:meth:`_column_chunks`).

        A native call costs ~4 µs more than a serial one once the chunk rows are remembered
        (:meth:`_chunk_rows`; the team's run is a Python builtin): mostly the hand-over to the
        second core and back; measurements behind the threshold at :data:`NATIVE_WORK_SHARE`. The Python
        team costs ~15 µs warm and ~100 µs when its workers sleep. On the shared 2-vCPU VM a
        second thread pays less, and not at all while other processes keep its second vCPU busy.

        ``out`` (with ``rowsize``, its elements per row of the parallel loop): an uninitialized
        output to zero (see :meth:`_zero_rows_params`): on the native team each chunk zeroes
        its own rows first (the first chunk also rows ``0..lo-1``, the last the rows from
        ``hi`` on), on every other path the whole output is zeroed before the kernel runs.
        """
        ck = self.kernel_fn
        entry = ck.entry
        sig = self._sig
        scalars = {n: svals[i] for n, i in self._param_of_slot}
        work = self._work(balance, lo, hi, scalars, chain=[arrays[j] for j in self._chain_js])
        nthreads = get_num_threads()
        packed = ck.packed_entry
        native_min = runtime.MIN_PARALLEL_WORK * NATIVE_WORK_SHARE
        native = _team.team(nthreads - 1) if packed and work >= native_min else None
        if out is not None and native is None:
            out.fill(0)
        if work < native_min or (native is None and work < runtime.MIN_PARALLEL_WORK):
            return entry(arrays, sig, *svals)
        if native is not None:
            rows, addr = self._chunk_rows(svals, lo, hi, balance, nthreads, out, rowsize, scalars)
            if out is None:
                return native.run(packed, arrays, sig, rows, nthreads, addr)
            # a private copy: the output's address differs per call, and another thread may be
            # calling this kernel with the same memoized rows
            rows = rows.copy()
            rows[:, 0] = packed
            rows[:, 1] = out.ctypes.data
            return native.run(native.zero_then, arrays, sig, rows, nthreads)
        # validate once (an empty range runs nothing), then split
        probe = list(svals)
        probe[self._scalar_slots["sc_lo"]] = probe[self._scalar_slots["sc_hi"]] = lo
        bad = entry(arrays, sig, *probe)
        if bad:
            return bad
        # chunks go through the kernel's ordinary call (flat buffers by name), like the general runtime's
        buffers = {p.name: a if a.ndim == 1 else a.reshape(-1) for p, a in zip(ck.buffer_params, arrays)}
        scalars = dict(zip(ck.scalar_names, svals))
        TEAM.run([functools.partial(ck, buffers, {**scalars, "sc_lo": a, "sc_hi": b})
                  for a, b in chunk_bounds(lo, hi, get_num_threads(), balance)])
        return 0

    def _chunk_rows(self, svals: list, lo: int, hi: int, balance: Any, nthreads: int, out: np.ndarray | None,
                    rowsize: int, scalars: Mapping[str, int]) -> tuple[np.ndarray, int]:
        """The native team's rows for a call (one per chunk: the kernel's scalars with the chunk's range,
        after the zeroing words when ``out`` is given, then the column window if the kernel takes one),
        and their address.

        Memoized per balance array (by identity, held weakly), range, scalars and thread count for
        the last :data:`ROWS_MEMO_SIZE` operands: a repeated call with the same operands (the usual
        case, also when a few are used in turn) skips ~15 µs of Python. A pos array changed in place
        keeps its stale chunks, which still cover the range exactly (only their balance suffers);
        the zeroing rows leave the output's address to the caller.
        """
        key = (id(balance), lo, hi, nthreads, tuple(svals), None if out is None else (out.size, rowsize))
        hit = self._rows_memo.get(balance, key)
        if hit is not None:
            return hit
        ck = self.kernel_fn
        window = ck.column_window
        columns = self._column_chunks(window, scalars, lo, hi, balance, nthreads) \
            if window is not None and out is None else None
        # (rows, column window) per chunk: every row over one window per thread, or chunks of rows
        spans = [(lo, hi, *cut) for cut in columns] if columns is not None else \
            [(a, b, *panels.WHOLE_WINDOW) for a, b in chunk_bounds(lo, hi, nthreads * CHUNKS_PER_THREAD, balance)]
        z = 0 if out is None else _team.ZERO_WORDS
        rows = np.empty((len(spans), z + len(svals) + (2 if window is not None else 0)), dtype=np.int64)
        rows[:, z: z + len(svals)] = svals
        los, his, win_los, win_his = zip(*spans)
        ilo, ihi = self._scalar_slots["sc_lo"], self._scalar_slots["sc_hi"]
        rows[:, z + ilo], rows[:, z + ihi] = los, his
        if window is not None:
            rows[:, -2], rows[:, -1] = win_los, win_his
        if out is not None:
            # each chunk zeroes rows [its start, its end) of the output, the first from row 0 and
            # the last to the output's end, so every element is zeroed whatever the range covers;
            # it zeroes and computes ZERO_STEP_BYTES of output at a time (still in cache when used)
            nrows = out.size // rowsize if rowsize else hi
            rowbytes = rowsize * out.itemsize
            rows[:, 2] = rowbytes
            rows[:, 3] = max(1, ZERO_STEP_BYTES // max(1, rowbytes))
            rows[:, 4] = ilo
            rows[:, 5] = ihi
            rows[:, 6] = (0,) + his[:-1]
            rows[:, 7] = his[:-1] + (max(nrows, hi),)
        return self._rows_memo.put(balance, key, (rows, rows.ctypes.data))

    def _column_chunks(self, window: tuple, scalars: Mapping[str, int], lo: int, hi: int, balance: Any,
                       nthreads: int) -> list[tuple[int, int]] | None:
        """Column windows, one per thread, that split a call of a windowed kernel (see
        ``panels.column_window``); None where its rows are split instead.

        Columns are split where the sparse rows are small and the dense operand wide, as a pruned
        1x1 convolution's weight against its feature map: a row split makes every chunk walk
        all of the dense operand's panels, so each thread reads it from L2 once per chunk,
        while a column split makes each thread walk all the (few) nonzeros once over its
        share of the columns. Taken where the nonzeros of ``[lo, hi)`` take at most
        :data:`COLUMN_SPLIT_SPARSE_BYTES` (they stay in each core's L2) and each thread gets at
        least :data:`COLUMN_SPLIT_MIN_COLUMNS` columns (its window is cut into panels again), or
        at least :data:`COLUMN_SPLIT_DENSE_MIN_COLUMNS` where the rows hold
        :data:`COLUMN_SPLIT_DENSE_ROW` nonzeros or more on average (every dense row is read by many
        sparse rows); windows are cut on vector boundaries.
        """
        if balance is None:
            return None
        nonzeros = int(balance[hi]) - int(balance[lo])
        if nonzeros * 8 > COLUMN_SPLIT_SPARSE_BYTES:
            return None
        c_lo, c_hi = (b if type(b) is int else int(scalars[b]) for b in window)
        columns = c_hi - c_lo
        if columns < COLUMN_SPLIT_MIN_COLUMNS * nthreads and not (
                columns >= COLUMN_SPLIT_DENSE_MIN_COLUMNS * nthreads and nonzeros >= COLUMN_SPLIT_DENSE_ROW * (hi - lo)):
            return None
        lanes = self.vector
        units = -(-columns // lanes)
        return [(c_lo + a * lanes, min(c_lo + b * lanes, c_hi)) for a, b in chunk_bounds(0, units, nthreads, None)]

    def _pattern_result(self, src: Tensor, vals: np.ndarray, shape: tuple) -> Tensor:
        return Tensor.from_buffers(self.out_fmt, shape, [dict(lv) for lv in src.levels], vals,
                                   name=self.out_name, validate=False)


#: the native team runs parallel loops from this share of ``runtime.MIN_PARALLEL_WORK`` on (37.5k of work:
#: rows plus nonzeros). A parallel call costs ~4 µs more than a serial one once its chunk rows are
#: remembered (:meth:`FastCall._chunk_rows`; ~8 µs before the team's run became a builtin, when this
#: threshold was measured). Measured on the 2-core VM (float32 SpMV, one process,
#: calls alternated, 8 rotated copies; 1 -> 2 threads): 2000 rows x 8 18.5 -> 20.3 us, 4000 x 8
#: 37.4 -> 29.8, 500 x 64 18.3 -> 19.6, 1000 x 64 22.5 -> 21.6, radixnet (34k) 17.2 -> 18.8,
#: PGPgiantcompo (59k) 101 -> 56, bcsstk13 (86k) 46 -> 35, wiki-Vote (112k) 88 -> 56 us
NATIVE_WORK_SHARE = 0.0625
#: a windowed kernel's call is split by columns (see :meth:`FastCall._column_chunks`) only where its
#: nonzeros take at most this many bytes (index and value: 8 per nonzero counted) ...
COLUMN_SPLIT_SPARSE_BYTES = 512 * 1024
#: ... and every thread gets at least this many columns: enough for its window to be cut into panels
#: again (``panels.MIN_COLUMNS``). Measured on the 2-core VM (float32, 2 threads, one process,
#: interleaved; rows split -> columns split, three runs): a 128x128 weight 80 % pruned on 3136 pixels
#: 378 -> 366, 288 -> 274, 395 -> 356 us; 256x256 on 784 pixels mixed (254 -> 313, 336 -> 308,
#: 381 -> 379 us); benchmarks/results/cpu-2core-dl-item9-colsplit. Narrower windows are not split:
#: CSR SpMM with 128 / 256 columns and 40k-60k nonzeros (1000-20000 rows, 3-40 per row) ran 6-36 % slower
#: split by columns in 7 of 8 cases (a 512x512 weight on 196 pixels ran 5-18 % faster: not told apart)
COLUMN_SPLIT_MIN_COLUMNS = panels.MIN_COLUMNS
#: ... or at least this many where the rows average :data:`COLUMN_SPLIT_DENSE_ROW` nonzeros or more: the
#: 512x512 weight on 196 pixels (102 per row; see benchmarks/results/cpu-2core-dl-item9-dense-rows), where the
#: SpMM cases that lost hold 3-40 per row
COLUMN_SPLIT_DENSE_MIN_COLUMNS = 64
COLUMN_SPLIT_DENSE_ROW = 64
#: operands (balance arrays) whose work and chunk rows a kernel's call path remembers (see :meth:`FastCall._chunk_rows`)
ROWS_MEMO_SIZE = 16
#: chunks per thread on the native team
CHUNKS_PER_THREAD = 4
#: a chunk that zeroes its own rows of the output (see :meth:`FastCall._parallel_entry`) zeroes and
#: computes this many bytes of them at a time
ZERO_STEP_BYTES = 64 * 1024

#: dense operands below this many elements are never copied for alignment (the check costs ~1 µs)
_ALIGN_MIN_SIZE = 16384
#: ... nor unless the kernel's inner work is at least this many times their size
_ALIGN_REUSE = 16


def _format_ok(cell: list, declared: Any, fmt: Any) -> bool:
    """Is ``fmt`` the declared format? Remembers the last equal object, so the next test is ``is``."""
    if fmt == declared:
        cell[0] = fmt
        return True
    return False


def _full(fill: Any, shape: Any, dtype: Any) -> np.ndarray:
    return np.full(shape, fill, dtype)
