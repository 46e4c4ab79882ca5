"""The physical floor: measured bandwidth and peak, least bytes and flops per case.

floor time = max(least_bytes / bandwidth, least_flops / peak[dtype])

*Bandwidth* is the best all-thread streaming rate this run measured (bytes read
+ bytes written, no write-allocate traffic counted): on the CPU the best of
numpy copy/add split over one Python thread per core (numpy releases the GIL),
torch's multi-threaded copy/add, a sparsec-compiled add when the CPU backend is
there, and numpy's single-threaded copy/add (reported; used only if it is the
best); on the GPU a device-to-device torch copy. *Peak* is the best
dense matmul rate at the dtype (torch / numpy BLAS on the CPU, torch cuBLAS on
the GPU). A float16 case may use the float32 peak if it is higher (a kernel may
compute in float32).

*Least bytes*: each input read once and each output written once, in the case's
value dtype and index width (int32 unless the matrix needs int64):

* spmv:    nnz*(v+i) + (rows+1)*i + cols*v + rows*v
* spmmN:   nnz*(v+i) + (rows+1)*i + cols*N*v + rows*N*v
* sddmmK:  nnz*(v+i) + (rows+1)*i + rows*K*v + cols*K*v + nnz*v   (output reuses A's pattern)
* add:     A + B read as CSR, C = A + B written as CSR (nnz(C) from the reference)
* spgemm:  A + B read as CSR, C written as CSR

*Least flops*: 2*nnz (spmv), 2*nnz*N (spmm), (2K+1)*nnz (sddmm), one add per
overlapping entry nnz(A)+nnz(B)-nnz(C) (add), 2*sum_k nnz(A[:,k])*nnz(B[k,:]) (spgemm).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from .cases import CaseData


@dataclass
class Floor:
    device: str
    bandwidth: float                              # bytes/s used for the floor
    bandwidth_source: str
    peak: dict[str, float]                        # dtype -> flop/s used for the floor
    measurements: dict[str, float | str] = field(default_factory=dict)  # everything measured (or why not)

    def peak_for(self, dtype: str) -> float:
        if dtype == "float16":
            return max(self.peak.get("float16", 0.0), self.peak.get("float32", 0.0)) or float("nan")
        return self.peak.get(dtype, float("nan"))

    def seconds(self, nbytes: float, flops: float, dtype: str) -> tuple[float, str]:
        """Floor time and which side binds it ('memory' or 'compute')."""
        tb = nbytes / self.bandwidth if self.bandwidth > 0 else float("nan")
        tf = flops / self.peak_for(dtype)
        return (tb, "memory") if not tf > tb else (tf, "compute")


# ------------------------------------------------------------------------------ least cost
def least_cost(data: CaseData) -> tuple[int, int]:
    """(least bytes, least flops) of a case; sparse outputs use the reference's nnz."""
    o, k = data.ops, data.case.kernel
    v = np.dtype(data.case.dtype).itemsize
    i = data.index_bytes
    M, N = data.shape
    nnz = o.A.nnz
    a_bytes = nnz * (v + i) + (M + 1) * i
    if k.kind == "spmv":
        return a_bytes + N * v + M * v, 2 * nnz
    if k.kind == "spmm":
        return a_bytes + N * k.n * v + M * k.n * v, 2 * nnz * k.n
    if k.kind == "sddmm":
        return a_bytes + (M + N) * k.n * v + nnz * v, (2 * k.n + 1) * nnz
    b = o.B
    b_bytes = b.nnz * (v + i) + (b.shape[0] + 1) * i
    nnz_c = data.ref.nnz_out
    c_bytes = nnz_c * (v + i) + (M + 1) * i
    if k.kind == "add":
        return a_bytes + b_bytes + c_bytes, max(0, nnz + b.nnz - nnz_c)
    from .cases import spgemm_flops

    return a_bytes + b_bytes + c_bytes, spgemm_flops(o.A.scipy("float64"), b.scipy("float64"))


