"""Differential fuzzer for schedules: random ``sc.Schedule`` command sequences against the dense oracle.

Hypothesis draws a :class:`SchedCase`: a kernel from :data:`KERNELS` (SpMV, SpMM,
SDDMM, sparse add, SpGEMM, row sum / row max, TTV and MTTKRP over 3-d tensors, a dense
elementwise product, ``A x + b`` and a row max plus a vector, which a CSC operand makes
two statements), formats for its operands from what each allows (csr, csc, coo,
dcsr, dcsc, ell, bsr, bitmap, csr_unsorted, narrow widths, csf in several level orders,
dense) and for a sparse output (csr, csr_unsorted, dcsr, coo), extents that are odd and
not multiples of any tile (1, 3, 7, 17, 33, 65 ..., sometimes 0), operands with empty
rows or all zeros, a dtype, a thread count (1 or 2; with 2 the runtime's parallel
threshold is lowered so that even these small kernels really run in chunks on two
threads) and 0-4 scheduling commands from the public :class:`sparsec.Schedule` API
(``reorder``, ``split``, ``fuse``, ``pos``, ``parallelize``, ``vectorize``,
``unroll``, ``block``, ``workspace``, ``skip_zeros``) with random arguments: loop
names of the kernel, names created by earlier ``split``/``fuse`` commands, blocked
and position loop names, names that collide with other loops or generated
identifiers, unknown names, illegal factors.

The property: building the schedule and compiling either raise
:class:`sparsec.ScheduleError` whose message names the command or loop at fault,
or the kernel's result (through the fast call path and through ``Kernel.run`` on
the CPU) matches :func:`sparsec.ir.tensor_eval.evaluate` in float64 within the
dtype's bound (:func:`grid.check`), with the declared output format, and the
operands come back unchanged. Any other exception (``KeyError``, ``AssertionError``,
an LLVM or Triton error, a ``VerificationError`` or ``BackendError`` for a valid
expression) is a bug.

Budget and reproducibility
--------------------------
By default the CPU test runs :data:`CI_EXAMPLES` examples and the Triton test
(Triton's interpreter) :data:`CI_TRITON_EXAMPLES`, from a fixed seed
(``derandomize=True``, no example database). Long mode::

    SPARSEC_SCHEDULE_FUZZ_EXAMPLES=3000 python -m pytest -q tests/test_schedule_fuzz.py
    SPARSEC_SCHEDULE_FUZZ_EXAMPLES=3000 SPARSEC_SCHEDULE_FUZZ_SEED=3 python -m pytest -q tests/test_schedule_fuzz.py

(the Triton test gets a tenth of the examples). ``python tests/test_schedule_fuzz.py
EXAMPLES SEED [cpu|triton] [0]`` explores without stopping at the first failure, groups
failures by where they were raised, prints a standalone reproducer for each
(:func:`repro_script`) and minimizes it (not with a last argument ``0``);
``SPARSEC_SCHEDULE_FUZZ_TRACE=path`` writes each case there before it runs (a crash's case).
Minimized failures go into :data:`REGRESSIONS` (strict ``xfail`` with the reason while the
fix is pending); :data:`KNOWN_BUGS` recognises
them in the random tests so that the fuzzer keeps looking for new ones
(``SPARSEC_SCHEDULE_FUZZ_STRICT=1`` fails on them too).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fuzzing import FuzzEnv, KnownBug, explore_failures, sparsec_frames

# before sparsec is imported (the runtime reads it once): also when this file runs as a script
os.environ.setdefault("SPARSEC_POISON_OUTPUTS", "1")
import sparsec as sc  # noqa: E402
from grid import check
from sparsec import runtime
from sparsec.errors import ScheduleError
from sparsec.frontend import parse_statement
from sparsec.ir.tensor_eval import evaluate

# ------------------------------------------------------------------------------------ settings
ENV = FuzzEnv.read("SPARSEC_SCHEDULE_FUZZ")
FUZZ_EXAMPLES, FUZZ_SEED, FUZZ_STRICT = ENV.examples, ENV.seed, ENV.strict
CI_EXAMPLES = 150
CI_TRITON_EXAMPLES = 12
_settings, _seeded = ENV.settings, ENV.seeded


# ------------------------------------------------------------------------------------ cases
@dataclass(frozen=True)
class SOp:
    """One operand: name, index letters, format, density, value pattern and carrier.

    ``pattern``: ``random`` (uniform values kept with ``density``), ``zeros`` (all zero),
    ``empty_rows`` (random, with every third row, from row 1, empty). ``carrier``: ``tensor``
    (an ``sc.Tensor`` in ``fmt``), ``coo`` (an ``sc.Tensor`` in COO: the kernel converts),
    ``scipy`` (2-d csr/csc/coo), ``numpy`` (dense only).
    """

    name: str
    dims: str
    fmt: str = "dense"
    density: float = 0.4
    pattern: str = "random"
    carrier: str = "tensor"


@dataclass(frozen=True)
class SchedCase:
    """A kernel, its operands and sizes, and the schedule (``commands``: ``(op, args)`` pairs of
    :class:`sparsec.Schedule` methods, applied in order) with the thread count it runs on."""

    text: str
    operands: tuple[SOp, ...]
    sizes: tuple[tuple[str, int], ...]
    commands: tuple[tuple[str, tuple], ...] = ()
    out_format: str | None = None
    threads: int = 1
    dtype: str = "float64"
    seed: int = 0

    def schedule(self) -> sc.Schedule:
        s = sc.Schedule()
        for op, args in self.commands:
            s = getattr(s, op)(*args)
        return s

    def schedule_code(self) -> str:
        return "sc.Schedule()" + "".join(f".{op}({', '.join(map(repr, args))})" for op, args in self.commands)

    @property
    def out_name(self) -> str:
        return self.text.split("[", 1)[0].strip()


S2_SPARSE = ("csr", "csc", "coo", "dcsr", "dcsc")
S2_ALL = S2_SPARSE + ("dense", "ell", "bsr(2,2)", "bsr(3,2)", "csf(1,0)", "csr_unsorted", "bitmap",
                      "csr[pos32,crd16]")
S3_ALL = ("csf", "csf(0,2,1)", "csf(1,0,2)", "csf(2,0,1)", "csf(2,1,0)", "coo", "dense")
S2_MERGE = ("csr", "csc", "coo", "dcsr")
DENSE = ("dense",)

#: name -> (text, ((operand, dims, formats), ...), output formats); a format listed twice is drawn more often
KERNELS: dict[str, tuple[str, tuple[tuple[str, str, tuple[str, ...]], ...], tuple[str | None, ...]]] = {
    "spmv": ("y[i] = A[i,j] * x[j]", (("A", "ij", S2_ALL), ("x", "j", DENSE)), (None,)),
    "spmm": ("C[i,j] = A[i,k] * B[k,j]", (("A", "ik", S2_ALL), ("B", "kj", DENSE)), (None,)),
    "spmm_sparse_b": ("C[i,j] = A[i,k] * B[k,j]", (("A", "ik", DENSE), ("B", "kj", S2_SPARSE)), (None,)),
    "sddmm": ("S[i,j] = M[i,j] * U[i,k] * V[k,j]", (("M", "ij", S2_MERGE), ("U", "ik", DENSE), ("V", "kj", DENSE)),
              ("csr", None, "dcsr", "coo")),
    "add": ("C[i,j] = A[i,j] + B[i,j]", (("A", "ij", S2_MERGE), ("B", "ij", S2_MERGE)),
            ("csr", "csr", None, "dcsr", "coo")),
    "spgemm": ("C[i,j] = A[i,k] * B[k,j]", (("A", "ik", ("csr", "dcsr", "coo")), ("B", "kj", ("csr", "csr", "csc"))),
               ("csr", "csr_unsorted", "csr", "dcsr", "coo")),
    "rowsum": ("y[i] = A[i,j]", (("A", "ij", S2_ALL),), (None,)),
    "rowmax": ("y[i] = max[j](A[i,j])", (("A", "ij", S2_SPARSE + DENSE),), (None,)),
    "ttv": ("Y[i,j] = A[i,j,k] * c[k]", (("A", "ijk", S3_ALL), ("c", "k", DENSE)), (None, None, "csr")),
    "mttkrp": ("Y[i,l] = A[i,j,k] * B[j,l] * C[k,l]", (("A", "ijk", S3_ALL), ("B", "jl", DENSE), ("C", "kl", DENSE)),
               (None,)),
    # the sum (max) feeds an addition: with a CSC/DCSC A a temporary holds it (two statements, two kernels)
    "axpy": ("y[i] = A[i,j] * x[j] + b[i]", (("A", "ij", S2_ALL), ("x", "j", DENSE), ("b", "i", DENSE)), (None,)),
    "rowmax_plus": ("y[i] = max[j](A[i,j]) + b[i]", (("A", "ij", S2_SPARSE + DENSE), ("b", "i", DENSE)), (None,)),
    "dense_mul": ("C[i,j] = A[i,j] * B[i,j]", (("A", "ij", ("dense", "dense", "csr")), ("B", "ij", DENSE)), (None,)),
}
KERNEL_NAMES = tuple(KERNELS)
#: extents: odd ones, ones not a multiple of any factor, 1, and (last) an empty dimension
SIZE_TABLE = (1, 3, 7, 17, 5, 2, 33, 4, 8, 9, 65, 0)
FACTORS = (2, 4, 3, 8, 1, 16, 5, 64, 0)          # 0 is illegal
WIDTHS = (4, 1, 8, 2, 16, 3, 0)
BLOCKS = (16, 2, 4, 8, 32, 1, 12)                # 12 is not a power of two
#: names a user may give to split/fuse loops: plain, colliding with other loops, with generated identifiers
NEW_NAMES = ("io", "ii", "blk", "row", "i", "j", "k", "sc_lo", "n_i", "A_vals", "x", "pA1", "sc_hi", "t")


def _chance(draw: st.DrawFn, in_20: int) -> bool:
    """True with probability ``in_20 / 20`` (shrinks to False)."""
    return draw(st.integers(0, 19)) >= 20 - in_20


def _loop_names(ops: Sequence[SOp]) -> list[str]:
    """Names the kernel's loops answer to before any split: index variables, blocked and position loops."""
    letters = list(dict.fromkeys(c for o in ops for c in o.dims))
    names = list(letters)
    for o in ops:
        if o.fmt.startswith("bsr"):
            names += [f"{o.dims[0]}_blk", f"{o.dims[1]}_blk", f"{o.dims[0]}_in", f"{o.dims[1]}_in"]
        if o.fmt != "dense":
            names += [f"p{o.name}{lv}" for lv in range(len(o.dims))]
    return names


