"""SpGEMM's hash-table workspace (``Schedule.workspace(var, "hash"|"auto"|"dense")``).

The numeric kernel accumulates a row either in the dense row (n values and marks) or in a
hash table sized from the row's output count; ``auto`` picks per row (hash when the table's
slots * HASH_RATIO <= n). Oracles: numpy float64 (dense products; max/min include the implicit
zeros of the reduced range).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sps

import sparsec as sc
from sparsec import Tensor, api, runtime
from sparsec.passes import sparsify
from sparsec.passes.sparsify import HASH_RATIO

SEED = 20261122
FORMATS = {"A": "csr", "B": "csr", "C": "csr"}


def _operands(rng, row_nnz: list[int], K: int, n: int, per_b_row: int, integer: bool):
    """A (len(row_nnz) x K, row r with row_nnz[r] entries) and B (K x n, per_b_row entries a row), CSR."""
    def vals(size):
        return rng.integers(-9, 10, size) if integer else rng.standard_normal(size)
    rows, cols = [], []
    for r, c in enumerate(row_nnz):
        rows += [r] * c
        cols += list(rng.choice(K, c, replace=False))
    A = sps.csr_matrix((vals(len(rows)), (rows, cols)), shape=(len(row_nnz), K))
    bcols = np.concatenate([rng.choice(n, per_b_row, replace=False) for _ in range(K)]) if K else np.zeros(0, int)
    B = sps.csr_matrix((vals(K * per_b_row), bcols, np.arange(0, K * per_b_row + 1, per_b_row)), shape=(K, n))
    return A, B


def _reference(A, B, op: str) -> np.ndarray:
    """Dense float64 result on ``B``'s nonzero columns (elsewhere every term is 0, and so is the result)."""
    Ad, Bd = A.toarray().astype(np.float64), B.toarray().astype(np.float64)
    if op == "sum":
        return Ad @ Bd
    out = np.empty((Ad.shape[0], Bd.shape[1]))
    for i in range(Ad.shape[0]):   # a row at a time: K x n products
        prod = Ad[i][:, None] * Bd
        out[i] = prod.max(axis=0) if op == "max" else prod.min(axis=0)
    return out


def _stmt(op: str) -> str:
    return "C[i,j] = A[i,k] * B[k,j]" if op == "sum" else f"C[i,j] = {op}[k](A[i,k] * B[k,j])"


def _check(target, kind, op, A, B, dtype="float64"):
    k = api.compile(_stmt(op), formats=FORMATS, target=target, dtype=dtype,
                    schedule=sc.Schedule().workspace("j", kind))
    loops = k.dump("loops")
    assert ("C_ws_hkey" in loops) == (kind != "dense"), loops
    assert ("C_ws_mark" in loops) and (("C_ws_vals" in loops) == (kind != "hash"))
    out = k(A=Tensor.from_scipy(A, format="csr"), B=Tensor.from_scipy(B, format="csr"))
    out.validate()   # sorted, unique columns per row
    got = out.to_scipy().tocsr()
    cols = np.unique(B.indices)
    assert np.isin(got.indices, cols).all()
    got = got[:, cols].toarray().astype(np.float64)
    ref = _reference(A, B[:, cols], op)
    if dtype.startswith("int"):
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    if kind == "auto":   # the rule as compiled (the tests lower its dense-row size floor to take the hash path)
        assert f"if n_j >= {-(-sparsify.HASH_MIN_BYTES // (np.dtype(dtype).itemsize + 1))} {{" in loops, loops
        assert f"tsz * {sparsify.HASH_RATIO} <= n_j" in loops, loops
    return out


# rows: empty, 1 entry, short (insertion sort), > 48 output columns (radix sort), empty again
ROW_NNZ = [0, 1, 3, 12, 40, 0]


@pytest.mark.parametrize("target", ["cpu", "interp", "triton"])
@pytest.mark.parametrize("kind", ["hash", "auto"])
@pytest.mark.parametrize("op", ["sum", "max", "min"])
def test_hash_workspace_wide(target, kind, op, monkeypatch):
    # n = 200000 with a few entries per row: every row's table is far below n, so auto takes the hash path
    # (its dense-row size floor lowered: by default it starts at 8 MiB of dense row)
    monkeypatch.setattr(sparsify, "HASH_MIN_BYTES", 0)
    if target == "triton":
        pytest.importorskip("triton")
        pytest.importorskip("torch")
    rng = np.random.default_rng(SEED + {"sum": 0, "max": 1, "min": 2}[op])
    A, B = _operands(rng, ROW_NNZ, 48, 200_000, 3, integer=False)
    out = _check(target, kind, op, A, B)
    counts = np.diff(out.to_scipy().indptr)
    assert counts.max() > 48 and counts.min() == 0   # radix-sorted rows and empty rows were exercised
    assert 2 * runtime.hash_table_size(int(counts.max())) * HASH_RATIO <= 200_000   # auto: hash for every row


