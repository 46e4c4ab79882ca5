"""Outputs: results.csv (one row per case x peer x threads), compile.csv, overhead.csv,
meta.json (machine, versions, floor, settings), summary.md and PNG plots.

``python benchmarks/report.py OUTDIR`` re-renders summary.md and the plots from
the CSV and JSON files of an earlier run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

COLUMNS = [
    "case", "matrix", "group", "structure", "sparsity", "rows", "cols", "nnz", "kernel", "n", "dtype",
    "device", "peer", "threads", "label", "status", "reason",
    "time_s", "min_s", "reps", "gflops", "gbs", "floor_s", "floor_frac", "bound",
    "speedup", "baseline", "err", "tol", "first_call_s", "compile_s",
    "least_bytes", "least_flops", "ws_bytes", "copies", "hot", "note",
]
COMPILE_COLUMNS = ["peer", "label", "kernel", "dtype", "compile_s", "recompile_s", "first_call_s", "case"]
OVERHEAD_COLUMNS = ["label", "status", "median_us", "min_us", "calls", "reason"]


# ------------------------------------------------------------------------------ CSV
class CsvSink:
    """Appends rows and flushes each time, so a crash keeps what was measured."""

    def __init__(self, path: Path, columns: list[str]):
        self.path = path
        self.columns = columns
        self._f = open(path, "w", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=columns, extrasaction="ignore")
        self._w.writeheader()
        self.rows: list[dict] = []

    def write(self, rows: Iterable[dict]) -> None:
        for r in rows:
            self._w.writerow({k: _fmt(r.get(k)) for k in self.columns})
            self.rows.append(r)
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.6g}"
    return v


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if v is None:
                continue
            try:
                r[k] = float(v) if k not in ("threads", "n", "case", "matrix", "label", "peer") else v
            except ValueError:
                pass
            if v == "":
                r[k] = None
    return rows


# ------------------------------------------------------------------------------ machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(mod: str) -> str:
    try:
        m = __import__(mod)
        return str(getattr(m, "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        return f"missing ({type(e).__name__})"


def _git(repo: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (head + ("+dirty" if dirty else "")) if head else "unknown (no git)"
    except Exception:  # noqa: BLE001
        return "unknown"


def machine_info(device: str, repo: Path, peers: list) -> dict:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "device": device,
        "versions": {m: _version(m) for m in ("numpy", "scipy", "torch", "triton", "llvmlite", "numba", "sparse",
                                              "sparse_dot_mkl", "cupy", "matplotlib", "sparsec")},
        "sparsec_git": _git(repo),
    }
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_gb"] = round(int(f.readline().split()[1]) / 1e6, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu_name"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
            info["cuda"] = torch.version.cuda
    except Exception:  # noqa: BLE001
        pass
    for p in peers:  # richer version strings (MKL build ...)
        try:
            if not p.missing():
                info["versions"][f"peer:{p.label}"] = p.version()
        except Exception:  # noqa: BLE001
            pass
    return info


def write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)


# ------------------------------------------------------------------------------ summary
def _flops(v: float) -> str:
    return f"{v / 1e12:.1f} TFLOP/s" if v >= 1e12 else f"{v / 1e9:.0f} GFLOP/s"


def _geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x and x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def _time_ratios(cases: Iterable[dict], num: str, den: str) -> list[float]:
    """``time[num] / time[den]`` for every case (label -> seconds) that timed both."""
    return [c[num] / c[den] for c in cases if num in c and den in c]


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok" and r.get("time_s")]


def _order(labels: Iterable[str], preferred: list[str]) -> list[str]:
    labels = list(dict.fromkeys(labels))
    return sorted(labels, key=lambda l: (preferred.index(l) if l in preferred else len(preferred), l))


def _table(header: list[str], body: list[list[str]]) -> str:
    body = [row for row in body if any(c != "—" for c in row[1:])] or body  # rows with no data at all go
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(out)


def _kernel_keys(rows: list[dict]) -> list[str]:
    order = {"spmv": 0, "spmm": 1, "sddmm": 2, "add": 3, "spgemm": 4}
    keys = {(r["kernel"], r["dtype"]) for r in rows}
    return [f"{k} {d}" for k, d in sorted(keys, key=lambda kd: (order.get(kd[0].rstrip("0123456789"), 9),
                                                                   int("0" + "".join(c for c in kd[0] if c.isdigit())),
                                                                   kd[1]))]


def summarize(rows: list[dict], meta: dict, compile_rows: list[dict], overhead_rows: list[dict]) -> str:
    floor = meta.get("floor", {})
    dev = meta.get("machine", {}).get("device", "cpu")
    lines = [f"# sparsec benchmarks — {meta.get('tag', '')}", ""]
    m = meta.get("machine", {})
    hw = m.get("gpu_name") if dev == "gpu" else f"{m.get('cpu_model')} ({m.get('cpu_count')} cores)"
    lines += [f"* machine: {hw}; {m.get('platform', '')}",
              "* versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()
                                          if not k.startswith("peer:")),
              f"* sparsec git: {m.get('sparsec_git')}; mode: {meta.get('settings', {}).get('mode')}; "
              f"wall time {meta.get('duration_s', 0):.0f} s",
              f"* floor: bandwidth {floor.get('bandwidth', 0) / 1e9:.1f} GB/s ({floor.get('bandwidth_source')}); "
              "peak " + ", ".join(f"{k} {_flops(v)}" for k, v in floor.get("peak", {}).items()),
              ""]
    notes = list(meta.get("notes", []))
    cores = m.get("cpu_count") or 1
    loads = [x for x in (meta.get("load_average_start"), meta.get("load_average_end")) if x]
    if dev == "cpu" and loads and max(l[0] for l in loads) > 0.5 * cores:
        notes.append(f"the machine was busy (1-min load average {', '.join(str(l[0]) for l in loads)} on "
                     f"{cores} cores, start/end): CPU timings are noisy")
    hot = [r for r in rows if r.get("status") == "ok" and str(r.get("hot")) == "True"]
    if hot:
        notes.append(f"{len(hot)} of {len(_ok(rows))} timed rows are cache-resident ('hot': inputs x rotated copies "
                     f"< last-level cache, {meta.get('floor', {}).get('llc_bytes', 0) / 2**20:.0f} MiB): "
                     "their floor fractions can exceed 1")
    for note in notes:
        lines.append(f"> note: {note}")
    if notes:
        lines.append("")
    baseline = "scipy" if dev == "cpu" else "cusparse"
    ok = _ok(rows)
    labels = _order([r["label"] for r in rows if r.get("label") and r["label"] != "(all)"],
                    meta.get("peer_order", []))
    keys = _kernel_keys([r for r in rows if r.get("kernel")])
    by = defaultdict(dict)  # (kernel dtype) -> case -> label -> time
    for r in ok:
        by[f"{r['kernel']} {r['dtype']}"].setdefault(r["case"], {})[r["label"]] = float(r["time_s"])

    # sparsec vs each peer
    sparsec_labels = [l for l in labels if l.startswith("sparsec")]
    for s in sparsec_labels:
        others = [l for l in labels if l != s]
        body = []
        for key in keys:
            cells = []
            for o in others:
                ratios = _time_ratios(by[key].values(), o, s)
                cells.append(f"{_geomean(ratios):.3g}× ({len(ratios)})" if ratios else "—")
            body.append([key] + cells)
        lines += [f"## {s} against each peer", "",
                  f"Geometric mean of peer time / {s} time over the cases both ran correctly "
                  "(> 1: sparsec faster; count in parentheses).", "",
                  _table(["kernel dtype"] + others, body), ""]
    if not sparsec_labels or not any(s in c for s in sparsec_labels for v in by.values() for c in v.values()):
        lines += ["**sparsec produced no timed result in this run** (see the status table).", ""]

    # speedup vs baseline
    body = []
    for key in keys:
        cells = []
        for l in labels:
            ratios = _time_ratios(by[key].values(), baseline, l)
            cells.append(f"{_geomean(ratios):.3g}×" if ratios else "—")
        body.append([key] + cells)
    lines += [f"## Speedup over {baseline} (geometric mean)", "", _table(["kernel dtype"] + labels, body), ""]

    # floor fraction
    body = []
    for key in keys:
        cells = []
        for l in labels:
            fr = [float(r["floor_frac"]) for r in ok if f"{r['kernel']} {r['dtype']}" == key and r["label"] == l
                  and r.get("floor_frac")]
            cells.append(f"{_geomean(fr):.3g} / {max(fr):.3g}" if fr else "—")
        body.append([key] + cells)
    lines += ["## Fraction of the floor (geometric mean / best)", "",
              "floor time / measured time: 1.0 = at the bandwidth-or-peak limit.", "",
              _table(["kernel dtype"] + labels, body), ""]

    # statuses
    counts = defaultdict(Counter)
    for r in rows:
        counts[r["label"]][r["status"]] += 1
    statuses = ["ok", "wrong", "failed", "unsupported", "missing", "skipped"]
    body = [[l] + [str(counts[l][s]) for s in statuses] for l in _order(counts, meta.get("peer_order", []))]
    lines += ["## Status counts", "", _table(["peer"] + statuses, body), ""]

    # compile time and per-call overhead
    if compile_rows:
        ms = lambda v: f"{float(v) * 1e3:.1f}" if v not in (None, "") else "—"  # noqa: E731
        shown = [r for r in compile_rows if r.get("compile_s") not in (None, "")
                 or float(r.get("first_call_s") or 0) > 0.1]  # compilers and lazy JITs; all rows in compile.csv
        body = [[r["label"], r["kernel"], r["dtype"], ms(r.get("compile_s")), ms(r.get("recompile_s")),
                 ms(r.get("first_call_s")), r.get("case", "")] for r in shown]
        lines += ["## Compile time (apart from kernel time)", "",
                  f"compile: `kernel.compile_seconds` of the first `api.compile` (kernel cache: "
                  f"{meta.get('kernel_cache', '?')}); again: the same compile repeated with warm caches; "
                  "first call: wall time of the first call on the first case (includes lazy JIT, e.g. numba "
                  "for pydata). Shown: peers that compile, or whose first call took > 100 ms (all in compile.csv).",
                  "",
                  _table(["peer", "kernel", "dtype", "compile ms", "again ms", "first call ms", "first case"], body),
                  ""]
    if overhead_rows:
        body = [[r["label"], r["status"], f"{float(r['median_us']):.1f}" if r.get("median_us") not in (None, "")
                 else "—", r.get("reason") or ""] for r in overhead_rows]
        lines += ["## Per-call overhead (SpMV on a 10x10 matrix, median)", "",
                  _table(["peer", "status", "µs / call", "note"], body), ""]

    # reasons
    reasons = Counter((r["label"], r["status"], r.get("reason") or "") for r in rows
                      if r.get("status") not in ("ok",))
    if reasons:
        body = [[l, s, str(n), (why or "")[:160].replace("|", "/")] for (l, s, why), n in
                sorted(reasons.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
        lines += ["## Not ok: reasons", "", _table(["peer", "status", "rows", "reason"], body), ""]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ plots
def plots(rows: list[dict], meta: dict, outdir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        return [f"no plots: matplotlib unavailable ({e})"]
    made = []
    dev = meta.get("machine", {}).get("device", "cpu")
    baseline = "scipy" if dev == "cpu" else "cusparse"
    ok = _ok(rows)
    labels = _order([r["label"] for r in ok], meta.get("peer_order", []))
    colors = {l: plt.cm.tab10(i % 10) for i, l in enumerate(labels)}

    # 1. speedup per matrix, one figure per kernel x dtype
    for key in _kernel_keys(ok):
        kern, dt = key.split()
        sub = [r for r in ok if r["kernel"] == kern and r["dtype"] == dt and r.get("speedup")]
        if not sub:
            continue
        mats = list(dict.fromkeys(r["matrix"] for r in sub))
        peers = [l for l in labels if l != baseline and any(r["label"] == l for r in sub)]
        fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(mats) * max(1, len(peers)) / 3 + 2), 4.5))
        w = 0.8 / max(1, len(peers))
        for j, l in enumerate(peers):
            val = {r["matrix"]: float(r["speedup"]) for r in sub if r["label"] == l}
            xs = [i + (j - (len(peers) - 1) / 2) * w for i, mname in enumerate(mats) if mname in val]
            ax.bar(xs, [val[mname] for mname in mats if mname in val], width=w, label=l, color=colors[l])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(mats)))
        ax.set_xticklabels(mats, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(f"speedup over {baseline}")
        ax.set_title(f"{kern} {dt} — {meta.get('tag', '')}")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        p = outdir / f"speedup_{kern}_{dt}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p.name)

    # 2. roofline
    floor = meta.get("floor", {})
    bw, peaks = floor.get("bandwidth"), floor.get("peak", {})
    dts = sorted({r["dtype"] for r in ok})
    if ok and bw:
        fig, axes = plt.subplots(1, len(dts), figsize=(6.5 * len(dts), 5), squeeze=False)
        markers = {"spmv": "o", "spmm": "s", "sddmm": "^", "add": "D", "spgemm": "v"}
        for ax, dt in zip(axes[0], dts):
            sub = [r for r in ok if r["dtype"] == dt and r.get("least_bytes") and r.get("least_flops")]
            for l in labels:
                for kind, mk in markers.items():
                    pts = [(float(r["least_flops"]) / float(r["least_bytes"]), float(r["gflops"])) for r in sub
                           if r["label"] == l and str(r["kernel"]).rstrip("0123456789") == kind and r.get("gflops")]
                    if pts:
                        ax.scatter(*zip(*pts), marker=mk, color=colors[l], s=14, alpha=0.8,
                                   label=l if kind == next(k for k in markers if any(
                                       r["label"] == l and str(r["kernel"]).rstrip("0123456789") == k for r in sub))
                                   else None)
            ai = [float(r["least_flops"]) / float(r["least_bytes"]) for r in sub] or [0.1, 10]
            lo, hi = min(ai) / 2, max(ai) * 2
            pk = peaks.get(dt) or peaks.get("float32")
            if dt == "float16":
                pk = max(peaks.get("float16", 0), peaks.get("float32", 0))
            xs = [lo * (hi / lo) ** (i / 50) for i in range(51)]
            ax.plot(xs, [min(bw * x, pk or float("inf")) / 1e9 for x in xs], "k-", lw=1.2,
                    label=f"floor: {bw / 1e9:.0f} GB/s, {pk / 1e9 if pk else float('nan'):.0f} GFLOP/s")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("arithmetic intensity (least flops / least bytes)")
            ax.set_ylabel("achieved GFLOP/s")
            ax.set_title(f"roofline {dt} (markers: ○ spmv □ spmm △ sddmm ◇ add ▽ spgemm)", fontsize=9)
            ax.legend(fontsize=7)
        fig.tight_layout()
        p = outdir / "roofline.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p.name)

    # 3. speedup against sparsity, pruned weights
    pr = [r for r in ok if r.get("group") == "pruned" and r.get("speedup") and r.get("sparsity")]
    if pr:
        kerns = list(dict.fromkeys(k.split()[0] for k in _kernel_keys(pr)))
        dts = sorted({r["dtype"] for r in pr})
        fig, axes = plt.subplots(len(dts), len(kerns), figsize=(4.2 * len(kerns), 3.8 * len(dts)), squeeze=False)
        for i, dt in enumerate(dts):
            for j, kern in enumerate(kerns):
                ax = axes[i][j]
                sub = [r for r in pr if r["kernel"] == kern and r["dtype"] == dt]
                shapes = sorted({(int(float(r["rows"])), int(float(r["cols"]))) for r in sub})
                for l in labels:
                    for si, shp in enumerate(shapes):
                        s2 = [r for r in sub if r["label"] == l and (int(float(r["rows"])), int(float(r["cols"]))) == shp]
                        un = sorted((float(r["sparsity"]), float(r["speedup"])) for r in s2
                                    if r.get("structure") == "unstructured")
                        if un:
                            ax.plot(*zip(*un), marker="o", ls="-" if si == 0 else "--", color=colors[l], ms=4)
                        for r in s2:
                            if r.get("structure") != "unstructured":
                                ax.scatter([float(r["sparsity"])], [float(r["speedup"])], color=colors[l],
                                           marker="*" if r["structure"] == "2:4" else "s", s=40)
                ax.axhline(1.0, color="k", lw=0.8)
                ax.set_yscale("log")
                ax.set_xlabel("sparsity (★ 2:4, ■ 32x32 blocks)")
                ax.set_ylabel(f"speedup over {baseline}")
                ax.set_title(f"pruned weights: {kern} {dt}", fontsize=9)
        from matplotlib.lines import Line2D

        shown = [l for l in labels if any(r["label"] == l for r in pr)]
        handles = [Line2D([], [], color=colors[l], marker="o", label=l) for l in shown]
        handles.append(Line2D([], [], color="gray", ls="--", label="2nd shape (dashed)"))
        fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 8), fontsize=7)
        fig.tight_layout(rect=(0, 0, 1, 0.92))
        p = outdir / "pruned_sparsity.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p.name)
    return made


def render(outdir: Path) -> None:
    """summary.md and plots from an output folder's files."""
    with open(outdir / "meta.json") as f:
        meta = json.load(f)
    rows = read_csv(outdir / "results.csv")
    text = summarize(rows, meta, read_csv(outdir / "compile.csv"), read_csv(outdir / "overhead.csv"))
    made = plots(rows, meta, outdir)
    (outdir / "summary.md").write_text(text + "\n" + "".join(f"![{m}]({m})\n" for m in made if m.endswith(".png")))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/report.py OUTDIR")
    render(Path(sys.argv[1]))
    print(f"wrote {Path(sys.argv[1]) / 'summary.md'}")