@st.composite
def _command(draw: st.DrawFn, kname: str, main: list[str], pool: list[str], ops: Sequence[SOp],
             out_name: str) -> tuple[str, tuple]:
    """One scheduling command with random arguments, legal more often than not.

    ``main``: the statement's index variables; ``pool``: every loop name (blocked and position loops,
    and the names earlier split/fuse commands created: it grows). One argument in about five is drawn
    from a wider set (any loop, an unknown loop, an illegal factor, a tensor that does not fit).
    """
    op = draw(st.sampled_from(("split", "parallelize", "reorder", "pos", "vectorize", "split", "fuse", "unroll",
                               "block", "workspace", "parallelize", "skip_zeros", "pos", "vectorize", "parallelize")))
    if op == "workspace" and kname != "spgemm" and not _chance(draw, 4):
        op = "split"                                  # only SpGEMM accumulates rows in a workspace
    if kname == "dense_mul" and _chance(draw, 5):
        op = "fuse"                                   # the dense loops fuse
    sparse = [o.name for o in ops if o.fmt != "dense"] or [ops[0].name]
    dense = [o.name for o in ops if o.fmt == "dense"] or [ops[0].name]
    wild = lambda: _chance(draw, 3)  # noqa: E731 - an argument from the wider set

    def any_var() -> str:
        return draw(st.sampled_from(pool)) if not _chance(draw, 1) else "q"   # q: no such loop

    def outer_var() -> str:
        return any_var() if wild() else main[0]

    def inner_var() -> str:
        if wild():
            return any_var()
        inner = [v for v in pool if v.endswith(("_i", "_in"))] + main[1:]
        return draw(st.sampled_from(inner or main))

    def factor(table: Sequence[int]) -> int:
        return draw(st.sampled_from(table)) if wild() else draw(st.sampled_from(table[:-1]))

    def new_name() -> str | None:
        return draw(st.sampled_from(NEW_NAMES)) if _chance(draw, 3) else None

    if op == "split":
        v = draw(st.sampled_from(main)) if not wild() else any_var()
        f = factor(FACTORS)
        outer, inner = new_name(), new_name()
        pool += [outer or f"{v}_o", inner or f"{v}_i"]
        return op, (v, f, outer, inner)
    if op == "reorder":
        perm = list(draw(st.permutations(main)))
        r = draw(st.integers(0, 19))
        if r == 19 and len(perm) > 1:
            perm = perm[:-1]                       # not every loop
        elif r == 18:
            perm[draw(st.integers(0, len(perm) - 1))] = draw(st.sampled_from(pool))
        return op, tuple(perm)
    if op == "parallelize":
        unit = draw(st.sampled_from(("threads", "threads", "none", "grid")))
        red = draw(st.sampled_from((None, None, "atomic", "private")))
        return op, (outer_var(), unit, red)
    if op == "pos":
        t = draw(st.sampled_from(sparse)) if not wild() else draw(st.sampled_from([o.name for o in ops] + ["Z"]))
        seg = draw(st.sampled_from((None, None, 16, 1, 2) + ((0,) if wild() else ())))
        return op, (outer_var(), t, seg)
    if op == "fuse":
        splits = [(p, q) for p, q in zip(pool, pool[1:]) if p.endswith("_o") and q.endswith("_i")]
        if splits and _chance(draw, 10):
            o, i = draw(st.sampled_from(splits))       # the two loops of an earlier split
        else:
            o, i = (main[0], main[1]) if len(main) > 1 and not wild() else (any_var(), any_var())
        name = new_name()
        pool.append(name or f"{o}_{i}")
        return op, (o, i, name)
    if op == "vectorize":
        return op, (inner_var(), factor(WIDTHS))
    if op == "unroll":
        return op, (inner_var(), factor(FACTORS))
    if op == "block":
        return op, (inner_var(), factor(BLOCKS))
    if op == "workspace":
        v = "j" if kname == "spgemm" and not wild() else main[-1] if not wild() else any_var()
        return op, (v, draw(st.sampled_from(("auto", "dense", "hash"))), draw(st.sampled_from(("select", "branch"))))
    names = dense if not wild() else [o.name for o in ops] + [out_name]
    return "skip_zeros", (draw(st.sampled_from(names)),)


