"""``sparsec.nn``: pruned linear layers for PyTorch inference, computed by sparsec kernels.

This module needs PyTorch, so it is not imported by ``import sparsec``; import it
explicitly::

    import torch
    import sparsec.nn as snn

    dense = torch.nn.Linear(4096, 4096, dtype=torch.float16, device="cuda")
    layer = snn.SparseLinear.from_dense(dense, sparsity=0.8)            # magnitude pruning -> CSR
    layer = snn.SparseLinear.from_dense(dense, pattern="2:4")           # N:M pruning     -> nm(2, 4)
    layer = snn.SparseLinear.from_dense(dense, block=(32, 32), sparsity=0.9)  # block pruning -> bsr(32, 32)
    y = layer(x)                          # x: (..., in_features), like dense(x) with the pruned weight
    model = torch.compile(model)          # works: the forward is the custom op ``sparsec::sparse_linear``

What :class:`SparseLinear` does
-------------------------------
* **Pruning** (also usable on their own, on any device): :func:`magnitude_prune`
  (keep the largest ``|w|``: exactly ``round(sparsity * numel)`` entries are zeroed),
  :func:`nm_prune` (keep the ``n`` largest of every ``m`` consecutive input weights
  of a row; a partial last group keeps at most ``n``), :func:`block_prune` (zero the
  ``round(sparsity * nblocks)`` blocks of smallest L2 norm). Each returns the pruned
  *dense* weight.
* **Format**: for unstructured sparsity ``bitmap`` on the Triton target and ``csr`` on
  the CPU; ``nm(n, m)`` for N:M patterns, ``bsr(bm, bn)`` for block sparsity; ``format=``
  picks another 2-D format (``csr``, ``csc``, ...). The sparse weight is converted once; its index and value arrays are
  registered buffers of the module, and the format travels as the module's extra
  state, so ``state_dict()`` / ``load_state_dict()`` round-trip (into a layer of the
  same shape, whatever its pruning), and ``.to(device)``, ``.half()`` work (the kernel
  binding is rebuilt after a move).
* **Target**: ``"triton"`` when the weight is on CUDA, ``"cpu"`` (LLVM) otherwise;
  ``target=`` overrides (``"triton"`` on CPU tensors needs ``TRITON_INTERPRET=1``;
  ``"cpu"`` on a CUDA layer computes on the host copy and returns to the device).
  The weight is bound once as a sparsec tensor
  (:class:`sparsec.backends.triton.DeviceTensor` on the GPU, :class:`sparsec.Tensor`
  on the CPU) and reused by every call.
* **Kernels** (compiled once per format/dtype/target, shared by all layers):

  - triton, several tokens: ``Yt[o,t] = W[o,k] * Xt[k,t]`` (SpMM over the transposed
    activations, so the grid runs over the weight's rows; the form
    ``Y[t,o] = X[t,k] * W[o,k]`` would run it over tokens: few programs for few
    tokens); one token: ``y[o] = W[o,k] * x[k]``;
  - cpu: ``Y[t,o] = X[t,k] * W[o,k]`` below 8 tokens (SpMV-like, no transposes),
    ``Yt = W Xt`` from 8 tokens on.

* **Precision**: float16/bfloat16 products are summed in float32. The Triton fast
  paths (CSR, BSR) accumulate in float32 registers and round once; for other formats
  on Triton (the bitmap / N:M tile templates, which then split K across programs with
  atomic float32 adds) and for every CPU kernel the output is declared float32
  (half-precision loads, float32 sums) and cast back. bfloat16 on the CPU runs in float32 (the LLVM
  backend has no bfloat16): results are those of the float32 layer rounded to bfloat16.
* **Bias**: added by torch after the sparse product.
* **Custom op**: the sparse product is the torch custom op ``sparsec::sparse_linear``
  (``torch.library.custom_op``, with a ``register_fake`` shape function), so
  ``torch.compile`` sees one opaque node (``fullgraph=True`` works) instead of
  breaking the graph on sparsec's Python. The op takes the layer by an integer
  handle (the weight buffers are bound once, not re-bound per call), so a compiled
  graph is tied to its process and cannot be serialized with ``torch.export``.
  Inference only: the op has no autograd formula (backward through it raises).
* ``extra_repr`` shows in/out features, format, measured sparsity, dtype and target.
"""

