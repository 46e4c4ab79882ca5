"""CPU peers: scipy.sparse, MKL (sparse_dot_mkl), torch.sparse, pydata sparse, torch dense, sparsec.

Thread control:

* sparsec: ``sparsec.runtime.set_num_threads(n)``;
* MKL: ``mkl_set_num_threads(n)`` and ``mkl_set_num_threads_local(n)`` of the
  MKL runtime (``libmkl_rt``) that sparse_dot_mkl itself calls into, read back
  with ``mkl_get_max_threads`` and the run refused if the read-back differs (the
  thread-local call matters: torch.set_num_threads sets MKL's thread-local count
  on the main thread, which overrides the global one). ``MKL_NUM_THREADS`` is read once when
  MKL initializes, so switching 1 <-> all threads inside one process needs the
  runtime call; it is process-global, and peers run one after another, so it
  cannot leak into another peer's measurement (it is restored afterwards);
* torch: ``torch.set_num_threads`` (torch's CPU CSR kernels are MKL's inside torch);
* scipy.sparse and pydata sparse (numba) are single-threaded.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from .cases import Case, Operands, sddmm_gather
from .peer import Peer, Skip

ALL_THREADS = os.cpu_count() or 1


def _f(case: Case) -> str:
    return case.dtype


# ------------------------------------------------------------------------------ scipy
class ScipyPeer(Peer):
    name = "scipy"
    note = "scipy.sparse csr_matrix; sddmm: numpy gather + einsum (scipy has no SDDMM)"

    def version(self) -> str:
        import scipy

        return scipy.__version__

    def supports(self, case: Case) -> bool | str:
        if case.dtype not in ("float32", "float64"):
            return f"scipy.sparse has no {case.dtype}"
        return True

    def prepare(self, case: Case, ops: Operands) -> Callable[[], Any]:
        A = ops.A.scipy()
        kind = case.kernel.kind
        if kind in ("spmv", "spmm"):
            X = ops.X
            return lambda: A @ X
        if kind == "sddmm":
            U, V = ops.U, ops.V
            return lambda: sddmm_gather(A, U, V)
        B = ops.B.scipy()
        if kind == "add":
            return lambda: A + B
        return lambda: A @ B


# ------------------------------------------------------------------------------ MKL
def find_mkl_rt() -> str | None:
    """Point sparse_dot_mkl at libmkl_rt (env MKL_RT) if it is not set: look in this Python's lib dirs."""
    if os.environ.get("MKL_RT"):
        return os.environ["MKL_RT"]
    dirs = {os.path.join(sys.prefix, "lib"), os.path.join(sys.base_prefix, "lib")}
    dirs.update(os.path.join(p, "..", "..", "..") for p in sys.path if p.endswith("site-packages"))
    for d in sorted(dirs):
        hits = sorted(glob.glob(os.path.join(d, "libmkl_rt.so*")) + glob.glob(os.path.join(d, "mkl_rt*.dll")))
        if hits:
            os.environ["MKL_RT"] = os.path.abspath(hits[0])
            return os.environ["MKL_RT"]
    return None


class MKLPeer(Peer):
    name = "mkl"
    threaded = True
    note = "sparse_dot_mkl.dot_product_mkl (MKL inspector-executor, no optimize hint)"

    def __init__(self, threads: int):
        self.threads = threads
        self._mod = None
        self._missing: str | None | bool = False

    def missing(self) -> str | None:
        if self._missing is False:
            try:
                find_mkl_rt()
                import sparse_dot_mkl

                self._mod = sparse_dot_mkl
                self._missing = None
            except Exception as e:  # noqa: BLE001 - ImportError, OSError, ...
                self._missing = f"sparse_dot_mkl/MKL not usable: {type(e).__name__}: {e}"[:300]
        return self._missing

    def version(self) -> str:
        m = self._mod
        return f"sparse_dot_mkl {m.__version__}; {m.mkl_get_version_string()}" if m else ""

    def supports(self, case: Case) -> bool | str:
        if case.dtype not in ("float32", "float64"):
            return f"MKL sparse BLAS has no {case.dtype}"
        if case.kernel.kind == "sddmm":
            return "MKL sparse BLAS has no SDDMM"
        if case.kernel.kind == "add":
            return "sparse_dot_mkl exposes no sparse + sparse (mkl_sparse_?_add)"
        return True

    @contextlib.contextmanager
    def threads_ctx(self):
        # torch.set_num_threads calls mkl_set_num_threads_local on the calling thread, which overrides
        # the global setting there; so set both, and restore the thread-local one afterwards.
        m = self._mod
        m.mkl_set_num_threads(self.threads)
        old_local = m.mkl_set_num_threads_local(self.threads)
        got = m.mkl_get_max_threads()
        if got != self.threads:
            m.mkl_set_num_threads_local(old_local)
            raise RuntimeError(f"mkl_set_num_threads({self.threads}) did not take: mkl_get_max_threads() = {got}")
        try:
            yield
        finally:
            m.mkl_set_num_threads_local(old_local)

    def prepare(self, case: Case, ops: Operands) -> Callable[[], Any]:
        dot = self._mod.dot_product_mkl
        A = ops.A.scipy()
        if case.kernel.kind in ("spmv", "spmm"):
            X = ops.X
            return lambda: dot(A, X)
        B = ops.B.scipy()
        return lambda: dot(A, B)