@st.composite
def sched_cases(draw: st.DrawFn, max_commands: int = 4, small: bool = False,
                threads: Sequence[int] = (1, 2)) -> SchedCase:
    """A random :class:`SchedCase` (hypothesis strategy)."""
    kname = draw(st.sampled_from(KERNEL_NAMES))
    text, spec, outs = KERNELS[kname]
    letters = list(dict.fromkeys(c for _, dims, _ in spec for c in dims))
    table = SIZE_TABLE[:7] if small else SIZE_TABLE
    sizes = {}
    for c in letters:
        n = table[draw(st.integers(0, len(table) - 1))]
        if kname.startswith("rowmax") and n == 0:
            n = 3   # max over an empty range is -inf in the oracle (not a scheduling question)
        sizes[c] = n
    while int(np.prod(list(sizes.values()))) > (2_000 if small else 40_000):   # the oracle (and Triton's
        # interpreter) go through the whole index space
        big = max(sizes, key=sizes.__getitem__)
        sizes[big] = 7 if sizes[big] > 7 else 3 if sizes[big] > 3 else 1
    dtype = draw(st.sampled_from(("float64", "float32", "float64", "int64")))
    ops = []
    for name, dims, fmts in spec:
        fmt = draw(st.sampled_from(fmts))
        r = draw(st.integers(0, 19))
        density = (0.4, 0.15, 0.7, 1.0, 0.4)[r % 5]
        pattern = "zeros" if r == 19 else "empty_rows" if r in (3, 8, 13) else "random"
        if fmt == "dense":
            carrier = draw(st.sampled_from(("tensor", "numpy", "numpy")))
        elif fmt in ("csr", "csc", "coo") and len(dims) == 2:
            carrier = draw(st.sampled_from(("tensor", "tensor", "scipy", "coo")))
        else:
            carrier = draw(st.sampled_from(("tensor", "tensor", "coo")))
        ops.append(SOp(name, dims, fmt, density, pattern, carrier))
    main = letters
    pool = _loop_names(ops)
    r = draw(st.integers(0, 4 * max_commands))
    ncmd = 0 if r == 0 else 1 + r % max_commands            # mostly 1..max_commands (shrinks to 0)
    cmds = tuple(draw(_command(kname, main, pool, ops, text.split("[", 1)[0])) for _ in range(ncmd))
    out = draw(st.sampled_from(outs))
    nthreads = draw(st.sampled_from(tuple(threads)))
    return SchedCase(text, tuple(ops), tuple(sizes.items()), cmds, out, nthreads, dtype, draw(st.integers(0, 2**16)))


