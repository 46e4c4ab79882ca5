"""Shared helpers of the deep-learning examples (``examples/dl_*.py``) and ``benchmarks/dl_bench.py``.

* :func:`setup` -- device, sparsec target and dtype: CUDA + ``triton`` + float16 when a
  GPU is there, else the CPU + ``cpu`` (LLVM) + float32; ``quick`` (tiny sizes) from
  ``--quick`` or ``SPARSEC_EXAMPLES_QUICK=1``.
* :func:`bind` -- a dense (pruned) torch weight bound once as a sparsec operand of a
  format on the target (a device tensor for Triton, a host :class:`sparsec.Tensor` for the CPU).
* :func:`median_time` -- median seconds per call: ``triton.testing.do_bench`` on the
  GPU (CUDA events, L2 flushed between calls), wall clock on the CPU.
* :func:`check` -- relative Frobenius error against a float64 reference; raises when
  over the dtype's tolerance.
* :class:`Row` / :func:`measure` / :func:`print_table` -- one timed, checked variant and
  the table printed beside its baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
import warnings
from typing import Any, Callable, Sequence

import torch

import sparsec as sc
from sparsec.formats import parse_format

warnings.filterwarnings("ignore", message=r"Sparse (CSR|BSR|CSC) tensor support is in beta")
warnings.filterwarnings("ignore", message=r".*semi-structured sparsity.*prototype", category=UserWarning)

#: a variant whose second call takes longer than this (seconds) is timed by that call alone
SLOW_S = 0.5

#: relative error allowed against a float64 reference, by dtype (sums in float32, rounded outputs)
TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}


@dataclasses.dataclass
class Env:
    """Where an example runs: torch device, sparsec target, value dtype, tiny sizes or not."""

    device: torch.device
    target: str
    dtype: torch.dtype
    quick: bool

    @property
    def gpu(self) -> bool:
        """Whether the example runs on a CUDA GPU."""
        return self.device.type == "cuda"

    @property
    def dtype_name(self) -> str:
        """The value dtype's sparsec name (``float16``...)."""
        return str(self.dtype).replace("torch.", "")


def setup(argv: Sequence[str] | None = None, dtype: torch.dtype | None = None, device: str | None = None) -> Env:
    """The example's environment (see the module docs); ``device="cpu"`` forces the CPU backend.

    The command line takes ``--quick`` (small sizes) and ``--help``; anything else is an error, so that a
    mistyped flag does not start a full-size run.
    """
    main = sys.modules.get("__main__")
    parser = argparse.ArgumentParser(description=(getattr(main, "__doc__", None) or "").strip().splitlines()[0]
                                     if getattr(main, "__doc__", None) else None)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (also $SPARSEC_EXAMPLES_QUICK=1); CI runs the examples this way")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    quick = args.quick or os.environ.get("SPARSEC_EXAMPLES_QUICK", "0") not in ("", "0")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        return Env(dev, "triton", dtype or torch.float16, quick)
    return Env(dev, "cpu", dtype or torch.float32, quick)


def bind(weight: torch.Tensor, fmt: str, env: Env, name: str = "W") -> Any:
    """``weight`` (dense, already pruned) stored in ``fmt`` on the example's target, once."""
    f = parse_format(fmt, weight.ndim)
    if env.target == "triton":
        from sparsec.backends.triton.device import bind_operand

        return bind_operand(weight, name, f, env.dtype_name, weight.device)
    host = weight.detach().cpu()
    return sc.Tensor.from_torch(host.float() if host.dtype == torch.bfloat16 else host, format=f, name=name)


def spmm_dtypes(env: Env, names: tuple[str, str, str] = ("W", "X", "Y")) -> dict[str, str]:
    """Value dtypes of a ``Y = W X`` kernel: half-precision operands, a float32 output on the GPU.

    The products are summed in float32 either way (as cuBLAS does); a float32 output also
    lets the tile templates split K across programs (atomic float32 adds).
    """
    dt = env.dtype_name
    out = "float32" if env.gpu and dt in ("float16", "bfloat16") else dt
    return {names[0]: dt, names[1]: dt, names[2]: out}


def dense(t: torch.Tensor, env: Env) -> Any:
    """A dense operand as the target takes it fastest: the tensor itself for Triton, a numpy view for the CPU.

    (The CPU backend's fast call path takes numpy arrays, and dense CPU torch tensors as numpy views.)
    """
    return t if env.target == "triton" else t.detach().contiguous().numpy()


def sync(env: Env) -> None:
    """Wait for the GPU (no-op on the CPU)."""
    if env.gpu:
        torch.cuda.synchronize()


def median_time(fn: Callable[[], Any], env: Env, budget_s: float | None = None) -> float:
    """Median seconds per call of ``fn`` (after warm-up calls); CPU: for about ``budget_s`` seconds."""
    if budget_s is None:
        budget_s = 0.02 if env.quick else 0.3
    if env.gpu:
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e-3
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget_s and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def rel_error(got: Any, ref: torch.Tensor) -> float:
    """‖got − ref‖ / ‖ref‖ in float64 (NaN when ``got`` has non-finite values)."""
    g = torch.as_tensor(got).detach()
    if g.layout != torch.strided:
        g = g.to_dense()
    g = g.double().cpu().reshape(ref.shape)
    if not torch.isfinite(g).all():
        return math.nan
    r = ref.detach().double().cpu()
    return float((g - r).norm() / r.norm().clamp_min(1e-300))