# ------------------------------------------------------------------------------ torch
def _torch():
    import torch

    return torch


def torch_csr(csr, torch, device="cpu", dtype=None):
    t = torch.sparse_csr_tensor(torch.from_numpy(csr.indptr), torch.from_numpy(csr.indices),
                                torch.from_numpy(csr.data), size=csr.shape, device=device)
    return t if dtype is None else t.to(dtype)


def torch_to_host(r: Any) -> Any:
    torch = _torch()
    if isinstance(r, torch.Tensor):
        r = r.detach()
        if r.layout == torch.sparse_csr:
            vals = r.values().float() if r.dtype in (torch.float16, torch.bfloat16) else r.values()
            return sp.csr_matrix((vals.cpu().numpy(), r.col_indices().cpu().numpy(), r.crow_indices().cpu().numpy()),
                                 shape=tuple(r.shape))
        if r.layout != torch.strided:
            r = r.to_dense()
        if r.dtype in (torch.float16, torch.bfloat16):
            r = r.float()
        return r.cpu().numpy()
    return r


class TorchSparsePeer(Peer):
    """torch.sparse CSR; on the CPU its kernels are MKL's (bundled in torch)."""

    name = "torch"
    threaded = True
    note = "torch.sparse_csr_tensor: A@x, A@X, sampled_addmm(beta=0)*A.values, A+B, A@B"

    def __init__(self, threads: int = ALL_THREADS, device: str = "cpu"):
        self.threads = threads
        self.device = device

    def missing(self) -> str | None:
        try:
            _torch()
        except Exception as e:  # noqa: BLE001
            return f"torch not importable: {e}"
        return None

    def version(self) -> str:
        return _torch().__version__

    @contextlib.contextmanager
    def threads_ctx(self):
        torch = _torch()
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    def prepare(self, case: Case, ops: Operands) -> Callable[[], Any]:
        return torch_sparse_fn(case, ops, _torch(), self.device)

    def to_host(self, result: Any) -> Any:
        return torch_to_host(result)


def torch_sparse_fn(case: Case, ops: Operands, torch, device: str) -> Callable[[], Any]:
    """The torch.sparse (CSR) computation of a case, on ``device``."""
    A = torch_csr(ops.A, torch, device)
    kind = case.kernel.kind
    dev = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    if kind in ("spmv", "spmm"):
        X = dev(ops.X)
        return lambda: A @ X
    if kind == "sddmm":
        U = dev(ops.U)
        Vt = dev(np.ascontiguousarray(ops.V.T))   # (K, cols): the layout sampled_addmm reads
        a_vals = A.values()

        def sddmm():
            S = torch.sparse.sampled_addmm(A, U, Vt, beta=0.0)
            S.values().mul_(a_vals)
            return S

        return sddmm
    B = torch_csr(ops.B, torch, device)
    if kind == "add":
        return lambda: A + B
    return lambda: A @ B


