"""Deep-learning sparsity benchmark (issue 8): every item beside its baseline, checked, with targets.

Runs the examples' ``run`` functions (``examples/dl_*.py``; one code path for the examples
and the numbers) at the issue's sizes on one GPU, and the CPU part (item 9) on the host::

    python benchmarks/dl_bench.py                        # GPU items + CPU item 9, float16
    python benchmarks/dl_bench.py --items 1,3 --out /tmp/x
    python benchmarks/dl_bench.py --quick                # tiny sizes (harness check; CPU-only machines too)

Times are medians of ``triton.testing.do_bench`` (CUDA events, L2 flushed between calls;
the CPU part: wall clock). Every variant is checked against a float64 torch result first.
Writes ``results.csv``, ``summary.md`` (the GPU, library versions, a target table:
met / not met with the measured ratio, and every row) and ``item1_speedup_vs_sparsity.png``
under ``--out`` (default ``benchmarks/results/<gpu>-dl``).

Targets (issue 8), ratio = baseline time / sparsec time:

* 1: sparsity 0.8, N <= 64: >= 1.5x dense torch.matmul (every such case);
* 2: N <= 64: >= 1.4x dense; and sparsec never slower than torch's semi-structured 2:4 (any N);
* 3: 90 % block sparsity, N = 4096: >= 5x dense (per block size); a reference line gives what cuBLAS
  itself gains from the same cut in work (a dense product with K cut to the kept 10 %);
* 4: block-sparse attention (bsr(128,128) mask, ~90 % of blocks masked, bf16): >= 1x FlexAttention
  with the same block mask;
* 5: 50 % activation zeros: >= 1.6x dense GEMV (compression included); the thresholding
  counts on both sides (``torch.mv(W, torch.where(...))``), and a stricter line compares
  with ``torch.mv`` alone on an already thresholded ``x`` (the fused-threshold kernel
  takes the raw activations); a third line gives that line's ceiling: ``torch.mv`` alone
  against a plain read of as many bytes as the live weight rows (no kernel reads less);
* 9: CPU, sparsity 0.8: >= 1.3x the faster dense matmul of numpy / torch.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
from typing import Callable, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "examples")]

import torch  # noqa: E402

import _dl_common as dl  # noqa: E402
import dl_activation_sparsity  # noqa: E402
import dl_block_sparse  # noqa: E402
import dl_block_sparse_attention  # noqa: E402
import dl_nm_linear  # noqa: E402
import dl_pruned_linear  # noqa: E402
import dl_sparse_conv1x1  # noqa: E402
import dl_sparse_linear_module  # noqa: E402

ITEMS = ("1", "2", "3", "4", "5", "8", "9")


@dataclasses.dataclass
class Target:
    """One target line of the summary: what, the measured ratio (worst case over its cases), met or not."""

    item: str
    what: str
    ratio: float
    goal: float
    detail: str

    @property
    def met(self) -> bool | None:
        """True / False, or None when the target's cases did not run."""
        return None if math.isnan(self.ratio) else self.ratio >= self.goal


# ------------------------------------------------------------------------------------ running
def gpu_items(env: dl.Env, items: Sequence[str], bf16_env: dl.Env | None) -> list[dl.Row]:
    """Items 1, 2, 3, 4, 5, 8 at the example's sizes for ``env`` (the issue's on a GPU)."""
    rows: list[dl.Row] = []
    for item, mod in (("1", dl_pruned_linear), ("2", dl_nm_linear), ("3", dl_block_sparse),
                      ("4", dl_block_sparse_attention), ("5", dl_activation_sparsity), ("8", dl_sparse_linear_module)):
        if item not in items:
            continue
        print(f"[dl_bench] item {item} ({mod.__name__}) ...", flush=True)
        rows += _tag(mod.run(env, **mod.default_sizes(env)), env)
        if item == "1" and bf16_env is not None:
            sizes = dict(mod.default_sizes(bf16_env), sparsities=[0.8], ns=[16, 64])
            sizes["shapes"] = sizes["shapes"][:1]
            rows += _tag(mod.run(bf16_env, **sizes), bf16_env)
    return rows


def cpu_item(quick: bool) -> list[dl.Row]:
    """Item 9 on the host CPU with the LLVM backend."""
    env = dl.setup(["--quick"] if quick else [], device="cpu")
    print("[dl_bench] item 9 (CPU) ...", flush=True)
    return _tag(dl_sparse_conv1x1.run(env, **dl_sparse_conv1x1.default_sizes(env)), env)


