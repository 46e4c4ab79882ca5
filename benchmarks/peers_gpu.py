"""GPU peers: cuSPARSE through torch.sparse and cupy, dense cuBLAS, torch 2:4, torch BSR, sparsec Triton.

Importable without CUDA: :func:`gpu_unavailable` says why no GPU run is
possible, and each peer's ``missing()`` says why it cannot run. Everything is
uploaded in ``prepare`` (untimed); the timed callable only launches work. cupy
and torch both use the legacy default stream, so the CUDA events of
``triton.testing.do_bench`` (on torch's current stream) bracket cupy's kernels too.
TF32 stays off (torch's default for matmul), so float32 means float32.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from .cases import Case, Operands
from .peer import Peer, Skip, Unsupported
from .peers_cpu import SparsecPeer, torch_sparse_fn, torch_to_host

#: dense operands above this many entries are not formed (dense peer, 2:4 peer)
DENSE_MAX_ELEMS = 1 << 27


def gpu_unavailable() -> str | None:
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        return f"torch not importable: {e}"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False (no CUDA device or a CPU-only torch)"
    return None


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


class GPUPeer(Peer):
    device = "gpu"

    def missing(self) -> str | None:
        return gpu_unavailable()

    def version(self) -> str:
        import torch

        return torch.__version__

    def sync(self) -> None:
        import torch

        torch.cuda.synchronize()

    def to_host(self, result: Any) -> Any:
        return torch_to_host(result)


def _dense_cuda(csr, torch, dtype: str):
    M, N = csr.shape
    if M * N > DENSE_MAX_ELEMS:
        raise Skip(f"dense {M}x{N} over the {DENSE_MAX_ELEMS} entry cap")
    return torch.from_numpy(csr.scipy("float32").toarray()).to(device="cuda", dtype=getattr(torch, dtype))


class CuSparseTorchPeer(GPUPeer):
    name = "cusparse"
    note = "torch.sparse_csr_tensor on CUDA (cuSPARSE SpMV/SpMM/SDDMM/csrgeam/SpGEMM)"

    def prepare(self, case: Case, ops: Operands) -> Callable[[], Any]:
        import torch

        return torch_sparse_fn(case, ops, torch, "cuda")


class CupyPeer(GPUPeer):
    name = "cupy"
    note = "cupyx.scipy.sparse.csr_matrix (cuSPARSE)"

    def missing(self) -> str | None:
        why = gpu_unavailable()
        if why:
            return why
        try:
            import cupy
            import cupyx.scipy.sparse  # noqa: F401

            cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # noqa: BLE001
            return f"cupy not usable: {type(e).__name__}: {e}"[:300]
        return None

    def version(self) -> str:
        import cupy

        return cupy.__version__

    def supports(self, case: Case) -> bool | str:
        if case.kernel.kind == "sddmm":
            return "cupyx.scipy.sparse has no SDDMM"
        return True

    def _csr(self, csr):
        import cupy as cp
        import cupyx.scipy.sparse as csp

        return csp.csr_matrix((cp.asarray(csr.data), cp.asarray(csr.indices), cp.asarray(csr.indptr)),
                              shape=csr.shape)

    def prepare(self, case: Case, ops: Operands) -> Callable[[], Any]:
        import cupy as cp

        A = self._csr(ops.A)
        if case.kernel.kind in ("spmv", "spmm"):
            X = cp.asarray(ops.X)
            return lambda: A @ X
        B = self._csr(ops.B)
        if case.kernel.kind == "add":
            return lambda: A + B
        return lambda: A @ B

    def sync(self) -> None:
        import cupy

        cupy.cuda.Device().synchronize()

    def to_host(self, result: Any) -> Any:
        import cupy as cp

        if hasattr(result, "get") and not isinstance(result, cp.ndarray):
            return result.get()          # cupyx sparse -> scipy sparse
        return cp.asnumpy(result)


class DenseCublasPeer(GPUPeer):
    name = "cublas-dense"
    note = "torch.matmul on the densified operands (cuBLAS); sddmm: (U Vᵀ) * A_dense; add: A + B dense"

    def prepare(self, case: Case, ops: Operands) -> Callable[[], Any]:
        import torch

        kind = case.kernel.kind
        A = _dense_cuda(ops.A, torch, case.dtype)
        dev = lambda a: torch.from_numpy(a).cuda()  # noqa: E731
        if kind in ("spmv", "spmm"):
            X = dev(ops.X)
            return lambda: A @ X
        if kind == "sddmm":
            U, Vt = dev(ops.U), dev(np.ascontiguousarray(ops.V.T))
            return lambda: (U @ Vt) * A
        B = _dense_cuda(ops.B, torch, case.dtype)
        if kind == "add":
            return lambda: A + B
        if A.shape[0] * B.shape[1] > DENSE_MAX_ELEMS:
            raise Skip(f"dense output {A.shape[0]}x{B.shape[1]} over the {DENSE_MAX_ELEMS} entry cap")
        return lambda: A @ B


def is_2of4(csr) -> bool:
    """Every aligned group of 4 columns in a row holds at most 2 entries."""
    if csr.shape[1] % 4:
        return False
    rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    groups = rows * (csr.shape[1] // 4) + csr.indices // 4
    return bool(np.bincount(groups).max(initial=0) <= 2)


class SemiStructuredPeer(GPUPeer):
    name = "torch-2:4"
    note = "torch.sparse.to_sparse_semi_structured(W) @ X (CUTLASS / cuSPARSELt)"

    def supports(self, case: Case) -> bool | str:
        if case.kernel.kind != "spmm":
            return "semi-structured sparsity is run for spmm (sparse @ dense matrix) only"
        if case.matrix.structure != "2:4":
            return "needs a 2:4 pattern"
        return True

    def prepare(self, case: Case, ops: Operands) -> Callable[[], Any]:
        import torch
        from torch.sparse import to_sparse_semi_structured

        if not is_2of4(ops.A):
            raise Unsupported("matrix is not 2:4 along rows")
        W = to_sparse_semi_structured(_dense_cuda(ops.A, torch, case.dtype))
        X = torch.from_numpy(ops.X).cuda()
        return lambda: W @ X


class BsrPeer(GPUPeer):
    name = "torch-bsr"
    note = "torch.sparse_bsr_tensor (block 32 for block-pruned weights, else the largest of 32/16/8 with fill <= 4x)"
    MAX_FILL = 4.0

    def supports(self, case: Case) -> bool | str:
        if case.kernel.kind not in ("spmv", "spmm"):
            return "BSR is run for spmv/spmm only"
        return True

    def blocksize(self, case: Case, csr) -> int:
        M, N = csr.shape
        A = csr.scipy("float32")
        rows = np.repeat(np.arange(M, dtype=np.int64), np.diff(A.indptr))
        best = None
        for b in ((32,) if case.matrix.structure == "block32" else (32, 16, 8)):
            if M % b or N % b:
                continue
            nblocks = np.unique(rows // b * (N // b + 1) + A.indices // b).shape[0]
            fill = nblocks * b * b / max(A.nnz, 1)
            if fill <= self.MAX_FILL:
                return b
            best = (b, fill) if best is None or fill < best[1] else best
        raise Unsupported("no BSR block size divides the shape" if best is None else
                          f"BSR fill-in {best[1]:.1f}x at block {best[0]} (> {self.MAX_FILL}x)")

    def prepare(self, case: Case, ops: Operands) -> Callable[[], Any]:
        import torch

        b = self.blocksize(case, ops.A)
        bsr = sp.bsr_matrix(ops.A.scipy("float32"), blocksize=(b, b))
        bsr.sort_indices()
        A = torch.sparse_bsr_tensor(torch.from_numpy(bsr.indptr.astype(np.int32)),
                                    torch.from_numpy(bsr.indices.astype(np.int32)),
                                    torch.from_numpy(bsr.data), size=ops.A.shape)
        A = A.to(device="cuda", dtype=getattr(torch, case.dtype))
        X = torch.from_numpy(ops.X).cuda()
        return lambda: A @ X


class SparsecTritonPeer(SparsecPeer):
    """sparsec's Triton backend, device-resident: operands bound once in prepare (torch CUDA
    tensors -> the backend's DeviceTensor), each call through ``sparsec.backends.triton.call``
    so nothing round-trips through the host; a dense result stays a CUDA tensor, a sparse one
    a DeviceTensor."""

    device = "gpu"
    threaded = False

    def __init__(self, torch_device: str = "cuda"):
        super().__init__(1, target="triton")
        self.name = "sparsec-triton"
        self.torch_device = torch_device   # "cpu" only for harness tests in Triton's interpreter
        self.note = "sparsec api.compile(target='triton') + backends.triton.call, operands pre-bound on the device"

    def missing(self) -> str | None:
        return (gpu_unavailable() if self.torch_device == "cuda" else None) or super().missing()

    def threads_ctx(self):
        return Peer.threads_ctx(self)

    def prepare(self, case: Case, ops: Operands) -> Callable[[], Any]:
        import torch

        from .peers_cpu import sparsec_args, torch_csr

        k = self.kernel(case)
        dev = torch.device(self.torch_device)
        args = sparsec_args(case, ops, dense=lambda a: torch.from_numpy(a).to(dev),
                            sparse=lambda csr, name: torch_csr(csr, torch, dev))
        try:
            from sparsec.backends.triton import call as triton_call
        except ImportError:  # an older backend without the device-resident entry point
            self.note = "sparsec api.compile(target='triton'), Kernel.__call__ (may round-trip through the host)"
            return lambda: k(**args)
        bind = getattr(k.backend, "bind_operand", None)
        if bind is not None:
            args = {n: bind(v, n, k.program.decl(n).format, k.program.decl(n).dtype, dev) for n, v in args.items()}
        return lambda: triton_call(k, **args)

    def sync(self) -> None:
        if self.torch_device == "cuda":
            torch_sync()

    def to_host(self, result: Any) -> Any:
        if hasattr(result, "to_host"):          # DeviceTensor
            result = result.to_host()
        if hasattr(result, "to_scipy"):
            return result.to_scipy()
        return torch_to_host(result)


def torch_sync() -> None:
    import torch

    torch.cuda.synchronize()


def gpu_peers() -> list[Peer]:
    return [CuSparseTorchPeer(), CupyPeer(), DenseCublasPeer(), SemiStructuredPeer(), BsrPeer(),
            SparsecTritonPeer()]
