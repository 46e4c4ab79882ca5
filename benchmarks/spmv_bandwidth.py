"""CSR SpMV on matrices larger than the last-level cache: sparsec against the memory-bandwidth floor.

Usage: python benchmarks/spmv_bandwidth.py [--rounds 5] [--llc-factor 1.5] [--per-row 16] [--x-window N]
[--only uniform,xwindow]

The benchmark suite's matrices fit in the L3 of the machines it ran on, so the issue's bandwidth
target ("SpMV on matrices larger than the last-level cache at 80 % or more of the
floor") needs its own inputs: a band, uniform random and Zipf row lengths (``cases.banded``,
``cases.uniform_random``, ``cases.powerlaw_rows``), float32 values and int32 indices, sized so that the least bytes
a SpMV must move (values, column indices, row pointers, x and y once each;
``floor.least_cost``) are ``--llc-factor`` times the cache. Floor = least bytes / the
machine's bandwidth, measured here as in ``benchmarks/run.py`` (numpy copy on all
threads). Prints, per matrix, the median time of sparsec at 1 and 2 threads, scipy and
MKL (sparse_dot_mkl, 1 and 2 threads) and each one's fraction of the floor.

``--x-window N`` adds a control: a uniform matrix of as many rows and nonzeros whose columns lie in
``[0, N)``, so that x fits in a core's L2. The SpMV streams the same matrix bytes and makes the same number
of gathers; only where x lives differs.

SpMV only reads, and on this VM reads alone stream slower than a copy's reads plus
non-temporal writes; so each round also times reading the same number of bytes (a float32
array's vectorized max, split over 1 and over all threads), and each SpMV is also given as
a fraction of that read stream at its thread count, timed in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import cases as C  # noqa: E402
from benchmarks import floor as F  # noqa: E402
from benchmarks import timing as T  # noqa: E402
from benchmarks.peers_cpu import MKLPeer, ScipyPeer, SparsecPeer  # noqa: E402
from benchmarks.spmm_threads import prepared, wait_quiet  # noqa: E402

ROUND = T.Budget(min_reps=5, max_reps=20, budget_s=0.5, slow_s=10.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--llc-factor", type=float, default=1.5, help="least bytes of the SpMV / last-level cache")
    p.add_argument("--per-row", type=int, default=16, help="average nonzeros per row")
    p.add_argument("--x-window", type=int, default=0,
                   help="also a uniform matrix whose columns lie in [0, X_WINDOW): as many bytes and gathers, but x "
                        "small enough for the L2 (the control that separates the loop from where x lives)")
    p.add_argument("--only", default="", help="comma-separated name prefixes of the matrices to run (default all)")
    return p.parse_args(argv)


def matrices(llc: int, factor: float, per_row: int, x_window: int = 0) -> list[C.MatrixSpec]:
    """Banded, uniform and power-law matrices whose SpMV moves about ``factor`` x ``llc`` bytes (float32/int32).

    The band reads x almost in order (a stream); the others gather it at random. With ``x_window``, also a
    uniform matrix of as many rows whose columns lie in ``[0, x_window)``."""
    rows = int(factor * llc / (8 * per_row + 12)) + 1   # nnz * (4 + 4) + rows * (4 + 4 + 4)
    half = per_row // 2
    band_rows = int(factor * llc / (8 * (2 * half + 1) + 12)) + 1
    return [C.MatrixSpec(f"banded_{band_rows // 1000}k_b{half}", "synthetic",
                         lambda: C.banded(band_rows, half, 33), structure="band"),
            C.MatrixSpec(f"uniform_{rows // 1000}k_d{per_row}", "synthetic",
                         lambda: C.uniform_random(rows, rows, per_row, 31), structure="uniform"),
            C.MatrixSpec(f"powerlaw_{rows // 1000}k_d{per_row}", "synthetic",
                         lambda: C.powerlaw_rows(rows, rows, per_row, 32), structure="powerlaw")] + ([
            C.MatrixSpec(f"xwindow_{rows // 1000}k_d{per_row}_x{x_window // 1000}k", "synthetic",
                         lambda: C.uniform_random(rows, x_window, per_row, 34), structure="uniform")]
            if x_window else [])


def read_stream(nbytes: int, threads: int, pool: ThreadPoolExecutor | None) -> Callable[[], object]:
    """A call reading ``nbytes`` once (a float32 array's ``max``; numpy releases the GIL), split over
    ``threads`` threads of ``pool`` (one: on the calling thread)."""
    data = np.ones(nbytes // 4, dtype=np.float32)
    if threads == 1 or pool is None:
        return data.max
    cuts = np.linspace(0, data.size, threads + 1).astype(np.int64)
    parts = [data[lo:hi] for lo, hi in zip(cuts[:-1], cuts[1:])]
    return lambda: list(pool.map(np.max, parts))


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    warnings.filterwarnings("ignore")
    llc = F.llc_bytes()
    floor = F.measure_cpu(quick=True, log=lambda *x: None)
    bw = floor.bandwidth
    print(f"last-level cache {llc / 2**20:.0f} MiB; bandwidth {bw / 1e9:.1f} GB/s ({floor.bandwidth_source}); "
          f"load average {os.getloadavg()}", flush=True)
    peers = {"sparsec1": SparsecPeer(1), "sparsec2": SparsecPeer(2), "scipy": ScipyPeer(), "mkl1": MKLPeer(1),
             "mkl2": MKLPeer(2)}
    peers = {n: p for n, p in peers.items() if not p.missing()}
    threads = os.cpu_count() or 1
    only = tuple(p for p in a.only.split(",") if p)
    for m in matrices(llc, a.llc_factor, a.per_row, a.x_window):
        if only and not m.name.startswith(only):
            continue
        A64 = m.build()
        (case,) = C.cases_for(m, [C.KernelSpec("spmv")], ["float32"])
        data = C.CaseData(case, A64)
        least_bytes, _ = F.least_cost(data)
        pool = ThreadPoolExecutor(threads) if threads > 1 else None
        reads = {n: read_stream(least_bytes, n, pool) for n in sorted({1, threads})}
        times: dict[str, list[float]] = {n: [] for n in peers}
        read_times: dict[int, list[float]] = {n: [] for n in reads}
        for r in range(a.rounds):
            if not wait_quiet():
                print("  (machine busy: timing anyway)", flush=True)
            for n, fn in reads.items():
                fn()
                read_times[n].append(T.cpu_time([fn], ROUND).median_s)
            for name, p in peers.items():
                fns = prepared(p, data, [data.ops], r == 0)
                with p.threads_ctx():
                    fns[0]()
                    times[name].append(T.cpu_time(fns, ROUND).median_s)
        reads = {}   # frees the arrays
        if pool is not None:
            pool.shutdown()
        fl = least_bytes / bw
        print(f"{m.name}: {A64.nnz / 1e6:.1f}M nonzeros, least bytes {least_bytes / 2**20:.0f} MiB "
              f"({least_bytes / llc:.2f}x the cache), floor {fl * 1e3:.2f} ms", flush=True)
        read_med = {n: statistics.median(ts) for n, ts in read_times.items()}
        print("  reading the same bytes: " + ", ".join(
            f"{t * 1e3:.2f} ms on {n} thread(s) ({least_bytes / t / 1e9:.1f} GB/s)" for n, t in read_med.items()),
            flush=True)
        for name, ts in times.items():
            t = statistics.median(ts)
            read = read_med.get(getattr(peers[name], "threads", 1) or 1)
            of_reads = f"   of the read stream {read / t:5.2f}" if read else ""
            print(f"  {name:9s} {t * 1e3:8.2f} ms   floor fraction {fl / t:5.2f}{of_reads}   "
                  f"({min(ts) * 1e3:.2f}-{max(ts) * 1e3:.2f} ms over {len(ts)} rounds)", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
