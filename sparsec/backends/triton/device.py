"""Device runtime of the Triton backend: tensors, binding and the statement runner on torch.

* :class:`DeviceTensor` -- an :class:`sparsec.Tensor` whose index buffers and values
  are torch tensors on one device (CUDA, or the CPU under ``TRITON_INTERPRET=1``).
  It supports what results need: ``to_torch()`` (a dense torch tensor, or
  ``sparse_csr``/``sparse_csc``/``sparse_bsr``/``sparse_coo`` on the same device),
  ``to_numpy()``, ``to_scipy()``, ``to(format)``, ``astype``, ``to_host()`` (a plain
  numpy-backed Tensor). Other numpy-based Tensor methods are not available on it.
* :func:`bind_operand` -- numpy, scipy, sc.Tensor, torch strided / sparse_csr /
  sparse_csc / sparse_coo / sparse_bsr (CPU or CUDA) -> DeviceTensor on the chosen
  device. **torch tensors are bound without leaving their device** (CSR/CSC are
  checked for canonical form on the device, COO is coalesced there); everything
  else is converted on the host and copied once. Format conversions of device
  operands (``A`` is CSR but the kernel wants CSC) **round-trip through the host**
  (numpy conversion code); so do sparse outputs in formats other than CSR-like
  ``[dense, compressed]``.
* :class:`DeviceRunner` -- the runtime's :class:`~sparsec.runtime.StatementRunner`
  with every array hook on torch: outputs, counts and offsets of sparse outputs,
  workspaces (one slice per program of a persistent grid) stay on the device; the
  only host synchronizations are reading the parallel range and the total entry
  count of a sparse output (to allocate it).

Device choice (:func:`pick_device`): CUDA when an operand already lives on CUDA;
otherwise the CPU when ``TRITON_INTERPRET=1``; otherwise CUDA when available (CPU
inputs are copied over); otherwise :class:`~sparsec.errors.BackendError`.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Mapping

import numpy as np

from ...errors import BackendError, FormatError, PerformanceWarning
from ...formats import Format, fit_width, parse_format
from ...ir import loop_ir as L
from ...runtime import StatementRunner, as_tensor, check_operand_ndim, check_value_cast
from ...tensor import Tensor
from .launch import interpreting

_INT32_MAX = 2**31 - 1


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover
        raise BackendError("the triton target needs PyTorch (pip install torch)") from None
    return torch


def torch_dtype(dt: Any):
    torch = _torch()
    name = str(dt).replace("torch.", "")
    if name == "bool":
        return torch.bool
    return getattr(torch, name)


class _BF16:
    """Stands in for a numpy dtype of bfloat16 values (numpy has none)."""

    name = "bfloat16"
    kind = "f"

    def __str__(self) -> str:
        return "bfloat16"

    def __repr__(self) -> str:
        return "dtype('bfloat16')"

    def __eq__(self, other: object) -> bool:
        return str(other) in ("bfloat16", "torch.bfloat16")

    def __hash__(self) -> int:
        return hash("bfloat16")


BF16 = _BF16()


def dtype_name(t: Any) -> str:
    return str(t.dtype).replace("torch.", "")


def _structure(fmt: Format) -> Format:
    return fmt.with_widths(32, 32)


@functools.lru_cache(maxsize=256)
def _is(fmt: Format, short: str) -> bool:
    """``fmt`` is the named format up to index widths (cached: templates ask on every call)."""
    try:
        return _structure(fmt) == parse_format(short, fmt.ndim)
    except FormatError:
        return False


class DeviceTensor(Tensor):
    """A Tensor whose buffers are torch tensors on one device (see the module docs)."""

    __slots__ = ()

    @property
    def dtype(self):  # type: ignore[override]
        name = dtype_name(self.values)
        return BF16 if name == "bfloat16" else np.dtype(name)

    @property
    def device(self):
        return self.values.device

    def __repr__(self) -> str:
        return (f"DeviceTensor(name={self.name!r}, shape={self.shape}, format={self.format}, dtype={self.dtype}, "
                f"nse={self.nse}, device={self.device})")

    def renamed(self, name: str | None) -> "DeviceTensor":
        return DeviceTensor(self.format, self.shape, self.levels, self.values, name)

    def to_device(self, device: Any = "cuda") -> "DeviceTensor":
        """This tensor on ``device`` (itself when it is there already)."""
        device = _torch().device(device)
        if self.values.device == device or (device.index is None and self.values.device.type == device.type):
            return self
        levels = [{k: v.to(device) for k, v in lv.items()} for lv in self.levels]
        return DeviceTensor(self.format, self.shape, levels, self.values.to(device), self.name)

    def to_host(self) -> Tensor:
        """A numpy-backed copy (bfloat16 values become float32)."""
        torch = _torch()
        vals = self.values.detach()
        if vals.dtype == torch.bfloat16:
            vals = vals.float()
        levels = [{k: v.detach().cpu().numpy() for k, v in lv.items()} for lv in self.levels]
        return Tensor(self.format, self.shape, levels, vals.cpu().numpy(), self.name)

    def _dense_torch(self):
        order = [e.dim for e in self.format.exprs]
        arr = self.values.reshape(self.level_sizes)
        return arr.permute(*np.argsort(order).tolist()) if order != sorted(order) else arr

    def to_numpy(self) -> np.ndarray:
        if self.format.is_dense and not self.format.is_blocked:
            v = self._dense_torch()
            torch = _torch()
            if v.dtype == torch.bfloat16:
                v = v.float()
            return np.ascontiguousarray(v.detach().cpu().numpy())
        return self.to_host().to_numpy()

    def to_scipy(self) -> Any:
        return self.to_host().to_scipy()

    def to_torch(self) -> Any:
        """Dense: a strided tensor; csr / csc / bsr / coo: the torch sparse layout; on this tensor's device."""
        torch = _torch()
        fmt = self.format
        if fmt.is_dense and not fmt.is_blocked:
            return self._dense_torch().contiguous()
        if _is(fmt, "csr"):
            return torch.sparse_csr_tensor(self.levels[1]["pos"], self.levels[1]["crd"], self.values, size=self.shape,
                                           check_invariants=False)
        if _is(fmt, "csc"):
            return torch.sparse_csc_tensor(self.levels[1]["pos"], self.levels[1]["crd"], self.values, size=self.shape,
                                           check_invariants=False)
        if self.ndim == 2 and fmt.is_blocked:
            bm, bn = fmt.block_sizes()
            if _is(fmt, f"bsr({bm}, {bn})") and self.shape[0] % bm == 0 and self.shape[1] % bn == 0:
                return torch.sparse_bsr_tensor(self.levels[1]["pos"], self.levels[1]["crd"],
                                               self.values.reshape(-1, bm, bn), size=self.shape, check_invariants=False)
        host = self.to_host().to_torch()
        if self.values.dtype == torch.bfloat16:
            host = host.to(torch.bfloat16)
        return host.to(self.device)

    def to(self, format) -> "DeviceTensor":  # type: ignore[override]
        """This tensor in another format; a change of structure goes through the host."""
        from ...formats import as_format

        target = as_format(format, self.ndim)
        if target == self.format:
            return self
        if _structure(target) == _structure(self.format):
            return self.at_widths(_fitting(self, target))
        return from_host(self.to_host().to(target), self.device, self.name, like=self.values.dtype)

    def at_widths(self, fmt: Format) -> "DeviceTensor":
        """The same tensor with index buffers cast to exactly ``fmt``'s widths (same structure; no fit check)."""
        dts = {"pos": index_dtype(fmt.pos_width), "crd": index_dtype(fmt.crd_width)}
        levels = [{k: v.to(dts[k]) if k in dts else v for k, v in lv.items()} for lv in self.levels]
        return DeviceTensor(fmt, self.shape, levels, self.values, self.name)

    def astype(self, dtype) -> "DeviceTensor":  # type: ignore[override]
        """The same tensor with values cast to ``dtype`` (a name, numpy or torch dtype; one of sparsec's value dtypes)."""
        from ...api import _normalize_dtype

        name = _normalize_dtype(dtype, f"tensor {self.name!r}: astype")
        return DeviceTensor(self.format, self.shape, self.levels, self.values.to(torch_dtype(name)), self.name)

    def to_coo(self, *args, **kwargs):  # type: ignore[override]
        """The host tensor's :meth:`Tensor.to_coo` (its numpy coordinates)."""
        return self.to_host().to_coo(*args, **kwargs)

    def level_coords(self, *args, **kwargs):  # type: ignore[override]
        """The host tensor's :meth:`Tensor.level_coords` (numpy arrays)."""
        return self.to_host().level_coords(*args, **kwargs)

    def copy(self) -> "DeviceTensor":  # type: ignore[override]
        levels = [{k: v.clone() for k, v in lv.items()} for lv in self.levels]
        return DeviceTensor(self.format, self.shape, levels, self.values.clone(), self.name)

    def validate(self) -> None:
        self.to_host().validate()


