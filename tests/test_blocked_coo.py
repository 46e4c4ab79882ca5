"""Blocked COO (cache-blocked tiles of entries) and other formats with a non-unique level below the top.

``(i floordiv R : dense, j floordiv C : compressed, i mod R : compressed(nonunique), j mod C : singleton)``
keeps a SpMV's gathers of ``x`` inside a window of C columns. Below the top loop, a non-unique level whose
entries only add into a dense output is walked one entry at a time (no search for each run of equal
coordinates: ``Sparsifier._duplicates_may_repeat``); everywhere else the runs are kept. Each case is checked
against the dense float64 oracle on every target, and on 2 CPU threads with the parallel threshold at 1, and
the dumps are checked for which of the two loops was generated, so that neither path passes untested.
"""

from __future__ import annotations

import numpy as np
import pytest

import sparsec as sc
from sparsec import runtime

ONE_BY_ONE = "entries one by one"


def bcoo(r: int, c: int) -> str:
    return (f"(i, j) -> (i floordiv {r} : dense, j floordiv {c} : compressed, i mod {r} : compressed(nonunique), "
            f"j mod {c} : singleton)")


#: a 3-D tensor whose middle level repeats coordinates: (i dense, j non-unique, k singleton)
COO_BELOW_DENSE = "(i, j, k) -> (i : dense, j : compressed(nonunique), k : singleton)"


def sparse_array(shape: tuple[int, ...], density: float, seed: int) -> np.ndarray:
    """Random values with empty rows (every third) and an empty last column, where the shape has them."""
    rng = np.random.default_rng(seed)
    a = np.where(rng.random(shape) < density, rng.standard_normal(shape), 0.0)
    if a.ndim >= 1 and shape[0] > 2:
        a[::3] = 0.0
    if a.ndim >= 2 and shape[1] > 1:
        a[:, -1] = 0.0
    return a


# (expression, format of A, shape of A, other operands' shapes by index letters, one entry at a time?)
CASES = [
    ("y[i] = A[i,j]*x[j]", bcoo(4, 8), (37, 53), {"x": "j"}, True),
    ("y[i] = A[i,j]*x[j]", bcoo(3, 5), (1, 1), {"x": "j"}, True),
    ("y[i] = A[i,j]*x[j]", bcoo(16, 16), (40, 7), {"x": "j"}, True),
    ("y[i] = A[i,j]*x[j]", bcoo(4, 8), (0, 9), {"x": "j"}, True),
    ("y[i] = A[i,j]*x[j]", bcoo(4, 8), (9, 0), {"x": "j"}, True),
    ("Y[i,k] = A[i,j]*X[j,k]", bcoo(4, 8), (29, 31), {"X": "jk"}, True),
    ("y[j] = A[i,j]*x[i]", bcoo(4, 8), (29, 31), {"x": "i"}, True),
    ("y[i] = 2*A[i,j]*x[j] + b[i]", bcoo(5, 6), (23, 19), {"x": "j", "b": "i"}, True),
    # a max keeps the runs: its implicit zeros are counted per coordinate
    ("y[i] = max[j](A[i,j]*x[j])", bcoo(4, 8), (21, 26), {"x": "j"}, False),
    # the accumulator wraps the non-unique loop: its entries may add one at a time
    ("y[i] = A[i,j,k]*x[j]*z[k]", COO_BELOW_DENSE, (7, 9, 11), {"x": "j", "z": "k"}, True),
    # the accumulator sits below it and is stored with '=' once per j: the runs are needed
    ("Y[i,j] = A[i,j,k]*z[k]", COO_BELOW_DENSE, (7, 9, 11), {"z": "k"}, False),
]
SIZES = {"i": 0, "j": 1, "k": 2}


def operands(expr: str, shape: tuple[int, ...], others: dict[str, str], density: float, seed: int) -> dict:
    ops = {"A": sparse_array(shape, density, seed)}
    rng = np.random.default_rng(seed + 1)
    extent = dict(zip("ijk", shape))
    if "X[j,k]" in expr:   # SpMM: X's k is its own extent
        extent["k"] = 6
    for name, letters in others.items():
        ops[name] = rng.standard_normal(tuple(extent[c] for c in letters))
    return ops


def oracle(expr: str, ops: dict) -> np.ndarray:
    A = ops["A"]
    if expr.startswith("y[i] = max"):
        prod = A * ops["x"][None, :]
        return prod.max(axis=1) if A.shape[1] else np.full(A.shape[0], -np.inf)
    lhs, rhs = expr.replace(" ", "").split("=")
    if "+b[i]" in rhs:
        return 2 * A @ ops["x"] + ops["b"]
    terms = rhs.split("*")
    subs = ",".join(t[t.index("[") + 1:-1].replace(",", "") for t in terms)
    out = lhs[lhs.index("[") + 1:-1].replace(",", "")
    return np.einsum(f"{subs}->{out}", *[ops[t[:t.index("[")]] for t in terms])


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 1)
    saved = runtime._NUM_THREADS
    sc.set_num_threads(2)
    yield
    sc.set_num_threads(saved)


# the Triton interpreter is slow: two densities there
RUNS = [(t, d) for t in ("cpu", "cpu-2-threads", "interp", "triton") for d in (0.0, 0.15, 0.6)
        if not (t == "triton" and d == 0.6)]


@pytest.mark.parametrize("expr,fmt,shape,others,one_by_one", CASES,
                         ids=[f"{c[0].split('=')[0].strip()}-{c[2]}-{k}" for k, c in enumerate(CASES)])
@pytest.mark.parametrize("target,density", RUNS)
def test_against_the_oracle(target, density, expr, fmt, shape, others, one_by_one, request):
    if target == "cpu-2-threads":
        request.getfixturevalue("two_threads")
    ops = operands(expr, shape, others, density, seed=len(expr) + shape[0])
    want = oracle(expr, ops)
    k = sc.compile(expr, formats={"A": fmt}, target=target.split("-")[0])
    got = k(**{n: (sc.Tensor.from_numpy(v, fmt) if n == "A" else v) for n, v in ops.items()})
    got = np.asarray(got.cpu() if hasattr(got, "cpu") else got, dtype=np.float64)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("expr,fmt,shape,others,one_by_one", CASES, ids=[str(k) for k in range(len(CASES))])
def test_the_loop_the_dump_shows(expr, fmt, shape, others, one_by_one):
    """Which loop each case gets: one entry at a time, or runs of equal coordinates (a while loop)."""
    loops = sc.compile(expr, formats={"A": fmt}).dump("loops")
    assert (ONE_BY_ONE in loops) == one_by_one, loops
    assert ("while" in loops) == (not one_by_one), loops


def test_threads_count_the_entries_under_the_tiles():
    """The parallel loop walks row blocks of tiles; the host weighs a block by its entries (pos1 -> pos2),
    not its tiles, so a SpMV of many entries in few tiles still takes the threads."""
    k = sc.compile("y[i] = A[i,j]*x[j]", formats={"A": bcoo(64, 64)})
    par = k.lowered.statements[-1].parallel
    assert (par.balance, par.balance_chain) == ("A_pos1", ("A_pos2",))
    A = sc.Tensor.from_numpy(sparse_array((256, 256), 0.5, 3), bcoo(64, 64))
    pos1, pos2 = A.levels[1]["pos"], A.levels[2]["pos"]
    assert runtime.balanced_entries(pos1, [pos2], 0, 4) == len(A.values) > 0
    assert runtime.balanced_entries(pos1, [pos2], 1, 2) == int(pos2[pos1[2]] - pos2[pos1[1]])
