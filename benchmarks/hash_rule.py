"""Where the hash-table workspace beats the dense row: SpGEMM A (m x K) @ B (K x n), uniform random,
d_a entries a row of A, d_b a row of B (about c = d_a * d_b output columns a row), 1 thread, float32.

    SPARSEC_CACHE_DIR=$(mktemp -d) python benchmarks/hash_rule.py

Prints, per (n, c), the dense-row and hash-table times (min of 7, ms) and T = the table's slots
(least power of two >= 2 c), so that the crossover can be read as a ratio n / T.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sps
from hash_workspace import best   # min of ``reps`` timed calls after a warm-up, ms


def rand(rows: int, cols: int, d: int, seed: int) -> sps.csr_matrix:
    rng = np.random.default_rng(seed)
    A = sps.csr_matrix((rng.uniform(-1, 1, rows * d).astype(np.float32), rng.integers(0, cols, rows * d),
                        np.arange(0, rows * d + 1, d)), shape=(rows, cols))
    A.sum_duplicates()
    A.sort_indices()
    return A


def main() -> None:
    import sparsec as sc
    from sparsec.runtime import hash_table_size

    sc.set_num_threads(1)
    ks = {kind: sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32",
                           schedule=sc.Schedule().workspace("j", kind)) for kind in ("dense", "hash")}
    K = 20000
    print("n\tc\tT\tn/T\tdense ms\thash ms\thash/dense")
    for n in (1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22):
        for da, db in ((4, 2), (8, 8), (16, 32)):
            m = max(2000, 400_000 // (da * db))
            A, B = sc.Tensor.from_scipy(rand(m, K, da, 1), format="csr"), sc.Tensor.from_scipy(rand(K, n, db, 2),
                                                                                               format="csr")
            c = da * db
            t = {kind: best(lambda: k(A=A, B=B), 7) for kind, k in ks.items()}
            T = hash_table_size(c)
            print(f"{n}\t{c}\t{T}\t{n // T}\t{t['dense']:.2f}\t{t['hash']:.2f}\t{t['hash'] / t['dense']:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