def _tag(rows: list[dl.Row], env: dl.Env) -> list[dl.Row]:
    for r in rows:
        r.params.setdefault("dtype", env.dtype_name)
        r.params.setdefault("device", "gpu" if env.gpu else "cpu")
    return rows


# ------------------------------------------------------------------------------------ targets
def _ratios(rows: Sequence[dl.Row], keep: Callable[[dl.Row], bool], ours: Callable[[dl.Row], bool],
            base: Callable[[dl.Row], bool]) -> list[tuple[str, float]]:
    """(case, base time / best sparsec time) for each case whose rows pass ``keep``."""
    out = []
    cases: dict[str, list[dl.Row]] = {}
    for r in rows:
        if keep(r):
            cases.setdefault(f"{r.params.get('dtype')} {r.case}", []).append(r)
    for case, rs in cases.items():
        b = [r.time_s for r in rs if base(r) and r.status == "ok"]
        o = [r.time_s for r in rs if ours(r) and r.status == "ok"]
        if b:
            out.append((case, min(b) / min(o) if o else 0.0))
    return out


def _worst(item: str, what: str, goal: float, pairs: list[tuple[str, float]]) -> Target:
    if not pairs:
        return Target(item, what, math.nan, goal, "not run")
    case, r = min(pairs, key=lambda p: p[1])
    gm = math.exp(sum(math.log(max(v, 1e-12)) for _, v in pairs) / len(pairs))
    return Target(item, what, r, goal, f"worst: {case}; geomean {gm:.2f}x over {len(pairs)} cases")


def targets(rows: Sequence[dl.Row]) -> list[Target]:
    """The issue's targets evaluated on the measured rows."""
    is_ours = lambda r: r.variant.startswith("sparsec")  # noqa: E731
    is_base = lambda r: r.baseline  # noqa: E731
    out = []
    r1 = _ratios(rows, lambda r: r.item.startswith("1 ") and r.params.get("sparsity") == 0.8
                 and r.params.get("N", 0) <= 64, is_ours, is_base)
    out.append(_worst("1", "unstructured 80 %, N <= 64: >= 1.5x dense cuBLAS", 1.5, r1))
    is_nm = lambda r: r.variant.startswith("sparsec nm")  # noqa: E731
    r2 = _ratios(rows, lambda r: r.item.startswith("2 ") and r.params.get("N", 0) <= 64, is_nm, is_base)
    out.append(_worst("2", "nm(n,m), N <= 64: >= 1.4x dense", 1.4, r2))
    r2t = _ratios(rows, lambda r: r.item.startswith("2 ") and (r.params.get("n"), r.params.get("m")) == (2, 4),
                  is_nm, lambda r: r.variant.startswith("torch semi"))
    out.append(_worst("2", "nm(2,4): never slower than torch semi-structured (ratio >= 1)", 1.0, r2t))
    r2b = _ratios(rows, lambda r: r.item.startswith("2 ") and r.params.get("N", 0) <= 64,
                  lambda r: r.variant.startswith("sparsec bitmap"), is_base)
    out.append(_worst("2", "(same n:m weights stored as bitmap), N <= 64: >= 1.4x dense", 1.4, r2b))
    for b in sorted({r.params.get("block") for r in rows if r.item.startswith("3 ")}):
        r3 = _ratios(rows, lambda r, b=b: r.item.startswith("3 ") and r.params.get("block") == b
                     and r.params.get("sparsity") == 0.9, is_ours, is_base)
        out.append(_worst("3", f"bsr({b},{b}), 90 % blocks zero, N = 4096: >= 5x dense", 5.0, r3))
    r3w = _ratios(rows, lambda r: r.item.startswith("3 ") and r.params.get("sparsity") == 0.9,
                  lambda r: r.variant == dl_block_sparse.SAME_WORK, is_base)
    out.append(_worst("3", "(reference) dense torch.matmul of the same work (K cut to the kept 10 %) over dense",
                      5.0, r3w))
    r4 = _ratios(rows, lambda r: r.item.startswith("4 "), is_ours, is_base)
    out.append(_worst("4", "block-sparse attention, ~90 % blocks masked, S 8k-32k: >= 1x FlexAttention", 1.0, r4))
    r5 = _ratios(rows, lambda r: r.item.startswith("5 ") and r.params.get("zero_fraction") == 0.5
                 and r.variant != "sparsec kernel only", is_ours, is_base)
    out.append(_worst("5", "50 % activation zeros: >= 1.6x dense GEMV (per-call thresholding / compression included)", 1.6, r5))
    r5b = _ratios(rows, lambda r: r.item.startswith("5 ") and r.params.get("zero_fraction") == 0.5
                  and r.variant != "sparsec kernel only", is_ours, lambda r: r.variant.startswith("torch.mv alone"))
    out.append(_worst("5", "(stricter) 50 % zeros: >= 1.6x torch.mv alone on a given x (ours thresholding included)",
                      1.6, r5b))
    r5f = _ratios(rows, lambda r: r.item.startswith("5 ") and r.params.get("zero_fraction") == 0.5,
                  lambda r: r.variant == dl_activation_sparsity.FLOOR, lambda r: r.variant.startswith("torch.mv alone"))
    out.append(_worst("5", "(ceiling of the stricter line) torch.mv alone / a plain read of the live weight bytes",
                      1.6, r5f))
    r9 = _ratios(rows, lambda r: r.item.startswith("9 ") and r.params.get("sparsity") == 0.8, is_ours, is_base)
    out.append(_worst("9", "CPU 1x1 conv, 80 %: >= 1.3x dense matmul (numpy/torch)", 1.3, r9))
    return out


