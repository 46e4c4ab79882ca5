"""A/B of the one-pass sparse add C = A + Aᵀ (csr, float32) against the two passes, scipy in the same rounds.

From the repository root:
    python benchmarks/results/cpu-2core-amd-spgemm-one-pass/add_ab.py [--rounds 5] [--reps 7] [names...]
"two passes": the same compiled kernel with its runner's one-pass kernels switched off (exact counts by a
merge of both rows, then the merge that writes them). Times in ms: per round the min of --reps calls, then
the median over rounds, the variants alternating within each round. scipy is single-threaded.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # benchmarks/
sys.path.insert(0, str(Path(__file__).resolve().parent))       # one_pass_ab.py, beside this script
import sparsec as sc
from hash_workspace import load
from one_pass_ab import best
from spgemm_cpu import DEFAULT


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", default=DEFAULT)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    kernels = {}
    for passes in (1, 2):
        k = sc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32")
        if passes == 2:
            k._runner.runners[0].one_pass = None
        kernels[f"{passes}pass"] = k
    print("matrix\tnnz_C\tthreads\t1pass\t2pass\tscipy\t2pass/1pass\tscipy/1pass", flush=True)
    for name in a.names:
        A = load(name)
        B = A.T.tocsr()
        B.sort_indices()
        TA, TB = sc.Tensor.from_scipy(A, format="csr"), sc.Tensor.from_scipy(B, format="csr")
        ref = (A + B).tocsr()
        for th in (1, 2):
            sc.set_num_threads(th)
            for key, k in kernels.items():
                got = k(A=TA, B=TB).to_scipy()
                assert abs(got - ref).max() <= 1e-4 * max(1.0, float(abs(ref).max())), (name, key)
            runs = {c: [] for c in ("1pass", "2pass", "scipy")}
            for _ in range(a.rounds):
                for key, k in kernels.items():
                    runs[key].append(best(lambda: k(A=TA, B=TB), a.reps))
                runs["scipy"].append(best(lambda: A + B, a.reps))
            m = {c: statistics.median(v) for c, v in runs.items()}
            print(f"{name}\t{ref.nnz}\t{th}\t{m['1pass']:.3f}\t{m['2pass']:.3f}\t{m['scipy']:.3f}\t"
                  f"{m['2pass'] / m['1pass']:.2f}\t{m['scipy'] / m['1pass']:.2f}", flush=True)
    sc.set_num_threads(None)


if __name__ == "__main__":
    main()
