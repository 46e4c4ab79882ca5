"""Timing: median of repeated calls after warm-up.

CPU: ``cpu_time`` calls a list of equivalent callables round-robin (one per
rotated copy of the inputs, so a problem that fits in the last-level cache is
not timed hot), with the garbage collector off, until it has ``min_reps`` calls
and ``budget_s`` seconds, or ``max_reps`` calls. A very slow first call lowers
``min_reps`` (a 20 s SpGEMM is not run 20 times). The full mode allows up to 1000
calls: capped at 50, a 30 µs SpMV was sampled over 1.5 ms, where one stall of the
2-vCPU VM can move the median (wiki-Vote's scipy SpMV read 94 µs, then 183 µs in an
identical run).

GPU: ``gpu_time`` uses ``triton.testing.do_bench`` (which flushes L2 between
calls) with ``return_mode="median"`` when that Triton has it, else its 0.5
quantile, else CUDA events; all report the median in seconds. The full mode
takes the median of three such medians: a kernel of ~10 us is launched from
Python in about as long, so a stall of the host during one do_bench window
(seen on an H100: 10.6 us, then 68.8 us, for the same SpMV) would otherwise
stand as the result.
"""

from __future__ import annotations

import gc
import inspect
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence


@dataclass
class Timing:
    median_s: float
    min_s: float
    reps: int


@dataclass
class Budget:
    min_reps: int = 5
    max_reps: int = 50
    budget_s: float = 1.0      # stop after this much timed work once min_reps is reached
    slow_s: float = 10.0       # a first call this slow: only max(1, min_reps // 3) timed calls


QUICK = Budget(min_reps=3, max_reps=8, budget_s=0.05, slow_s=0.25)
FULL = Budget(min_reps=5, max_reps=1000, budget_s=0.5, slow_s=10.0)


def cpu_time(fns: Sequence[Callable[[], Any]], budget: Budget, first_s: float | None = None) -> Timing:
    """Median wall time of the callables; ``fns[0]`` is assumed already called once (the warm-up).

    The rotated copies are not warmed: code paths are warm after ``fns[0]``, and their
    data being out of cache is the point of rotating.
    """
    min_reps = budget.min_reps
    if first_s is not None and first_s > budget.slow_s:
        min_reps = max(1, min_reps // 3)
    times: list[float] = []
    gc_was = gc.isenabled()
    gc.disable()  # no gc.collect() here: a full collection costs ~0.2 s with torch + numba loaded
    try:
        spent = 0.0
        k = 0
        while len(times) < budget.max_reps and (len(times) < min_reps or spent < budget.budget_s):
            f = fns[k % len(fns)]
            k += 1
            t = time.perf_counter()
            f()
            dt = time.perf_counter() - t
            times.append(dt)
            spent += dt
    finally:
        if gc_was:
            gc.enable()
    return Timing(statistics.median(times), min(times), len(times))


def first_call(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


# ------------------------------------------------------------------------------ GPU
def _do_bench_median(fn: Callable[[], Any], warmup_ms: int, rep_ms: int) -> float:
    """Median milliseconds through triton.testing.do_bench, whatever its Triton version offers."""
    from triton.testing import do_bench

    params = inspect.signature(do_bench).parameters
    if "return_mode" in params:
        try:
            return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
        except (ValueError, AssertionError, TypeError):
            pass  # a Triton whose return_mode has no "median"
    if "quantiles" in params:
        r = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5])
        return float(r[0] if isinstance(r, (list, tuple)) else r)
    raise RuntimeError("triton.testing.do_bench takes neither return_mode nor quantiles")


def _events_median(fn: Callable[[], Any], reps: int = 50) -> float:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def gpu_time(fn: Callable[[], Any], quick: bool = False) -> float:
    """Median seconds of one call on the current CUDA device."""
    warmup, rep = (10, 40) if quick else (25, 100)
    try:
        runs = [_do_bench_median(fn, warmup, rep) for _ in range(1 if quick else 3)]
    except ImportError:
        runs = [_events_median(fn)]
    return statistics.median(runs) / 1e3


def gpu_timing(fn: Callable[[], Any], quick: bool) -> Timing:
    t = gpu_time(fn, quick)
    return Timing(t, t, 0)