# ------------------------------------------------------------------------------------ running a case
def _values(op: SOp, shape: tuple[int, ...], rng: np.random.Generator, dtype: str) -> np.ndarray:
    """Dense float64 values of one operand, exact in ``dtype``."""
    if op.pattern == "zeros" or 0 in shape:
        return np.zeros(shape)
    if dtype == "int64":
        a = rng.integers(-4, 5, size=shape).astype(np.float64)
    else:
        a = rng.uniform(-1.0, 1.0, size=shape)
    if op.fmt != "dense" or op.density < 1:
        a = np.where(rng.random(shape) < op.density, a, 0.0)
    if op.pattern == "empty_rows" and len(shape) >= 2:
        a[1::3] = 0.0
    return a.astype(dtype).astype(np.float64)


def _carrier(op: SOp, arr: np.ndarray) -> Any:
    if op.carrier == "numpy":
        return np.ascontiguousarray(arr)
    if op.carrier == "scipy":
        import scipy.sparse as sp

        return {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "coo": sp.coo_matrix}[op.fmt](arr)
    fmt = "coo" if op.carrier == "coo" else op.fmt
    return sc.Tensor.from_numpy(arr, format=fmt, name=op.name)


def build_operands(case: SchedCase) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(dense float64 arrays, carriers handed to sparsec) by operand name."""
    rng = np.random.default_rng(case.seed)
    sizes = dict(case.sizes)
    arrays, carriers = {}, {}
    for op in case.operands:
        dense = _values(op, tuple(sizes[c] for c in op.dims), rng, case.dtype)
        arrays[op.name] = dense
        carriers[op.name] = _carrier(op, dense.astype(case.dtype))
    return arrays, carriers


def _snapshot(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, sc.Tensor):
        return x.values.copy(), [{k: v.copy() for k, v in lv.items()} for lv in x.levels]
    if hasattr(x, "indptr") or hasattr(x, "row"):
        return tuple(np.copy(getattr(x, a)) for a in ("data", "indices", "indptr", "row", "col") if hasattr(x, a))
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b, equal_nan=True))
    if isinstance(a, tuple) and len(a) == 2 and isinstance(a[1], list):
        return bool(np.array_equal(a[0], b[0], equal_nan=True)) and all(
            all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a[1], b[1]))
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def to_dense_result(out: Any, case: SchedCase) -> np.ndarray:
    """The result as a dense float64 array; checks a sparse result's format and buffers."""
    if hasattr(out, "to_host"):
        out = out.to_host()
    if isinstance(out, sc.Tensor):
        assert case.out_format is not None, f"got a sparse result for a dense output: {out}"
        out.validate()
        want = sc.parse_format(case.out_format, out.ndim)
        assert out.format.with_widths(32, 32) == want.with_widths(32, 32), (out.format, case.out_format)
        got = out.to_numpy()
    else:
        assert case.out_format is None, f"expected a sparse {case.out_format} result, got {type(out).__name__}"
        if hasattr(out, "cpu"):
            out = out.cpu().numpy()
        got = np.asarray(out)
        assert got.dtype == np.dtype(case.dtype), (got.dtype, case.dtype)
    return np.asarray(got, dtype=np.float64)