class TorchDensePeer(Peer):
    """Dense torch.matmul at the same shape (the sparse-or-not question for pruned weights)."""

    name = "dense"
    threaded = True
    rotate = False
    note = "torch.matmul on the densified matrix (CPU: MKL/oneDNN)"
    MAX_ELEMS = 1 << 26   # 64 Mi entries (256 MiB in float32)

    def __init__(self, threads: int = ALL_THREADS):
        self.threads = threads

    def missing(self) -> str | None:
        return TorchSparsePeer.missing(self)  # type: ignore[arg-type]

    def version(self) -> str:
        return _torch().__version__

    def supports(self, case: Case) -> bool | str:
        if case.kernel.kind not in ("spmv", "spmm"):
            return "dense baseline is run for spmv/spmm only"
        return True

    threads_ctx = TorchSparsePeer.threads_ctx

    def prepare(self, case: Case, ops: Operands) -> Callable[[], Any]:
        M, N = ops.A.shape
        if M * N > self.MAX_ELEMS:
            raise Skip(f"dense {M}x{N} over the {self.MAX_ELEMS} entry cap")
        torch = _torch()
        D = torch.from_numpy(ops.A.scipy("float32").toarray()).to(getattr(torch, case.dtype))
        X = torch.from_numpy(ops.X)
        return lambda: D @ X

    def to_host(self, result: Any) -> Any:
        return torch_to_host(result)


# ------------------------------------------------------------------------------ pydata sparse
class PydataPeer(Peer):
    name = "pydata"
    note = "pydata sparse GCXS (CSR), numba backend"

    def missing(self) -> str | None:
        try:
            import sparse  # noqa: F401 - availability check
        except Exception as e:  # noqa: BLE001
            return f"pydata sparse not importable: {e}"
        return None

    def version(self) -> str:
        import sparse

        return sparse.__version__

    def supports(self, case: Case) -> bool | str:
        if case.dtype not in ("float32", "float64"):
            return f"numba (pydata sparse's backend) has no {case.dtype}"
        if case.kernel.kind == "sddmm":
            return "pydata sparse has no sampled matmul (einsum would form the dense product)"
        return True

    def prepare(self, case: Case, ops: Operands) -> Callable[[], Any]:
        import sparse

        A = sparse.GCXS.from_scipy_sparse(ops.A.scipy())
        if case.kernel.kind in ("spmv", "spmm"):
            X = ops.X
            return lambda: A @ X
        B = sparse.GCXS.from_scipy_sparse(ops.B.scipy())
        if case.kernel.kind == "add":
            return lambda: A + B
        return lambda: A @ B

    def to_host(self, result: Any) -> Any:
        if hasattr(result, "to_scipy_sparse"):
            return result.to_scipy_sparse()
        return np.asarray(result)


# ------------------------------------------------------------------------------ sparsec
SPARSEC_TEXT = {
    "spmv": ("y[i] = A[i,j] * x[j]", {"A": "csr"}),
    "spmm": ("C[i,k] = A[i,j] * X[j,k]", {"A": "csr"}),
    "sddmm": ("S[i,j] = A[i,j] * U[i,k] * V[j,k]", {"A": "csr", "S": "csr"}),
    "add": ("C[i,j] = A[i,j] + B[i,j]", {"A": "csr", "B": "csr", "C": "csr"}),
    "spgemm": ("C[i,j] = A[i,k] * B[k,j]", {"A": "csr", "B": "csr", "C": "csr"}),
}
SPARSEC_EINSUM = {"spmv": "ij,j->i", "spmm": "ij,jk->ik", "sddmm": "ij,ik,jk->ij", "add": None, "spgemm": "ik,kj->ij"}
#: the reference interpreter is only for smoke tests of the harness
INTERP_MAX_WORK = 50_000


def sparsec_tensor(csr, name: str):
    import sparsec as sc

    return sc.Tensor.from_buffers("csr", csr.shape, [{}, {"pos": csr.indptr, "crd": csr.indices}], csr.data,
                                  name=name, validate=False)


def sparsec_args(case: Case, ops: Operands, dense=lambda a: a, sparse=sparsec_tensor) -> dict[str, Any]:
    """The named operands of the case's sparsec kernel; ``dense(array)`` and ``sparse(csr, name)`` convert them."""
    kind = case.kernel.kind
    args = {"A": sparse(ops.A, "A")}
    if kind == "spmv":
        args["x"] = dense(ops.X)
    elif kind == "spmm":
        args["X"] = dense(ops.X)
    elif kind == "sddmm":
        args["U"], args["V"] = dense(ops.U), dense(ops.V)
    else:
        args["B"] = sparse(ops.B, "B")
    return args


