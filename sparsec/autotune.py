"""Automatic schedules: ``schedule="auto"`` and :func:`autotune`.

The best schedule depends on the matrix, which is only known at call time. Both
tools therefore key their choice by a cheap *matrix signature*: log2 buckets of
the rows, the nonzeros, the average row length and the longest row (one pass over
the ``pos`` array of the first compressed operand, memoized), plus the device.

* :func:`autotune` (``sc.autotune(kernel, **operands)``) times candidate schedules
  on the given operands (median of repeated runs after a warm-up), prints progress,
  stores the winner on disk (``$SPARSEC_CACHE_DIR/autotune.json``, keyed by the
  kernel's loop IR, the signature and the device) and returns the winning kernel.
  CPU candidates: LLVM vectorization width of each inner loop (scalar, 4, 8),
  splits of the parallel loop, one thread or all, and for a workspace output (SpGEMM)
  the marking of new columns with a branch (``Schedule.workspace(..., touch="branch")``; the default
  marks them without one). Triton candidates: the block
  sizes of the fast paths and row splitting (:class:`~sparsec.backends.triton.TritonOptions`).
* ``sc.compile(..., schedule="auto")`` returns an :class:`AutoKernel`: at each call
  it looks up the signature among autotuned winners, else applies the heuristic
  (CPU: a scalar inner loop when rows average fewer than 12 nonzeros -- the gather
  vector loop loses there on the CI machines, wiki-Vote 0.68x vs scalar; the
  Triton backend's own launch heuristics otherwise), and dispatches to the variant,
  compiled once.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import ScheduleError
from .ir import loop_ir as L
from .ir.loop_printer import kernel_text
from .runtime import is_torch
from .schedule import Schedule

_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------ signatures
def _bucket(x: float) -> int:
    return int(math.floor(math.log2(x))) if x >= 1 else 0


def _pos_array(x: Any) -> Any | None:
    """The pos array of the first compressed level of an operand (sc.Tensor, device tensor, scipy)."""
    levels = getattr(x, "levels", None)
    if levels is not None:
        for lv in levels:
            if "pos" in lv:
                return lv["pos"]
        return None
    indptr = getattr(x, "indptr", None)
    if indptr is not None:
        return indptr
    if is_torch(x) and getattr(x, "layout", None) is not None:
        try:
            return x.crow_indices()
        except Exception:
            return None
    return None


def signature(operands: Mapping[str, Any], device: str) -> str:
    """Coarse shape of the sparse work: rows, nonzeros, average and longest row (log2 buckets) and device."""
    for name in sorted(operands):
        pos = _pos_array(operands[name])
        if pos is None:
            continue
        p = pos.cpu().numpy() if hasattr(pos, "cpu") else np.asarray(pos)
        n = max(p.shape[0] - 1, 1)
        lens = np.diff(p.astype(np.int64)) if p.shape[0] > 1 else np.zeros(1, np.int64)
        nnz = int(lens.sum())
        return (f"{device}:rows{_bucket(n)}:nnz{_bucket(nnz)}:avg{_bucket(max(nnz / n, 1))}:"
                f"max{_bucket(max(int(lens.max(initial=0)), 1))}")
    return f"{device}:dense"


def kernel_key(kernel) -> str:
    """Identity of a kernel's computation (its default loop IR, formats and dtypes), for the tuning store."""
    text = "\n".join(kernel_text(low.numeric) for low in kernel.lowered.statements)
    return sha256(f"{kernel.target}\n{text}".encode()).hexdigest()[:24]


def _device_name(kernel) -> str:
    if kernel.target == "cpu":
        import platform

        return f"cpu-{platform.machine()}-{os.cpu_count()}"
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name().replace(" ", "_")
    except ImportError:  # pragma: no cover
        pass
    return kernel.target


# ------------------------------------------------------------------------------------ the store
def _store_path() -> Path | None:
    base = os.environ.get("SPARSEC_CACHE_DIR")
    if base == "":
        return None
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sparsec"
    return root / "autotune.json"


def _load_store() -> dict:
    path = _store_path()
    if path is None or not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        import warnings

        warnings.warn(f"sparsec: unreadable autotune store {path}; starting afresh", RuntimeWarning, stacklevel=3)
        return {}


#: counts the winners stored by this process: an AutoKernel looks a signature up again after one
_STORE_GENERATION = 0


def _save_winner(key: str, winner: dict) -> None:
    global _STORE_GENERATION
    path = _store_path()
    if path is None:
        return
    _STORE_GENERATION += 1
    with _LOCK:
        store = _load_store()
        store[key] = winner
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(store, indent=1, sort_keys=True))
        os.replace(tmp, path)


def lookup(kernel, operands: Mapping[str, Any]) -> dict | None:
    """The stored winner for this kernel, signature and device, if any."""
    key = f"{kernel_key(kernel)}|{signature(operands, _device_name(kernel))}"
    return _load_store().get(key)


