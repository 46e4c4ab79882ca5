"""ab_final.txt -> results.csv and speedup.png (one-shot and repeated C = A @ A against cuSPARSE, H100)."""
import csv
import pathlib

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

here = pathlib.Path(__file__).parent
rows = []
for line in (here / "ab_final.txt").read_text().splitlines():
    parts = line.split()
    if len(parts) == 9 and parts[1].replace(".", "").isdigit():
        name, cu, ow, nw, oc, nc = parts[0], *map(float, parts[1:6])
        rows.append({"matrix": name, "cusparse_ms": cu, "before_warm_ms": ow, "after_warm_ms": nw,
                     "before_cold_ms": oc, "after_cold_ms": nc, "after_cold_vs_cusparse": round(cu / nc, 3),
                     "before_cold_vs_cusparse": round(cu / oc, 3), "after_warm_vs_cusparse": round(cu / nw, 3)})
with open(here / "results.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
x = np.arange(len(rows))
fig, ax = plt.subplots(figsize=(11, 4.5))
for off, key, label in ((-0.27, "before_cold_vs_cusparse", "one-shot, before (f078ba6)"),
                        (0.0, "after_cold_vs_cusparse", "one-shot, after"),
                        (0.27, "after_warm_vs_cusparse", "repeated structure, after")):
    ax.bar(x + off, [r[key] for r in rows], width=0.27, label=label)
ax.axhline(1.0, color="k", lw=0.8)
ax.set_xticks(x, [r["matrix"] for r in rows], rotation=30, ha="right")
ax.set_ylabel("speedup over cuSPARSE (torch csr @ csr)")
ax.set_title("SpGEMM C = A @ A, float32, NVIDIA H100 80GB HBM3 (one process)")
ax.legend()
fig.tight_layout()
fig.savefig(here / "speedup.png", dpi=110)
