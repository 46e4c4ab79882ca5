"""Target ``"triton"``: loop IR -> generated Triton source -> ``triton.jit`` -> launch on torch tensors.

Modules, one job each:

* :mod:`.schedule` -- GPU scheduling pass: grid mapping and fast-path block forms
  (CSR-vector / multi-row reductions, SDDMM tiles, SpMM register tiles, ``tl.dot``
  on BSR blocks), printed as annotated loop IR;
* :mod:`.codegen` -- loop IR + plan -> Triton source (scalar lowering for everything,
  vector lowering for the fast paths);
* :mod:`.launch` -- source cache directory, import, module cache;
* :mod:`.device` -- device tensors, operand binding, the torch-based statement runner;
* :mod:`.options` -- :class:`TritonOptions` (``precision="ieee" | "tf32"``, tile sizes,
  warps) and the launch heuristics.

Running: ``sc.compile(..., target="triton")`` / ``sc.einsum(..., target="triton")``
use this backend's :class:`~.device.DeviceRunner`. Kernels run on CUDA when
available, or on the CPU in Triton's interpreter with ``TRITON_INTERPRET=1``
(anything else raises :class:`~sparsec.errors.BackendError`).

Results: through :func:`call` / :func:`einsum` here (device-resident path), a dense
output is a torch tensor on the device the kernel ran on and a sparse output a
:class:`~.device.DeviceTensor` (``.to_torch()`` gives ``sparse_csr`` etc. on that
device); torch CUDA inputs (strided, sparse_csr/csc/coo/bsr) are bound without a
host round trip. Through the generic ``sc.Kernel.__call__`` / ``sc.einsum`` the
runtime wraps operands as numpy-backed tensors first and presents dense results as
numpy (or CPU torch), so CUDA operands round-trip through the host there unless
the API uses this backend's ``call`` hook (see :meth:`TritonBackend.call`).

Precision: float32 ``tl.dot`` uses ``input_precision="ieee"`` by default (matches
numpy); ``set_options(precision="tf32")`` or ``with options(precision="tf32")``
selects TF32 tensor cores. float16/bfloat16 fast paths accumulate in float32.
Index arithmetic is int32 when every buffer length and size fits (with margin), else
int64; each width is its own generated source (part of the cache key).
``SPARSEC_TRITON_INDEX64=1`` forces int64 (to test that variant on small inputs).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Mapping

from ...errors import BackendError
from ...ir import loop_ir as L
from ...memo import OwnedMemo, tensor_version
from .codegen import generate
from .device import DeviceRunner, DeviceTensor, bind_operand, host_eval, pick_device, sm_count
from .launch import DirectLaunch, constexpr_values, interpreting, load_kernel
from .options import (TritonOptions, choose_constexprs, choose_num_warps, get_options, options, options_generation,
                      set_options)
from .schedule import MapTile, Plan, schedule
from . import tiles

__all__ = ["TritonBackend", "TritonKernel", "TritonOptions", "DeviceTensor", "call", "einsum", "options",
           "set_options", "get_options"]

#: a memo miss where None is a remembered value
_MISS = object()


@dataclass(frozen=True)
class SplitWork:
    """Rows cut into segments: ``work`` holds (row, lo, hi) per segment, ``count`` segments of
    at most ``seg_len`` positions, ``avg_len`` on average."""

    work: Any
    count: int
    seg_len: int
    avg_len: float


@dataclass
class MemoLaunch:
    """A memoized launch: the jitted function, grid, warps, constexprs, trailing internal arguments,
    the parameters' (is buffer, name) order, the direct launcher (or None) and the output buffer to
    zero before each launch (split rows)."""

    fn: Any
    grid: int
    warps: int
    kwargs: dict
    internal: list
    names: list
    direct: Any
    zero: str | None


#: above this, index arithmetic uses int64 (slack for sums of in-range positions)
INDEX32_LIMIT = 2**31 - 2**24


class TritonKernel:
    """One loop-IR kernel compiled for Triton: ``ck(buffers, scalars)`` launches it."""

    def __init__(self, kernel: L.Kernel, opts: TritonOptions):
        self.kernel = kernel
        self.fast_paths = opts.fast_paths
        self.plan: Plan = schedule(kernel, opts.fast_paths, opts.dot_min_block)
        mt = tiles.match(kernel) if opts.fast_paths else None   # bitmap / N:M SpMM: a tile template instead
        self.tile = tiles.TileKernel(mt, kernel) if mt is not None else None
        self._variants: dict[bool, tuple] = {}
        self._stats_memo = OwnedMemo(64)   # per pos tensor: (average, longest) row
        self._launch_memo = OwnedMemo(256)   # MemoLaunch by scalars and inputs, for the very input tensors
        self._split_memo = OwnedMemo(32)   # per pos tensor: its SplitWork, or None (no split)
        self._input_names = tuple(p.name for p in kernel.buffers if p.role == "in")
        # inputs that are a dense operand's values: the launch set-up depends only on their length and
        # alignment, so a fresh tensor each call (a layer's activations) reuses it (see launch())
        sparse = {p.tensor for p in kernel.buffers if p.part != "vals"}
        dense = {p.name for p in kernel.buffers if p.role == "in" and p.part == "vals" and p.tensor not in sparse}
        # ... and so do the offsets of a sparse output (computed afresh on every call by the symbolic pass),
        # unless a launch estimate or the row split reads them
        outputs = {p.tensor for p in kernel.buffers if p.role == "out"}
        read = {c.est.buffer for c in self.plan.constexprs if c.est.kind == "pos"}
        if self.plan.split is not None:
            read.add(self.plan.split.pos)
        dense |= {p.name for p in kernel.buffers if p.role == "in" and p.tensor in outputs and p.name not in read}
        self._dense_inputs = frozenset(dense)
        self._buffer_dtypes: tuple | None = None   # (name, torch dtype) of each buffer, see launchable_as_is
        #: block(var, size) annotations of the schedule, by loop name
        self.block_hints = {(s.index_var or s.var.name): s.kind.width for s in kernel.body.walk()
                            if isinstance(s, L.For) and s.kind.kind == "block" and s.kind.width}
        self.hints = dict(kernel.hints)
        self._lock = threading.Lock()
        self.variant(False)  # generate eagerly: errors surface at compile time, dump works

    @property
    def internal(self) -> list[str]:
        if self.plan.mode == "atomic":
            return ["_t_lo"]
        if self.plan.mode == "persistent":
            return [f"_t_ws{q}" for q in range(len(self.plan.workspaces))]
        return []

    def variant(self, idx64: bool, split: bool = False) -> tuple:
        with self._lock:
            v = self._variants.get((idx64, split))
            if v is None:
                names = [c.name for c in self.plan.constexprs]
                src, cg = generate(self.plan, idx64, names, self.internal, split)
                v = (src, cg, None)
                self._variants[(idx64, split)] = v
            return v

    def source(self, idx64: bool = False, split: bool = False) -> str:
        return self.variant(idx64, split)[0]

    def row_tile_output(self) -> str | None:
        """The output buffer whose elements the unsplit launch stores each exactly once, or None.

        That holds when each program's whole work is one summing accumulator tile (``Codegen.row_tile``:
        the tile starts at 0 and is stored once, also for rows whose reduction is empty) and
        the loops bind every output coordinate (``Lowered.covers_output``, checked by the caller):
        the output then needs no zero fill. The row-split variant adds segments atomically; the
        launch zeroes the output itself when it takes that variant (see ``__call__``).
        """
        if self.tile is not None:
            return None
        t = self.variant(False)[1].row_tile()
        return t.store.buffer if t is not None and t.store.reduce == "add" else None

    def dump(self, stage: str = "triton") -> str:
        if self.tile is not None:
            return self.tile.source()
        text = self.source(False)
        if self.plan.split is not None:
            text += "\n# ----- row-split variant (launched when rows are skewed or too few) -----\n"
            text += self.source(False, True)
        return text

    def _fn(self, idx64: bool, split: bool = False):
        src, cg, fn = self.variant(idx64, split)
        if fn is None or getattr(fn, "_sc_interp", None) != interpreting():
            from .codegen import py_name

            fn = load_kernel(self.kernel.name, src, py_name(self.kernel.name))
            try:
                fn._sc_interp = interpreting()
            except AttributeError:  # pragma: no cover
                pass
            with self._lock:
                self._variants[(idx64, split)] = (src, cg, fn)
        return fn, cg

    def split_work(self, pos: Any, device: Any, idx64: bool) -> "SplitWork | None":
        """The (row, lo, hi) segments for the row-split variant, or None when rows need no splitting.

        Accumulator tiles (SpMM): rows are split into segments of at most L positions when they
        are skewed (the longest row over 4x the average) or too few to keep the GPU busy; L is
        chosen so that there are about 32 segments per SM. Map tiles (SpMV): rows split when the
        longest is over 8x the average, into segments of the average row rounded up to a power
        of two (32..1024), so no program waits on a long row while the others idle (measured on
        an H100, benchmarks/results/h100-tuning/spmv_split.txt: 32 beat 64..1024 on every skewed
        matrix; Zipf rows 200k x 16: 218 us unsplit, 50 us in segments of 32, 148 us of 1024).
        Computed on the device and memoized per pos array.
        """
        import torch

        # Memo entries are checked against a weak reference to the very pos tensor they came from:
        # torch's caching allocator gives a freed matrix's address to the next one of the same size.
        key = (pos.data_ptr(), pos.numel(), tensor_version(pos), str(device), idx64, options_generation())
        hit = self._split_memo.get(pos, key, _MISS)
        if hit is not _MISS:
            return hit
        n = pos.numel() - 1
        found = None
        if n > 0:
            p = pos.to(torch.int64)
            lens = p[1:] - p[:-1]
            first, last, longest = torch_stats(p, lens)
            nnz = last - first
            opts = get_options()
            avg = max(nnz / n, 1.0)
            force = opts.split_rows if opts.split_rows is not None else self.hints.get("split_rows")
            if self.plan.split.kind == "map" and opts.split_segments is None:
                seg_len = max(32, min(1024, 1 << max(0, int(avg + 0.999) - 1).bit_length()))
                want = longest > 8 * avg
            else:
                sms = sm_count(device, 132)
                target = opts.split_segments or 32 * sms
                seg_len = max(16, 1 << max(0, (max(nnz // target, 1) - 1).bit_length()))
                want = longest > 4 * avg or n < target
            seg_len = opts.segment or self.hints.get("segment") or seg_len   # pos(var, tensor, segment)
            if force is True or (force is None and longest > seg_len and want):
                nseg = (lens + seg_len - 1) // seg_len
                total = int(nseg.sum())
                if idx64 or 3 * total <= INDEX32_LIMIT:  # else the work array is too long for int32 indexing
                    rows = torch.repeat_interleave(torch.arange(n, device=p.device), nseg, output_size=total)
                    start = torch.cumsum(nseg, 0) - nseg
                    seg = torch.arange(total, device=p.device) - torch.repeat_interleave(start, nseg,
                                                                                        output_size=total)
                    lo = p[rows] + seg * seg_len
                    hi = torch.minimum(lo + seg_len, p[rows + 1])
                    work = torch.stack([rows, lo, hi], 1).reshape(-1).to(torch.int64 if idx64 else torch.int32)
                    found = SplitWork(work, total, seg_len, nnz / max(total, 1))
        return self._split_memo.put(pos, key, found)

    def programs(self, n_iter: int, device: Any) -> int:
        """Programs of a persistent grid (workspace kernels): a few per SM, capped by the work."""
        if self.plan.mode != "persistent":
            return 1
        opts = get_options()
        cap = opts.max_programs
        if cap is None:
            cap = 4 * sm_count(device, 0) or 2
        return max(1, min(int(n_iter), int(cap)))

    def launchable_as_is(self, buffers: Mapping[str, Any]) -> bool:
        """Whether every buffer is a torch tensor of its parameter's dtype within 32-bit indexing, so that
        :meth:`launch` may replay a memoized set-up with them (a replay casts nothing; ``__call__`` does)."""
        if self._buffer_dtypes is None:
            from .device import torch_dtype

            self._buffer_dtypes = tuple((p.name, torch_dtype(p.dtype)) for p in self.kernel.buffers)
        for name, dtype in self._buffer_dtypes:
            t = buffers.get(name)
            if t is None or getattr(t, "dtype", None) != dtype or t.numel() > INDEX32_LIMIT:
                return False
        return True

    def __call__(self, buffers: Mapping[str, Any], scalars: Mapping[str, int]) -> tuple | None:
        """Launch; returns the launch set-up (for :meth:`launch`'s memo) or None when nothing ran."""
        import torch

        bufs = dict(buffers)
        for k, v in list(bufs.items()):
            if not isinstance(v, torch.Tensor):
                bufs[k] = torch.from_numpy(v)
        scal = dict(scalars)
        plan = self.plan
        big = max([t.numel() for t in bufs.values()] + [abs(int(v)) for v in scal.values()] + [0])
        idx64 = big > INDEX32_LIMIT or os.environ.get("SPARSEC_TRITON_INDEX64", "0") == "1"
        # index buffers whose width differs from the kernel's (same format, other widths):
        # the generated code types loads by the IR, so bind them at the IR's width
        for p in self.kernel.buffers:
            t = bufs.get(p.name)
            if t is None or not p.dtype.startswith("int"):
                continue
            have = str(t.dtype).replace("torch.", "")
            if have != p.dtype and have.startswith("int") and not (idx64 and p.dtype == "int32"):
                bufs[p.name] = t.to(getattr(torch, p.dtype))
        if self.tile is not None and not idx64:  # the tile template (its index math is 32-bit)
            done = self.tile.setup(bufs, scal, get_options().precision)
            if done is None:
                return None
            fn, grid, warps, kwargs, internal = done
            args = [bufs[p.name] if isinstance(p, L.BufferParam) else int(scal[p.name]) for p in self.kernel.params]
            return fn, grid, warps, kwargs, internal, fn[(grid,)](*args, *internal, num_warps=warps, **kwargs), None
        internal: list[Any] = []
        work = None
        split = plan.split
        if split is not None and split.pos in bufs and int(scal.get("sc_lo", 0)) == 0 and \
                (split.kind != "map" or int(scal.get("sc_hi", -1)) == bufs[split.pos].numel() - 1):
            work = self.split_work(bufs[split.pos], bufs[split.pos].device, idx64)
        fn, cg = self._fn(idx64, work is not None)
        zero = None
        if work is not None:   # segments add into the output atomically: it must start at 0 (the fast
            # path leaves a row-tile kernel's output unfilled, see row_tile_output)
            zero = split.store_buffer if split.kind == "map" else self.row_tile_output()
            if zero is not None and zero in bufs:
                bufs[zero].zero_()
            else:
                zero = None
        if work is not None:
            n_iter = work.count
        elif plan.mode == "grid":
            n_iter = int(scal["sc_hi"]) - int(scal["sc_lo"])
        elif plan.mode == "persistent":
            n_iter = int(scal["sc_hi"]) - int(scal["sc_lo"])
            internal = [int(scal[f"_t_ws:{w}"]) for w in plan.workspaces]
        elif plan.mode == "atomic":
            lo = host_eval(plan.top.lo, bufs, scal)
            hi = host_eval(plan.top.hi, bufs, scal)
            n_iter = hi - lo
            internal = [lo]
        else:
            n_iter = 1
        if n_iter <= 0:
            return
        opts = get_options()
        estimates, longest = self._estimates(bufs, scal)
        if work is not None and split.kind == "map":  # the tile walks segments, not rows
            for c in plan.constexprs:
                if c.est.kind == "pos" and c.est.buffer == split.pos:
                    estimates[c.name], longest[c.name] = work.avg_len, float(work.seg_len)
        consts = choose_constexprs(plan.constexprs, estimates, opts, longest)
        if not opts.block_n:
            consts.update(cg.dot_block_n(consts, estimates))
        for c in plan.constexprs:  # a schedule's block(var, size) wins over the heuristics
            if c.var in self.block_hints:
                consts[c.name] = max(c.minimum, self.block_hints[c.var])
        top = plan.fast.get(id(plan.top)) if plan.top is not None else None
        if work is not None and split.kind == "map":
            grid = -(-n_iter // consts[top.lanes])
        elif work is not None:
            grid = n_iter
        elif plan.mode == "grid":
            grid = -(-n_iter // consts[top.lanes]) if isinstance(top, MapTile) else n_iter
        elif plan.mode == "persistent":
            device = next(iter(bufs.values())).device if bufs else None
            grid = self.programs(n_iter, device)
        elif plan.mode == "atomic":
            grid = n_iter
        else:
            grid = 1
        if cg.grid_tiles is not None:  # the open axis of the accumulator tile is split across programs
            grid *= cg.tile_count(bufs, scal, consts)
        kwargs: dict[str, Any] = dict(consts)
        if opts.num_stages:
            kwargs["num_stages"] = opts.num_stages
        if cg.uses_prec:
            kwargs["PREC"] = opts.precision
        gather = any(c.role == "block_k" for c in plan.constexprs)   # SpMM's [BLOCK_K, BLOCK_N] gathers of B
        warps = choose_num_warps(consts, cg.uses_dot, opts, 128 if gather else 64)
        if cg.dot_shape is not None and not opts.num_warps:
            warps = max(warps, cg.dot_warps(consts))
        args = []
        for p in self.kernel.params:
            if isinstance(p, L.BufferParam):
                if p.name not in bufs:
                    raise BackendError(f"kernel {self.kernel.name}: missing buffer {p.name!r}")
                args.append(bufs[p.name])
            else:
                if p.name not in scal:
                    raise BackendError(f"kernel {self.kernel.name}: missing scalar {p.name!r}")
                args.append(int(scal[p.name]))
        if work is not None:
            internal.append(work.work)
            if split.kind == "map":
                internal.append(work.count)
        args += internal
        ck = fn[(grid,)](*args, num_warps=warps, **kwargs)
        return fn, grid, warps, kwargs, internal, ck, zero

    def launch(self, buffers: Mapping[str, Any], scalars: Mapping[str, int]) -> None:
        """``__call__`` with its set-up memoized by the scalars and the input buffers' addresses.

        Buffers must already be torch tensors of the parameters' dtypes (the fast path
        binds them so); outputs may change from call to call.
        """
        # cheap key: the options' generation (bumped on every change), the scalars, and the input buffers'
        # identities and lengths (block sizes depend on their contents only through performance estimates);
        # dense operands by length and 16-byte alignment only (nothing is derived from their contents)
        dense = self._dense_inputs
        inputs = [buffers[n] for n in self._input_names]
        key = (options_generation(), tuple(scalars.values()),
               tuple([(-(b.data_ptr() % 16) - 1 if n in dense else id(b), b.shape[0])
                      for n, b in zip(self._input_names, inputs)]))
        # the very tensors an id names (an id is reused once its tensor is freed)
        owners = tuple([b for n, b in zip(self._input_names, inputs) if n not in dense])
        hit = self._launch_memo.get(owners, key)
        if hit is None:
            done = self(buffers, scalars)
            if done is None:  # nothing to launch (empty range)
                return
            fn, grid, warps, kwargs, internal, ck, zero = done
            names = [(isinstance(p, L.BufferParam), p.name) for p in self.kernel.params]
            direct = DirectLaunch.make(ck, (grid,), constexpr_values(fn, kwargs))
            self._launch_memo.put(owners, key, MemoLaunch(fn, grid, warps, kwargs, internal, names, direct, zero))
            return
        if hit.zero is not None:  # split rows add into the output
            buffers[hit.zero].zero_()
        args = [buffers[n] if is_buf else int(scalars[n]) for is_buf, n in hit.names] + hit.internal
        if hit.direct is not None and hit.direct(args):
            return
        hit.fn[(hit.grid,)](*args, num_warps=hit.warps, **hit.kwargs)

    def _estimates(self, bufs: Mapping[str, Any],
                   scal: Mapping[str, int]) -> tuple[dict[str, float | None], dict[str, float | None]]:
        """Per constexpr: its estimated trip count, and for ``pos`` estimates the longest row.

        A ``pos`` array costs one device reduction and read the first time it is seen
        (memoized by storage and version: no sync on reuse).
        """
        out: dict[str, float | None] = {}
        longest: dict[str, float | None] = {}
        cache: dict[str, tuple[float, float]] = {}
        memo = self._stats_memo
        for c in self.plan.constexprs:
            e = c.est
            val = top = None
            try:
                if e.kind == "pos" and e.buffer in bufs:
                    if e.buffer not in cache:
                        b = bufs[e.buffer]
                        n = b.numel()
                        key = (b.data_ptr(), n, tensor_version(b), str(b.device))
                        hit = memo.get(b, key)
                        if hit is None:
                            if n > 1:
                                lens = b[1:] - b[:-1]
                                first, last, most = torch_stats(b, lens)
                            else:
                                first = last = most = 0
                            hit = memo.put(b, key, ((last - first) / max(n - 1, 1), float(most)))
                        cache[e.buffer] = hit
                    val, top = cache[e.buffer]
                elif e.kind == "expr":
                    val = float(host_eval(e.hi, {}, scal) - host_eval(e.lo, {}, scal))
            except (BackendError, KeyError, IndexError):
                val = top = None
            out[c.name] = val
            longest[c.name] = top
        return out, longest


def torch_stats(pos: Any, lens: Any) -> tuple[int, int, int]:
    """``pos[0]``, ``pos[-1]`` and the longest row, read from the device in one transfer."""
    import torch

    return tuple(int(v) for v in torch.stack([pos[0], pos[-1], lens.max()]).tolist())


class TritonBackend:
    """Backend ``triton``: generated Triton kernels on torch tensors (GPU, or the CPU interpreter)."""

    name = "triton"
    threads = False
    stages: tuple[str, ...] = ("triton",)
    runner_class = DeviceRunner

    def compile(self, kernel: L.Kernel) -> TritonKernel:
        return TritonKernel(kernel, get_options())

    # hooks for the public API (device-resident binding and results)
    def bind_operand(self, x: Any, name: str, fmt=None, dtype: str | None = None, device=None) -> DeviceTensor:
        return bind_operand(x, name, fmt, dtype, device if device is not None else pick_device([x]))

    def call(self, kernel, args, kwargs) -> Any:
        """What ``sc.Kernel.__call__`` does on this target: see :func:`call`."""
        return call(kernel, *args, **kwargs)

    def program_dump(self, kernel, stage: str) -> str | None:
        """The source of the program template that runs ``kernel`` instead of its statements, if any."""
        template = program_template(kernel)
        return template.dump(stage) if template is not None else None

    def einsum(self, subscripts: str, *operands: Any, out_format=None, dtype: Any = None) -> Any:
        """What ``sc.einsum(..., target="triton")`` does: see :func:`einsum`."""
        return einsum(subscripts, *operands, out_format=out_format, dtype=dtype)


def _present(t: Any, decl) -> Any:
    import torch

    if decl.ndim == 0:
        if isinstance(t, DeviceTensor):
            return t.values.reshape(())
        return torch.from_numpy(t.values.reshape(()).copy())
    if decl.format.is_sparse:
        return t
    if isinstance(t, DeviceTensor):
        return t.to_torch()
    return torch.from_numpy(t.to_numpy())


def program_template(kernel) -> AttentionTemplate | SpgemmTemplate | None:
    """The whole-program template for ``kernel``, matched once: masked attention (:mod:`.attention`) or
    CSR SpGEMM (:mod:`.spgemm`)."""
    template = kernel.__dict__.get("_triton_program", False)
    if template is False:
        template = None
        mt = match_attention(kernel)
        if mt is not None:
            template = AttentionTemplate(mt, kernel)
        else:
            ms = match_spgemm(kernel)
            template = SpgemmTemplate(ms, kernel) if ms is not None else None
        kernel._triton_program = template
    return template


def call(kernel, /, *args: Any, **kwargs: Any) -> Any:
    """Run an ``sc.compile(..., target="triton")`` kernel keeping everything on the device.

    Operands are bound with :func:`~.device.bind_operand` (torch CUDA tensors stay where
    they are). Dense outputs come back as torch tensors on the device the kernel ran
    on (0-d outputs as 0-d tensors), sparse outputs as :class:`DeviceTensor`.
    """
    if not isinstance(kernel.backend, TritonBackend):
        raise BackendError(f"call() needs a kernel compiled with target='triton', got target={kernel.target!r}")
    fast = kernel.__dict__.get("_triton_fast", False)
    if fast is False:
        fast = kernel._triton_fast = TritonFastCall.build(kernel) if os.environ.get(
            "SPARSEC_NO_FAST_CALL", "") in ("", "0") else None
    quick = [r for r in (program_template(kernel), fast) if r is not None]   # the whole-program template first
    if quick:
        given = kwargs if not args else {**dict(zip(kernel.inputs, args)), **kwargs}
        if given.keys() == kernel._input_set:
            for runner in quick:
                result = runner(given)
                if result is not _FALLBACK:
                    return result
    if len(args) > len(kernel.inputs):
        raise TypeError(f"kernel takes {len(kernel.inputs)} operands ({', '.join(kernel.inputs)}), got {len(args)}")
    given = dict(zip(kernel.inputs, args))
    for k, v in kwargs.items():
        if k in given:
            raise TypeError(f"operand {k!r} given twice")
        if k not in kernel.inputs:
            raise TypeError(f"unknown operand {k!r}; this kernel reads {', '.join(kernel.inputs)}")
        given[k] = v
    missing = [n for n in kernel.inputs if n not in given]
    if missing:
        raise TypeError(f"missing operand(s) {', '.join(map(repr, missing))}")
    device = pick_device(given.values())
    bound = {}
    for n in kernel.inputs:
        d = kernel.program.decl(n)
        bound[n] = bind_operand(given[n], n, d.format, d.dtype, device)
    results = kernel._runner.run(bound)
    outs = {n: _present(results[n], kernel.program.decl(n)) for n in kernel.outputs if n in results}
    return outs[kernel.outputs[-1]] if len(kernel.outputs) == 1 else outs


from ...fastcall import FALLBACK as _FALLBACK  # noqa: E402
from ...kernel_cache import LRUCache  # noqa: E402
from .attention import AttentionTemplate  # noqa: E402
from .attention import match as match_attention  # noqa: E402
from .fast import TritonFastCall  # noqa: E402
from .spgemm import SpgemmTemplate  # noqa: E402
from .spgemm import match as match_spgemm  # noqa: E402

_EINSUM = LRUCache()  # at most $SPARSEC_KERNEL_CACHE_SIZE kernels (sparsec.kernel_cache)


def einsum(subscripts: str, *operands: Any, out_format=None, dtype: Any = None) -> Any:
    """``sc.einsum(..., target="triton")`` with device-resident operands and results (see :func:`call`)."""
    from ...api import (Kernel, _einsum_out_format, _normalize_dtype, _operand_name, as_logical, build_program,
                        einsum_dtype, operand_rank)
    from ...formats import as_format
    from ...frontend import parse_einsum

    names = [_operand_name(k) for k in range(len(operands))]
    stmt = parse_einsum(subscripts, names, "out")
    device = pick_device(operands)
    bound = [bind_operand(x, n, None, None, device) for x, n in zip(operands, names)]
    logical = False
    if dtype is None:
        dtype, logical = einsum_dtype([t.dtype for t in bound])
    dtype = _normalize_dtype(dtype, "einsum dtype")
    ranks = [operand_rank(x) for x in operands]   # a scalar is bound as its one element, but is 0-d
    fmts = {n: (t.format if r else as_format("dense", 0)) for n, t, r in zip(names, bound, ranks)}
    out_fmt = _einsum_out_format(out_format, len(stmt.output.indices), fmts.values())
    key = (subscripts.replace(" ", ""), tuple(fmts.values()), dtype, out_fmt)
    kernel = _EINSUM.get(key)
    if kernel is None:
        stmt = parse_einsum(subscripts, names, "out", ranks=ranks)  # names the operand
        kernel = Kernel(build_program([stmt], fmts, dtype, out_fmt), "triton", None, "einsum")
        _EINSUM.put(key, kernel)
    result = call(kernel, *bound)
    return as_logical(result) if logical else result