# ------------------------------------------------------------------------------------ candidates
@dataclass(frozen=True)
class Candidate:
    """A way to run a kernel: a schedule (CPU) and/or backend options (Triton), and a thread count."""

    label: str
    schedule: Schedule | None = None
    options: tuple = ()          # TritonOptions fields
    threads: int | None = None

    def as_json(self) -> dict:
        return {"label": self.label, "schedule": [[c.op, list(c.args)] for c in self.schedule.commands]
                if self.schedule else [], "options": [list(o) for o in self.options], "threads": self.threads}

    @staticmethod
    def from_json(d: dict) -> "Candidate":
        sched = Schedule()
        for op, args in d.get("schedule", []):
            sched = getattr(sched, op)(*[a for a in args])
        return Candidate(d["label"], sched if sched.commands else None,
                         tuple(tuple(o) for o in d.get("options", [])), d.get("threads"))


def _inner_loops(kernel) -> list[str]:
    """Names of the non-parallel innermost-ish for loops of the kernel's main statement."""
    names: list[str] = []
    for s in kernel.lowered.statements[-1].numeric.body.walk():
        if isinstance(s, L.For) and s.kind.kind != "parallel" and (s.index_var or s.var.name) not in names:
            names.append(s.index_var or s.var.name)
    return names


def _split_schedule(parts: Sequence[tuple[str, tuple]]) -> Schedule:
    s = Schedule()
    for op, args in parts:
        s = getattr(s, op)(*args)
    return s


def candidates(kernel) -> list[Candidate]:
    """Candidate ways to run ``kernel`` on its backend (see the module docs)."""
    out = [Candidate("default")]
    if kernel.target == "cpu":
        from .runtime import get_num_threads

        for v in _inner_loops(kernel):
            for w in (1, 4, 8):
                out.append(Candidate(f"vectorize({v}, {w})", Schedule().vectorize(v, w)))
        ws = kernel.lowered.statements[-1].workspace_var
        if ws is not None:      # which marks a new column faster depends on the matrix (Schedule.workspace)
            out.append(Candidate(f"workspace({ws}, auto, touch=branch)", Schedule().workspace(ws, "auto", "branch")))
        if get_num_threads() > 1:
            out.append(Candidate("1 thread", threads=1))
    elif kernel.target in ("triton", "gpu", "cuda"):
        for o in [(("split_rows", False),), (("split_rows", True),), (("block_k", 1),), (("block_k", 4),),
                  (("block_n", 32),), (("block_n", 64),), (("block", 8), ("rows", 16)), (("block", 32), ("rows", 4)),
                  (("num_warps", 4),)]:
            out.append(Candidate(", ".join(f"{k}={v}" for k, v in o), options=o))
    return out


# ------------------------------------------------------------------------------------ running
def _sync(kernel) -> Callable[[], None]:
    if kernel.target == "cpu" or kernel.target == "interp":
        return lambda: None
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.synchronize
    except ImportError:  # pragma: no cover
        pass
    return lambda: None


def _variant(kernel, cand: Candidate, cache: dict) -> Any:
    """The kernel object a candidate runs: recompiled with the kernel's own schedule followed by the
    candidate's, when the candidate has one."""
    if cand.schedule is None:
        return kernel
    if cand.label not in cache:
        from .api import Kernel

        own = kernel.schedule      # the user's schedule comes first; the candidate's commands refine it
        sched = cand.schedule if own is None else Schedule(own.commands + cand.schedule.commands)
        cache[cand.label] = Kernel(kernel.program, kernel.target, sched, kernel.name, outputs=kernel.outputs)
    return cache[cand.label]


def run_candidate(kernel, cand: Candidate, operands: Mapping[str, Any], cache: dict) -> Any:
    """Call the candidate once."""
    from .runtime import get_num_threads, set_num_threads

    k = _variant(kernel, cand, cache)
    prev = None
    if cand.threads is not None:
        prev = get_num_threads()
        set_num_threads(cand.threads)
    try:
        if cand.options:
            from .backends.triton import options

            with options(**dict(cand.options)):
                return k(**operands)
        return k(**operands)
    finally:
        if prev is not None:
            set_num_threads(prev)