def from_host(t: Tensor, device, name: str | None = None, like=None) -> DeviceTensor:
    """Copy a numpy-backed Tensor to ``device``."""
    torch = _torch()
    levels = [{k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in lv.items()} for lv in t.levels]
    vals = torch.from_numpy(np.ascontiguousarray(t.values)).to(device)
    if like is not None and vals.dtype != like:
        vals = vals.to(like)
    return DeviceTensor(t.format, t.shape, levels, vals, name if name is not None else t.name)


def index_dtype(width: int):
    """The torch dtype of ``width``-bit index buffers (int8, int16, int32, int64)."""
    return getattr(_torch(), f"int{width}")


def csr_result(fmt: Format, shape: tuple[int, ...], pos: Any, crd: Any, vals: Any, name: str,
               copy_pos: bool = False) -> DeviceTensor:
    """A CSR output from row pointers and column coordinates of any integer dtypes: ``fmt`` widened
    where the result needs it (the host rule, positions up to nnz and columns below ``shape[1]``),
    the buffers cast to those widths. ``copy_pos``: copy ``pos`` even when it has that width already
    (the caller keeps it)."""
    from ...tensor import _needed_format

    f = _needed_format(fmt, fmt.level_sizes(shape), (int(shape[0]), vals.numel()))
    pos = pos.to(index_dtype(f.pos_width), copy=copy_pos)
    return DeviceTensor(f, shape, [{}, {"pos": pos, "crd": crd.to(index_dtype(f.crd_width))}], vals, name)