@pytest.mark.parametrize("target", ["cpu", "interp"])
@pytest.mark.parametrize("kind", ["hash", "auto", "dense"])
@pytest.mark.parametrize("op", ["sum", "max", "min"])
def test_hash_workspace_narrow_and_int(target, kind, op):
    # n = 300: auto keeps the rows dense (by default, and with the size floor lowered: table * HASH_RATIO > n
    # but for the 1-entry rows, hashed then);
    # the forced hash table has as many slots as n for the longest rows (heavy probing)
    rng = np.random.default_rng(SEED + 10 + {"sum": 0, "max": 1, "min": 2}[op])
    A, B = _operands(rng, [0, 1, 5, 30, 60, 0, 2], 64, 300, 4, integer=True)
    _check(target, kind, op, A, B, dtype="int64")
    _check(target, kind, op, A.astype(np.float32), B.astype(np.float32), dtype="float32")
    if kind == "auto":
        sparsify.HASH_MIN_BYTES, floor = 0, sparsify.HASH_MIN_BYTES
        try:
            _check(target, kind, op, A, B, dtype="int64")
        finally:
            sparsify.HASH_MIN_BYTES = floor


@pytest.mark.parametrize("target", ["cpu", "interp", "triton"])
@pytest.mark.parametrize("kind", ["hash", "auto"])
def test_hash_workspace_empty_a(target, kind):
    if target == "triton":
        pytest.importorskip("triton")
        pytest.importorskip("torch")
    rng = np.random.default_rng(SEED + 20)
    A, B = _operands(rng, [0, 0, 0], 16, 200_000, 2, integer=False)
    for op in ("sum", "max"):
        out = _check(target, kind, op, A, B)
        assert out.to_scipy().nnz == 0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["hash", "auto"])
def test_hash_workspace_threads(threads, kind, monkeypatch):
    # enough rows for two chunks (each gets its own table); the threshold lowered so they run in parallel
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 0)
    monkeypatch.setattr(sparsify, "HASH_MIN_BYTES", 0)
    rng = np.random.default_rng(SEED + 30 + threads)
    row_nnz = list(rng.integers(0, 30, 400))
    A, B = _operands(rng, row_nnz, 200, 200_000, 4, integer=False)
    sc.set_num_threads(threads)
    try:
        for op in ("sum", "min"):
            _check("cpu", kind, op, A, B)
    finally:
        sc.set_num_threads(None)


def test_auto_rule_in_loop_ir():
    # the default rule: hash only for a dense row of >= HASH_MIN_BYTES (n >= 1677722 float32 columns)
    k = api.compile(_stmt("sum"), formats=FORMATS, dtype="float32")
    loops = k.dump("loops")
    assert "C_ws_hkey" in loops and "C_ws_mark" in loops
    assert f"if n_j >= {-(-sparsify.HASH_MIN_BYTES // 5)} {{" in loops, loops
    assert f"tsz * {HASH_RATIO} <= n_j" in loops, loops


def test_workspace_schedule_errors():
    with pytest.raises(sc.ScheduleError, match="workspace kind"):
        sc.Schedule().workspace("j", "tree")
    with pytest.raises(sc.ScheduleError, match="does not accumulate"):
        api.compile("C[i,j] = A[i,j] + B[i,j]", formats=FORMATS, schedule=sc.Schedule().workspace("j", "hash"))


UNORDERED_CSR = "#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : compressed(nonordered)) }>"