# ------------------------------------------------------------------------------------ output
PARAM_KEYS = ("dtype", "device", "M", "K", "N", "sparsity", "n", "m", "block", "zero_fraction", "active", "C_out",
              "C_in", "HW", "spec", "T", "fmt", "seq", "head_dim", "heads", "density")


def write_csv(path: str, rows: Sequence[dl.Row]) -> None:
    """Every row with its speed-up over its case's baseline and its parameters as columns."""
    sp = dl.speedups(rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", "case", "variant", "baseline", "status", "time_us", "speedup_vs_base", "rel_err",
                    *PARAM_KEYS, "note"])
        for i, r in enumerate(rows):
            w.writerow([r.item, r.case, r.variant, int(r.baseline), r.status,
                        f"{r.time_s * 1e6:.3f}" if r.status == "ok" else "", _fmt(sp[i], "{:.4f}"),
                        _fmt(r.err, "{:.3e}"), *[r.params.get(k, "") for k in PARAM_KEYS], r.note])


def read_csv(path: str) -> list[dl.Row]:
    """Rows written by :func:`write_csv` (to merge runs made in separate calls)."""
    rows = []
    with open(path, newline="") as f:
        for d in csv.DictReader(f):
            params = {}
            for k in PARAM_KEYS:
                v = d.get(k, "")
                if v == "":
                    continue
                try:
                    params[k] = int(v)
                except ValueError:
                    try:
                        params[k] = float(v)
                    except ValueError:
                        params[k] = v
            rows.append(dl.Row(d["item"], d["case"], d["variant"], float(d["time_us"]) * 1e-6 if d["time_us"] else
                               math.nan, float(d["rel_err"]) if d["rel_err"] else math.nan, d["status"], d["note"],
                               d["baseline"] == "1", params))
    return rows