def _width(t) -> int:
    return {"int8": 8, "int16": 16, "int32": 32}.get(dtype_name(t), 64)


def _fitting(t: Tensor, fmt: Format) -> Format:
    """``fmt`` (same structure as ``t``) widened where ``t``'s sizes need it (the host rule, _needed_format)."""
    from ...tensor import _needed_format

    return _needed_format(fmt, t.level_sizes, t._position_counts())


def _canonical_compressed(pos, crd, n_major: int, n_minor: int) -> bool:
    """pos/crd of a CSR/CSC matrix are canonical (monotone, in range, sorted, unique): checked on the device."""
    torch = _torch()
    if pos.numel() != n_major + 1:
        return False
    checks = [pos[0] == 0, pos[-1] == crd.numel()]
    if n_major:
        checks.append((pos[1:] >= pos[:-1]).all())
    if crd.numel():
        checks += [(crd >= 0).all(), (crd < n_minor).all()]
        if crd.numel() > 1:
            starts = torch.zeros(crd.numel(), dtype=torch.bool, device=crd.device)
            row_starts = pos[:-1][pos[:-1] < crd.numel()].long()
            starts[row_starts] = True
            checks.append(((crd[1:] > crd[:-1]) | starts[1:]).all())
    return bool(torch.stack([torch.as_tensor(c, device=pos.device) for c in checks]).all().item())


