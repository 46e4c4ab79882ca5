"""Settings shared by the hypothesis fuzzers (``test_fuzz``, ``test_schedule_fuzz``, ``test_conversion_fuzz``).

Each reads three environment variables under its own prefix: ``<PREFIX>_EXAMPLES`` (more examples, to hunt
bugs), ``<PREFIX>_SEED`` (random exploration from that seed instead of the fixed CI examples) and
``<PREFIX>_STRICT`` (fail on known bugs too).
"""

from __future__ import annotations

import os
import re
import traceback
from dataclasses import dataclass
from typing import Any, Callable

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


@dataclass(frozen=True)
class KnownBug:
    """A bug documented by an xfail regression; ``matches`` recognises it in a fuzz failure.

    ``crashes``: the bug may kill the process (a segfault), so a case ``case`` accepts is not run at all
    outside strict mode (the fuzzer is blind there until the fix; the regressions keep the evidence).
    """

    name: str
    exc: type
    message: str                   # regular expression searched in str(exception)
    function: str = ""             # name of the innermost sparsec function that raised it ("" = any)
    case: Callable[[Any], bool] | None = None   # for wrong results: which cases it can explain
    crashes: bool = False

    def matches(self, e: BaseException, case: Any = None) -> bool:
        """Whether failure ``e`` (of ``case``) is this bug."""
        if not isinstance(e, self.exc) or re.search(self.message, str(e)) is None:
            return False
        if self.case is not None and (case is None or not self.case(case)):
            return False
        if self.function:
            frames = sparsec_frames(e)
            return bool(frames) and frames[-1].name == self.function
        return True


def sparsec_frames(e: BaseException) -> list[traceback.FrameSummary]:
    """The traceback frames of ``e`` inside the sparsec package, outermost first."""
    return [f for f in traceback.extract_tb(e.__traceback__) if "/sparsec/" in f.filename]


def explore_failures(strategy: Any, probe: Callable[[Any], list[str]], examples: int, seed_: int,
                     minimize: bool = True, minimize_examples: int = 300, show: Callable[[Any], str] = str,
                     on_new: Callable[[Any], None] | None = None,
                     summary: Callable[[], str] = lambda: "") -> dict[str, tuple[int, Any]]:
    """Draw ``examples`` cases from ``strategy`` without stopping at failures (script mode of a fuzzer).

    ``probe(case)`` returns the signatures of the case's failures (empty: it passed). Each new signature
    is printed with its case (``on_new`` may add detail), then each is minimized (``hypothesis.find``) and
    printed with ``show``. Returns ``{signature: (count, minimal case)}``.
    """
    import time

    from hypothesis import find, given

    found: dict[str, list] = {}
    count = {"n": 0, "t": time.time()}

    @seed(seed_)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=(Phase.generate,))
    @given(case=strategy)
    def run(case: Any) -> None:
        count["n"] += 1
        for s in probe(case):
            if s not in found:
                print(f"[{count['n']}] NEW {s}\n    {case}", flush=True)
                if on_new is not None:
                    on_new(case)
                found[s] = [0, case]
            found[s][0] += 1
        if count["n"] % 100 == 0:
            print(f"  {count['n']} examples{summary()}, {time.time() - count['t']:.0f} s", flush=True)

    run()
    print(f"explored {count['n']} examples{summary()} in {time.time() - count['t']:.0f} s; {len(found)} signatures",
          flush=True)
    out = {}
    for s, (n, case) in found.items():
        small = case
        if minimize:
            try:
                small = find(strategy, lambda c, s=s: s in probe(c),
                             settings=settings(max_examples=minimize_examples, database=None, deadline=None,
                                               suppress_health_check=list(HealthCheck)))
            except Exception as e:  # noqa: BLE001 - flaky or not reproducible from scratch: keep the original
                print(f"could not minimize {s}: {type(e).__name__}")
        out[s] = (n, small)
        print(f"== {n}x {s}\n   {show(small)}", flush=True)
    return out