def _fmt(v: float, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else spec.format(v)


def machine() -> dict[str, str]:
    """GPU, CPU and library versions for the summary."""
    import numpy
    import triton

    import sparsec

    info = {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "cuda": str(torch.version.cuda),
        "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
        "python": platform.python_version(),
        "torch": torch.__version__, "triton": triton.__version__, "numpy": numpy.__version__,
        "sparsec": sparsec.__version__, "sparsec_threads": str(sparsec.get_num_threads()),
        "torch_threads": str(torch.get_num_threads()),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        import scipy
        info["scipy"] = scipy.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def write_markdown(path: str, rows: Sequence[dl.Row], tg: Sequence[Target], info: dict[str, str],
                   plots: Sequence[str], command: str) -> None:
    """summary.md: machine and versions, the target table, then every row by item."""
    sp = dl.speedups(rows)
    lines = [f"# sparsec deep-learning sparsity benchmark (issue 8) — {info['gpu']}", ""]
    lines += [f"* {k}: {v}" for k, v in info.items()]
    lines += [f"* command: `{command}`",
              "* times: median of triton.testing.do_bench (CUDA events, L2 flushed; GPU rows) or wall clock "
              "(CPU rows); every variant checked against float64 torch first (rel. error column)", "",
              "## Targets", "", "| item | target | measured (worst case) | met? | detail |", "|---|---|---|---|---|"]
    for t in tg:
        met = "—" if t.met is None else ("**met**" if t.met else f"not met ({t.ratio / t.goal:.0%} of goal)")
        ratio = "—" if math.isnan(t.ratio) else f"{t.ratio:.2f}x"
        lines.append(f"| {t.item} | {t.what} | {ratio} | {met} | {t.detail} |")
    lines.append("")
    for item in dict.fromkeys(r.item for r in rows):
        lines += [f"## Item {item}", "", "| case | dtype | variant | time (µs) | vs baseline | rel. error | note |",
                  "|---|---|---|---|---|---|---|"]
        for i, r in enumerate(rows):
            if r.item != item:
                continue
            t = f"{r.time_s * 1e6:.1f}" if r.status == "ok" else r.status
            v = r.variant + (" **(baseline)**" if r.baseline else "")
            lines.append(f"| {r.case} | {r.params.get('dtype', '')} | {v} | {t} | {_fmt(sp[i], '{:.2f}x')} | "
                         f"{_fmt(r.err, '{:.1e}')} | {r.note} |")
        lines.append("")
    lines += [f"![{os.path.splitext(os.path.basename(p))[0]}]({os.path.basename(p)})" for p in plots]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def plot_item4(path: str, rows: Sequence[dl.Row]) -> str | None:
    """Speed-up over FlexAttention per (sequence, head dim) for sparsec and dense SDPA; None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sp = dl.speedups(rows)
    cases: dict[str, dict[str, float]] = {}
    for i, r in enumerate(rows):
        if r.item.startswith("4 ") and r.status == "ok" and not r.baseline and not math.isnan(sp[i]):
            label = f"S={r.params.get('seq')}\nd={r.params.get('head_dim')}"
            cases.setdefault(label, {})["sparsec" if r.variant.startswith("sparsec") else r.variant] = sp[i]
    if not cases:
        return None
    variants = sorted({v for c in cases.values() for v in c}, key=lambda v: v != "sparsec")
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(variants)
    for k, v in enumerate(variants):
        xs = [j + k * width for j in range(len(cases))]
        ax.bar(xs, [c.get(v, 0.0) for c in cases.values()], width, label=v)
    ax.axhline(1.0, color="red", lw=0.8, ls="--", label="FlexAttention (target: >= 1x)")
    ax.set_xticks([j + width * (len(variants) - 1) / 2 for j in range(len(cases))], list(cases))
    ax.set(ylabel="speed-up over FlexAttention", title="item 4: block-sparse attention, same block mask")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(out: str, rows: Sequence[dl.Row]) -> list[str]:
    """The PNG plots of the items that ran (item 1: speed-up vs sparsity; item 4: speed-up over FlexAttention)."""
    found = [plot_item1(os.path.join(out, "item1_speedup_vs_sparsity.png"), rows),
             plot_item4(os.path.join(out, "item4_speedup_vs_flexattention.png"), rows)]
    return [p for p in found if p]


def plot_item1(path: str, rows: Sequence[dl.Row]) -> str | None:
    """Speed-up of the best sparsec format over dense vs sparsity, one line per (shape, N); None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series: dict[tuple, dict[float, float]] = {}
    sp = dl.speedups(rows)
    for i, r in enumerate(rows):
        if r.item.startswith("1 ") and r.variant.startswith("sparsec") and r.status == "ok" and \
                r.params.get("dtype") == "float16" or (r.item.startswith("1 ") and r.variant.startswith("sparsec")
                                                       and r.status == "ok" and r.params.get("device") == "cpu"):
            key = (f"{r.params['M']}x{r.params['K']}", r.params["N"])
            s = r.params["sparsity"]
            series.setdefault(key, {})[s] = max(series.get(key, {}).get(s, 0.0), sp[i])
    if not series:
        return None
    fig, axes = plt.subplots(1, len({k[0] for k in series}), figsize=(11, 4.2), squeeze=False)
    for ax, shape in zip(axes[0], sorted({k[0] for k in series})):
        for (shp, n), pts in sorted(series.items()):
            if shp == shape:
                xs = sorted(pts)
                ax.plot([100 * x for x in xs], [pts[x] for x in xs], marker="o", label=f"N={n}")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.axhline(1.5, color="red", lw=0.8, ls="--", label="target 1.5x (80 %, N<=64)")
        ax.set(title=f"W {shape}", xlabel="sparsity (%)", ylabel="speed-up over dense torch.matmul")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def default_out() -> str:
    """benchmarks/results/<gpu>-dl (``h100-dl``, ``h200-dl``...; ``cpu-dl`` without a GPU)."""
    name = torch.cuda.get_device_name().lower() if torch.cuda.is_available() else "cpu"
    tag = next((t for t in ("h200", "h100", "a100", "l40s", "l4", "a10") if t in name), name.split()[-1])
    return os.path.join(HERE, "results", f"{tag}-dl")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (see the module docs); 1 when a sparsec variant failed or was wrong."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", default=",".join(ITEMS), help="comma-separated items (1,2,3,4,5,8,9)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (harness check)")
    ap.add_argument("--dtype", default="float16", choices=("float16", "bfloat16"), help="GPU value dtype")
    ap.add_argument("--no-bf16", action="store_true", help="skip item 1's bfloat16 subset")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results/<gpu>-dl)")
    ap.add_argument("--merge", default=None, help="comma-separated result folders to merge into --out (no runs)")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge.split(","), args.out or default_out())
    items = [i.strip() for i in args.items.split(",") if i.strip()]
    unknown = set(items) - set(ITEMS)
    if unknown:
        ap.error(f"unknown items {sorted(unknown)}; choose from {ITEMS}")
    gpu = torch.cuda.is_available()
    rows: list[dl.Row] = []
    if gpu or args.quick:
        dtype = getattr(torch, args.dtype) if gpu else None
        env = dl.setup(["--quick"] if args.quick else [], dtype=dtype)
        bf16 = None if args.no_bf16 or not gpu or args.dtype == "bfloat16" else \
            dl.setup(["--quick"] if args.quick else [], dtype=torch.bfloat16)
        rows += gpu_items(env, items, bf16)
    else:
        print("[dl_bench] no CUDA GPU: the GPU items (1, 2, 3, 4, 5, 8) are skipped (use --quick to run them on "
              "the CPU backend at tiny sizes)")
    if "9" in items:
        rows += cpu_item(args.quick)
    out = args.out or default_out()
    os.makedirs(out, exist_ok=True)
    tg = targets(rows)
    write_csv(os.path.join(out, "results.csv"), rows)
    plots = make_plots(out, rows)
    command = "python benchmarks/dl_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = machine()
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump({"machine": info, "command": command.strip()}, f, indent=1)
    write_markdown(os.path.join(out, "summary.md"), rows, tg, info, plots, command.strip())
    print(f"\n[dl_bench] wrote {out}/results.csv, summary.md" + "".join(f", {os.path.basename(p)}" for p in plots))
    print("\n| item | target | measured | met? |\n|---|---|---|---|")
    for t in tg:
        met = "—" if t.met is None else ("met" if t.met else "NOT met")
        print(f"| {t.item} | {t.what} | {'—' if math.isnan(t.ratio) else f'{t.ratio:.2f}x'} | {met} | {t.detail}")
    bad = dl.failed(rows)
    for r in bad:
        print(f"FAILED: {r.item} {r.case} {r.variant}: {r.note}", file=sys.stderr)
    return 1 if bad else 0


def merge(folders: Sequence[str], out: str) -> int:
    """One summary from the results of several runs (e.g. items measured in separate device calls)."""
    rows: list[dl.Row] = []
    commands, info = [], {}
    for d in folders:
        got = read_csv(os.path.join(d, "results.csv"))
        items = {r.item for r in got}
        rows = [r for r in rows if r.item not in items] + got      # a later folder's items replace earlier ones
        with open(os.path.join(d, "meta.json")) as f:
            meta = json.load(f)
        info = meta["machine"]
        commands.append(meta["command"])
    rows.sort(key=lambda r: ITEMS.index(r.item.split()[0]) if r.item.split()[0] in ITEMS else 99)
    os.makedirs(out, exist_ok=True)
    write_csv(os.path.join(out, "results.csv"), rows)
    plots = make_plots(out, rows)
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump({"machine": info, "command": " ; ".join(commands)}, f, indent=1)
    write_markdown(os.path.join(out, "summary.md"), rows, targets(rows), info, plots, " ; ".join(commands))
    print(f"[dl_bench] merged {len(rows)} rows into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
