"""Host side of a compiled kernel: bind operands, convert, allocate, launch, assemble.

The runtime is shared by every backend. A backend compiles one loop-IR
:class:`~sparsec.ir.loop_ir.Kernel` into a callable taking ``(buffers, scalars)``;
the runtime does everything around it:

1. binds operands (``sc.Tensor``; numpy, scipy and torch inputs are wrapped first)
   and checks their shapes against the index variables;
2. runs the conversions the compiler inserted (``%B_csr = convert %B : csc -> csr``);
3. allocates the output: dense (filled with the reduction's identity), same
   pattern as an input (index buffers shared, values new), or *entries*: a
   symbolic kernel counts entries per outer iteration, the counts become offsets,
   a numeric kernel writes coordinates and values (on CPU threads a (dense, compressed)
   output takes one pass instead: bounds, rows written per chunk, chunks moved down);
4. on backends that run on CPU threads, splits the outer parallel loop into chunks
   balanced by nonzeros (from a ``pos`` array) and runs them on a thread pool —
   ctypes calls release the GIL — with private workspaces per chunk;
5. assembles the output tensor and applies the output conversion, if any.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from .errors import FormatError, ShapeError
from .formats import Format, fit_width, parse_format
from .ir import loop_ir as L
from .ir.interp import _Interp
from .passes.pipeline import LoweredProgram
from .passes.sparsify import ONE_PASS_MAX_BYTES, TMAX_PARAM, Lowered, identity_value
from .tensor import VALUE_DTYPES, Tensor, needed_crd_width, with_index_widths
from .threads import TEAM


class KernelFn(Protocol):
    """A backend's compiled kernel: run once over the given buffers and scalars."""

    def __call__(self, buffers: Mapping[str, Any], scalars: Mapping[str, int]) -> None: ...


# ------------------------------------------------------------------------------------- threads
_NUM_THREADS: int | None = None
#: below this much work (iterations + nonzeros) a kernel runs on the calling thread. Waking the
#: team costs ~100 us on the 2-vCPU CI machines (futex wake of an idle vCPU), which only pays off
#: for kernels well above that: measured break-even for CSR SpMV there is ~600k nonzeros.
MIN_PARALLEL_WORK = 600_000
#: a unit of work of a workspace kernel (SpGEMM: a product into the row workspace, later drained and
#: sorted) costs ~10x an SpMV nonzero (2-core VM: ~15 ns against ~1.5 ns); its work counts this many times,
#: so that e.g. a 9 ms SpGEMM (p2p-Gnutella31 squared, 560k units) is not left on one thread
WORKSPACE_WORK_WEIGHT = 8


