"""CPU SpGEMM C = A @ A, like for like: sorted rows against sorted rows, unsorted against unsorted.

    MKL_RT=$(ls .venv/lib/libmkl_rt.so* | head -1) SPARSEC_CACHE_DIR=$(mktemp -d) \\
        python benchmarks/spgemm_cpu.py --out benchmarks/results/<dir> [--threads 1,2] [--reps 7] [names...]

scipy's ``A @ A`` and MKL's ``mkl_sparse_spmm`` (``sparse_dot_mkl.dot_product_mkl``) leave each output
row's columns in the order the accumulation met them; sparsec's ``csr`` output is sorted. So each is timed
both ways: MKL also with ``reorder_output=True`` (``mkl_sparse_order`` after the product), sparsec also
with C declared ``(dense, compressed(nonordered))`` (rows emitted in touch order, no sort). Ratios pair
the two sorted and the two unsorted results (> 1: sparsec faster). float32, min of ``--reps`` calls after
a warm-up (``timing.cpu_time``); scipy is single-threaded. Every result is checked against scipy's.
Writes ``results.csv``, ``summary.md`` and ``spgemm_cpu.png`` (ratios per matrix) under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from pathlib import Path

import numpy as np

from hash_workspace import best, load
from report import _cpu_model, _geomean

#: the square shared matrices of the GPU SpGEMM runs, plus a uniform random one
DEFAULT = ["ca-CondMat", "p2p-Gnutella31", "wiki-Vote", "cage11", "delaunay_n16", "ct2010", "bcsstk13", "memplus",
           "ca-HepPh", "PGPgiantcompo", "bayer10", "cs4", "rand200000x8"]
UNORDERED_CSR = "csr_unsorted"   # (dense, compressed(nonordered))
COLUMNS = ["scipy", "mkl", "mkl_sorted", "sparsec_unsorted", "sparsec_sorted"]


def operand(name: str):
    """(A as scipy CSR, A as a sparsec csr Tensor, scipy's A @ A, the tolerance the results are checked to)."""
    import sparsec as sc

    A = load(name)
    ref = (A @ A).tocsr()
    ref.sum_duplicates()
    return A, sc.Tensor.from_scipy(A, format="csr"), ref, 1e-3 * max(1.0, float(abs(ref).max()))


def cases(names: list[str], threads: list[int]):
    """``(name, thread count, A, T, ref, tol)`` (:func:`operand`) for every matrix and thread count, with
    sparsec and MKL set to that many threads while the case runs (sparsec's default restored after)."""
    import sparse_dot_mkl as mkl

    import sparsec as sc

    try:
        for name in names:
            A, T, ref, tol = operand(name)
            for th in threads:
                sc.set_num_threads(th)
                mkl.mkl_set_num_threads(th)
                yield name, th, A, T, ref, tol
    finally:
        sc.set_num_threads(None)


def measure(names: list[str], threads: list[int], reps: int) -> list[dict]:
    """One row per (matrix, thread count): times in ms of every column, checked against scipy."""
    import sparse_dot_mkl as mkl

    import sparsec as sc

    stmt = "C[i,j] = A[i,k] * B[k,j]"
    kernels = {o: sc.compile(stmt, formats={"A": "csr", "B": "csr", "C": fmt}, dtype="float32")
               for o, fmt in (("sorted", "csr"), ("unsorted", UNORDERED_CSR))}
    rows = []
    for name, th, A, T, ref, tol in cases(names, threads):
        t = {}
        for order, k in kernels.items():
            got = k(A=T, B=T).to_scipy()
            assert abs(got - ref).max() <= tol, (name, order)
            assert bool(got.has_sorted_indices) == (order == "sorted"), (name, order)
            t[f"sparsec_{order}"] = best(lambda: k(A=T, B=T), reps)
        for col, kw in (("mkl", {}), ("mkl_sorted", {"reorder_output": True})):
            assert abs(mkl.dot_product_mkl(A, A, **kw) - ref).max() <= tol, (name, col)
            t[col] = best(lambda: mkl.dot_product_mkl(A, A, **kw), reps)
        t["scipy"] = best(lambda: A @ A, reps) if th == 1 else float("nan")
        row = {"matrix": name, "n": A.shape[0], "nnz_A": A.nnz, "nnz_C": ref.nnz,
               "products": int(np.diff(A.indptr)[A.indices].sum()), "threads": th, **t}
        rows.append(row)
        print("\t".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()), flush=True)
    return rows


