"""SpGEMM C = A @ A: sparsec's dense-row vs hash-table workspace (Schedule.workspace) vs scipy and MKL.

    MKL_RT=$(ls .venv/lib/libmkl_rt.so* | head -1) SPARSEC_CACHE_DIR=$(mktemp -d) \\
        python benchmarks/hash_workspace.py [--threads 1,2] [--reps 7] [--ratio 16] [names...]

Times are the minimum of ``--reps`` calls (after one warm-up call) of each kernel, in ms; float32.
Names: matrices of the shared folder (``$SPARSEC_MATRICES`` or ``../shared/matrices``, MANIFEST.tsv) or ``rand<n>x<d>`` (uniform random n x n,
d entries a row, seed 0). ``--ratio`` overrides ``sparsify.HASH_RATIO`` for the ``auto`` kernels
(compile-time: use a fresh SPARSEC_CACHE_DIR per value).
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np
import scipy.sparse as sps

DEFAULT = ["ct2010", "delaunay_n16", "p2p-Gnutella31", "cage11", "ca-CondMat", "wiki-Vote", "rand1000000x4"]


def load(name: str) -> sps.csr_matrix:
    m = re.fullmatch(r"rand(\d+)x(\d+)", name)
    if m:
        n, d = int(m[1]), int(m[2])
        rng = np.random.default_rng(0)
        cols = rng.integers(0, n, n * d)
        A = sps.csr_matrix((rng.uniform(-1, 1, n * d).astype(np.float32), cols, np.arange(0, n * d + 1, d)),
                           shape=(n, n))
        A.sum_duplicates()
        A.sort_indices()
        return A
    from cases import _loader, matrices_dir   # the suite's matrices folder ($SPARSEC_MATRICES or ../shared/matrices)

    return _loader(matrices_dir()).load(name, dtype="float32", pattern_values="random").tocsr()


def best(fn, reps: int) -> float:
    """Minimum of ``reps`` timed calls after one warm-up call, ms (the suite's ``timing.cpu_time``)."""
    from timing import Budget, cpu_time

    fn()
    return 1e3 * cpu_time([fn], Budget(min_reps=reps, max_reps=reps, budget_s=0.0)).min_s


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("names", nargs="*", default=DEFAULT)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--ratio", type=int, default=None)
    p.add_argument("--kinds", default="dense,auto,hash")
    a = p.parse_args(argv)
    import sparsec as sc
    from sparsec.passes import sparsify
    if a.ratio is not None:
        sparsify.HASH_RATIO = a.ratio
    import sparse_dot_mkl as mkl

    kinds = a.kinds.split(",")
    kernels = {kind: sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"},
                                dtype="float32", schedule=sc.Schedule().workspace("j", kind)) for kind in kinds}
    print("matrix\tn\tnnz(A)\tnnz(C)\tmax row\tthreads\tscipy\tmkl\t" + "\t".join(kinds) + "\t(ms, min of %d)" % a.reps)
    for name in a.names:
        A = load(name)
        T = sc.Tensor.from_scipy(A, format="csr")
        ref = (A @ A).tocsr()
        ref.sum_duplicates()
        for th in [int(x) for x in a.threads.split(",")]:
            sc.set_num_threads(th)
            mkl.mkl_set_num_threads(th)
            row = {}
            for kind, k in kernels.items():
                got = k(A=T, B=T).to_scipy().tocsr()
                assert abs(got - ref).max() <= 1e-3 * max(1.0, abs(ref).max()), (name, kind)
                row[kind] = best(lambda: k(A=T, B=T), a.reps)
            t_sp = best(lambda: A @ A, a.reps) if th == 1 else float("nan")   # scipy is single-threaded
            t_mkl = best(lambda: mkl.dot_product_mkl(A, A), a.reps)
            print(f"{name}\t{A.shape[1]}\t{A.nnz}\t{ref.nnz}\t{np.diff(ref.indptr).max()}\t{th}\t{t_sp:.2f}\t"
                  f"{t_mkl:.2f}\t" + "\t".join(f"{row[k]:.2f}" for k in kinds), flush=True)
    sc.set_num_threads(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