from __future__ import annotations

import itertools
import math
import operator
import sys
import threading
import weakref
from typing import Any, Sequence

import numpy as np
import torch

from .errors import FormatError
from .formats import Format, parse_format

__all__ = ["SparseLinear", "magnitude_prune", "nm_prune", "block_prune", "parse_pattern", "sparse_linear"]

_TARGETS = ("cpu", "triton")


# ------------------------------------------------------------------------------------ pruning
def _check_sparsity(sparsity: Any) -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"sparsity must be a number in [0, 1], got {sparsity!r}") from None
    if not 0.0 <= s <= 1.0:  # also rejects NaN
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity!r}")
    return s


def magnitude_prune(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """``weight`` with its ``round(sparsity * numel)`` smallest-magnitude entries set to zero.

    Ties are broken by position (``torch.topk``), so the count is exact.
    """
    s = _check_sparsity(sparsity)
    w = weight.detach()
    n_zero = int(round(s * w.numel()))
    if n_zero <= 0:
        return w.clone()
    flat = w.reshape(-1)
    mask = torch.ones(flat.numel(), dtype=torch.bool, device=w.device)
    mask[torch.topk(flat.abs().float(), n_zero, largest=False, sorted=False).indices] = False
    return torch.where(mask, flat, torch.zeros((), dtype=w.dtype, device=w.device)).reshape(w.shape)


def parse_pattern(pattern: str | Sequence[int]) -> tuple[int, int]:
    """``"2:4"`` / ``(2, 4)`` -> ``(2, 4)``, checked (1 <= n <= m)."""
    if isinstance(pattern, str):
        parts = pattern.replace(" ", "").split(":")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"pattern must look like '2:4', got {pattern!r}")
        n, m = int(parts[0]), int(parts[1])
    else:
        try:
            vals = [operator.index(v) for v in pattern]      # 2.5 is refused, not truncated
        except (TypeError, ValueError):
            raise ValueError(f"pattern must be 'n:m' or a pair of integers, got {pattern!r}") from None
        if len(vals) != 2:
            raise ValueError(f"pattern must be 'n:m' or a pair of integers, got {pattern!r}")
        n, m = vals
    if not 1 <= n <= m:
        raise ValueError(f"an n:m pattern needs 1 <= n <= m, got {n}:{m}")
    return n, m