class SparsecPeer(Peer):
    """sparsec through ``api.compile`` (kernel compiled once per kind/dtype, then called)."""

    name = "sparsec"
    threaded = True

    def __init__(self, threads: int, target: str = "cpu", via: str = "compile"):
        self.threads = threads
        self.target = target
        self.via = via
        self.note = f"sparsec api.{via}(target={target!r}), CSR operands as sc.Tensor"
        if via == "einsum":
            self.name = "sparsec-einsum"

    def missing(self) -> str | None:
        try:
            from sparsec.backends import get_backend

            get_backend(self.target)
        except Exception as e:  # noqa: BLE001 - ImportError while the backend is not there, ...
            return f"sparsec target {self.target!r} not available: {type(e).__name__}: {e}"[:300]
        return None

    def version(self) -> str:
        import sparsec

        return sparsec.__version__

    def supports(self, case: Case) -> bool | str:
        if self.via == "einsum" and SPARSEC_EINSUM[case.kernel.kind] is None:
            return "no einsum form (sum of two operands)"
        return True

    @contextlib.contextmanager
    def threads_ctx(self):
        from sparsec import runtime

        runtime.set_num_threads(self.threads)
        try:
            yield
        finally:
            runtime.set_num_threads(None)

    #: (target, kind, dtype) -> compiled Kernel or the exception compiling it raised; shared by
    #: the thread-count variants, so each kernel is compiled once per run
    _CACHE: dict[tuple, Any] = {}

    def _key(self, case: Case) -> tuple:
        return (self.target, case.kernel.kind, case.dtype)

    def kernel(self, case: Case):
        key = self._key(case)
        if key not in self._CACHE:
            from sparsec import api

            text, formats = SPARSEC_TEXT[case.kernel.kind]
            try:
                self._CACHE[key] = api.compile(text, formats=formats, dtype=case.dtype, target=self.target,
                                               name=f"bench_{case.kernel.kind}")
            except Exception as e:  # noqa: BLE001 - remembered, re-raised for every case of this kernel
                self._CACHE[key] = e
        k = self._CACHE[key]
        if isinstance(k, Exception):
            raise k
        return k

    def compile_seconds(self, case: Case) -> float | None:
        k = self._CACHE.get(self._key(case))
        s = getattr(k, "compile_seconds", None)
        return float(s) if s is not None else None

    def recompile_seconds(self, kind: str, dtype: str) -> float | None:
        """``compile_seconds`` of compiling the same kernel again (the backend's caches are warm)."""
        from sparsec import api

        text, formats = SPARSEC_TEXT[kind]
        try:
            k = api.compile(text, formats=formats, dtype=dtype, target=self.target, name=f"bench_{kind}")
        except Exception:  # noqa: BLE001
            return None
        return float(k.compile_seconds)

    def prepare(self, case: Case, ops: Operands) -> Callable[[], Any]:
        if self.target == "interp":
            work = ops.A.nnz * (case.kernel.n or 1)
            if work > INTERP_MAX_WORK:
                raise Skip(f"interp target only for work <= {INTERP_MAX_WORK} (this: {work})")
        args = sparsec_args(case, ops)
        if self.via == "einsum":
            from sparsec import api

            subs = SPARSEC_EINSUM[case.kernel.kind]
            operands = list(args.values())
            fmt = "csr" if case.kernel.sparse_out else None
            return lambda: api.einsum(subs, *operands, out_format=fmt, target=self.target)
        k = self.kernel(case)
        return lambda: k(**args)

    def to_host(self, result: Any) -> Any:
        if hasattr(result, "to_scipy"):
            return result.to_scipy()
        return np.asarray(result)


def cpu_peers(sparsec_target: str = "cpu") -> list[Peer]:
    threads = sorted({1, ALL_THREADS})
    return ([ScipyPeer()] + [MKLPeer(t) for t in threads] + [TorchSparsePeer(ALL_THREADS), PydataPeer(),
                                                             TorchDensePeer(ALL_THREADS)]
            + [SparsecPeer(t, sparsec_target) for t in threads])
