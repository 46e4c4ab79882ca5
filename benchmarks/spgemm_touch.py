"""CPU SpGEMM ``C = A @ A``: the workspace's two ways of marking a new column, and MKL, side by side.

Usage (from ``benchmarks/``, ``MKL_RT`` set to the venv's libmkl_rt):
    python spgemm_touch.py --out results/<name> [--threads 1,2] [--reps 3] [matrix ...]

``Schedule.workspace("j", "auto", touch=...)``: ``branch`` tests the dense mark and appends only a new
column; ``select`` appends every column and advances the row's list by ``1 - mark`` (no branch). Each
(matrix, thread count) times both, for a sorted (``csr``) and an unsorted (``csr_unsorted``) output,
with MKL's ``mkl_sparse_spmm`` (unsorted rows) in the same rounds: three rounds, the calls alternated,
best of ``--reps`` per round, minimum over rounds. Every result is checked against scipy.
Writes ``results.csv``, ``summary.md`` and ``touch.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hash_workspace import best
from report import _geomean
from spgemm_cpu import UNORDERED_CSR, cases, cli

STMT = "C[i,j] = A[i,k] * B[k,j]"
OUTPUTS = {"sorted": "csr", "unsorted": UNORDERED_CSR}
TOUCH = ("branch", "select")


def measure(names: list[str], threads: list[int], reps: int) -> list[dict]:
    """One row per (matrix, thread count): ms of every (output, touch) kernel and of MKL."""
    import sparse_dot_mkl as mkl

    import sparsec as sc

    kernels = {(o, t): sc.compile(STMT, formats={"A": "csr", "B": "csr", "C": fmt}, dtype="float32",
                                  schedule=sc.Schedule().workspace("j", "auto", t))
               for o, fmt in OUTPUTS.items() for t in TOUCH}
    rows = []
    for name, th, A, T, ref, tol in cases(names, threads):
        for (o, t), k in kernels.items():
            assert abs(k(A=T, B=T).to_scipy() - ref).max() <= tol, (name, o, t)
        times: dict[str, list[float]] = {}
        for _ in range(3):
            for (o, t), k in kernels.items():
                times.setdefault(f"{o}_{t}", []).append(best(lambda: k(A=T, B=T), reps))
            times.setdefault("mkl", []).append(best(lambda: mkl.dot_product_mkl(A, A), reps))
        row = {"matrix": name, "threads": th, "products_per_entry": round(
            int(np.diff(A.indptr)[A.indices].sum()) / max(1, ref.nnz), 2),
            **{c: round(min(v), 3) for c, v in times.items()}}
        rows.append(row)
        print("\t".join(str(v) for v in row.values()), flush=True)
    return rows


def summary(rows: list[dict], machine: str, command: str) -> str:
    """Markdown: per row the ms and the ratios, then geometric means per thread count."""
    lines = [f"# CPU SpGEMM: branch vs branch-free marking of new columns — {machine}", "",
             f"Command: `{command}`. Times in ms (best of the rounds); > 1: faster than the other.", "",
             "| matrix | threads | products / entry of C | unsorted branch | unsorted select | select speed-up | "
             "MKL | MKL / branch | MKL / select | sorted branch | sorted select |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['matrix']} | {r['threads']} | {r['products_per_entry']} | {r['unsorted_branch']} | "
                     f"{r['unsorted_select']} | {r['unsorted_branch'] / r['unsorted_select']:.2f}x | {r['mkl']} | "
                     f"{r['mkl'] / r['unsorted_branch']:.2f}x | {r['mkl'] / r['unsorted_select']:.2f}x | "
                     f"{r['sorted_branch']} | {r['sorted_select']} |")
    lines += ["", "| threads | select / branch, unsorted (geomean) | MKL / branch | MKL / select | "
              "MKL / the better of the two per matrix |", "|---|---|---|---|---|"]
    for th in sorted({r["threads"] for r in rows}):
        rs = [r for r in rows if r["threads"] == th]
        lines.append(
            f"| {th} | {_geomean([r['unsorted_branch'] / r['unsorted_select'] for r in rs]):.2f}x | "
            f"{_geomean([r['mkl'] / r['unsorted_branch'] for r in rs]):.2f}x | "
            f"{_geomean([r['mkl'] / r['unsorted_select'] for r in rs]):.2f}x | "
            f"{_geomean([r['mkl'] / min(r['unsorted_branch'], r['unsorted_select']) for r in rs]):.2f}x |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, machine: str) -> None:
    """Bars per matrix: MKL time / sparsec time (unsorted) for each touch, one panel per thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ths = sorted({r["threads"] for r in rows})
    fig, axes = plt.subplots(len(ths), 1, figsize=(11, 3.2 * len(ths)), squeeze=False)
    for ax, th in zip(axes[:, 0], ths):
        rs = [r for r in rows if r["threads"] == th]
        x = np.arange(len(rs))
        for d, t in ((-0.2, "branch"), (0.2, "select")):
            ax.bar(x + d, [r["mkl"] / r[f"unsorted_{t}"] for r in rs], 0.4, label=f"touch={t}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(x, [r["matrix"] for r in rs], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("MKL time / sparsec time")
        ax.set_title(f"C = A @ A unsorted rows, {th} thread(s) — {machine}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    return cli(argv, "spgemm_touch.py", measure, summary, plot, "touch.png", 3)


if __name__ == "__main__":
    raise SystemExit(main())
