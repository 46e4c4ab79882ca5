"""``python -m sparsec.bench [options]``: the benchmark harness of a source checkout.

A thin wrapper: it forwards every option to ``benchmarks/run.py`` (see
``benchmarks/README.md``), which lives beside the package in the repository and
is not installed with it.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "run.py").is_file():
        sys.stderr.write("sparsec.bench needs a source checkout: no benchmarks/run.py next to the sparsec package\n")
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.run import main as run_main

    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