class _Threads:
    """Run with ``n`` threads; with 2, small kernels are split into chunks too (the threshold lowered)."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self) -> None:
        self.saved = (runtime._NUM_THREADS, runtime.MIN_PARALLEL_WORK)
        sc.set_num_threads(self.n)
        if self.n > 1:
            runtime.MIN_PARALLEL_WORK = 1

    def __exit__(self, *exc: Any) -> None:
        runtime._NUM_THREADS, runtime.MIN_PARALLEL_WORK = self.saved


def check_refusal(e: ScheduleError, case: SchedCase) -> None:
    """A refusal must say which command or loop is at fault."""
    msg = str(e)
    assert msg.strip(), "ScheduleError without a message"
    words = {op for op, _ in case.commands} | {a for _, args in case.commands for a in args if isinstance(a, str)}
    assert any(re.search(rf"\b{re.escape(w)}\b", msg) for w in words), \
        f"ScheduleError names no command or loop of the schedule: {msg!r}"


#: hooks for tests of this module (a perturbed result must be caught): called on each dense result
_RESULT_HOOK: list[Callable[[np.ndarray], np.ndarray]] = []


def run_sched_case(case: SchedCase, target: str) -> str:
    """Run ``case`` on ``target``; returns ``"refused"`` (a clear ScheduleError) or ``"ok"`` (matches the oracle).

    The compiled kernel is called on the case's operands (on the CPU through the fast path and through
    ``Kernel.run``), then once more on other operands of the same shapes (``seed + 1``: other patterns, so
    nothing memoized for the first call may leak into the second); every result is checked after all
    calls (a result must not alias what a later call overwrites), and the operands must come back unchanged.
    Anything else raises.
    """
    try:
        sched = case.schedule()
    except ScheduleError as e:          # the builder refused an argument
        assert str(e).strip(), "ScheduleError without a message"
        return "refused"
    formats = {o.name: o.fmt for o in case.operands if o.fmt != "dense"}
    stmt = parse_statement(case.text)
    inputs = [build_operands(case), build_operands(replace(case, seed=case.seed + 1))]
    refs = [evaluate(stmt, arrays) for arrays, _ in inputs]
    before = [{n: _snapshot(x) for n, x in carriers.items()} for _, carriers in inputs]
    results: list[tuple[Any, np.ndarray]] = []
    with _Threads(case.threads if target == "cpu" else 1):
        try:
            k = sc.compile(case.text, formats=formats, dtype=case.dtype, target=target, out_format=case.out_format,
                           schedule=sched)
        except ScheduleError as e:
            check_refusal(e, case)
            return "refused"
        for (_, carriers), ref in zip(inputs, refs):
            results.append((k(**carriers), ref))
            if target == "cpu":
                out = k.run(**carriers)[case.out_name]
                results.append((out if case.out_format is not None else out.to_numpy(), ref))
    for out, ref in results:
        got = to_dense_result(out, case)
        for hook in _RESULT_HOOK:
            got = hook(got)
        check(got, ref, case.dtype)
    for (_, carriers), snap in zip(inputs, before):
        for n, x in carriers.items():
            assert _same(snap[n], _snapshot(x)), f"operand {n!r} was modified by the call"
    return "ok"


# ------------------------------------------------------------------------------------ known bugs
#: open bugs the fuzzer found (their fix is in sparsec), recognised in the random tests; see REGRESSIONS. Empty:
#: every bug found so far is fixed. One that can crash the process is entered as, e.g.,
#: ``KnownBug("name", Exception, "", case=predicate, crashes=True)``: cases ``predicate`` accepts are not run.
KNOWN_BUGS: list[KnownBug] = []

#: ``SPARSEC_SCHEDULE_FUZZ_TRACE=path``: each case's repr is written there before it runs (finds a crash's case)
TRACE = os.environ.get("SPARSEC_SCHEDULE_FUZZ_TRACE", "")


def _run_or_known(case: SchedCase, target: str) -> str:
    if not FUZZ_STRICT and any(b.crashes and b.case is not None and b.case(case) for b in KNOWN_BUGS):
        return "known"
    if TRACE:
        with open(TRACE, "w") as f:
            f.write(f"{target}\n{case!r}\n")
    try:
        return run_sched_case(case, target)
    except Exception as e:
        if not FUZZ_STRICT and any(b.matches(e, case) for b in KNOWN_BUGS):
            return "known"
        raise


# ------------------------------------------------------------------------------------ the fuzz tests
@_seeded
@_settings(FUZZ_EXAMPLES or CI_EXAMPLES)
@given(case=sched_cases())
def test_schedule_fuzz_cpu(case: SchedCase) -> None:
    """Random schedules on the LLVM CPU backend (1 or 2 threads) are refused clearly or agree with numpy."""
    _run_or_known(case, "cpu")


@_seeded
@_settings(max(FUZZ_EXAMPLES // 10, CI_TRITON_EXAMPLES))
@given(case=sched_cases(max_commands=3, small=True, threads=(1,)))
def test_schedule_fuzz_triton_interpreter(case: SchedCase) -> None:
    """The same generator, smaller, on the Triton backend (Triton's interpreter on this machine)."""
    pytest.importorskip("triton")
    _run_or_known(case, "triton")


# ------------------------------------------------------------------------------------ regressions
def _r(kernel: str, fmts: Sequence[str], sizes: str, commands: Sequence[tuple[str, tuple]] = (),
       out_format: str | None = None, threads: int = 1, dtype: str = "float64", seed_: int = 0,
       density: float = 0.4) -> SchedCase:
    """Compact constructor: the kernel of :data:`KERNELS`, one format per operand, ``sizes`` like ``"i3 j4"``."""
    text, spec, _ = KERNELS[kernel]
    ops = tuple(SOp(n, d, f, density) for (n, d, _), f in zip(spec, fmts))
    sz = tuple((s[0], int(s[1:])) for s in sizes.split())
    return SchedCase(text, ops, sz, tuple(commands), out_format, threads, dtype, seed_)


#: (id, case, targets, xfail reason or None) -- minimized failures the fuzzer found, and passing relatives.
#: Every failure here failed at commit cdc6602 (probe/schedfuzz/bugN.py reproduce them there):
#: private reductions (bug1-3.py) and new loop names that clash (bug4-5.py), fixed in 08b0546 / 1e94d43; the
#: Triton tile of a lone reduction axis (bug6.py), fixed in 1e94d43; fuse of the parallel output loop with a
#: reduction loop (bug7.py, race7.py), refused with a ScheduleError since (passes/schedule_loops.py fuse_loops).
_P = ("parallelize", ("i", "threads", "private"))
REGRESSIONS: list[tuple[str, SchedCase, tuple[str, ...], str | None]] = [
    ("spgemm_private_reduction_2_threads",
     _r("spgemm", ("csr", "csr"), "i4 k4 j4", [_P], "csr", threads=2, seed_=1), ("cpu",), None),
    ("sddmm_private_reduction_2_threads",
     _r("sddmm", ("csr", "dense", "dense"), "i5 j4 k3", [_P], "csr", threads=2, seed_=2), ("cpu",), None),
    ("rowmax_csc_private_reduction_2_threads",
     _r("rowmax", ("csc",), "i3 j4", [("parallelize", ("j", "threads", "private"))], threads=2, seed_=3), ("cpu",),
     None),
    ("spmv_csr_private_reduction_2_threads",
     _r("spmv", ("csr", "dense"), "i7 j5", [_P], threads=2, seed_=4), ("cpu",), None),
    ("dense_mul_private_reduction_2_threads",
     _r("dense_mul", ("dense", "dense"), "i9 j3", [_P], threads=2, seed_=5), ("cpu",), None),
    ("spmv_split_outer_named_like_the_row_loop",
     _r("spmv", ("csr", "dense"), "i3 j3", [("split", ("j", 2, "i", None))], seed_=6), ("cpu", "interp"),
     None),
    ("spmv_split_inner_named_like_the_row_loop",
     _r("spmv", ("csr", "dense"), "i3 j3", [("split", ("j", 2, None, "i"))], seed_=7), ("cpu", "interp"),
     None),
    ("spmv_split_named_like_an_extent",
     _r("spmv", ("csr", "dense"), "i5 j3", [("split", ("i", 2, "n_i", None))], seed_=8), ("cpu", "interp"),
     None),
    ("triton_split_named_like_a_buffer",
     _r("spmv", ("csr", "dense"), "i3 j3", [("split", ("i", 2, "A_vals", None))], seed_=9), ("triton",), None),
    ("triton_reduction_outermost_inner_reduction_split",
     _r("mttkrp", ("dense", "dense", "dense"), "i1 j1 k1 l1", [("reorder", ("k", "i", "l", "j")),
                                                               ("split", ("j", 2, None, None))], seed_=10),
     ("triton",), None),
    ("triton_fuse_output_loop_with_reduction_loop",
     _r("mttkrp", ("dense", "dense", "dense"), "i2 j2 k2 l3", [("fuse", ("i", "j", None))], seed_=11), ("triton",),
     None),
    # passing relatives of the failures above (they must keep working)
    ("fuse_atomic_output_loop_with_reduction_loop_2_threads",
     _r("mttkrp", ("dense", "dense", "dense"), "i3 j5 k2 l3", [("parallelize", ("i", "threads", "atomic")),
                                                               ("fuse", ("i", "j", None))], threads=2, seed_=12),
     ("cpu", "interp", "triton"), None),
    ("fuse_output_loop_with_reduction_loop_1_thread",
     _r("mttkrp", ("dense", "dense", "dense"), "i2 j2 k2 l3", [("fuse", ("i", "j", None))], seed_=11),
     ("cpu", "interp"), None),
    ("triton_reduction_outermost_inner_reduction_not_split",
     _r("mttkrp", ("dense", "dense", "dense"), "i2 j3 k2 l3", [("reorder", ("k", "i", "l", "j"))], seed_=10),
     ("triton", "cpu"), None),
    ("cpu_reduction_outermost_inner_reduction_split",
     _r("mttkrp", ("dense", "dense", "dense"), "i2 j3 k2 l3", [("reorder", ("k", "i", "l", "j")),
                                                               ("split", ("j", 2, None, None))], seed_=10),
     ("cpu",), None),
    ("spmv_csc_private_reduction_2_threads",
     _r("spmv", ("csc", "dense"), "i7 j5", [("parallelize", ("j", "threads", "private"))], threads=2, seed_=4),
     ("cpu",), None),
    ("rowmax_csc_atomic_reduction_2_threads",
     _r("rowmax", ("csc",), "i3 j4", [("parallelize", ("j", "threads", "atomic"))], threads=2, seed_=3), ("cpu",),
     None),
    ("rowmax_csc_private_reduction_1_thread",
     _r("rowmax", ("csc",), "i3 j4", [("parallelize", ("j", "threads", "private"))], seed_=3), ("cpu",), None),
    ("spgemm_parallel_2_threads",
     _r("spgemm", ("csr", "csr"), "i4 k4 j4", [("parallelize", ("i", "threads", None))], "csr", threads=2, seed_=1),
     ("cpu",), None),
    ("spmv_split_named_like_a_buffer_cpu",
     _r("spmv", ("csr", "dense"), "i3 j3", [("split", ("i", 2, "A_vals", None))], seed_=9), ("cpu", "interp"), None),
    ("spmv_split_fresh_names",
     _r("spmv", ("csr", "dense"), "i3 j3", [("split", ("j", 2, "blk", "row"))], seed_=6), ("cpu", "interp", "triton"),
     None),
]


@pytest.mark.parametrize("case,targets,reason", [pytest.param(
    c, t, r, id=i, marks=[pytest.mark.xfail(strict=True, reason=r)] if r else []) for i, c, t, r in REGRESSIONS])
def test_schedule_fuzz_regression(case: SchedCase, targets: tuple[str, ...], reason: str | None) -> None:
    """Each minimized failure, kept (strict xfail while its fix is pending)."""
    for target in targets:
        run_sched_case(case, target)


def test_split_named_like_a_position_loop_does_not_crash() -> None:
    """A split loop named like the position loop of A's columns (``pA1``) crashed the process at cdc6602
    (the loops shadowed each other); run in a subprocess so that a crash fails this test only."""
    import subprocess
    import sys

    code = ("import numpy as np, sparsec as sc\n"
            "A = sc.Tensor.from_numpy(np.eye(3), 'csr')\n"
            "try:\n"
            "    k = sc.compile('y[i] = A[i,j] * x[j]', formats={'A': 'csr'},\n"
            "                   schedule=sc.Schedule().split('i', 2, 'pA1'))\n"
            "except sc.ScheduleError as e:\n"
            "    print('refused:', e)\n"
            "else:\n"
            "    y = k(A=A, x=np.arange(3.0))\n"
            "    assert np.array_equal(y, np.arange(3.0)), y\n"
            "    print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "pA1" in r.stdout or r.stdout.strip() == "ok", r.stdout


def test_generator_covers_the_space() -> None:
    """The strategy reaches every kernel, command, thread count and the odd corners (guards the fuzzer)."""
    seen: set[str] = set()

    @settings(max_examples=300, derandomize=True, database=None, suppress_health_check=list(HealthCheck),
              phases=(Phase.generate,))
    @given(case=sched_cases())
    def collect(case: SchedCase) -> None:
        seen.add(f"text:{case.text}")
        seen.add(f"threads:{case.threads}")
        seen.add(f"dtype:{case.dtype}")
        seen.add(f"ncmd:{len(case.commands)}")
        for o in case.operands:
            seen.add(f"fmt:{o.fmt}")
            seen.add(f"pattern:{o.pattern}")
            seen.add(f"carrier:{o.carrier}")
        for op, _ in case.commands:
            seen.add(f"op:{op}")
        if case.out_format:
            seen.add("sparse_out")
        if any(n == 0 for _, n in case.sizes):
            seen.add("empty_dim")

    collect()
    ops = ("split", "reorder", "parallelize", "pos", "fuse", "vectorize", "unroll", "block", "workspace",
           "skip_zeros")
    want = {f"text:{t}" for t, _, _ in KERNELS.values()} | {f"op:{o}" for o in ops} | {
        f"fmt:{f}" for f in ("csr", "csc", "coo", "dcsr", "dcsc", "dense", "bsr(2,2)", "csf")} | {
        f"ncmd:{n}" for n in range(5)} | {
        "threads:1", "threads:2", "dtype:float32", "dtype:int64", "pattern:zeros", "pattern:empty_rows",
        "carrier:scipy", "carrier:coo", "carrier:numpy", "sparse_out", "empty_dim"}
    assert want <= seen, sorted(want - seen)


def test_the_oracle_comparison_can_fail() -> None:
    """A result perturbed by one ulp-scale step in one entry is caught (the property is not vacuous)."""
    case = _r("spmv", ("csr", "dense"), "i7 j5", [("split", ("i", 4, None, None))])
    assert run_sched_case(case, "cpu") == "ok"

    def bump(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a.flat[a.size // 2] += 1e-6
        return a

    _RESULT_HOOK.append(bump)
    try:
        with pytest.raises(AssertionError, match="max abs error"):
            run_sched_case(case, "cpu")
    finally:
        _RESULT_HOOK.clear()
    with pytest.raises(AssertionError, match="names no command"):
        check_refusal(ScheduleError("something is wrong"), case)


# ------------------------------------------------------------------------------------ exploration
def failure_signature(e: BaseException) -> str:
    """A short key grouping failures by cause: exception type and where sparsec raised it (or the message)."""
    frames = sparsec_frames(e)
    if frames:
        return f"{type(e).__name__}|{os.path.basename(frames[-1].filename)}:{frames[-1].name}"
    msg = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", str(e).splitlines()[0] if str(e) else "")
    return f"{type(e).__name__}|tests|{msg[:50]}"


def repro_script(case: SchedCase, target: str = "cpu") -> str:
    """A standalone Python script that reproduces ``case`` (for bug reports)."""
    return "\n".join([
        "import sys; sys.path.insert(0, 'tests')",
        "from test_schedule_fuzz import SchedCase, SOp, run_sched_case",
        f"case = {case!r}",
        "print(case.schedule_code())",
        f"print(run_sched_case(case, {target!r}))",
    ])


def explore(examples: int, seed_: int, target: str = "cpu", minimize: bool = True) -> dict[str, tuple[int, SchedCase]]:
    """Draw ``examples`` cases without stopping at failures; group failures by signature, minimize each.

    Run as ``python tests/test_schedule_fuzz.py EXAMPLES SEED [cpu|triton] [minimize: 1|0]``.
    """
    import traceback

    refused = {"n": 0}
    strat = sched_cases() if target == "cpu" else sched_cases(max_commands=3, small=True, threads=(1,))

    def probe(case: SchedCase) -> list[str]:
        try:
            if _run_or_known(case, target) == "refused":
                refused["n"] += 1
        except Exception as e:  # noqa: BLE001 - everything is a finding here
            return [failure_signature(e)]
        return []

    def traced(case: SchedCase) -> None:
        try:
            run_sched_case(case, target)
        except Exception:  # noqa: BLE001
            traceback.print_exc(limit=-4)

    return explore_failures(strat, probe, examples, seed_, minimize, show=lambda c: f"{c}\n   {c.schedule_code()}\n"
                            f"{repro_script(c, target)}", on_new=traced, summary=lambda: f" ({refused['n']} refused)")


if __name__ == "__main__":
    import sys
    import warnings

    warnings.simplefilter("ignore")
    explore(int(sys.argv[1]) if len(sys.argv) > 1 else 300, int(sys.argv[2]) if len(sys.argv) > 2 else 0,
            sys.argv[3] if len(sys.argv) > 3 else "cpu", minimize=(sys.argv[4] != "0") if len(sys.argv) > 4 else True)
