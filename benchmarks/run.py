#!/usr/bin/env python
"""Benchmark sparsec side by side with its peers and against the physical floor.

    python benchmarks/run.py [--quick] [--kernels spmv,spmm,...] [--device cpu|gpu]
                             [--out benchmarks/results/<machine-tag>]

See benchmarks/README.md for the columns, the floor and the caveats.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import cases as C  # noqa: E402
from benchmarks import floor as F  # noqa: E402
from benchmarks import report as R  # noqa: E402
from benchmarks import timing as T  # noqa: E402
from benchmarks.peer import Peer, classify  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
#: seconds a CPU peer on several threads is left to settle before the next peer runs: OpenMP runtimes keep
#: their workers spinning after a parallel region (Intel's, under MKL: 200 ms by default), and a spinning
#: worker takes the core that the next peer's second thread needs (2-vCPU AMD VM, wiki-Vote SpMV: sparsec on
#: 2 threads 61 us median right after MKL on 2 threads, 37 us in a run where it was not)
SETTLE_S = 0.3
_SHORT = {"wrong": "WRONG", "failed": "FAIL", "unsupported": "unsup", "missing": "miss", "skipped": "skip"}


# ------------------------------------------------------------------------------ arguments
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a subset of matrices and sizes, fewer repeats (< 3 min on 2 cores)")
    p.add_argument("--kernels", default="", help="comma list among spmv,spmm,sddmm,add,spgemm (or spmm64 ...); default all")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/<host>-<device>[-quick])")
    p.add_argument("--matrices", default="", help="comma list of substrings of matrix names to keep")
    p.add_argument("--dtypes", default="float32,float16", help="comma list among float32,float16,float64")
    p.add_argument("--peers", default="", help="comma list of substrings of peer labels to keep")
    p.add_argument("--spgemm-cap", type=float, default=None,
                   help="skip SpGEMM cases above this many flops (default 5e7 quick, 1e9 full)")
    p.add_argument("--sddmm-k", type=int, default=32, help="inner dimension K of SDDMM (default 32)")
    p.add_argument("--max-copies", type=int, default=None,
                   help="rotated input copies for cache-resident problems (default 4 quick, 8 full)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--keep-kernel-cache", action="store_true",
                   help="use sparsec's usual on-disk kernel cache (default: a fresh one, so compile times are cold)")
    p.add_argument("--list", action="store_true", help="list the selected cases and peers, run nothing")
    p.add_argument("--sparsec-target", default=None, help=argparse.SUPPRESS)  # interp: harness smoke tests
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)     # tiny matrices only (interp)
    a = p.parse_args(argv)
    a.dtypes = [d.strip() for d in a.dtypes.split(",") if d.strip()]
    bad = [d for d in a.dtypes if d not in C.DTYPES]
    if bad:
        p.error(f"unknown dtype(s) {bad}; use {', '.join(C.DTYPES)}")
    a.kernels = [k.strip() for k in a.kernels.split(",") if k.strip()]
    a.matrices = [m.strip() for m in a.matrices.split(",") if m.strip()]
    a.peers = [x.strip() for x in a.peers.split(",") if x.strip()]
    if a.spgemm_cap is None:
        a.spgemm_cap = 5e7 if (a.quick or a.tiny) else 1e9
    if a.max_copies is None:
        a.max_copies = 4 if (a.quick or a.tiny) else 8
    if a.sparsec_target is None:
        a.sparsec_target = "cpu" if a.device == "cpu" else "triton"
    if a.out is None:
        tag = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', platform.node() or 'host')}-{a.device}" + ("-quick" if a.quick else "")
        a.out = str(REPO / "benchmarks" / "results" / tag)
    return a


def select_kernels(a) -> list[C.KernelSpec]:
    """The default kernels, or those named: a kind (``spmm``: every default size) or a sized name
    (``spmm32``, ``sddmm64``), which need not be a default size."""
    ks = C.kernel_specs(a.quick, a.tiny, a.sddmm_k)
    if not a.kernels:
        return ks
    out: list[C.KernelSpec] = []
    for name in a.kernels:
        m = re.fullmatch(r"(spmm|sddmm)(\d+)", name)
        chosen = [C.KernelSpec(m.group(1), int(m.group(2)))] if m else [k for k in ks if k.kind == name]
        out += [k for k in chosen if k not in out]
    return out


def make_peers(a) -> list[Peer]:
    if a.device == "cpu":
        from benchmarks.peers_cpu import cpu_peers

        peers = cpu_peers(a.sparsec_target)
    else:
        from benchmarks.peers_gpu import gpu_peers

        peers = gpu_peers()
    if a.peers:
        baseline = "scipy" if a.device == "cpu" else "cusparse"
        peers = [p for p in peers if p.label == baseline or any(s in p.label for s in a.peers)]
    return peers


# ------------------------------------------------------------------------------ one measurement
def base_row(case: C.Case, A64, device: str) -> dict:
    m = case.matrix
    return {"case": case.id, "matrix": m.name, "group": m.group, "structure": m.structure, "sparsity": m.sparsity,
            "rows": A64.shape[0], "cols": A64.shape[1], "nnz": A64.nnz, "kernel": case.kernel.name,
            "n": case.kernel.n, "dtype": case.dtype, "device": device}


def n_copies(ws: int, device: str, llc: int, max_copies: int) -> int:
    """Rotated input copies so the inputs cycled through exceed 2x the last-level cache (CPU)."""
    if device != "cpu" or ws <= 0:
        return 1
    want = math.ceil(2 * llc / ws)
    return max(1, min(max_copies, want, (1 << 30) // ws))


def run_peer(peer: Peer, data: C.CaseData, row: dict, ctx: dict) -> dict:
    case = data.case
    row = dict(row, peer=peer.name, threads=peer.threads if peer.device == "cpu" else None, label=peer.label,
               note=peer.note, baseline=ctx["baseline"])
    why = peer.missing()
    if why:
        return dict(row, status="missing", reason=why)
    ok = peer.supports(case)
    if ok is not True:
        return dict(row, status="unsupported", reason=str(ok))
    fns = []
    try:
        with peer.threads_ctx():
            ws = data.ops.nbytes
            copies = n_copies(ws, peer.device, ctx["llc"], ctx["max_copies"]) if peer.rotate else 1
            opsets = [data.ops] + [data.ops.copy() for _ in range(copies - 1)]
            fns = [peer.prepare(case, o) for o in opsets]
            del opsets
            row.update(ws_bytes=ws, copies=copies, hot=peer.device == "cpu" and ws * copies < ctx["llc"],
                       compile_s=peer.compile_seconds(case))

            def call():
                out = fns[0]()
                peer.sync()
                return out

            res, first = T.first_call(call)
            row["first_call_s"] = first
            row["note"] = peer.note
            err = C.rel_error(peer.to_host(res), data.ref)
            del res
            tol = C.TOLERANCE[case.dtype]
            row.update(err=err, tol=tol)
            if not err <= tol:
                return dict(row, status="wrong", reason=f"relative error {err:.3g} > {tol:g}")
            if peer.device == "cpu":
                t = T.cpu_time(fns, ctx["budget"], first)
            else:
                t = T.gpu_timing(fns[0], ctx["quick"])
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - every failure becomes a row
        status, reason = classify(e)
        return dict(row, status=status, reason=reason)
    finally:
        fns.clear()
        if peer.device == "gpu":
            _gpu_free()
        elif peer.threaded and peer.threads > 1:
            time.sleep(SETTLE_S)
    nbytes, flops = F.least_cost(data)
    floor_s, bound = ctx["floor"].seconds(nbytes, flops, case.dtype)
    return dict(row, status="ok", reason="", time_s=t.median_s, min_s=t.min_s, reps=t.reps,
                gflops=flops / t.median_s / 1e9, gbs=nbytes / t.median_s / 1e9, floor_s=floor_s,
                floor_frac=floor_s / t.median_s, bound=bound, least_bytes=nbytes, least_flops=flops)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _gpu_free() -> None:
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def add_speedups(rows: list[dict], baseline: str) -> None:
    base = next((r for r in rows if r.get("label") == baseline and r.get("status") == "ok"), None)
    for r in rows:
        if base is not None and r.get("status") == "ok":
            r["speedup"] = base["time_s"] / r["time_s"]


def _short(r: dict) -> str:
    if r["status"] == "ok":
        t = r["time_s"]
        return f"{t * 1e3:.3g}ms" if t >= 1e-3 else f"{t * 1e6:.3g}us"
    return _SHORT.get(r["status"], r["status"])


# ------------------------------------------------------------------------------ compile and overhead
def measure_overhead(peers: list[Peer], a, log) -> list[dict]:
    """Per-call overhead: SpMV on a 10x10 matrix, median of many calls."""
    import scipy.sparse as sp

    A = C._canonical(sp.random(10, 10, density=0.3, random_state=0, format="csr"))
    spec = C.MatrixSpec("overhead_10x10", "tiny", lambda: A)
    case = C.Case(spec, C.KernelSpec("spmv"), "float32")
    data = C.CaseData(case, A)
    extra = []
    if a.device == "cpu":
        from benchmarks.peers_cpu import SparsecPeer

        extra = [SparsecPeer(1, a.sparsec_target, via="einsum")]
    budget = T.Budget(min_reps=100, max_reps=2000 if a.quick else 20000, budget_s=0.2 if a.quick else 1.0)
    out = []
    chosen: dict[str, Peer] = {}  # one variant per library, the fewest threads
    for p in peers:
        if p.name not in chosen or p.threads < chosen[p.name].threads:
            chosen[p.name] = p
    for p in list(chosen.values()) + extra:
        row = {"label": p.label}
        why = p.missing() or (None if p.supports(case) is True else str(p.supports(case)))
        if why:
            out.append(dict(row, status="missing" if p.missing() else "unsupported", reason=why))
            continue
        try:
            with p.threads_ctx():
                fn = p.prepare(case, data.ops)
                fn()
                if p.device == "cpu":
                    t = T.cpu_time([fn], budget)
                    med, mn, n = t.median_s, t.min_s, t.reps
                else:
                    med = mn = T.gpu_time(fn, a.quick)
                    n = 0
            out.append(dict(row, status="ok", median_us=med * 1e6, min_us=mn * 1e6, calls=n,
                            reason="kernel(**operands)" if p.name == "sparsec" else ""))
        except Exception as e:  # noqa: BLE001
            st, why = classify(e)
            out.append(dict(row, status=st, reason=why))
    log("  overhead (µs/call): " + ", ".join(f"{r['label']} {r['median_us']:.1f}" if r["status"] == "ok"
                                             else f"{r['label']} {r['status']}" for r in out))
    return out


def compile_rows(rows: list[dict], peers: list[Peer]) -> list[dict]:
    """One row per (peer, kernel kind, dtype): compile time (cold, then again with warm caches)
    and the first call on its first case."""
    seen = {}
    by_label = {p.label: p for p in peers}
    for r in rows:
        if r.get("status") not in ("ok", "wrong") or r.get("first_call_s") is None:
            continue
        key = (r["label"], str(r["kernel"]).rstrip("0123456789"), r["dtype"])
        if key not in seen:
            p = by_label.get(r["label"])
            again = p.recompile_seconds(key[1], r["dtype"]) if hasattr(p, "recompile_seconds") else None
            seen[key] = {"peer": r["peer"], "label": r["label"], "kernel": key[1], "dtype": r["dtype"],
                         "compile_s": r.get("compile_s"), "recompile_s": again,
                         "first_call_s": r["first_call_s"], "case": r["case"]}
    return list(seen.values())


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    a = parse_args(argv)
    t_start = time.time()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MPLBACKEND", "Agg")
    from benchmarks.peers_cpu import find_mkl_rt

    find_mkl_rt()
    cache_dir = None
    if not a.keep_kernel_cache and not a.list:  # cold compiles: sparsec's disk cache starts empty
        cache_dir = tempfile.mkdtemp(prefix="sparsec-bench-cache-")
        os.environ["SPARSEC_CACHE_DIR"] = cache_dir
    out = Path(a.out)
    kernels = select_kernels(a)
    mats, notes = C.select_matrices(a.quick, a.tiny, a.matrices)
    peers = make_peers(a)
    ncases = sum(len(C.cases_for(m, kernels, a.dtypes)) for m in mats)
    log = lambda s: print(s, flush=True)  # noqa: E731
    if a.list:
        for m in mats:
            for c in C.cases_for(m, kernels, a.dtypes):
                print(c.id)
        print("peers:", ", ".join(p.label for p in peers))
        return 0
    if a.device == "gpu":
        from benchmarks.peers_gpu import gpu_unavailable

        why = gpu_unavailable()
        if why:
            log(f"--device gpu: skipped, {why}")
            return 0
    out.mkdir(parents=True, exist_ok=True)
    mode = "tiny" if a.tiny else "quick" if a.quick else "full"
    log(f"sparsec benchmarks ({mode}, {a.device}) -> {out}")
    log(f"  {len(mats)} matrices, {ncases} cases (matrix x kernel x dtype), {len(peers)} peers: "
        + ", ".join(p.label for p in peers))
    for p in peers:
        why = p.missing()
        if why:
            log(f"  peer {p.label} is missing: {why}")
    for n in notes:
        log(f"  note: {n}")

    log("measuring the floor ...")
    if a.device == "cpu":
        floor = F.measure_cpu(a.quick or a.tiny, a.sparsec_target, log)
    else:
        floor = F.measure_gpu(a.quick or a.tiny, log)
    llc = F.llc_bytes()
    baseline = "scipy" if a.device == "cpu" else "cusparse"
    ctx = {"floor": floor, "llc": llc, "max_copies": a.max_copies, "baseline": baseline, "quick": a.quick or a.tiny,
           "budget": T.QUICK if (a.quick or a.tiny) else T.FULL}
    meta = {
        "tag": out.name, "command": " ".join([sys.executable] + sys.argv), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": R.machine_info(a.device, REPO, peers),
        "floor": {"bandwidth": floor.bandwidth, "bandwidth_source": floor.bandwidth_source, "peak": floor.peak,
                  "measurements": floor.measurements, "llc_bytes": llc},
        "settings": {"mode": mode, "kernels": [k.name for k in kernels], "dtypes": a.dtypes,
                     "spgemm_cap_flops": a.spgemm_cap, "sddmm_k": a.sddmm_k, "max_copies": a.max_copies,
                     "sparsec_target": a.sparsec_target, "budget": vars(ctx["budget"])},
        "peers": {p.label: {"note": p.note, "missing": p.missing()} for p in peers},
        "peer_order": [p.label for p in peers], "notes": notes,
        "load_average_start": _loadavg(), "kernel_cache": "fresh (cold compiles)" if cache_dir else "user's",
    }
    R.write_json(out / "meta.json", meta)

    sink = R.CsvSink(out / "results.csv", R.COLUMNS)
    done = 0
    interrupted = False
    try:
        for m in mats:
            mcases = C.cases_for(m, kernels, a.dtypes)
            if not mcases:
                continue
            t0 = time.time()
            try:
                A64 = m.build()
            except Exception as e:  # noqa: BLE001
                st, why = classify(e)
                sink.write([{"case": c.id, "matrix": m.name, "group": m.group, "kernel": c.kernel.name,
                             "dtype": c.dtype, "device": a.device, "peer": "(all)", "label": "(all)",
                             "status": "failed", "reason": f"building the matrix: {why}"} for c in mcases])
                done += len(mcases)
                log(f"  {m.name}: cannot build: {why}")
                continue
            log(f"{m.name}: {A64.shape[0]}x{A64.shape[1]}, nnz {A64.nnz} ({time.time() - t0:.1f}s to build)")
            seconds: dict[str, object] = {}
            for k in kernels:
                if k.kind not in m.kinds:
                    continue
                B64 = None
                skip = None
                if k.kind in ("add", "spgemm"):
                    if k.kind not in seconds:
                        seconds[k.kind] = C.second_operand(A64, k.kind, C._seed(m.name + k.kind))
                    B64 = seconds[k.kind]
                    if k.kind == "spgemm":
                        fl = C.spgemm_flops(A64, B64)
                        if fl > a.spgemm_cap:
                            skip = f"SpGEMM needs {fl:.3g} flops > cap {a.spgemm_cap:.3g} (--spgemm-cap)"
                for dt in a.dtypes:
                    case = C.Case(m, k, dt)
                    done += 1
                    row0 = base_row(case, A64, a.device)
                    elapsed = time.time() - t_start
                    head = f"[{done:>3}/{ncases} {int(elapsed) // 60}:{int(elapsed) % 60:02d}] {m.name} {k.name} {dt}"
                    if skip:
                        sink.write([dict(row0, peer="(all)", label="(all)", status="skipped", reason=skip)])
                        log(f"{head}: skipped ({skip})")
                        continue
                    data = C.CaseData(case, A64, B64)
                    rows = [run_peer(p, data, row0, ctx) for p in peers]
                    add_speedups(rows, baseline)
                    sink.write(rows)
                    log(f"{head}  " + " | ".join(f"{r['label']} {_short(r)}" for r in rows))
                    del data
            del A64, seconds
            gc.collect()
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: writing what was measured")
    finally:
        sink.close()

    log("compile time and per-call overhead ...")
    crow = compile_rows(sink.rows, peers)
    overhead = [] if interrupted else measure_overhead(peers, a, log)
    for path, cols, rows in ((out / "compile.csv", R.COMPILE_COLUMNS, crow),
                             (out / "overhead.csv", R.OVERHEAD_COLUMNS, overhead)):
        s = R.CsvSink(path, cols)
        s.write(rows)
        s.close()
    if cache_dir:
        shutil.rmtree(cache_dir, ignore_errors=True)
    meta["load_average_end"] = _loadavg()
    meta["duration_s"] = time.time() - t_start
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    meta["interrupted"] = interrupted
    R.write_json(out / "meta.json", meta)
    text = R.summarize(sink.rows, meta, crow, overhead)
    made = [] if a.no_plots else R.plots(sink.rows, meta, out)
    (out / "summary.md").write_text(text + "\n" + "".join(f"![{p}]({p})\n" for p in made if p.endswith(".png")))
    log("")
    log(text.split("## Not ok")[0].rstrip())
    log("")
    log(f"wrote {out}/: results.csv, compile.csv, overhead.csv, meta.json, summary.md"
        + (", " + ", ".join(made) if made else "") + f"  ({meta['duration_s']:.0f} s)")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
