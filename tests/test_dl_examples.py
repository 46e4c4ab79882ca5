"""Every deep-learning example (``examples/dl_*.py``) runs in its tiny-size mode and checks itself.

Each example compares its sparsec results with a dense torch computation in float64 and
exits non-zero when a sparsec variant is wrong or fails; here each runs as a script
(``--quick``) in its own process, on the CPU backend (or on the GPU when CUDA is there).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "dl_*.py")))


def test_every_item_has_an_example():
    names = {os.path.basename(p) for p in EXAMPLES}
    assert {"dl_pruned_linear.py", "dl_nm_linear.py", "dl_block_sparse.py", "dl_block_sparse_attention.py",
            "dl_activation_sparsity.py",
            "dl_sparse_conv1x1.py", "dl_sparse_linear_module.py", "dl_spgemm.py"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_quick(path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               SPARSEC_EXAMPLES_QUICK="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, path, "--quick"], env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    sparsec_rows = [line for line in proc.stdout.splitlines() if " sparsec" in line]
    assert sparsec_rows, out[-4000:]
    assert all("failed" not in line for line in sparsec_rows), out[-4000:]


def test_bench_harness_quick(tmp_path):
    """benchmarks/dl_bench.py at tiny sizes writes its CSV, summary (with the target table) and meta."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import dl_bench
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))
    assert dl_bench.main(["--quick", "--items", "1,5", "--out", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "## Targets" in summary and "| 1 |" in summary and "sparsec bitmap" in summary
    rows = dl_bench.read_csv(str(tmp_path / "results.csv"))
    assert rows and all(r.status == "ok" for r in rows if r.variant.startswith("sparsec"))
    assert dl_bench.merge([str(tmp_path)], str(tmp_path / "merged")) == 0


def test_measure_rounds_reports_each_variants_median_round(monkeypatch):
    """Rounds alternate the variants; each variant's row is its median round, the note its range."""
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import _dl_common as dl

    times = {"a": iter([3e-6, 1e-6, 2e-6]), "b": iter([5e-6, 9e-6, 7e-6])}
    order = []

    def fake_measure(item, case, variant, fn, ref, env, **params):
        order.append(variant)
        return dl.Row(item, case, variant, time_s=next(times[variant]), params=params)

    monkeypatch.setattr(dl, "measure", fake_measure)
    rows = dl.measure_rounds(3, "9", "case", [("a", None), ("b", None)], None, None, n=1)
    assert order == ["a", "b"] * 3
    assert [r.time_s for r in rows] == [2e-6, 7e-6]
    assert rows[0].note == "median of 3 rounds (1-3 µs)" and rows[1].params == {"n": 1}
