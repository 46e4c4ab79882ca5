"""Split the per-call cost of a small Triton SpMV on the GPU: Python fast path, Triton launch, kernel.

Usage (GPU machine): python benchmarks/diag_overhead.py [matrix]. Prints a few timings (us).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sparsec as sc  # noqa: E402
from sparsec.backends import triton as tb  # noqa: E402
from benchmarks.cases import _loader, matrices_dir  # noqa: E402


def wall(fn, n=2000) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "bayer10"
    A = _loader(matrices_dir()).load(name, "float32", pattern_values="random")
    dev = torch.device("cuda")
    At = torch.sparse_csr_tensor(torch.from_numpy(A.indptr.astype(np.int64)), torch.from_numpy(A.indices.astype(np.int64)),
                                 torch.from_numpy(A.data), size=A.shape).to(dev)
    x = torch.randn(A.shape[1], device=dev)
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float32", target="triton")
    Ad = tb.device.bind_operand(At, "A", None, "float32", dev)
    tb.call(k, A=Ad, x=x)
    fast = k._triton_fast
    tk = fast.tk
    memo = next(iter(tk._launch_memo.values()))
    fn, grid, warps, kwargs, internal, names, direct = (memo.fn, memo.grid, memo.warps, memo.kwargs, memo.internal,
                                                         memo.names, memo.direct)
    print('direct launch available:', direct is not None)
    bound = {n_: fast._bound[n_][2] for n_ in ("A",)}
    bufs = {**fast.runner.buffers_of(bound["A"], "A"), "x_vals": x, "y_vals": torch.empty(A.shape[0], device=dev)}
    scal = {"n_i": A.shape[0], "n_j": A.shape[1], "sc_lo": 0, "sc_hi": A.shape[0]}
    args = [bufs[n_] if b else scal[n_] for b, n_ in names] + internal
    rows = [
        ("sparsec tb.call (whole call)", lambda: tb.call(k, A=Ad, x=x)),
        ("sparsec fast path, launch memo hit", lambda: fast({"A": Ad, "x": x})),
        ("triton fn[grid](*args) only", lambda: fn[(grid,)](*args, num_warps=warps, **kwargs)),
        ("torch.empty(n)", lambda: torch.empty(A.shape[0], device=dev)),
        ("torch csr @ x (cuSPARSE)", lambda: At @ x),
    ]
    try:
        import cupyx.scipy.sparse as csp
        import cupy as cp
        Ac = csp.csr_matrix(A)
        xc = cp.asarray(x.cpu().numpy())
        rows.append(("cupy csr @ x", lambda: Ac @ xc))
    except Exception as e:  # pragma: no cover
        print("cupy:", e)
    for label, f in rows:
        print(f"{label:40s} wall {wall(f):8.1f} us   do_bench {triton.testing.do_bench(f, return_mode='median') * 1e3:8.1f} us")
    for label, f in rows:
        print(f"{label:40s} wall {wall(f):8.1f} us  (second pass)")


if __name__ == "__main__":
    main()
