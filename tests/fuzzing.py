"""Settings shared by the hypothesis fuzzers (``test_fuzz``, ``test_schedule_fuzz``, ``test_conversion_fuzz``).

Each reads three environment variables under its own prefix: ``<PREFIX>_EXAMPLES`` (more examples, to hunt
bugs), ``<PREFIX>_SEED`` (random exploration from that seed instead of the fixed CI examples) and
``<PREFIX>_STRICT`` (fail on known bugs too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from hypothesis import HealthCheck, Phase, seed, settings


@dataclass(frozen=True)
class FuzzEnv:
    """A fuzzer's budget and seed, from ``<prefix>_EXAMPLES`` / ``_SEED`` / ``_STRICT``."""

    examples: int
    seed: str
    strict: bool

    @classmethod
    def read(cls, prefix: str) -> "FuzzEnv":
        """The variables under ``prefix`` (e.g. ``SPARSEC_FUZZ``); unset: the fixed CI budget and examples."""
        return cls(int(os.environ.get(f"{prefix}_EXAMPLES", "0") or 0), os.environ.get(f"{prefix}_SEED", ""),
                   os.environ.get(f"{prefix}_STRICT", "") not in ("", "0"))

    def settings(self, examples: int) -> settings:
        """``max_examples=examples``, derandomized (the same examples every CI run) unless a seed is set; no
        example database, no deadline, every health check off (the operands are built inside the test)."""
        return settings(
            max_examples=examples,
            deadline=None,
            derandomize=not self.seed,
            database=None,
            print_blob=True,
            suppress_health_check=list(HealthCheck),
            phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
        )

    def seeded(self, test: Callable) -> Callable:
        """``test`` under ``hypothesis.seed`` when a seed is set."""
        return seed(int(self.seed))(test) if self.seed else test