def _from_torch(x, name: str, device) -> DeviceTensor | None:
    """Bind a torch tensor on its own device (moved to ``device``), or None when it needs the host path."""
    torch = _torch()
    x = x.detach().to(device)
    layout = x.layout
    shape = tuple(int(n) for n in x.shape)
    if layout == torch.strided:
        if x.ndim == 0:
            x = x.reshape(1)
            shape = (1,)
        fmt = parse_format("dense", len(shape))
        if x.numel() > _INT32_MAX:
            fmt = fmt.with_widths(64, 64)
        return DeviceTensor(fmt, shape, [{} for _ in shape], x.contiguous().reshape(-1), name)
    if x.ndim != 2 and layout != torch.sparse_coo or x.dense_dim() != 0:
        return None
    if layout in (torch.sparse_csr, torch.sparse_csc):
        kind = "csr" if layout == torch.sparse_csr else "csc"
        ptr, idx = (x.crow_indices(), x.col_indices()) if kind == "csr" else (x.ccol_indices(), x.row_indices())
        n_major, n_minor = (shape[0], shape[1]) if kind == "csr" else (shape[1], shape[0])
        if ptr.dtype != idx.dtype or not _canonical_compressed(ptr, idx, n_major, n_minor):
            return None
        w = _width(ptr)
        fmt = parse_format(kind, 2).with_widths(w, w)
        return DeviceTensor(fmt, shape, [{}, {"pos": ptr, "crd": idx}], x.values(), name)
    if layout == torch.sparse_bsr:
        blocks = x.values()
        bm, bn = int(blocks.shape[1]), int(blocks.shape[2])
        ptr, idx = x.crow_indices(), x.col_indices()
        if shape[0] % bm or shape[1] % bn or not _canonical_compressed(ptr, idx, shape[0] // bm, shape[1] // bn):
            return None
        w = _width(ptr)
        fmt = parse_format(f"bsr({bm}, {bn})", 2).with_widths(w, w)
        return DeviceTensor(fmt, shape, [{}, {"pos": ptr, "crd": idx}, {}, {}], blocks.reshape(-1), name)
    if layout == torch.sparse_coo:
        x = x.coalesce()
        ind = x.indices()
        nnz = int(ind.shape[1])
        fmt = parse_format("coo", len(shape)).with_widths(64, 64)
        pos = torch.tensor([0, nnz], dtype=torch.int64, device=x.device)
        levels: list[dict] = [{"pos": pos, "crd": ind[0].contiguous()}]
        for d in range(1, len(shape)):
            levels.append({"crd": ind[d].contiguous()})
        return DeviceTensor(fmt, shape, levels, x.values(), name)
    return None


_SMS: dict[int, int] = {}   # CUDA device index -> multiprocessors


def sm_count(device: Any, default: int) -> int:
    """Multiprocessors of a CUDA ``device`` (queried once per device), or ``default`` elsewhere / interpreting.

    ``torch.cuda.get_device_properties`` costs ~9 us a call on the GPU hosts; launch set-ups ask per call.
    """
    if getattr(device, "type", None) != "cuda" or interpreting():
        return default
    torch = _torch()
    index = device.index if device.index is not None else torch.cuda.current_device()
    n = _SMS.get(index)
    if n is None:
        n = _SMS[index] = int(torch.cuda.get_device_properties(index).multi_processor_count)
    return n


def pick_device(operands) -> Any:
    """The device a call runs on (see the module docs)."""
    torch = _torch()
    for x in operands:
        dev = None
        if isinstance(x, DeviceTensor):
            dev = x.device
        elif isinstance(x, torch.Tensor):
            dev = x.device
        if dev is not None and dev.type == "cuda":
            return dev
    if interpreting():
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    raise BackendError(
        "the 'triton' target needs an NVIDIA GPU (torch.cuda.is_available() is False here) or Triton's CPU "
        "interpreter: set the environment variable TRITON_INTERPRET=1 (before the first kernel call) to run "
        "the generated Triton code on the CPU (slow; for tests), or use target='cpu'")


def bind_operand(x: Any, name: str, fmt: Format | None, dtype: str | None, device) -> DeviceTensor:
    """Any supported operand -> DeviceTensor on ``device`` in ``fmt`` with ``dtype``.

    A 0-d operand (``fmt`` of no dimensions) is bound as one element: a 0-d or one-element
    tensor, or a Python number.
    """
    torch = _torch()
    t: DeviceTensor | None = None
    uploaded = False          # host buffers copied to the device by this call
    if isinstance(x, DeviceTensor):
        t = x.to_device(device)
    elif isinstance(x, torch.Tensor):
        uploaded = x.device.type != torch.device(device).type
        t = _from_torch(x, name, device)
        if t is None:
            host = x.detach().cpu()
            if host.dtype == torch.bfloat16:
                t = from_host(as_tensor(host.float(), name), device, name, like=torch.bfloat16)
            else:
                t = from_host(as_tensor(host, name), device, name)
    if t is None:
        t = from_host(as_tensor(x, name), device, name)
        uploaded = True
    converted = None
    check_operand_ndim(t.shape, fmt, name)
    if fmt is not None and fmt.ndim == 0 and t.shape == (1,) and t.format.is_dense:
        pass   # a 0-d operand travels as its one element (the runtime's convention: see infer_extents)
    elif fmt is not None and t.format != fmt:
        if t.format.with_widths(fmt.pos_width, fmt.crd_width) != fmt:
            converted = t.format
            t = t.to(fmt)
        if t.format != fmt:
            t = narrowed(t, fmt, name)
    if dtype is not None and dtype_name(t.values) != dtype:
        check_value_cast(dtype_name(t.values), dtype, name,
                         lambda: (t.values.min().item(), t.values.max().item()) if t.values.numel() else None)
        t = t.astype(dtype)
    if t.name != name:
        t = t.renamed(name)
    if getattr(device, "type", None) == "cuda" and (converted is not None or (uploaded and t.format.is_sparse)):
        note = repeated_work(x, name, converted, t.format)
        if note:
            warnings.warn(note, PerformanceWarning, stacklevel=4)
    return t


#: (id of an operand object, operand name) -> seen: objects some call uploaded or converted (bounded)
_BOUND_BEFORE: dict[tuple[int, str], bool] = {}


def repeated_work(x: Any, name: str, converted: Format | None, fmt: Format) -> str:
    """The warning for an operand object that an earlier call already uploaded or converted, else ``""``.

    A host sparse operand is copied to the GPU, and an operand in another format converted
    (through the host), again at every call: both cost far more than the kernel (a 4096x4096
    bitmap weight at 80 % zeros: ~1.7 ms to upload, ~35 µs for the H100 kernel). The first
    time an object is seen is recorded, not reported (a one-shot ``einsum`` cannot avoid it).
    """
    key = (id(x), name)
    if key not in _BOUND_BEFORE:
        if len(_BOUND_BEFORE) >= 256:
            _BOUND_BEFORE.clear()
        _BOUND_BEFORE[key] = True
        return ""
    what = (f"converted from {converted} to {fmt} (through the host)" if converted is not None
            else "copied from host memory to the GPU")
    return (f"sparsec: operand {name!r} is {what} at every call; convert and upload it once and pass the "
            f"result: {name} = sc.Tensor.from_torch(..., format=\"{fmt}\").to_device(\"cuda\")")


def narrowed(t: DeviceTensor, fmt: Format, name: str) -> DeviceTensor:
    """``t`` (``fmt``'s structure, other widths) with the buffers of ``fmt``'s 8/16-bit widths cast to them.

    A kernel compiled for 8- or 16-bit indices loads them as such: a tensor whose entries do
    not fit raises the FormatError naming the operand. 32/64-bit widths are left to the
    launch, which reads 64-bit buffers of a 32-bit kernel when the indices need 64 bits.
    """
    if min(fmt.pos_width, fmt.crd_width) >= 32:
        return t
    from ...tensor import check_index_widths

    target = fmt.with_widths(fmt.pos_width if fmt.pos_width < 32 else max(fmt.pos_width, t.format.pos_width),
                             fmt.crd_width if fmt.crd_width < 32 else max(fmt.crd_width, t.format.crd_width))
    check_index_widths(t, target, name)
    return t.at_widths(target)


def host_eval(e: L.LExpr, bufs: Mapping[str, Any], scalars: Mapping[str, int]) -> int:
    """Evaluate a small index expression (bounds, sizes) on the host; loads read single elements."""
    if isinstance(e, L.Const):
        return int(e.value)
    if isinstance(e, L.Var):
        return int(scalars[e.name])
    if isinstance(e, L.Cast):
        return host_eval(e.a, bufs, scalars)
    if isinstance(e, L.Load):
        i = host_eval(e.index, bufs, scalars)
        b = bufs[e.buffer]
        return int(b[i].item()) if hasattr(b[i], "item") else int(b[i])
    if isinstance(e, L.BinOp):
        a, b = host_eval(e.a, bufs, scalars), host_eval(e.b, bufs, scalars)
        ops = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "floordiv": lambda: a // b,
               "mod": lambda: a % b, "max": lambda: max(a, b), "min": lambda: min(a, b),
               "div": lambda: int(a / b)}
        if e.op in ops:
            return int(ops[e.op]())
    raise BackendError(f"cannot evaluate {e!r} on the host")