def nm_prune(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest-magnitude entries of every group of ``m`` consecutive columns, per row."""
    n, m = parse_pattern((n, m))
    w = weight.detach()
    if w.ndim != 2:
        raise ValueError(f"nm_prune needs a 2-D weight, got shape {tuple(w.shape)}")
    rows, cols = w.shape
    pad = (-cols) % m
    wp = torch.nn.functional.pad(w, (0, pad)) if pad else w
    groups = wp.reshape(rows, (cols + pad) // m, m)
    keep = groups.abs().float().topk(n, dim=2).indices
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=w.device).scatter_(2, keep, True)
    out = torch.where(mask, groups, torch.zeros((), dtype=w.dtype, device=w.device)).reshape(rows, cols + pad)
    return out[:, :cols].contiguous() if pad else out


def block_prune(weight: torch.Tensor, block: Sequence[int], sparsity: float) -> torch.Tensor:
    """Zero the ``round(sparsity * nblocks)`` blocks of smallest L2 norm (partial edge blocks count as blocks)."""
    s = _check_sparsity(sparsity)
    try:
        bm, bn = (operator.index(b) for b in block)
    except (TypeError, ValueError):
        raise ValueError(f"block must be a pair of positive integers, got {block!r}") from None
    if bm < 1 or bn < 1:
        raise ValueError(f"block sizes must be positive, got {block!r}")
    w = weight.detach()
    if w.ndim != 2:
        raise ValueError(f"block_prune needs a 2-D weight, got shape {tuple(w.shape)}")
    rows, cols = w.shape
    pr, pc = (-rows) % bm, (-cols) % bn
    wp = torch.nn.functional.pad(w, (0, pc, 0, pr)) if pr or pc else w
    nbr, nbc = wp.shape[0] // bm, wp.shape[1] // bn
    norms = wp.float().reshape(nbr, bm, nbc, bn).pow(2).sum(dim=(1, 3)).reshape(-1)
    n_zero = int(round(s * norms.numel()))
    keep = torch.ones(norms.numel(), dtype=torch.bool, device=w.device)
    if n_zero > 0:
        keep[torch.topk(norms, n_zero, largest=False, sorted=False).indices] = False
    mask = keep.reshape(nbr, 1, nbc, 1).expand(nbr, bm, nbc, bn).reshape(nbr * bm, nbc * bn)
    out = torch.where(mask, wp, torch.zeros((), dtype=w.dtype, device=w.device))
    return out[:rows, :cols].contiguous()


# ------------------------------------------------------------------------------------ kernels
_KERNELS: dict[tuple, Any] = {}
_KLOCK = threading.Lock()

_TEXTS = {
    "spmm_t": "Yt[o,t] = W[o,k] * Xt[k,t]",     # W (O, K) sparse, Xt (K, T) dense, Yt (O, T)
    "rows": "Y[t,o] = X[t,k] * W[o,k]",         # X (T, K) dense, W sparse, Y (T, O)
    "spmv": "y[o] = W[o,k] * x[k]",             # one token
}
_OUT = {"spmm_t": "Yt", "rows": "Y", "spmv": "y"}
_ACT = {"spmm_t": "Xt", "rows": "X", "spmv": "x"}
#: formats whose Triton kernels accumulate half precision in float32 registers (others sum in the output dtype)
_F32_ACC_FORMATS = ("csr", "bsr")


def _kernel(kind: str, fmt: Format, wdtype: str, outdtype: str, target: str):
    """The compiled kernel for one (form, weight format, dtypes, target), shared by all layers."""
    key = (kind, fmt, wdtype, outdtype, target)
    k = _KERNELS.get(key)
    if k is None:
        import sparsec as sc

        with _KLOCK:
            k = _KERNELS.get(key)
            if k is None:
                dtypes = {"W": wdtype, _ACT[kind]: wdtype, _OUT[kind]: outdtype}
                k = sc.compile(_TEXTS[kind], formats={"W": fmt}, dtype=dtypes, target=target,
                               name=f"sparse_linear_{kind}")
                _KERNELS[key] = k
    return k


# ------------------------------------------------------------------------------------ custom op
_LAYERS: "dict[int, weakref.ReferenceType[SparseLinear]]" = {}
_HANDLES = itertools.count(1)


def _run_layer(x: torch.Tensor, handle: int) -> torch.Tensor:
    ref = _LAYERS.get(int(handle))
    layer = ref() if ref is not None else None
    if layer is None:
        raise RuntimeError(f"sparsec::sparse_linear: layer handle {handle} is gone (the SparseLinear was deleted)")
    return layer._product(x)


def _define_op():
    """Register ``sparsec::sparse_linear(x, handle, out_features) -> y`` (torch >= 2.4), else None."""
    lib = getattr(torch, "library", None)
    if lib is None or not hasattr(lib, "custom_op"):
        return None
    existing = getattr(getattr(torch.ops, "sparsec", None), "sparse_linear", None)
    if existing is not None:  # module re-imported (importlib.reload): the op looks layers up in sys.modules
        return existing

    @torch.library.custom_op("sparsec::sparse_linear", mutates_args=())
    def sparse_linear_op(x: torch.Tensor, handle: int, out_features: int) -> torch.Tensor:
        """y = x @ W.T for the pruned weight W of the SparseLinear registered under ``handle``; x is 2-D."""
        # looked up at call time: after a reload, layers register in the new module's table
        return sys.modules[__name__]._run_layer(x, handle)

    @sparse_linear_op.register_fake
    def _(x: torch.Tensor, handle: int, out_features: int) -> torch.Tensor:
        return x.new_empty((x.shape[0], out_features))

    return sparse_linear_op


_OP = _define_op()


def sparse_linear(x: torch.Tensor, handle: int, out_features: int) -> torch.Tensor:
    """``x @ W.T`` (no bias) for the layer registered under ``handle``, through the custom op when torch has one."""
    if _OP is None:
        return _run_layer(x, handle)
    return _OP(x, handle, out_features)


# ------------------------------------------------------------------------------------ the layer
def _torch_dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


def _weight_format(format: Any) -> Format:
    try:
        fmt = parse_format(format, 2)
    except FormatError as e:
        raise ValueError(f"SparseLinear: bad weight format {format!r}: {e}") from None
    if fmt.ndim != 2:
        raise ValueError(f"SparseLinear: the weight format must be 2-D, got {format!r}")
    return fmt


class SparseLinear(torch.nn.Module):
    """``y = x W^T + b`` with a pruned, sparsely stored ``W`` (see the module docs).

    Build it with :meth:`from_dense` (prune an ``nn.Linear``) or :meth:`from_weight`
    (an already pruned dense weight). ``forward`` takes ``(..., in_features)`` and
    returns ``(..., out_features)`` in the layer's dtype on the layer's device.
    """

    #: why the last load_state_dict was refused (forward raises while it is set), else None
    _load_error: str | None = None

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, format: Any = "csr",
                 target: str | None = None, kind: str = "unstructured"):
        super().__init__()
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            raise ValueError(f"SparseLinear needs a 2-D weight tensor, got {getattr(weight, 'shape', weight)!r}")
        if not weight.dtype.is_floating_point:
            raise TypeError(f"SparseLinear needs a floating-point weight, got {weight.dtype}")
        if target is not None and target not in _TARGETS:
            raise ValueError(f"SparseLinear: target must be one of {_TARGETS} or None, got {target!r}")
        w = weight.detach()
        self.out_features, self.in_features = int(w.shape[0]), int(w.shape[1])
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise ValueError(f"SparseLinear: bias must have shape ({self.out_features},), got {tuple(bias.shape)}")
        self.kind = kind
        self._target_override = target
        self._level_keys: list[tuple[int, str]] = []
        self._bound: Any = None
        self._bound_key: tuple | None = None
        self._set_weight(w, _weight_format(format))
        self.bias: torch.Tensor | None
        self.register_buffer("bias", None if bias is None else bias.detach().to(w.device, w.dtype).clone())
        self._register_handle()

    def _register_handle(self) -> None:
        self._handle = next(_HANDLES)
        _LAYERS[self._handle] = weakref.ref(self)
        weakref.finalize(self, _LAYERS.pop, self._handle, None)

    def _set_weight(self, w: torch.Tensor, fmt: Format) -> None:
        """Convert the dense pruned weight to ``fmt`` (once, on the host) and keep its arrays as buffers."""
        import sparsec as sc

        host = w.cpu()
        if host.dtype == torch.bfloat16:
            host = host.float()  # numpy has no bfloat16; the values convert back exactly below
        try:
            st = sc.Tensor.from_torch(host, format=fmt, name="W")
        except FormatError as e:
            raise ValueError(f"SparseLinear: the weight cannot be stored as {fmt}: {e}") from None
        self._replace_buffers(st.format, {(lv, key): torch.from_numpy(np.ascontiguousarray(arr)).to(w.device)
                                          for lv, bufs in enumerate(st.levels) for key, arr in bufs.items()},
                              torch.from_numpy(np.ascontiguousarray(st.values)).to(w.device, w.dtype))

    def _replace_buffers(self, fmt: Format, levels: dict[tuple[int, str], torch.Tensor], values: torch.Tensor) -> None:
        for lv, key in self._level_keys:
            self._buffers.pop(f"w_l{lv}_{key}", None)
        self._level_keys = sorted(levels)
        for (lv, key), arr in sorted(levels.items()):
            self.register_buffer(f"w_l{lv}_{key}", arr)
        self.register_buffer("w_values", values)
        self._fmt_obj = fmt
        self.format = fmt.short_name() or fmt.mlir()
        self._refresh_stats()

    def _refresh_stats(self) -> None:
        self.nnz = int((self.w_values != 0).sum())
        self.sparsity = 1.0 - self.nnz / max(self.out_features * self.in_features, 1)
        self._bound, self._bound_key = None, None

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_dense(cls, linear: torch.nn.Linear, sparsity: float | None = None,
                   pattern: str | Sequence[int] | None = None, block: Sequence[int] | None = None,
                   target: str | None = None, format: Any = None) -> "SparseLinear":
        """Prune ``linear``'s weight and store it sparsely.

        * ``sparsity=s`` alone: magnitude pruning to ``s`` zeros, ``bitmap`` for the Triton target
          (its tile template: 1 bit per weight + the values, expanded in registers for tl.dot;
          measured 2.4-4.4x faster than the CSR kernel on an H100 at 80 % zeros and N <= 64),
          ``csr`` on the CPU;
        * ``pattern="n:m"`` (``"2:4"``, ``(1, 4)``...): N:M pruning along the input features,
          format ``nm(n, m)`` with 8-bit in-block coordinates (``sparsity`` and ``block`` must then be None);
        * ``block=(bm, bn)`` with ``sparsity=s``: block pruning to ``s`` zero blocks, ``bsr(bm, bn)``.

        ``format=`` stores the pruned weight in another 2-D format (``"bitmap"``, ``"nm(2,4,packed)"`` for
        2-bit in-block coordinates: a sixth less memory than 8-bit ones for a 2:4 float16 weight; on an H100
        its kernel ran at 0.81x-1.19x the speed of the 8-bit one for N <= 64, see
        benchmarks/results/h100-dl-item2-packed, ...).
        """
        weight = getattr(linear, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            raise TypeError(f"from_dense needs a torch.nn.Linear (a module with a 2-D weight), got "
                            f"{type(linear).__name__}")
        w = weight.detach()
        b = linear.bias.detach() if getattr(linear, "bias", None) is not None else None
        if pattern is not None:
            if sparsity is not None or block is not None:
                raise ValueError("give pattern= alone (N:M pruning), or sparsity= (with block= for block "
                                 "pruning), not both")
            n, m = parse_pattern(pattern)
            # in-block coordinates are below m: 8 bits hold them (a 2:4 float16 weight then moves 1.5 bytes
            # per weight, against 3 with the default 32-bit coordinates and 2 dense)
            narrow = "[pos32,crd8]" if m <= 127 else ""
            return cls(nm_prune(w, n, m), b, format or f"nm({n},{m}){narrow}", target, kind=f"{n}:{m}")
        if sparsity is None:
            raise ValueError("from_dense needs sparsity= (magnitude or block pruning) or pattern= (N:M)")
        if block is not None:
            pruned = block_prune(w, block, sparsity)
            bm, bn = (int(v) for v in block)
            return cls(pruned, b, format or f"bsr({bm},{bn})", target, kind=f"block {bm}x{bn}")
        on_triton = (target or ("triton" if w.device.type == "cuda" else "cpu")) == "triton"
        return cls(magnitude_prune(w, sparsity), b, format or ("bitmap" if on_triton else "csr"), target,
                   kind="unstructured")

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, format: Any = "csr",
                    target: str | None = None) -> "SparseLinear":
        """A layer from an already pruned dense weight stored in ``format`` (csr, nm(n,m), bsr(bm,bn), ...)."""
        return cls(weight, bias, format, target, kind="given")

    def __getstate__(self):  # pickling / deepcopy: the binding and the op handle are per process and object
        state = self.__dict__.copy()
        state["_bound"], state["_bound_key"] = None, None
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._register_handle()

    # -- state dict: the format travels as extra state; buffers take the loaded sizes ------------
    def get_extra_state(self) -> dict:
        """What ``state_dict`` stores beside the buffers: the format (MLIR text), shape and pruning kind."""
        return {"format": self._fmt_obj.mlir(), "shape": (self.out_features, self.in_features), "kind": self.kind}

    def set_extra_state(self, state: Any) -> None:
        """Restore the pruning kind (the format and buffer sizes are restored in ``_load_from_state_dict``)."""
        self.kind = state.get("kind", self.kind) if isinstance(state, dict) else self.kind

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict) and "format" in extra:
            shape = tuple(extra.get("shape", ()))
            if shape != (self.out_features, self.in_features):
                error_msgs.append(f"{prefix}: the checkpoint's weight has shape {shape}, this SparseLinear "
                                  f"{(self.out_features, self.in_features)}")
                return
            fmt = _weight_format(extra["format"])
            keys = {}
            for name, t in state_dict.items():
                if name.startswith(prefix + "w_l") and isinstance(t, torch.Tensor):
                    lv, _, key = name[len(prefix) + 3:].partition("_")
                    if lv.isdigit():
                        keys[(int(lv), key)] = torch.empty_like(t, device=self.device)
            vals = state_dict.get(prefix + "w_values")
            if isinstance(vals, torch.Tensor):
                # placeholders of the checkpoint's sizes; super() copies into them (and checks dtypes)
                self._replace_buffers(fmt, keys, torch.empty(vals.shape, dtype=self.dtype, device=self.device))
        if prefix + "bias" in state_dict and self.bias is None:
            self._buffers["bias"] = torch.empty(self.out_features, dtype=self.dtype, device=self.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._refresh_stats()
        try:
            self._host_tensor(validate=True)
            self._load_error = None
        except Exception as e:  # malformed index arrays must not reach a kernel: forward refuses them
            self._load_error = f"the loaded sparse weight is invalid: {e}"
            error_msgs.append(f"{prefix}: {self._load_error}")

    # -- properties -----------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The weight's value dtype (the layer's dtype)."""
        return self.w_values.dtype

    @property
    def device(self) -> torch.device:
        """The device the weight buffers live on."""
        return self.w_values.device

    @property
    def target(self) -> str:
        """The sparsec target that runs the product: the override, else triton on CUDA, cpu otherwise."""
        if self._target_override is not None:
            return self._target_override
        return "triton" if self.device.type == "cuda" else "cpu"

    def sparse_weight(self):
        """The bound sparsec tensor of the weight (DeviceTensor on triton, sc.Tensor on cpu)."""
        return self._bind()

    def dense_weight(self) -> torch.Tensor:
        """The stored (pruned) weight as a dense tensor on the layer's device, in its dtype."""
        dense = self._host_tensor().to_numpy()
        return torch.from_numpy(np.ascontiguousarray(dense)).to(self.device, self.dtype)

    # -- binding and kernels ----------------------------------------------------------------
    def _apply(self, fn, *args, **kwargs):  # .to() / .half() / .cuda(): rebind after the buffers moved
        out = super()._apply(fn, *args, **kwargs)
        self._bound, self._bound_key = None, None
        return out

    def _levels(self) -> list[dict[str, torch.Tensor]]:
        levels: list[dict] = [dict() for _ in range(self._fmt_obj.rank)]
        for lv, k in self._level_keys:
            levels[lv][k] = getattr(self, f"w_l{lv}_{k}")
        return levels

    def _host_tensor(self, validate: bool = False):
        """The weight as a numpy-backed :class:`sparsec.Tensor` (bfloat16/half values as float32/float16)."""
        import sparsec as sc

        vals = self.w_values.detach()
        if vals.dtype == torch.bfloat16:
            vals = vals.float()  # the CPU backend has no bfloat16: it computes in float32
        np_levels = [{k: v.detach().cpu().numpy() for k, v in lv.items()} for lv in self._levels()]
        return sc.Tensor.from_buffers(self._fmt_obj, (self.out_features, self.in_features), np_levels,
                                      vals.cpu().numpy(), name="W", validate=validate)

    def _bind(self):
        # _version: an in-place write to the weight (the CPU target's bfloat16 copy must be made again); an
        # inference tensor keeps no counter
        try:
            version = self.w_values._version
        except RuntimeError:
            version = None
        key = (self.w_values.data_ptr(), version, self.w_values.dtype, self.w_values.device, self.target)
        if self._bound is not None and self._bound_key == key:
            return self._bound
        if self.target == "cpu":
            bound = self._host_tensor()
        else:
            from .backends.triton.device import DeviceTensor

            bound = DeviceTensor(self._fmt_obj, (self.out_features, self.in_features), self._levels(),
                                 self.w_values.detach(), "W")
        self._bound, self._bound_key = bound, key
        return bound

    def _plan(self, tokens: int) -> tuple[str, str, str]:
        """(kernel form, weight/activation dtype, output dtype) for a call with ``tokens`` rows."""
        dt = _torch_dtype_name(self.dtype)
        if self.target == "cpu":
            kind = "rows" if tokens < 8 else "spmm_t"
            wdt = "float32" if dt == "bfloat16" else dt
            out = "float32" if wdt == "float16" else wdt      # CPU kernels sum in their output dtype
            return kind, wdt, out
        fast = self.format.startswith(_F32_ACC_FORMATS)
        # one token: the SpMV form where it has a vector fast path (CSR, BSR); the tile templates of other
        # formats (bitmap, N:M) take a one-column SpMM
        kind = "spmv" if tokens == 1 and fast else "spmm_t"
        out = dt
        if dt in ("float16", "bfloat16") and not fast:
            out = "float32"   # scalar kernels sum in their output dtype; the tile templates split K atomically
        return kind, dt, out

    def _product(self, x2: torch.Tensor) -> torch.Tensor:
        """x2 (T, in_features) -> (T, out_features), no bias; the custom op's implementation."""
        T = int(x2.shape[0])
        if T == 0:
            return x2.new_zeros((0, self.out_features))
        w = self._bind()
        kind, wdt, outdt = self._plan(T)
        k = _kernel(kind, self._fmt_obj, wdt, outdt, self.target)
        xin = x2.detach()
        cpu = self.target == "cpu"
        if cpu and xin.device.type != "cpu":
            xin = xin.cpu()
        if _torch_dtype_name(xin.dtype) != wdt:
            xin = xin.to(getattr(torch, wdt))
        if kind == "spmm_t":
            act = xin.t().contiguous()
        elif kind == "rows":
            act = xin.contiguous()
        else:
            act = xin.reshape(-1).contiguous()
        # numpy views: the CPU kernels' fast call path takes them as they are
        y = torch.as_tensor(k(**{"W": w, _ACT[kind]: act.numpy() if cpu else act}))
        y = y.t() if kind == "spmm_t" else y.reshape(T, -1)
        return y.to(device=x2.device, dtype=x2.dtype).contiguous()

    # -- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b`` for ``x`` of shape ``(..., in_features)`` in the layer's dtype and device."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear: input has {x.shape[-1]} features, the layer takes {self.in_features}")
        if x.dtype != self.dtype:
            raise TypeError(f"SparseLinear: input dtype {x.dtype} differs from the layer's {self.dtype} "
                            "(convert the input or the layer with .to())")
        if x.device != self.device:
            raise ValueError(f"SparseLinear: input on {x.device}, the layer's weight on {self.device}")
        if self._load_error is not None:
            raise RuntimeError(f"SparseLinear: {self._load_error}; load a valid state_dict before calling it")
        lead = x.shape[:-1]
        if self.in_features == 0:       # an empty sum: the bias alone, as nn.Linear gives
            y = torch.zeros(math.prod(lead), self.out_features, dtype=x.dtype, device=x.device)
        else:
            y = sparse_linear(x.reshape(-1, self.in_features), self._handle, self.out_features)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"format={self.format}, pruning={self.kind}, sparsity={self.sparsity:.3f}, nnz={self.nnz}, "
                f"dtype={_torch_dtype_name(self.dtype)}, target={self.target}")