def check(got: Any, ref: torch.Tensor, dtype: torch.dtype, what: str) -> float:
    """The relative error of ``got``; AssertionError when it is over the dtype's tolerance (or NaN)."""
    err = rel_error(got, ref)
    tol = TOLERANCE[dtype]
    if not err <= tol:
        raise AssertionError(f"{what}: relative error {err:.2e} over the {dtype} tolerance {tol:.0e}")
    return err


@dataclasses.dataclass
class Row:
    """One measured variant of one case (``status`` ok / unsupported / failed)."""

    item: str
    case: str
    variant: str
    time_s: float = math.nan
    err: float = math.nan
    status: str = "ok"
    note: str = ""
    baseline: bool = False
    params: dict = dataclasses.field(default_factory=dict)


def measure(item: str, case: str, variant: str, fn: Callable[[], Any], ref: torch.Tensor | None, env: Env,
            baseline: bool = False, tol_dtype: torch.dtype | None = None, **params: Any) -> Row:
    """Run ``fn`` once and check it against ``ref`` (if given), then time it; failures become rows."""
    row = Row(item, case, variant, baseline=baseline, params=params)
    try:
        if not env.gpu and not env.quick:
            time.sleep(0.2)              # let the previous library's spinning BLAS/OpenMP threads park
        out = fn()                       # first call: compiles, and is checked
        sync(env)
        if ref is not None:
            row.err = check(out, ref, tol_dtype or env.dtype, f"{case} {variant}")
        t0 = time.perf_counter()
        fn()
        sync(env)
        second = time.perf_counter() - t0
        if second > SLOW_S:  # a very slow variant is timed by that one call, not by dozens
            row.time_s, row.note = second, "slow: timed by one call"
        else:
            row.time_s = median_time(fn, env)
    except NotImplementedError as e:
        row.status, row.note = "unsupported", _short(e)
    except Exception as e:  # a peer that cannot run this case is reported, not fatal
        row.status, row.note = "failed", f"{type(e).__name__}: {_short(e)}"
    return row


def measure_rounds(rounds: int, item: str, case: str, variants: Sequence[tuple[str, Callable[[], Any]]],
                   ref: torch.Tensor | None, env: Env, **params: Any) -> list[Row]:
    """:func:`measure` every variant, in turn, ``rounds`` times; per variant the row of the median time.

    On a host whose speed drifts between minutes (a shared VM), one pass per variant compares
    variants measured in different minutes; rounds that alternate them let each one's median come
    from the same stretch of time as the others'. The note gives the range over the rounds.
    """
    trials: dict[str, list[Row]] = {name: [] for name, _ in variants}
    for _ in range(max(1, rounds)):
        for name, fn in variants:
            trials[name].append(measure(item, case, name, fn, ref, env, **params))
    rows = []
    for name, _ in variants:
        ok = sorted((r for r in trials[name] if r.status == "ok"), key=lambda r: r.time_s)
        if not ok:
            rows.append(trials[name][0])
            continue
        row = ok[(len(ok) - 1) // 2]
        if len(ok) > 1:
            row.note = (row.note + "; " if row.note else "") + \
                f"median of {len(ok)} rounds ({ok[0].time_s * 1e6:.0f}-{ok[-1].time_s * 1e6:.0f} µs)"
        rows.append(row)
    return rows


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:160]


def speedups(rows: Sequence[Row]) -> dict[int, float]:
    """For each row (by index): baseline time / its time within its case (NaN without a baseline)."""
    base = {r.case: r.time_s for r in rows if r.baseline and r.status == "ok"}
    return {i: base.get(r.case, math.nan) / r.time_s if r.status == "ok" else math.nan for i, r in enumerate(rows)}


def print_table(title: str, rows: Sequence[Row], env: Env) -> None:
    """The rows as a plain table: time, speed-up over the case's baseline, error."""
    sp = speedups(rows)
    where = f"{torch.cuda.get_device_name()}" if env.gpu else "CPU"
    size = " (quick sizes)" if env.quick else ""
    print(f"\n{title} — {where}, {env.dtype_name}, sparsec target {env.target}{size}")
    print(f"{'case':<34} {'variant':<30} {'time':>10} {'vs base':>8} {'rel.err':>9}  note")
    for i, r in enumerate(rows):
        t = f"{r.time_s * 1e6:9.1f}us" if r.status == "ok" else f"{r.status:>11}"
        s = f"{sp[i]:7.2f}x" if not math.isnan(sp[i]) else "       -"
        e = f"{r.err:9.1e}" if not math.isnan(r.err) else "        -"
        print(f"{r.case:<34} {r.variant + (' (base)' if r.baseline else ''):<30} {t:>10} {s:>8} {e}  {r.note}")


def failed(rows: Sequence[Row]) -> list[Row]:
    """Rows of sparsec variants that did not run correctly (peers may be unsupported)."""
    return [r for r in rows if r.variant.startswith("sparsec") and r.status != "ok"]


def finish(rows: Sequence[Row]) -> int:
    """Exit status of an example: 1 when a sparsec variant failed or was wrong."""
    bad = failed(rows)
    for r in bad:
        print(f"FAILED: {r.case} {r.variant}: {r.note}", file=sys.stderr)
    return 1 if bad else 0