def balanced_entries(balance: Any, chain: Any, lo: int, hi: int) -> int:
    """Entries under rows ``[lo, hi)`` of a parallel loop: ``balance[hi] - balance[lo]``, followed down
    ``chain`` (the pos arrays of the levels below, see ``ParallelInfo.balance_chain``)."""
    a, b = int(balance[lo]), int(balance[hi])
    for pos in chain:
        a, b = int(pos[a]), int(pos[b])
    return b - a


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads for parallel loops on the CPU (``None``: all cores)."""
    global _NUM_THREADS
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"number of threads must be a positive integer, got {n!r}")
    _NUM_THREADS = n


_DEFAULT_THREADS: int | None = None


def get_num_threads() -> int:
    """Threads used for parallel loops: ``set_num_threads``, else ``SPARSEC_NUM_THREADS``, else all cores.

    The environment variable is read once, at the first call.
    """
    global _DEFAULT_THREADS
    if _NUM_THREADS is not None:
        return _NUM_THREADS
    if _DEFAULT_THREADS is None:
        env = os.environ.get("SPARSEC_NUM_THREADS")
        if env:
            try:
                _DEFAULT_THREADS = max(1, int(env))
            except ValueError:
                raise ValueError(f"SPARSEC_NUM_THREADS must be an integer, got {env!r}") from None
        else:
            _DEFAULT_THREADS = os.cpu_count() or 1
    return _DEFAULT_THREADS


def chunk_bounds(lo: int, hi: int, nchunks: int, balance: np.ndarray | None) -> list[tuple[int, int]]:
    """Split ``[lo, hi)`` into at most ``nchunks`` ranges, equal by nonzeros when ``balance`` (a pos array) is given.

    With a pos array the cuts are found by binary search (O(nchunks log n), no per-call
    arrays), so splitting costs microseconds even for millions of rows.
    """
    if hi <= lo:
        return []
    nchunks = max(1, min(nchunks, hi - lo))
    if nchunks == 1:
        return [(lo, hi)]
    if balance is None:
        cuts = [lo + (hi - lo) * c // nchunks for c in range(nchunks + 1)]
    else:
        first, last = int(balance[lo]), int(balance[hi])
        # targets in the pos array's own dtype: with any other, numpy casts the whole array
        # first (a full pass over it, ~50 us for 20k rows out of cache) before its ~log n probes
        targets = np.array([first + (last - first) * c // nchunks for c in range(1, nchunks)], dtype=balance.dtype)
        cuts = [lo] + [lo + c for c in balance[lo: hi + 1].searchsorted(targets, side="left").tolist()] + [hi]
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        if b > a and (not out or a >= out[-1][1]):
            out.append((a, b))
    return out


#: tests set SPARSEC_POISON_OUTPUTS=1: "uninitialized" outputs are filled with NaN (or the integer
#: maximum), so a kernel that fails to write an element cannot pass by reading fresh zero pages.
POISON = os.environ.get("SPARSEC_POISON_OUTPUTS", "") not in ("", "0")


def poison_value(dtype: np.dtype) -> Any:
    """The value written into uninitialized outputs when poisoning."""
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "b":
        return True
    return np.iinfo(dtype).max


def uninitialized(n: int, dtype: np.dtype) -> np.ndarray:
    """``np.empty``, or a poisoned array under ``SPARSEC_POISON_OUTPUTS=1``."""
    if POISON:
        return np.full(n, poison_value(np.dtype(dtype)), dtype=dtype)
    return np.empty(n, dtype=dtype)


# ------------------------------------------------------------------------------------- binding
@dataclass
class Bound:
    """An operand ready for the kernel: its tensor and the index-variable extents it implies."""

    tensor: Tensor


def check_operand_ndim(shape: tuple[int, ...], fmt: Format | None, name: str) -> None:
    """FormatError naming the operand when a tensor of ``shape`` cannot be read in ``fmt`` for lack of
    dimensions (a 0-d operand may travel as one element)."""
    if fmt is not None and fmt.ndim != len(shape) and not (fmt.ndim == 0 and tuple(shape) == (1,)):
        raise FormatError(f"tensor {name!r}: the kernel reads it as a {fmt.ndim}-D tensor ({fmt}), "
                          f"got shape {tuple(shape)}")


def as_tensor(x: Any, name: str, fmt: Format | None = None, dtype: str | None = None) -> Tensor:
    """Wrap numpy / scipy / torch / sc.Tensor input as a Tensor (in ``fmt`` if given).

    A device tensor (the Triton target's sparse result) is copied to the host first."""
    if isinstance(x, Tensor):
        t = x.to_host() if hasattr(x, "to_host") else x
        t.check_values_length(name)
        t = t.summed()        # entries sharing coordinates (raw buffers) add up, as conversions sum them
    elif _is_scipy_sparse(x):
        t = Tensor.from_scipy(x, name=name)
    elif is_torch(x):
        t = Tensor.from_torch(x, name=name)
    else:
        try:
            arr = np.asarray(x)
        except Exception as e:  # pragma: no cover - numpy raises many kinds
            raise TypeError(f"operand {name!r}: cannot use {type(x).__name__} as a tensor ({e})") from None
        if arr.dtype == object:
            raise TypeError(f"operand {name!r}: cannot use an object array as a tensor")
        if arr.ndim == 0:
            arr = arr.reshape(())
        t = Tensor.from_numpy(arr if arr.ndim else arr.reshape(1), name=name) if arr.ndim else _scalar_tensor(arr, name)
    check_operand_ndim(t.shape, fmt, name)
    if fmt is not None and fmt.ndim == 0 and t.shape == (1,) and t.format.is_dense:
        pass   # a 0-d operand travels as its one element (see infer_extents)
    elif fmt is not None and t.format != fmt:
        if t.format.with_widths(fmt.pos_width, fmt.crd_width) != fmt:
            t = t.to(fmt)
        if t.format != fmt:
            # same structure, other index widths: the kernel reads exactly fmt's widths
            t = with_index_widths(t, fmt, name)
    if dtype is not None and _dtype_name(t.dtype) != dtype:
        check_value_cast(_dtype_name(t.dtype), dtype, name, lambda: _value_bounds(t.values))
        t = t.astype(dtype)
    if t.name != name:
        t = _renamed(t, name)
    return t


def check_value_cast(src: str, dst: str, name: str, bounds: Callable[[], tuple[Any, Any] | None]) -> None:
    """Refuse to cast operand ``name``'s values from ``src`` to the kernel's ``dst`` where values would change.

    Casts within a kind (float64 -> float32, int8 -> int64) and up a kind (bool -> int -> float) pass, as
    numpy's ``same_kind`` rule has them; down a kind (float -> int, int -> bool) they would truncate, so a
    TypeError asks for an explicit cast. An int narrowed to a smaller int is checked against its range:
    ``bounds()`` gives the values' (min, max), or None for no values.
    """
    def kind(d: str) -> str:
        return "f" if d == "bfloat16" else np.dtype(d).kind

    order = {"b": 0, "u": 1, "i": 1, "f": 2}
    ks, kd = kind(src), kind(dst)
    if order.get(ks, 3) > order.get(kd, 3):
        raise TypeError(f"operand {name!r}: its {src} values would be truncated to the kernel's {dst}; "
                        f"cast them explicitly (.astype({dst!r})) or compile the kernel for {src}")
    if ks in "iu" and kd in "iu":
        info = np.iinfo(np.dtype(dst))
        if np.iinfo(np.dtype(src)).min >= info.min and np.iinfo(np.dtype(src)).max <= info.max:
            return
        lo_hi = bounds()
        if lo_hi is not None and (int(lo_hi[0]) < info.min or int(lo_hi[1]) > info.max):
            raise OverflowError(f"operand {name!r}: its values span {int(lo_hi[0])} to {int(lo_hi[1])}, beyond the "
                                f"kernel's {dst} ({info.min} to {info.max})")


def _value_bounds(values: np.ndarray) -> tuple[Any, Any] | None:
    return (values.min(), values.max()) if values.size else None


_DTYPE_NAMES: dict[Any, str] = {}


def _dtype_name(dtype: Any) -> str:
    """``str(dtype)``, memoized (numpy computes a dtype's name in Python on every call)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype)
    return name


def _scalar_tensor(arr: np.ndarray, name: str) -> Tensor:
    return Tensor.from_numpy(arr.reshape(1), name=name)


def _renamed(t: Tensor, name: str) -> Tensor:
    """The same storage under another name (no copy, no re-validation: ``t`` is a valid Tensor already)."""
    return Tensor(t.format, t.shape, t.levels, t.values, name)


def _is_scipy_sparse(x: Any) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover
        return False
    return sp.issparse(x)


def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch object (a tensor, a dtype...), tested without importing torch."""
    return type(x).__module__.startswith("torch")


def tensor_buffers(t: Tensor, prefix: str) -> dict[str, np.ndarray]:
    """The kernel-parameter buffers of a tensor, named ``<prefix>_pos<k>`` etc."""
    out: dict[str, np.ndarray] = {f"{prefix}_vals": t.values}
    for k, lvl in enumerate(t.format.levels):
        for part in lvl.buffers:
            out[f"{prefix}_{part}{k}"] = t.levels[k][part]
    return out


def infer_extents(low: Lowered, tensors: Mapping[str, Tensor]) -> dict[str, int]:
    """Extent of every dimension parameter from the bound operand shapes; mismatches raise ShapeError."""
    seen: dict[str, tuple[int, str, int]] = {}
    for o in low.space.operands:
        t = tensors[o.tensor]
        if t.ndim != len(o.dim_vars) and not (len(o.dim_vars) == 0 and t.shape == (1,)):
            raise ShapeError(f"operand {o.tensor!r} is {t.ndim}-D with shape {t.shape}, but the expression "
                             f"indexes it with {len(o.dim_vars)} indices")
        for d, var in enumerate(o.dim_vars):
            param = low.dim_params[var]
            n = int(t.shape[d])
            if param in seen and seen[param][0] != n:
                other_n, other_t, other_d = seen[param]
                base = next(v for v, p in low.dim_params.items() if p == param and "_dup" not in v)
                raise ShapeError(f"index {base} has extent {other_n} in {other_t!r} (dimension {other_d}) "
                                 f"but {n} in {o.tensor!r} (dimension {d})")
            seen.setdefault(param, (n, o.tensor, d))
    missing = [v for v, p in low.dim_params.items() if p not in seen]
    if missing:
        raise ShapeError(f"index {missing[0]!r} appears only in the output {low.space.output.tensor!r}; "
                         "its extent is unknown")
    return {p: n for p, (n, _, _) in seen.items()}


# ------------------------------------------------------------------------------------- execution
class StatementRunner:
    """Runs one lowered statement with compiled kernels from a backend.

    Array allocation and operand storage go through the small methods
    ``full``/``empty``/``exclusive_cumsum``/``buffers_of``/``make_result``, so a
    device backend can subclass this and keep its buffers on the device.
    """

    def __init__(self, low: Lowered, numeric: KernelFn, symbolic: KernelFn | None, threads: bool,
                 one_pass: tuple[KernelFn, KernelFn] | None = None):
        self.low = low
        self.numeric = numeric
        self.symbolic = symbolic
        self.threads = threads
        #: the compiled (bound, numeric) kernels of ``low.one_pass``, when the backend runs them
        self.one_pass = one_pass
        self._other_operands: list | None = None  # see _other_operand_work, built on first use
        self._outer_lv: Any = None  # the outer loop's level variable, for _count_slots
        self._names: dict[str, frozenset[str]] = {}   # see _param_names

    # -- array hooks (numpy here) -------------------------------------------------------
    def full(self, n: int, value: Any, dtype: np.dtype) -> Any:
        """A new 1-D array of ``n`` copies of ``value``."""
        if value == 0:   # calloc'd: pages a kernel never touches (wide workspaces) cost nothing
            return np.zeros(n, dtype=dtype)
        return np.full(n, value, dtype=dtype)

    def empty(self, n: int, dtype: np.dtype) -> Any:
        """A new uninitialized 1-D array (poisoned under ``SPARSEC_POISON_OUTPUTS=1``)."""
        return uninitialized(n, dtype)

    def exclusive_cumsum(self, counts: Any) -> tuple[Any, int]:
        """Offsets (``offsets[0] = 0``) and the total of a counts array."""
        offsets = np.zeros(counts.shape[0], dtype=np.int64)
        np.cumsum(counts[:-1], out=offsets[1:])
        return offsets, int(offsets[-1] + counts[-1])

    def buffers_of(self, t: Any, prefix: str) -> dict[str, Any]:
        """Kernel buffers of a bound operand."""
        return tensor_buffers(t, prefix)

    def convert(self, t: Any, fmt: Format, name: str) -> Any:
        """A bound operand converted to another format."""
        return _renamed(t.to(fmt), name)

    def at_widths(self, t: Any, fmt: Format, name: str) -> Any:
        """An operand whose format is the kernel's ``fmt`` but for index widths, cast to ``fmt``'s widths.

        The kernel reads exactly those widths. A converted copy or an earlier statement's
        result may have been widened past them (its entries needed it): FormatError naming
        the operand then, never a wrong read. Other differences are left alone.
        """
        if t.format.with_widths(fmt.pos_width, fmt.crd_width) != fmt:
            return t
        return with_index_widths(t, fmt, name)

    def dense_result(self, fmt: Format, shape: tuple[int, ...], vals: Any, name: str) -> Any:
        """Wrap the values of a dense output."""
        if not fmt.ndim:
            return _scalar_result(vals, name)
        return Tensor.from_buffers(fmt, shape, [{} for _ in fmt.levels], vals, name=name, validate=False)

    def pattern_result(self, fmt: Format, shape: tuple[int, ...], src: Any, vals: Any, name: str) -> Any:
        """Wrap a same-pattern output: the source's index buffers, new values."""
        return Tensor.from_buffers(fmt, shape, [dict(lv) for lv in src.levels], vals, name=name, validate=False)

    def compressed_result(self, fmt: Format, shape: tuple[int, ...], offsets: Any, crd: Any, vals: Any,
                          name: str) -> Any:
        """Wrap a (dense, compressed) output whose ``pos`` are the entry offsets (no sort, no copy of crd)."""
        total = int(offsets[-1])
        width = fit_width(fmt.pos_width, total)
        pos = offsets.astype(np.dtype(f"int{width}"), copy=False)
        if isinstance(vals, np.ndarray) and vals.ndim == 1 and vals.dtype in VALUE_DTYPES \
                and crd.dtype == np.dtype(f"int{fmt.crd_width}"):
            # buffers the kernels wrote in the format's widths (pos widened above, crd checked by
            # _check_output_crd_width): the plain constructor, without from_buffers' checks and casts
            out_fmt = fmt if width == fmt.pos_width else fmt.with_widths(width, fmt.crd_width)
            return Tensor(out_fmt, shape, ({}, {"pos": pos, "crd": crd}), vals, name)
        return Tensor.from_buffers(fmt.with_widths(width, fmt.crd_width), shape, [{}, {"pos": pos, "crd": crd}],
                                   vals, name=name, validate=False)

    def entries_result(self, fmt: Format, shape: tuple[int, ...], crds: list, vals: Any, name: str,
                       presorted: bool) -> Any:
        """Assemble output entries (one coordinate array per dimension) into ``fmt``."""
        dims = np.stack(crds) if crds else np.zeros((0, vals.shape[0]), dtype=np.int64)
        level_coords = []
        for e in fmt.exprs:
            c = dims[e.dim]
            level_coords.append(c // e.factor if e.op == "floordiv" else c % e.factor if e.op == "mod" else c)
        return Tensor.from_level_coords(fmt, shape, level_coords, vals, name=name, presorted=presorted)

    def _launch(self, fn: KernelFn, kernel: L.Kernel, buffers: dict[str, Any],
                scalars: dict[str, int]) -> list[tuple[int, int]] | None:
        """Run ``fn`` over the buffers; returns the chunks of the parallel loop it ran (``[lo, hi)`` each,
        in order), or None for one call over the whole kernel."""
        low = self.low
        names = self._param_names(kernel)
        bufs = {k: v for k, v in buffers.items() if k in names}
        par = low.parallel
        if par is None or "sc_lo" not in names:
            ws = self._workspaces(scalars, names)
            fn({**bufs, **ws}, scalars)
            return None
        ev = _Interp(kernel, bufs, scalars)
        lo, hi = int(ev.ev(par.lo)), int(ev.ev(par.hi))
        balance = bufs.get(par.balance) if par.balance else None
        chain = [bufs[n] for n in par.balance_chain]
        work = (hi - lo) + (balanced_entries(balance, chain, lo, hi) if balance is not None and hi > lo else 0)
        if low.symbolic is not None and hi > lo and work < MIN_PARALLEL_WORK:
            work += self._other_operand_work(bufs, scalars, lo, hi, work - (hi - lo))
        if low.strategy == "workspace":
            work *= WORKSPACE_WORK_WEIGHT
        nthreads = get_num_threads() if self.threads else 1
        chunks = chunk_bounds(lo, hi, nthreads if work >= MIN_PARALLEL_WORK else 1, balance)
        if not chunks:
            return chunks

        private = par.private and len(chunks) > 1
        out_name = f"{low.space.output.prefix}_vals"
        copies: list[Any] = []
        if private:
            # the chunks write only their copies, each starting where the output would (its fill); the
            # output itself may have been allocated uninitialized (a kernel that writes every entry)
            fill = self.fill_value(scalars)
            bufs[out_name].fill(fill)

        def task(chunk: tuple[int, int]) -> Callable[[], None]:
            ws = self._workspaces(scalars, names)  # each chunk gets its own scratch space
            if private:  # ... and, for a parallel reduction loop, its own copy of the output
                ws[out_name] = self.full(bufs[out_name].shape[0], fill, bufs[out_name].dtype)
                copies.append(ws[out_name])
            return lambda: fn({**bufs, **ws}, {**scalars, "sc_lo": chunk[0], "sc_hi": chunk[1]})

        TEAM.run([task(c) for c in chunks])
        combine = _COMBINE.get(low.reduce_op, np.add)
        for c in copies:  # combined in chunk order: deterministic
            combine(bufs[out_name], c, out=bufs[out_name])
        return chunks

    def _other_operand_work(self, bufs: Mapping[str, Any], scalars: Mapping[str, int], lo: int, hi: int,
                            balanced: int) -> int:
        """Work of a sparse-output statement's other sparse operands over ``[lo, hi)`` of the parallel loop.

        The balancing operand's nonzeros alone undercount it: an operand co-iterated with it
        (``B`` of ``A + B``) adds its share of nonzeros, and one walked inside each of those
        nonzeros (``B[k, j]`` of SpGEMM) adds its mean slice length per balancing nonzero.
        """
        low = self.low
        par = low.parallel
        others = self._other_operands
        if others is None:  # (values buffer, extent parameter of its first level, co-iterated?) per operand
            lvars = low.space.level_vars()
            pvar = lvars[par.var].dim_var if par.var in lvars else None
            others = []
            for o in low.space.operands:
                if not o.fmt.is_sparse or not o.fmt.exprs or (par.balance and par.balance.startswith(o.prefix + "_")):
                    continue
                first = o.dim_vars[o.fmt.exprs[0].dim]
                others.append((f"{o.prefix}_vals", low.dim_params.get(first, ""), first == pvar))
            self._other_operands = others
        extra = 0
        for vals_name, param, coiterated in others:
            vals = bufs.get(vals_name)
            if vals is None:
                continue
            nnz = int(vals.shape[0])
            outer = max(1, int(scalars.get(param, 1)))
            if coiterated:  # co-iterated along the parallel loop: its share of nonzeros
                extra += nnz * (hi - lo) // outer
            else:  # walked per nonzero of the balancing operand (or per iteration without one)
                extra += max(balanced, hi - lo) * nnz // outer
        return extra

    def fill_value(self, scalars: Mapping[str, int]) -> Any:
        """Initial value of output entries the loops may skip.

        Those are coordinates where every sparse operand is absent. A sum over them
        is 0; a max/min over a non-empty range of implicit zeros is also 0, and over
        an empty range it is the reduction's identity (-inf for max).
        """
        low = self.low
        if low.reduce_op in (None, "sum"):
            return 0
        if not low.skipped_are_zero:
            return identity_value(low.reduce_op, low.compute_dtype)
        red_vars = [v for v, lv in low.space.level_vars().items() if lv.dim_var in _reduction_dims(low)]
        extents = [scalars[low.dim_params[low.space.level_vars()[v].dim_var]] for v in red_vars]
        if all(n > 0 for n in extents):
            return 0
        return identity_value(low.reduce_op, low.compute_dtype)

    def _param_names(self, kernel: L.Kernel) -> frozenset[str]:
        """The names of a kernel's parameters (memoized: every launch filters its buffers by them)."""
        names = self._names.get(kernel.name)
        if names is None:
            names = self._names[kernel.name] = frozenset(p.name for p in kernel.params)
        return names

    def _workspaces(self, scalars: Mapping[str, int], names: frozenset[str]) -> dict[str, Any]:
        """Scratch buffers of the workspaces the kernel declares (``names``: its parameters), filled."""
        out = {}
        for w in self.low.workspaces:
            if w.name not in names:
                continue
            n = int(_Interp(self.low.numeric, {}, scalars).ev(w.size))
            out[w.name] = self.full(max(n, 1), w.fill, np.dtype(w.dtype))
        return out

    def run(self, tensors: Mapping[str, Any]) -> Any:
        low = self.low
        space = low.space
        tensors = dict(tensors)
        for c in space.conversions:
            tensors[c.alias] = self.convert(tensors[c.tensor], c.dst, c.alias)
        buffers: dict[str, Any] = {}
        for o in space.operands:
            t = tensors[o.prefix]
            if t.format != o.fmt:
                t = self.at_widths(t, o.fmt, o.tensor)
            buffers.update(self.buffers_of(t, o.prefix))
        scalars = infer_extents(low, {o.tensor: tensors[o.tensor] for o in space.operands})
        out = space.output
        shape = tuple(scalars[low.dim_params[v]] for v in out.dim_vars)
        cdt = np.dtype(low.compute_dtype) if low.compute_dtype != "bfloat16" else low.compute_dtype
        fill = self.fill_value(scalars)
        if low.strategy in ("dense", "dense_then_convert"):
            size = int(np.prod(out.fmt.level_sizes(shape), dtype=np.int64)) if out.fmt.ndim else 1
            vals = self.empty(size, cdt) if low.writes_all else self.full(size, fill, cdt)
            buffers[f"{out.prefix}_vals"] = vals
            self._launch(self.numeric, low.numeric, buffers, scalars)
            result = self.dense_result(out.fmt, shape, vals, out.tensor)
        elif _empty_extreme(low, scalars):
            # max/min over an empty range: the identity at every coordinate, which no sparse pattern leaves out
            vals = self.full(int(np.prod(shape, dtype=np.int64)), identity_value(low.reduce_op, low.compute_dtype),
                             cdt)
            dense = self.dense_result(parse_format("dense", len(shape)), shape, vals, out.tensor)
            result = self.convert(dense, out.fmt, out.tensor)
        elif low.strategy == "same_pattern":
            src = tensors[low.pattern_source.prefix]
            n = src.values.shape[0]
            vals = self.empty(n, cdt) if low.writes_all else self.full(n, fill, cdt)
            buffers[f"{out.prefix}_vals"] = vals
            self._launch(self.numeric, low.numeric, buffers, scalars)
            result = self.pattern_result(out.fmt, shape, src, vals, out.tensor)
        else:
            result = self._run_entries(buffers, scalars, shape, cdt)
        conv = space.output_conversion
        if conv is not None and out.fmt.ndim:
            result = self.convert(result, conv.dst, out.tensor)
        return result

    def _run_entries(self, buffers: dict[str, Any], scalars: dict[str, int], shape: tuple[int, ...],
                     cdt: np.dtype) -> Tensor:
        low = self.low
        out = low.space.output
        top = low.numeric
        if self._outer_lv is None and low.count_slots.by == "coordinate" and low.order.order:
            self._outer_lv = low.space.level_vars()[low.order.order[0]]
        slots = _count_slots(low, buffers, scalars, self._outer_lv)
        if self.one_pass is not None and low.one_pass is not None:
            result = self._run_one_pass(buffers, scalars, shape, cdt, slots)
            if result is not None:
                return result
        assert self.symbolic is not None and low.symbolic is not None
        counts = self._row_counts(self.symbolic, low.symbolic, buffers, scalars, slots)
        scalars = self._with_table_size(top, scalars, counts)
        offsets, total = self.exclusive_cumsum(counts)
        buffers[f"{out.prefix}_off"] = offsets
        vals = self.empty(total, cdt)
        buffers[f"{out.prefix}_vals"] = vals
        if low.direct_compressed:
            _check_output_crd_width(out.fmt, shape, out.tensor)
            crd = self.empty(total, np.dtype(f"int{out.fmt.crd_width}"))
            buffers[f"{out.prefix}_crd1"] = crd
            self._launch(self.numeric, top, buffers, scalars)
            return self.compressed_result(out.fmt, shape, offsets, crd, vals, out.tensor)
        crds = [self.empty(total, np.dtype(np.int64)) for _ in out.dim_vars]
        for d, c in enumerate(crds):
            buffers[f"{out.prefix}_crd{d}"] = c
        self._launch(self.numeric, top, buffers, scalars)
        return self.entries_result(out.fmt, shape, crds, vals, out.tensor, low.presorted)

    def _row_counts(self, fn: KernelFn, kernel: L.Kernel, buffers: dict[str, Any], scalars: dict[str, int],
                    slots: int) -> Any:
        """Run a counting kernel (symbolic: exact; one-pass bound: at most) into fresh zeroed counts."""
        counts = self.full(slots + 1, 0, np.dtype(np.int64))
        buffers[f"{self.low.space.output.prefix}_cnt"] = counts
        self._launch(fn, kernel, buffers, scalars)
        return counts

    def _with_table_size(self, kernel: L.Kernel, scalars: dict[str, int], counts: Any) -> dict[str, int]:
        """``scalars`` plus the hash-table workspace's slots when ``kernel`` has one: enough for the largest
        row (its count is exact or an upper bound; either is at least what the kernel's own sizing assumes)."""
        if TMAX_PARAM not in self._param_names(kernel):
            return scalars
        return {**scalars, TMAX_PARAM: hash_table_size(int(counts.max()) if counts.shape[0] else 0)}

    def _run_one_pass(self, buffers: dict[str, Any], scalars: dict[str, int], shape: tuple[int, ...],
                      cdt: np.dtype, slots: int) -> Tensor | None:
        """A sparse output in one pass (:class:`~sparsec.passes.sparsify.OnePass`); None when the rows'
        bounds would take more than ``ONE_PASS_MAX_BYTES`` of entries (the caller then runs the two passes).

        The bound kernel's counts become offsets; the numeric kernel writes each chunk's rows one
        after another from the bound offset of its first row and stores each row's exact count;
        each chunk's entries then move down to their final offsets (the first chunk's stay).
        """
        low = self.low
        out = low.space.output
        bound_fn, numeric_fn = self.one_pass
        counts = self._row_counts(bound_fn, low.one_pass.bound, buffers, scalars, slots)
        offsets, total = self.exclusive_cumsum(counts)
        crd_dtype = np.dtype(f"int{out.fmt.crd_width}")
        if total * (cdt.itemsize + crd_dtype.itemsize) > ONE_PASS_MAX_BYTES:
            return None
        scalars = self._with_table_size(low.one_pass.numeric, scalars, counts)
        _check_output_crd_width(out.fmt, shape, out.tensor)
        crd, vals = self.empty(total, crd_dtype), self.empty(total, cdt)
        rows = self.full(slots + 1, 0, np.dtype(np.int64))
        buffers.update({f"{out.prefix}_off": offsets, f"{out.prefix}_cnt": rows, f"{out.prefix}_crd1": crd,
                        f"{out.prefix}_vals": vals})
        chunks = self._launch(numeric_fn, low.one_pass.numeric, buffers, scalars)
        final, nnz = self.exclusive_cumsum(rows)
        moves = [(int(offsets[lo]), int(final[lo]), int(final[hi] - final[lo]))
                 for lo, hi in chunks or [(0, slots)]]
        move_down((crd, vals), [m for m in moves if m[0] != m[1] and m[2]])
        crd, vals = crd[:nnz], vals[:nnz]
        if total - nnz > max(nnz, ONE_PASS_KEEP_SLACK):
            # a bound far above the entries (many terms per entry): a view would keep the whole bounded
            # allocation alive with the result, so the entries move to arrays of their own size
            crd, vals = crd.copy(), vals.copy()
        return self.compressed_result(out.fmt, shape, final, crd, vals, out.tensor)


#: how private copies of a dense output (see ``ParallelInfo.private``) combine, by the statement's reduction
_COMBINE = {"max": np.maximum, "min": np.minimum}

#: unused bounded entries a one-pass result may keep behind its own (beyond as many as it has, it is copied)
ONE_PASS_KEEP_SLACK = 1 << 17


def move_down(arrays: tuple[np.ndarray, ...], moves: list[tuple[int, int, int]]) -> None:
    """``a[dst:dst + n] = a[src:src + n]`` for every array ``a`` and every ``(src, dst, n)`` (``dst < src``),
    in place and in order (memmove: the ranges may overlap).

    Each array's address is read once, through ``__array_interface__``: numpy's ``a.ctypes.data``
    costs ~3 µs a read, which the loop paid twice per move and array.
    """
    for a in arrays:
        if not moves:
            return
        base, size = a.__array_interface__["data"][0], a.itemsize
        for src, dst, n in moves:
            ctypes.memmove(base + dst * size, base + src * size, n * size)


def hash_table_size(count: int) -> int:
    """Slots of a hash-table workspace for ``count`` entries: the least power of two >= 2 * count (>= 2),
    as the numeric kernel computes it per row."""
    t = 2
    while t < 2 * count:
        t *= 2
    return t


def _count_slots(low: Lowered, buffers: Mapping[str, Any], scalars: Mapping[str, int], outer_lv: Any = None) -> int:
    """Length of a sparse output's counts array, as its kernels index it (see ``CountSlots``).

    ``outer_lv``: the outer loop's level variable, when the caller has it (``level_vars`` rebuilds them all).
    """
    slots = low.count_slots
    if slots.by == "position":  # positions of the level the outer loop walks, not its (maybe huge) extent
        o = next(o for o in low.space.operands if o.prefix == slots.prefix)
        lvl = o.levels[slots.level]
        parts = {part: buffers[f"{o.prefix}_{part}{slots.level}"] for part in lvl.buffers}
        shape = tuple(int(scalars[low.dim_params[v]]) for v in o.dim_vars)
        return int(lvl.num_positions(parts, 1, o.fmt.level_sizes(shape)[slots.level]))
    if slots.by == "coordinate" and low.order.order:
        lv = outer_lv if outer_lv is not None else low.space.level_vars()[low.order.order[0]]
        ext = scalars[low.dim_params[lv.dim_var]]
        return ext if lv.part == "full" else -(-ext // lv.factor)
    return 1


def _check_output_crd_width(fmt: Format, shape: tuple[int, ...], name: str) -> None:
    """FormatError when the kernel would store output coordinates that do not fit ``fmt``'s crd width.

    A (dense, compressed) output assembled directly has its coordinates written by the
    kernel in the width it was compiled for; a narrower width would silently wrap
    coordinates past its largest value (127 for 8 bits, 32767 for 16, 2**31 - 1 for 32).
    Only levels that store a ``crd`` buffer count.
    """
    if fmt.crd_width >= 64:
        return
    need = needed_crd_width(fmt, fmt.level_sizes(shape))
    if need != fmt.crd_width:
        wide = fmt.with_widths(fmt.pos_width, need)
        raise FormatError(
            f"output {name!r} of shape {shape} needs {need}-bit coordinates, but the kernel stores "
            f"{fmt.crd_width}-bit ones (format {fmt}); compile it with out_format={wide.mlir()!r}"
        )


def _empty_extreme(low: Lowered, scalars: Mapping[str, int]) -> bool:
    """True for a max/min statement whose reduced range is empty (every result entry is its identity)."""
    if low.reduce_op not in ("max", "min"):
        return False
    return any(scalars[low.dim_params[v]] == 0 for v in _reduction_dims(low))


def _reduction_dims(low: Lowered) -> set[str]:
    from .ir.tensor_ir import Reduce

    expr = low.stmt.expr
    return {v.name for v in expr.vars} if isinstance(expr, Reduce) else set()


def _scalar_result(vals: np.ndarray, name: str) -> Tensor:
    return Tensor.from_numpy(vals.reshape(1), name=name)


class ProgramRunner:
    """Runs every statement of a lowered program in order; temporaries stay internal."""

    def __init__(self, lowered: LoweredProgram, compile_kernel: Callable[[L.Kernel], KernelFn], threads: bool,
                 runner_class: type[StatementRunner] = StatementRunner):
        self.lowered = lowered
        self.runners = [_statement_runner(low, compile_kernel, threads, runner_class) for low in lowered.statements]

    def run(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        tensors = dict(inputs)
        results: dict[str, Tensor] = {}
        for r in self.runners:
            t = r.run(tensors)
            name = r.low.space.output.tensor
            tensors[name] = t
            results[name] = t
        return results


def _statement_runner(low: Lowered, compile_kernel: Callable[[L.Kernel], KernelFn], threads: bool,
                      runner_class: type[StatementRunner]) -> StatementRunner:
    """The runner of one statement. With one-pass kernels those are compiled now and the two-pass ones
    on first use (only outputs whose bounds are too large run them)."""
    symbolic = low.symbolic
    if low.one_pass is None:
        return runner_class(low, compile_kernel(low.numeric),
                            compile_kernel(symbolic) if symbolic is not None else None, threads)
    one_pass = (compile_kernel(low.one_pass.bound), compile_kernel(low.one_pass.numeric))
    return runner_class(low, _OnFirstCall(compile_kernel, low.numeric),
                        _OnFirstCall(compile_kernel, symbolic) if symbolic is not None else None, threads, one_pass)


class _OnFirstCall:
    """A kernel compiled when it is first run."""

    def __init__(self, compile_kernel: Callable[[L.Kernel], KernelFn], kernel: L.Kernel):
        self._compile, self._kernel, self._fn = compile_kernel, kernel, None

    def __call__(self, buffers: Mapping[str, Any], scalars: Mapping[str, int]) -> None:
        if self._fn is None:
            self._fn = self._compile(self._kernel)
        self._fn(buffers, scalars)
