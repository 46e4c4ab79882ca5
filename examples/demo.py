"""sparsec demo: compile SpMV and SpMM for a real sparse matrix, check them, show the generated code.

Run it with ``./scripts/demo.sh`` (which sets up the environment), or directly
with ``python examples/demo.py [matrix-name]`` once sparsec is installed. It uses
a matrix from ``../shared/matrices`` when that folder is there (``$SPARSEC_MATRICES``
overrides), and a generated power-law matrix otherwise.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import scipy.sparse as sp

import sparsec as sc
from sparsec import api

HERE = os.path.dirname(os.path.abspath(__file__))
MATRICES = os.environ.get("SPARSEC_MATRICES", os.path.join(HERE, "..", "..", "shared", "matrices"))


def load_matrix(name: str) -> tuple[str, sp.csr_matrix]:
    """A shared Matrix Market file if present, else a synthetic power-law matrix."""
    path = os.path.join(MATRICES, name + ".mtx.gz")
    if os.path.exists(path):
        A = sc.read_mtx(path, format="csr").to_scipy().tocsr()
        return name, A
    rng = np.random.default_rng(0)
    n = 20000
    lengths = np.minimum(rng.zipf(1.8, n), 2000)
    rows = np.repeat(np.arange(n), lengths)
    cols = rng.integers(0, n, rows.shape[0])
    A = sp.csr_matrix((rng.uniform(-1, 1, rows.shape[0]), (rows, cols)), shape=(n, n))
    A.sum_duplicates()
    return f"synthetic power-law {n}x{n}", A


def best_time(fn, repeat: int = 20) -> float:
    """Median wall time of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    name, A = load_matrix(sys.argv[1] if len(sys.argv) > 1 else "cage11")
    print(f"matrix: {name}, {A.shape[0]} x {A.shape[1]}, {A.nnz} nonzeros")
    rng = np.random.default_rng(1)
    x = rng.standard_normal(A.shape[1])

    # 1. SpMV in index notation, A stored as CSR; compiled once, called many times.
    spmv = api.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float64", target="cpu", name="spmv")
    print(f"compiled SpMV in {spmv.compile_seconds * 1e3:.1f} ms")
    At = sc.Tensor.from_scipy(A, name="A")
    y = spmv(A=At, x=x)
    err = np.linalg.norm(y - A @ x) / np.linalg.norm(A @ x)
    print(f"SpMV relative error vs scipy: {err:.2e}  ->  {'OK' if err < 1e-12 else 'WRONG'}")
    t_sc, t_sp = best_time(lambda: spmv(A=At, x=x)), best_time(lambda: A @ x)
    print(f"SpMV time: sparsec {t_sc * 1e3:.3f} ms, scipy {t_sp * 1e3:.3f} ms  (speed-up {t_sp / t_sc:.2f}x)")

    # 2. SpMM through the numpy-compatible einsum, with B dense (64 columns).
    B = rng.standard_normal((A.shape[1], 64))
    C = api.einsum("ik,kj->ij", At, B)
    err = np.linalg.norm(C - A @ B) / np.linalg.norm(A @ B)
    print(f"SpMM (N=64) relative error vs scipy: {err:.2e}  ->  {'OK' if err < 1e-12 else 'WRONG'}")

    # 3. Every stage can be printed.
    print("\n===== tensor IR =====")
    print(spmv.dump("tensor"))
    print("\n===== loop IR =====")
    print(spmv.dump("loops"))
    llvm = spmv.dump("llvm")
    body = [line for line in llvm.splitlines() if line.strip()]
    print(f"\n===== optimized LLVM IR (first 40 of {len(body)} lines; spmv.dump('llvm') has it all) =====")
    print("\n".join(body[:40]))


if __name__ == "__main__":
    main()