def ratios(row: dict) -> dict[str, float]:
    """Peer time / sparsec time, like for like (> 1: sparsec faster)."""
    return {"mkl / sparsec (unsorted)": row["mkl"] / row["sparsec_unsorted"],
            "mkl sorted / sparsec (sorted)": row["mkl_sorted"] / row["sparsec_sorted"],
            "scipy / sparsec (unsorted)": row["scipy"] / row["sparsec_unsorted"]}


def summary(rows: list[dict], machine: str, command: str) -> str:
    lines = [f"# CPU SpGEMM C = A @ A (float32), like for like: {machine}", "", f"Command: `{command}`", "",
             "Times in ms (min of the timed calls). mkl / scipy: rows unsorted as computed; mkl_sorted: "
             "`reorder_output=True`; sparsec_sorted: C in `csr`; sparsec_unsorted: C in "
             "`(dense, compressed(nonordered))`.", ""]
    for th in sorted({r["threads"] for r in rows}):
        sub = [r for r in rows if r["threads"] == th]
        lines += [f"## {th} thread{'s' if th > 1 else ''}", "",
                  "| matrix | nnz(C) | " + " | ".join(COLUMNS) + " | mkl / sparsec unsorted | "
                  "mkl sorted / sparsec sorted |", "|---|---|" + "---|" * (len(COLUMNS) + 2)]
        for r in sub:
            q = ratios(r)
            lines.append(f"| {r['matrix']} | {r['nnz_C']} | " + " | ".join(f"{r[c]:.2f}" for c in COLUMNS) +
                         f" | {q['mkl / sparsec (unsorted)']:.2f} | {q['mkl sorted / sparsec (sorted)']:.2f} |")
        gm = {k: _geomean([ratios(r)[k] for r in sub]) for k in ratios(sub[0])}
        worst = {k: min(ratios(r)[k] for r in sub) for k in gm}
        lines += ["", "Geometric means (worst): " + "; ".join(
            f"{k} {v:.2f}x ({worst[k]:.2f}x)" for k, v in gm.items() if math.isfinite(v)), ""]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = sorted({r["threads"] for r in rows})
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 4.5), squeeze=False)
    for ax, th in zip(axes[0], threads):
        sub = [r for r in rows if r["threads"] == th]
        x = np.arange(len(sub))
        keys = ["mkl / sparsec (unsorted)", "mkl sorted / sparsec (sorted)"]
        for j, key in enumerate(keys):
            ax.bar(x + (j - 0.5) * 0.4, [ratios(r)[key] for r in sub], 0.4, label=key)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(x, [r["matrix"] for r in sub], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("peer time / sparsec time")
        ax.set_title(f"SpGEMM A @ A, {th} thread{'s' if th > 1 else ''}")
        ax.legend(fontsize=8)
    fig.suptitle(machine, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def cli(argv, script: str, measure_fn, summary_fn, plot_fn, png: str, reps: int) -> int:
    """The command line of the CPU SpGEMM benchmarks: matrices, ``--threads``, ``--reps``, ``--out``; writes
    ``results.csv``, ``summary.md`` (``summary_fn(rows, machine, command)``) and the plot ``png``."""
    p = argparse.ArgumentParser()
    p.add_argument("names", nargs="*", default=DEFAULT)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--reps", type=int, default=reps)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    machine = f"{_cpu_model()} ({len(os.sched_getaffinity(0))} cores)"
    rows = measure_fn(a.names, [int(x) for x in a.threads.split(",")], a.reps)
    a.out.mkdir(parents=True, exist_ok=True)
    with open(a.out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    command = f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])
    (a.out / "summary.md").write_text(summary_fn(rows, machine, command))
    plot_fn(rows, a.out / png, machine)
    print(summary_fn(rows, machine, command))
    return 0


def main(argv=None) -> int:
    return cli(argv, "spgemm_cpu.py", measure, summary, plot, "spgemm_cpu.png", 7)


if __name__ == "__main__":
    sys.exit(main())