def autotune(kernel, given: Mapping[str, Any] | None = None, /, *, repeat: int = 10, verbose: bool = True,
             stream=None, **operands: Any):
    """Time candidate schedules of ``kernel`` on its operands; store and return the fastest.

    Operands come by name (``sc.autotune(k, A=A, x=x)``) or as a mapping (``sc.autotune(k, {"A": A, "x": x})``,
    which any tensor name may use, ``repeat`` or ``stream`` included). Returns ``kernel`` itself when its
    default schedule wins, else an :class:`AutoKernel` fixed to the winner (a schedule, a thread count or
    Triton launch options). ``repeat`` timed calls per candidate (their median counts). Progress goes to
    ``stream`` (default stderr) when ``verbose``.
    """
    if given is not None:
        if operands:
            raise TypeError("autotune: give the operands either as a mapping or by name, not both")
        operands = dict(given)
    else:
        shadowed = sorted(set(getattr(kernel, "inputs", ())) & {"repeat", "verbose", "stream"})
        if shadowed:
            raise TypeError(f"autotune: the kernel's tensor {shadowed[0]!r} has the name of an autotune option; "
                            "pass the operands as a mapping: sc.autotune(kernel, {...})")
    out = stream or sys.stderr
    cands = candidates(kernel)
    sync = _sync(kernel)
    cache: dict = {}
    results: list[tuple[float, Candidate]] = []
    reference = None
    for n, cand in enumerate(cands, 1):
        try:
            first = run_candidate(kernel, cand, operands, cache)
            sync()
            got = _as_array(first)
            if reference is None:
                reference = got
            elif not _close(got, reference):
                raise ScheduleError("result differs from the default schedule")
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                run_candidate(kernel, cand, operands, cache)
                sync()
                times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            results.append((t, cand))
            if verbose:
                print(f"[autotune {n}/{len(cands)}] {cand.label:28s} {t * 1e3:9.3f} ms", file=out, flush=True)
        except ScheduleError as e:
            if verbose:
                print(f"[autotune {n}/{len(cands)}] {cand.label:28s} skipped: {e}", file=out, flush=True)
    if not results:
        raise ScheduleError("autotune: no candidate ran")
    best_t, best = min(results, key=lambda r: r[0])
    default_t = next(t for t, c in results if c.label == "default")
    sig = signature(operands, _device_name(kernel))
    _save_winner(f"{kernel_key(kernel)}|{sig}", {**best.as_json(), "ms": best_t * 1e3,
                                                 "default_ms": default_t * 1e3})
    if verbose:
        print(f"[autotune] best: {best.label} ({best_t * 1e3:.3f} ms; default {default_t * 1e3:.3f} ms) "
              f"for {sig}", file=out, flush=True)
    if best.schedule is None and not best.options and best.threads is None:
        return kernel
    return AutoKernel(kernel, fixed=best)


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "to_host"):
        x = x.to_host()
    if hasattr(x, "to_numpy"):
        return x.to_numpy()
    if hasattr(x, "cpu"):
        return x.detach().cpu().double().numpy()
    if isinstance(x, dict):
        return np.concatenate([_as_array(v).ravel() for v in x.values()])
    return np.asarray(x)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    scale = max(1.0, float(np.abs(b).max())) if b.size else 1.0
    return bool(np.allclose(a, b, rtol=1e-3, atol=1e-5 * scale, equal_nan=True))


# ------------------------------------------------------------------------------------ schedule="auto"
class AutoKernel:
    """A kernel whose schedule is chosen per call from the operands' signature (see the module docs)."""

    def __init__(self, kernel, fixed: Candidate | None = None):
        self.base = kernel
        self.fixed = fixed
        self._cache: dict = {}
        #: signature -> (store generation it was looked up at, candidate)
        self._choice: dict[str, tuple[int, Candidate]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def choose(self, operands: Mapping[str, Any]) -> Candidate:
        """The candidate for these operands: fixed, else the stored winner, else the heuristic."""
        if self.fixed is not None:
            return self.fixed
        sig = signature(operands, _device_name(self.base))
        hit = self._choice.get(sig)
        if hit is None or hit[0] != _STORE_GENERATION:   # a winner stored since (sc.autotune here) takes over
            won = _load_store().get(f"{kernel_key(self.base)}|{sig}")
            hit = self._choice[sig] = (_STORE_GENERATION, Candidate.from_json(won) if won else self._heuristic(operands))
        return hit[1]

    def _heuristic(self, operands: Mapping[str, Any]) -> Candidate:
        if self.base.target != "cpu":
            return Candidate("default")
        for name in sorted(operands):
            pos = _pos_array(operands[name])
            if pos is None:
                continue
            p = np.asarray(pos)
            avg = (int(p[-1]) - int(p[0])) / max(p.shape[0] - 1, 1)
            inner = [v for v in _inner_loops(self.base) if v != self.base.lowered.statements[-1].order.order[0]]
            if avg < 12 and inner and self._reduces_into_scalar():
                return Candidate(f"vectorize({inner[-1]}, 1)", Schedule().vectorize(inner[-1], 1))
            break
        return Candidate("default")

    def _reduces_into_scalar(self) -> bool:
        """SpMV-like: the main statement accumulates a scalar over its innermost sparse loop."""
        low = self.base.lowered.statements[-1]
        return low.strategy == "dense" and low.reduce_op == "sum" and any(
            isinstance(s, L.Assign) and s.var.name.startswith("acc") for s in low.numeric.body.walk())

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        operands = self.base.operands(args, kwargs)   # extra, repeated or unknown operands: TypeError
        return run_candidate(self.base, self.choose(operands), operands, self._cache)

    def dump(self, stage: str = "all") -> str:
        """The default variant's stages (a chosen variant shows its own through ``variant(...)``)."""
        return self.base.dump(stage)

    def variant(self, /, **operands: Any) -> Any:
        """The kernel that would run for these operands."""
        return _variant(self.base, self.choose(self.base.operands((), operands)), self._cache)

    def __repr__(self) -> str:
        return f"<sparsec.AutoKernel of {self.base!r}{' fixed ' + self.fixed.label if self.fixed else ''}>"
