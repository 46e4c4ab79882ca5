"""CPU SpMV variants side by side in one process, calls alternated (the 2-core VM drifts by 20 % between
minutes, so separate runs cannot compare them).

Two questions it answers:

* ``--compare threads``: one thread against two at the current parallel threshold, and two threads
  always parallel (``runtime.MIN_PARALLEL_WORK`` = 1): where does a second core start to pay?
* ``--compare short-rows``: the row loop as LLVM vectorizes it against the short-row versioning of
  :mod:`sparsec.backends.cpu.shortrows` with several long-row thresholds (one thread).

Each call reads one of ``--copies`` rotated copies of the operands (as ``benchmarks/run.py`` does for
cache-resident problems). Matrices: names of the shared folder, the benchmark's synthetic cases (``banded_50k_b5``, ...), or
``u<rows>x<per row>`` (uniform random columns out of max(rows, 4096)). Prints one line per matrix: median µs per variant.

    python benchmarks/spmv_variants.py --compare short-rows ct2010,wiki-Vote,bayer10
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sparsec as sc  # noqa: E402
from sparsec import runtime  # noqa: E402
from sparsec.backends.cpu import shortrows  # noqa: E402

from benchmarks.cases import _loader, matrices_dir, synthetic_matrices  # noqa: E402


def matrix(name: str, dtype: str) -> sp.csr_matrix:
    """A shared matrix by name, or ``u<rows>x<per row>`` (uniform random)."""
    specs = {spec.name: spec for spec in synthetic_matrices(False) + synthetic_matrices(True)}
    if name in specs:
        a = specs[name].build().tocsr().astype(dtype)
    elif name.startswith("u") and "x" in name and name[1:].split("x")[0].isdigit():
        rows, per_row = map(int, name[1:].split("x"))
        cols = max(rows, 4096)
        a = sp.random(rows, cols, density=per_row / cols, format="csr", dtype=dtype, random_state=1)
    else:
        a = _loader(matrices_dir()).load(name).tocsr().astype(dtype)
    a.sort_indices()
    return a


def variants(compare: str, dtype: str) -> list[tuple[str, sc.Kernel, int, int]]:
    """(label, kernel, threads, MIN_PARALLEL_WORK) per variant."""
    text, formats = "y[i] = A[i,j] * x[j]", {"A": "csr"}
    if compare == "threads":
        k = sc.compile(text, formats=formats, dtype=dtype, target="cpu")
        default = runtime.MIN_PARALLEL_WORK
        return [("1t", k, 1, default), ("2t", k, 2, default), ("2t-always", k, 2, 1)]
    out = []
    saved = shortrows.LONG_ROW, shortrows.FORCE
    try:
        # LONG_ROW = 0: every row takes LLVM's ordinary loop (the code before short-row versioning, plus
        # one compare per row); the masked loop is built on every host (FORCE), and "shipped" is what
        # this host gets by default (shortrows.pays_off)
        shortrows.FORCE = True
        for label, long_row in (("ordinary", 0), ("long8", 8), ("long16", 16), ("long32", 32)):
            shortrows.LONG_ROW = long_row
            k = sc.compile(text, formats=formats, dtype=dtype, target="cpu", name=f"spmv_{label}")
            out.append((label, k, 1, runtime.MIN_PARALLEL_WORK))
        shortrows.LONG_ROW, shortrows.FORCE = saved
        k = sc.compile(text, formats=formats, dtype=dtype, target="cpu", name="spmv_shipped")
        out.append(("shipped", k, 1, runtime.MIN_PARALLEL_WORK))
    finally:
        shortrows.LONG_ROW, shortrows.FORCE = saved
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("matrices", help="comma-separated names")
    p.add_argument("--compare", choices=("threads", "short-rows"), default="short-rows")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--copies", type=int, default=8)
    p.add_argument("--seconds", type=float, default=3.0, help="per matrix, all variants together")
    a = p.parse_args()
    os.environ.setdefault("SPARSEC_CACHE_DIR", "")   # the short-row variants differ only in a constant
    vs = variants(a.compare, a.dtype)
    print(f"# {a.compare}, {a.dtype}, {a.copies} copies, median µs per call; variants: {[v[0] for v in vs]}")
    for name in a.matrices.split(","):
        m = matrix(name, a.dtype)
        rng = np.random.default_rng(0)
        sets = []
        for _ in range(a.copies):
            c = m.copy()
            t = sc.Tensor.from_buffers("csr", c.shape, [{}, {"pos": c.indptr, "crd": c.indices}], c.data,
                                       name="A", validate=False)
            sets.append((t, rng.standard_normal(m.shape[1]).astype(a.dtype), c))
        for label, k, threads, _ in vs:   # every variant checked first
            runtime.set_num_threads(threads)
            t, x, c = sets[0]
            want = c.astype(np.float64) @ x.astype(np.float64)
            np.testing.assert_allclose(k(A=t, x=x), want, rtol=1e-3, atol=1e-4 * max(1.0, np.abs(want).max()),
                                       err_msg=f"{name} {label}")
        times: dict[str, list[float]] = {v[0]: [] for v in vs}
        i = 0
        saved = runtime.MIN_PARALLEL_WORK
        end = time.perf_counter() + a.seconds
        try:
            while time.perf_counter() < end:
                for label, k, threads, min_work in vs:
                    runtime.set_num_threads(threads)
                    runtime.MIN_PARALLEL_WORK = min_work
                    for _ in range(10):
                        t, x, _c = sets[i % a.copies]
                        i += 1
                        t0 = time.perf_counter()
                        k(A=t, x=x)
                        times[label].append(time.perf_counter() - t0)
        finally:
            runtime.MIN_PARALLEL_WORK = saved
            runtime.set_num_threads(None)
        print(f"{name:26s} rows {m.shape[0]:7d} nnz {m.nnz:8d} per row {m.nnz / max(1, m.shape[0]):6.1f}  "
              + "  ".join(f"{label} {np.median(v) * 1e6:8.1f}" for label, v in times.items()), flush=True)


if __name__ == "__main__":
    main()