# ------------------------------------------------------------------------------ CPU measurement
def _best(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def llc_bytes() -> int:
    """Size of the largest CPU cache level (sysfs), 32 MiB if unknown."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in os.listdir(base):
            try:
                with open(f"{base}/{d}/size") as f:
                    s = f.read().strip()
                mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1], 1)
                best = max(best, int(s.rstrip("KMG")) * mult)
            except (OSError, ValueError):
                continue
    except OSError:
        pass
    return best or 32 << 20


def measure_cpu(quick: bool, sparsec_target: str = "cpu", log=print) -> Floor:
    m: dict[str, float | str] = {}
    nthreads = os.cpu_count() or 1
    nbytes = (256 if quick else 1024) << 20   # per array; copy touches 2x, add 3x this
    n = nbytes // 8
    reps = 2 if quick else 3
    a = np.ones(n)
    b = np.empty(n)
    c = np.ones(n)
    m["numpy_copy_1t_GBs"] = 2 * nbytes / _best(lambda: np.copyto(b, a), reps) / 1e9
    m["numpy_add_1t_GBs"] = 3 * nbytes / _best(lambda: np.add(a, c, out=b), reps) / 1e9
    multi = {}
    if nthreads > 1:  # numpy releases the GIL in copyto/add: one slice per thread
        from concurrent.futures import ThreadPoolExecutor

        cuts = np.linspace(0, n, nthreads + 1).astype(np.int64)
        parts = list(zip(cuts[:-1], cuts[1:]))
        with ThreadPoolExecutor(nthreads) as pool:
            def par(f):
                return lambda: list(pool.map(lambda p: f(slice(*p)), parts))

            multi["numpy_threads_copy"] = m[f"numpy_threads_copy_{nthreads}t_GBs"] = 2 * nbytes / _best(
                par(lambda s: np.copyto(b[s], a[s])), reps) / 1e9
            multi["numpy_threads_add"] = m[f"numpy_threads_add_{nthreads}t_GBs"] = 3 * nbytes / _best(
                par(lambda s: np.add(a[s], c[s], out=b[s])), reps) / 1e9
    try:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(nthreads)
        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
        multi["torch_copy"] = m[f"torch_copy_{nthreads}t_GBs"] = 2 * nbytes / _best(lambda: tb.copy_(ta), reps) / 1e9
        multi["torch_add"] = m[f"torch_add_{nthreads}t_GBs"] = 3 * nbytes / _best(
            lambda: torch.add(ta, tc, out=tb), reps) / 1e9
        torch.set_num_threads(old)
    except Exception as e:  # noqa: BLE001
        m["torch_bandwidth"] = f"failed: {type(e).__name__}: {e}"
    try:
        from sparsec import api, runtime

        k = api.compile("y[i] = a[i] + c[i]", dtype="float64", target=sparsec_target, name="triad")
        if sparsec_target == "interp":
            raise RuntimeError("the interp target is far too slow for a bandwidth test")
        runtime.set_num_threads(nthreads)
        multi["sparsec_add"] = m[f"sparsec_add_{nthreads}t_GBs"] = 3 * nbytes / _best(lambda: k(a=a, c=c), reps) / 1e9
        runtime.set_num_threads(None)
    except Exception as e:  # noqa: BLE001
        m["sparsec_bandwidth"] = f"not measured: {type(e).__name__}: {str(e)[:160]}"
    a = b = c = ta = tb = tc = None  # free the buffers
    cands = dict(multi, numpy_copy_1t=m["numpy_copy_1t_GBs"], numpy_add_1t=m["numpy_add_1t_GBs"])
    src = max(cands, key=cands.get)
    bw = cands[src] * 1e9
    log("  bandwidth: " + ", ".join(f"{k}={v:.1f}" for k, v in m.items() if isinstance(v, float)) + " GB/s")

    # peak: dense matmul
    peak: dict[str, float] = {}
    size = 2048 if quick else 3072
    rng = np.random.default_rng(0)
    for dt in ("float64", "float32"):
        x = rng.standard_normal((size, size)).astype(dt)
        m[f"numpy_matmul_{dt}_GFLOPs"] = 2 * size**3 / _best(lambda: x @ x, 2) / 1e9
        peak[dt] = m[f"numpy_matmul_{dt}_GFLOPs"] * 1e9
    try:
        import torch

        torch.set_num_threads(nthreads)
        for dt in ("float64", "float32", "float16", "bfloat16"):
            s = size if dt in ("float64", "float32") else size // 2
            x = torch.randn(s, s, dtype=getattr(torch, dt))
            gf = 2 * s**3 / _best(lambda: x @ x, 2)
            m[f"torch_matmul_{dt}_GFLOPs"] = gf / 1e9
            peak[dt] = max(peak.get(dt, 0.0), gf)
    except Exception as e:  # noqa: BLE001
        m["torch_matmul"] = f"failed: {type(e).__name__}: {e}"
    log("  peak: " + ", ".join(f"{k}={v / 1e9:.0f}" for k, v in peak.items()) + " GFLOP/s")
    return Floor("cpu", bw, f"{src} ({nthreads} threads)" if src in multi else src, peak, m)


# ------------------------------------------------------------------------------ GPU measurement
def measure_gpu(quick: bool, log=print) -> Floor:
    import torch

    from .timing import gpu_time

    m: dict[str, float | str] = {}
    nbytes = (512 if quick else 2048) << 20
    x = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda")
    y = torch.empty_like(x)
    x.fill_(1.0)
    t = gpu_time(lambda: y.copy_(x))
    bw = 2 * nbytes / t
    m["torch_d2d_copy_GBs"] = bw / 1e9
    x = y = None
    torch.cuda.empty_cache()
    peak: dict[str, float] = {}
    size = 4096 if quick else 8192
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    for dt, tf32 in (("float32", False), ("tf32", True), ("float16", False), ("bfloat16", False)):
        tdt = torch.float32 if dt == "tf32" else getattr(torch, dt)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(size, size, device="cuda", dtype=tdt)
        t = gpu_time(lambda: a @ a)
        m[f"torch_matmul_{dt}_TFLOPs"] = 2 * size**3 / t / 1e12
        if dt != "tf32":  # tf32 would not pass float32 accuracy checks
            peak[dt] = 2 * size**3 / t
        a = None
    torch.backends.cuda.matmul.allow_tf32 = old_tf32
    torch.cuda.empty_cache()
    log(f"  bandwidth: {bw / 1e9:.0f} GB/s (d2d copy); peak: "
        + ", ".join(f"{k}={v / 1e12:.0f}" for k, v in peak.items()) + " TFLOP/s")
    return Floor("gpu", bw, "torch device-to-device copy", peak, m)
