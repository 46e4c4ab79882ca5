"""A/B of the one-pass SpGEMM assembly against the two passes it replaces, with MKL in the same rounds.

From the repository root (MKL_RT set as for benchmarks/spgemm_cpu.py):
    python benchmarks/results/cpu-2core-amd-spgemm-one-pass/one_pass_ab.py [--rounds 3] [--reps 5] [names...]
"two passes": the same compiled kernel with its runner's one-pass kernels switched off (the symbolic count,
then the numeric kernel: the code before this change). Times in ms: per round the min of --reps calls,
then the median over rounds, the variants alternating within each round.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # benchmarks/
import sparsec as sc
from hash_workspace import load
from spgemm_cpu import DEFAULT, UNORDERED_CSR


def best(fn, reps):
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out) * 1e3


def main():
    import sparse_dot_mkl as mkl   # here, so that add_ab.py can import best() without MKL

    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", default=DEFAULT)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    stmt = "C[i,j] = A[i,k] * B[k,j]"
    kernels = {}
    for order, fmt in (("unsorted", UNORDERED_CSR), ("sorted", "csr")):
        for passes in (1, 2):
            k = sc.compile(stmt, formats={"A": "csr", "B": "csr", "C": fmt}, dtype="float32")
            if passes == 2:
                k._runner.runners[0].one_pass = None
            kernels[f"{order}_{passes}pass"] = k
    cols = list(kernels) + ["mkl", "mkl_sorted"]
    print("matrix\tthreads\t" + "\t".join(cols) + "\tunsorted 2pass/1pass\tsorted 2pass/1pass\tmkl/unsorted_1pass"
          "\tmkl_sorted/sorted_1pass", flush=True)
    for name in a.names:
        A = load(name)
        T = sc.Tensor.from_scipy(A, format="csr")
        ref = (A @ A).tocsr()
        tol = 1e-3 * max(1.0, float(abs(ref).max()))
        for th in (1, 2):
            sc.set_num_threads(th)
            mkl.mkl_set_num_threads(th)
            for key, k in kernels.items():
                assert abs(k(A=T, B=T).to_scipy() - ref).max() <= tol, (name, key)
            runs = {c: [] for c in cols}
            for _ in range(a.rounds):
                for key, k in kernels.items():
                    runs[key].append(best(lambda: k(A=T, B=T), a.reps))
                runs["mkl"].append(best(lambda: mkl.dot_product_mkl(A, A), a.reps))
                runs["mkl_sorted"].append(best(lambda: mkl.dot_product_mkl(A, A, reorder_output=True), a.reps))
            m = {c: statistics.median(v) for c, v in runs.items()}
            ratios = (m["unsorted_2pass"] / m["unsorted_1pass"], m["sorted_2pass"] / m["sorted_1pass"],
                      m["mkl"] / m["unsorted_1pass"], m["mkl_sorted"] / m["sorted_1pass"])
            print(f"{name}\t{th}\t" + "\t".join(f"{m[c]:.2f}" for c in cols) + "\t"
                  + "\t".join(f"{r:.2f}" for r in ratios), flush=True)
    sc.set_num_threads(None)


if __name__ == "__main__":
    main()