@pytest.mark.parametrize("target", ["cpu", "interp", "triton"])
@pytest.mark.parametrize("kind", ["dense", "hash", "auto"])
@pytest.mark.parametrize("op", ["sum", "max"])
def test_unordered_output_rows_in_touch_order(target, kind, op, monkeypatch):
    # C declared (dense, compressed(nonordered)): each row leaves the workspace in the order its columns were
    # first touched (no sort: what scipy and MKL return); same entries and values as the sorted kernel
    monkeypatch.setattr(sparsify, "HASH_MIN_BYTES", 0)
    if target == "triton":
        pytest.importorskip("triton")
        pytest.importorskip("torch")
    rng = np.random.default_rng(SEED + 40 + (op == "max"))
    A, B = _operands(rng, ROW_NNZ + [7, 0, 2], 48, 5000, 9, integer=False)
    operands = {"A": Tensor.from_scipy(A, format="csr"), "B": Tensor.from_scipy(B, format="csr")}
    sched = sc.Schedule().workspace("j", kind)
    k = api.compile(_stmt(op), formats={**FORMATS, "C": UNORDERED_CSR}, target=target, dtype="float64",
                    schedule=sched)
    loops = k.dump("loops")
    assert "touched coordinates in touch order" in loops and "sort" not in loops, loops
    assert "C_ws_tmp" not in loops and "C_ws_hist" not in loops
    out = k(**operands)
    assert not out.format.levels[1].ordered
    out.validate()                      # unique columns per row (order not required)
    ordered = api.compile(_stmt(op), formats=FORMATS, target=target, dtype="float64", schedule=sched)(**operands)
    def host(x):   # numpy, or a torch tensor on the device (target triton)
        return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)
    pos, crd = (host(out.levels[1][p]) for p in ("pos", "crd"))
    opos, ocrd = (host(ordered.levels[1][p]) for p in ("pos", "crd"))
    np.testing.assert_array_equal(pos, opos)
    unsorted = 0
    for r in range(A.shape[0]):
        row = crd[pos[r]:pos[r + 1]]
        np.testing.assert_array_equal(np.sort(row), ocrd[opos[r]:opos[r + 1]])
        unsorted += bool(np.any(np.diff(row) < 0))
    assert unsorted >= 3                # the long rows really were emitted unsorted
    got = out.to_scipy()
    assert got.has_sorted_indices == 0  # shares the unsorted index arrays
    cols = np.unique(B.indices)
    np.testing.assert_allclose(got[:, cols].toarray(), _reference(A, B[:, cols], op), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target", ["cpu", "interp", "triton"])
@pytest.mark.parametrize("out", ["csr", UNORDERED_CSR])
@pytest.mark.parametrize("op", ["sum", "max"])
def test_branch_free_touch_gives_the_branch_result(target, out, op):
    # Schedule.workspace(j, "dense", touch="select"): each term writes its column to the row's list and advances
    # the list by 1 - mark (no branch). Same entries, the same touch order and values as touch="branch", in the
    # symbolic and the numeric kernel; the last row touches every column, so it writes the list's extra slot.
    # Under max/min the numeric kernel keeps the branch (a new column also resets its value there).
    if target == "triton":
        pytest.importorskip("triton")
        pytest.importorskip("torch")
    rng = np.random.default_rng(SEED + 50)
    A, B = _operands(rng, ROW_NNZ + [48], 48, 40, 9, integer=True)
    operands = {"A": Tensor.from_scipy(A, format="csr"), "B": Tensor.from_scipy(B, format="csr")}
    got = {}
    for touch in ("branch", "select"):
        k = api.compile(_stmt(op), formats={**FORMATS, "C": out}, target=target, dtype="int64",
                        schedule=sc.Schedule().workspace("j", "dense", touch))
        symbolic, numeric = k.dump("loops").split("// kernel for: output C")
        assert ("1 - C_ws_mark[j]" in symbolic) == (touch == "select"), symbolic
        assert ("1 - C_ws_mark[j]" in numeric) == (touch == "select" and op == "sum"), numeric
        got[touch] = k(**operands).to_scipy()
    ref = got["branch"]
    assert ref.indptr[-1] - ref.indptr[-2] == 40       # the full row
    for part in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(got["select"], part), getattr(ref, part), err_msg=part)
    cols = np.unique(B.indices)
    np.testing.assert_array_equal(ref[:, cols].toarray(), _reference(A, B[:, cols], op))


def test_workspace_touch_is_checked_and_autotune_tries_it():
    import importlib

    with pytest.raises(sc.ScheduleError, match="workspace touch"):
        sc.Schedule().workspace("j", "dense", "maybe")
    tuner = importlib.import_module("sparsec.autotune")
    spgemm = api.compile("C[i,j] = A[i,k] * B[k,j]", formats=FORMATS)
    spmv = api.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"})
    assert "workspace(j, auto, touch=branch)" in [c.label for c in tuner.candidates(spgemm)]
    assert "1 - C_ws_mark[j]" in spgemm.dump("loops")     # the default marks without a branch
    assert not any("touch" in c.label for c in tuner.candidates(spmv))