class DeviceRunner(StatementRunner):
    """StatementRunner whose arrays are torch tensors on the device (see the module docs)."""

    device: Any = None

    def run(self, tensors: Mapping[str, Any]) -> Any:
        self.device = pick_device(tensors.values())
        self._uploaded: dict[int, DeviceTensor] = {}
        return super().run(tensors)

    # -- array hooks --------------------------------------------------------------------------
    def full(self, n: int, value: Any, dtype: Any) -> Any:
        return _torch().full((int(n),), value, dtype=torch_dtype(dtype), device=self.device)

    def empty(self, n: int, dtype: Any) -> Any:
        from ...runtime import POISON, poison_value

        if POISON and dtype != "bfloat16":
            return self.full(n, poison_value(np.dtype(dtype)), dtype)
        return _torch().empty((int(n),), dtype=torch_dtype(dtype), device=self.device)

    def exclusive_cumsum(self, counts: Any) -> tuple[Any, int]:
        torch = _torch()
        offsets = torch.zeros_like(counts)
        if counts.numel() > 1:
            torch.cumsum(counts[:-1], 0, out=offsets[1:])
        total = int((offsets[-1] + counts[-1]).item())
        return offsets, total

    def _dev(self, t: Any) -> DeviceTensor:
        if isinstance(t, DeviceTensor):
            return t.to_device(self.device)
        key = id(t)
        if key not in self._uploaded:
            self._uploaded[key] = from_host(t, self.device)
        return self._uploaded[key]

    def buffers_of(self, t: Any, prefix: str) -> dict[str, Any]:
        d = self._dev(t)
        out = {f"{prefix}_vals": _nonempty(d.values)}
        for k, lvl in enumerate(d.format.levels):
            for part in lvl.buffers:
                out[f"{prefix}_{part}{k}"] = _nonempty(d.levels[k][part])
        return out

    def convert(self, t: Any, fmt: Format, name: str) -> Any:
        return self._dev(t).to(fmt).renamed(name)

    def at_widths(self, t: Any, fmt: Format, name: str) -> Any:
        d = self._dev(t)
        if d.format.with_widths(fmt.pos_width, fmt.crd_width) != fmt:
            return t
        return narrowed(d, fmt, name)

    def dense_result(self, fmt: Format, shape: tuple[int, ...], vals: Any, name: str) -> Any:
        if not fmt.ndim:
            torch = _torch()
            v = vals.float() if vals.dtype == torch.bfloat16 else vals
            return Tensor.from_numpy(v.detach().cpu().numpy().reshape(1), name=name)
        return DeviceTensor(fmt, shape, [{} for _ in fmt.levels], vals, name)

    def pattern_result(self, fmt: Format, shape: tuple[int, ...], src: Any, vals: Any, name: str) -> Any:
        d = self._dev(src)
        return DeviceTensor(fmt, shape, [dict(lv) for lv in d.levels], vals, name)

    def compressed_result(self, fmt: Format, shape: tuple[int, ...], offsets: Any, crd: Any, vals: Any,
                          name: str) -> Any:
        total = int(offsets[-1]) if offsets.numel() else 0
        w = fit_width(fmt.pos_width, total)
        pos = offsets.to(index_dtype(w))
        return DeviceTensor(fmt.with_widths(w, fmt.crd_width), shape, [{}, {"pos": pos, "crd": crd}], vals, name)

    def entries_result(self, fmt: Format, shape: tuple[int, ...], crds: list, vals: Any, name: str,
                       presorted: bool) -> Any:
        torch = _torch()
        if presorted and fmt.ndim == 2 and _is(fmt, "csr"):
            rows, cols = crds
            n = int(shape[0])
            counts = torch.bincount(rows, minlength=n) if rows.numel() else torch.zeros(n, dtype=torch.int64,
                                                                                        device=vals.device)
            pos = torch.zeros(n + 1, dtype=torch.int64, device=vals.device)
            torch.cumsum(counts, 0, out=pos[1:])
            return csr_result(fmt, shape, pos, cols, vals, name)
        host_vals = vals.float() if vals.dtype == torch.bfloat16 else vals
        host = StatementRunner.entries_result(self, fmt, shape, [c.cpu().numpy() for c in crds],
                                              host_vals.cpu().numpy(), name, presorted)
        return from_host(host, self.device, name, like=vals.dtype)

    # -- launching ----------------------------------------------------------------------------
    def _launch(self, fn, kernel: L.Kernel, buffers: dict[str, Any], scalars: dict[str, int]) -> None:
        names = self._param_names(kernel)
        bufs = {k: v for k, v in buffers.items() if k in names}
        scal = dict(scalars)
        par = self.low.parallel
        n_iter = 1
        if par is not None and "sc_lo" in names:
            lo, hi = host_eval(par.lo, bufs, scalars), host_eval(par.hi, bufs, scalars)
            if hi <= lo:
                return
            scal["sc_lo"], scal["sc_hi"] = lo, hi
            n_iter = hi - lo
        programs = fn.programs(n_iter, self.device) if hasattr(fn, "programs") else 1
        for w in self.low.workspaces:
            if w.name not in names:
                continue
            size = max(host_eval(w.size, {}, scalars), 1)
            bufs[w.name] = self.full(programs * size, w.fill, np.dtype(w.dtype))
            scal[f"_t_ws:{w.name}"] = size
        if hasattr(fn, "launchable_as_is") and fn.launchable_as_is(bufs):
            fn.launch(bufs, scal)   # the launch set-up memoized across calls on the same operands
        else:
            fn(bufs, scal)


def _nonempty(t):
    """Triton wants a real pointer: an empty buffer is replaced by one zero (never read)."""
    if t.numel() == 0:
        return _torch().zeros(1, dtype=t.dtype, device=t.device)
    return t
