"""CSR SpMM (float32) of sparsec against MKL at 1 and 2 threads, on the quick benchmark's matrices.

Usage: python benchmarks/spmm_threads.py [--rounds 7] [--n 16 64] [--only cage11 ...]
       [--peers sparsec1 sparsec2 mkl1 mkl2]

Operands, rotated input copies and timing are those of ``benchmarks/run.py --quick``
(``cases.CaseData``, ``run.n_copies``, ``timing.cpu_time``). Each round makes fresh
rotated copies, shared by all peers, and times every peer once on them: a call's time
depends on where its arrays landed (B's offset from a cache line alone changed
sparsec's SpMM by up to 1.6x before the register tiles took 256-bit vectors over
misaligned rows, and MKL's by up to 1.3x), so peers are compared on the same arrays,
and rounds sample several placements. A round starts when the machine is idle (other
processes below 10% of the CPUs, waiting up to 2 minutes). The table shows the median
over rounds of each round's median, in µs, and the ratio MKL time / sparsec time at
each thread count (> 1: sparsec faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import cases as C  # noqa: E402
from benchmarks import floor as F  # noqa: E402
from benchmarks import timing as T  # noqa: E402
from benchmarks.peers_cpu import MKLPeer, SparsecPeer, find_mkl_rt  # noqa: E402
from benchmarks.run import n_copies  # noqa: E402

ROUND = T.Budget(min_reps=5, max_reps=30, budget_s=0.1, slow_s=10.0)
PEERS = {"sparsec1": lambda: SparsecPeer(1), "sparsec2": lambda: SparsecPeer(2),
         "mkl1": lambda: MKLPeer(1), "mkl2": lambda: MKLPeer(2)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--n", type=int, nargs="+", default=[16, 64])
    p.add_argument("--only", nargs="*", help="matrix name substrings")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    return p.parse_args(argv)


def busy_fraction(seconds: float = 0.2) -> float:
    """Share of all CPUs busy over ``seconds`` (/proc/stat) while this process sleeps: other people's load."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]        # total, idle + iowait

    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(limit_s: float = 120.0, threshold: float = 0.1) -> bool:
    """Wait (up to ``limit_s``) until the machine is idle apart from this process; False if it never was."""
    end = time.monotonic() + limit_s
    while busy_fraction() > threshold:
        if time.monotonic() > end:
            return False
        time.sleep(1.0)
    return True


def operand_sets(data: C.CaseData, llc: int) -> list[C.Operands]:
    """The case's operands and rotated copies of them, as many as run.py uses."""
    ops = data.ops
    return [ops] + [ops.copy() for _ in range(n_copies(ops.nbytes, "cpu", llc, 4) - 1)]


def prepared(peer, data: C.CaseData, opsets: list[C.Operands], check: bool) -> list:
    """The peer's callables over ``opsets``, the first one's result checked against the reference."""
    with peer.threads_ctx():
        fns = [peer.prepare(data.case, o) for o in opsets]
        if check:
            err = C.rel_error(peer.to_host(fns[0]()), data.ref)
            if not err <= C.TOLERANCE[data.case.dtype]:
                raise RuntimeError(f"{peer.label} on {data.case.id}: relative error {err:.3g}")
    return fns


def time_round(peers: dict, data: C.CaseData, llc: int, check: bool) -> dict[str, float]:
    """One round: fresh rotated copies shared by every peer, each peer timed on them (median seconds)."""
    opsets = operand_sets(data, llc)
    out = {}
    for name, p in peers.items():
        fns = prepared(p, data, opsets, check)
        with p.threads_ctx():
            fns[0]()
            out[name] = T.cpu_time(fns, ROUND).median_s
    return out


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    warnings.filterwarnings("ignore")
    find_mkl_rt()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    llc = F.llc_bytes()
    kernels = [C.KernelSpec("spmm", n) for n in a.n]
    mats, notes = C.select_matrices(True, False, a.only)
    for n in notes:
        print("note:", n)
    peers = {name: PEERS[name]() for name in a.peers}
    for name, p in peers.items():
        why = p.missing()  # (also loads MKL)
        if why:
            raise SystemExit(f"{name}: {why}")
    rows = []
    for m in mats:
        A64 = m.build()
        for case in C.cases_for(m, kernels, ["float32"]):
            data = C.CaseData(case, A64)
            times: dict[str, list[float]] = {name: [] for name in peers}
            for r in range(a.rounds):
                if not wait_quiet():
                    print("  (machine busy: timing anyway)", flush=True)
                for name, t in time_round(peers, data, llc, r == 0).items():
                    times[name].append(t)
            med = {name: statistics.median(ts) * 1e6 for name, ts in times.items()}
            rows.append((case.id, med))
            print(f"{case.id:40s} " + " ".join(f"{n}={v:8.1f}" for n, v in med.items()) + _ratios(med), flush=True)
    print(f"load average at end: {os.getloadavg()}")
    _geomeans(rows)
    return 0


def _ratios(med: dict[str, float]) -> str:
    out = ""
    for t in ("1", "2"):
        if f"mkl{t}" in med and f"sparsec{t}" in med:
            out += f"  mkl/sparsec[{t}t]={med[f'mkl{t}'] / med[f'sparsec{t}']:.3f}"
    if "sparsec1" in med and "sparsec2" in med:
        out += f"  scaling={med['sparsec1'] / med['sparsec2']:.2f}"
    if "mkl1" in med and "mkl2" in med:
        out += f" (mkl {med['mkl1'] / med['mkl2']:.2f})"
    return out


def _geomeans(rows: list) -> None:
    for n in sorted({r[0].split("/")[1] for r in rows}):
        sel = [med for cid, med in rows if cid.split("/")[1] == n]
        for t in ("1", "2"):
            if all(f"mkl{t}" in m and f"sparsec{t}" in m for m in sel) and sel:
                g = statistics.geometric_mean([m[f"mkl{t}"] / m[f"sparsec{t}"] for m in sel])
                print(f"geomean {n} mkl[{t}t]/sparsec[{t}t] = {g:.3f} ({len(sel)} cases)")


if __name__ == "__main__":
    sys.exit(main())
