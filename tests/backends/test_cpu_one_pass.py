"""Workspace outputs (SpGEMM) assembled in one pass on the CPU (:class:`sparsec.passes.sparsify.OnePass`).

A bound kernel counts each row's terms (at most its width); the numeric kernel writes each chunk of
rows from the bound offset of its first row and stores the rows' exact counts; the host moves the
chunks down. The two-pass path (exact counts first) runs where the bound's entries would exceed
``ONE_PASS_MAX_BYTES``. Oracle: numpy float64; the two paths must also agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sps

import sparsec as sc
from sparsec import Tensor, runtime
from sparsec.ir.loop_printer import kernel_text

SEED = 20261123
SPGEMM = "C[i,j] = A[i,k] * B[k,j]"


def _csr(rng, m: int, n: int, density: float, empty_rows: float = 0.3) -> sps.csr_matrix:
    """A random m x n CSR matrix (float64) with a share of its rows empty."""
    M = sps.random(m, n, density=density, format="csr", random_state=rng, dtype=np.float64)
    if m:
        keep = (rng.uniform(size=m) >= empty_rows).astype(np.float64)
        M = sps.diags(keep) @ M
    M = M.tocsr()
    M.eliminate_zeros()
    return M


def _check(C: Tensor, ref: np.ndarray, sorted_rows: bool) -> None:
    assert C.shape == ref.shape
    pos, crd = C.levels[1]["pos"], C.levels[1]["crd"]
    assert pos[0] == 0 and pos[-1] == crd.shape[0] == C.values.shape[0] and np.all(np.diff(pos) >= 0)
    assert np.all((crd >= 0) & (crd < ref.shape[1]))   # before scipy reads them
    for r in range(ref.shape[0]):   # each row's columns unique, sorted where the format says so
        row = crd[pos[r]:pos[r + 1]]
        assert np.unique(row).shape[0] == row.shape[0]
        if sorted_rows:
            assert np.all(np.diff(row) > 0)
    np.testing.assert_allclose(C.to_scipy().toarray(), ref, rtol=1e-12, atol=1e-12)


def _buffers(C: Tensor) -> tuple[np.ndarray, ...]:
    return C.levels[1]["pos"], C.levels[1]["crd"], C.values


def _one_and_two_threads_then_two_passes(monkeypatch, kern, ops: dict, ref: np.ndarray, sorted_rows: bool) -> None:
    """``kern(**ops)`` in one pass on 1 and 2 threads, checked against ``ref``, then forced through the two
    passes: all three bit for bit equal."""
    try:
        results = {}
        for threads in (1, 2):
            sc.set_num_threads(threads)
            results[threads] = kern(**ops)
            _check(results[threads], ref, sorted_rows)
        monkeypatch.setattr(runtime, "ONE_PASS_MAX_BYTES", -1)   # every output: the two passes
        two = kern(**ops)
    finally:
        sc.set_num_threads(None)
    for got in (results[2], two):
        for a, b in zip(_buffers(results[1]), _buffers(got)):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("out", ["csr", "csr_unsorted"])
@pytest.mark.parametrize("m,k,n,da,db", [(0, 5, 7, 0.3, 0.3), (9, 0, 4, 0.3, 0.3), (13, 11, 0, 0.3, 0.3),
                                         (1, 1, 1, 1.0, 1.0), (37, 23, 41, 0.15, 0.2), (300, 64, 129, 0.05, 0.3),
                                         (2000, 300, 700, 0.01, 0.02)])
def test_one_pass_matches_numpy_and_two_passes(monkeypatch, out, m, k, n, da, db):
    """Empty operands, empty rows, odd sizes, rows wider than their bound's cap; 1 and 2 threads, chunks split."""
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 64)
    rng = np.random.default_rng(SEED + m + 7 * n)
    A, B = _csr(rng, m, k, da), _csr(rng, k, n, db)
    ref = A.toarray() @ B.toarray()
    kern = sc.compile(SPGEMM, formats={"A": "csr", "B": "csr", "C": out}, target="cpu")
    assert kern.lowered.statements[0].one_pass is not None
    _one_and_two_threads_then_two_passes(monkeypatch, kern, {"A": A, "B": B}, ref, out == "csr")


def test_one_pass_runs_instead_of_the_symbolic_kernel(monkeypatch):
    """By default the bound and one-pass kernels run, and the two-pass ones are not even compiled; a
    bound over ONE_PASS_MAX_BYTES falls back to them."""
    rng = np.random.default_rng(SEED)
    A = _csr(rng, 50, 50, 0.1)
    kern = sc.compile(SPGEMM, formats={"A": "csr", "B": "csr", "C": "csr"}, target="cpu")
    ran: list[str] = []
    launch = runtime.StatementRunner._launch

    def spy(self, fn, kernel, buffers, scalars):
        ran.append(kernel.name)
        return launch(self, fn, kernel, buffers, scalars)
    monkeypatch.setattr(runtime.StatementRunner, "_launch", spy)
    C1 = kern(A=A, B=A)
    assert ran == ["kernel_bound", "kernel_one_pass"] and set(kern._compiled) == {"kernel_bound", "kernel_one_pass"}
    ran.clear()
    monkeypatch.setattr(runtime, "ONE_PASS_MAX_BYTES", -1)
    C2 = kern(A=A, B=A)
    assert ran == ["kernel_bound", "kernel_symbolic", "kernel"]
    np.testing.assert_array_equal(C1.to_scipy().toarray(), C2.to_scipy().toarray())
    assert "kernel_bound" in kern.dump("loops") and "kernel_one_pass" in kern.dump("loops")


def test_bound_counts_terms_capped_at_the_width(monkeypatch):
    """The bound is each row's terms, at most the output's width, so never below its exact count."""
    rng = np.random.default_rng(SEED + 1)
    A, B = _csr(rng, 60, 30, 0.4), _csr(rng, 30, 9, 0.6, empty_rows=0.0)   # many terms per entry
    kern = sc.compile(SPGEMM, formats={"A": "csr", "B": "csr", "C": "csr"}, target="cpu")
    seen = {}
    launch = runtime.StatementRunner._launch

    def spy(self, fn, kernel, buffers, scalars):
        out = launch(self, fn, kernel, buffers, scalars)
        seen[kernel.name] = buffers["C_cnt"].copy()
        return out
    monkeypatch.setattr(runtime.StatementRunner, "_launch", spy)
    C = kern(A=A, B=B)
    terms = np.array([np.diff(B.indptr)[A.indices[A.indptr[r]:A.indptr[r + 1]]].sum() for r in range(60)])
    np.testing.assert_array_equal(seen["kernel_bound"][:-1], np.minimum(terms, 9))
    np.testing.assert_array_equal(seen["kernel_one_pass"][:-1], np.diff(C.levels[1]["pos"]))
    assert (terms > 9).any()   # the cap was exercised


@pytest.mark.parametrize("kind", ["dense", "hash", "auto"])
@pytest.mark.parametrize("op", ["sum", "max"])
def test_one_pass_workspace_kinds_and_reductions(monkeypatch, kind, op):
    """The hash-table rows (sized from the bound) and max (the terms each entry saw) in one pass."""
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 64)
    rng = np.random.default_rng(SEED + 2)
    A, B = _csr(rng, 120, 50, 0.08), _csr(rng, 50, 90, 0.1)
    text = SPGEMM if op == "sum" else "C[i,j] = max[k](A[i,k] * B[k,j])"
    kern = sc.compile(text, formats={"A": "csr", "B": "csr", "C": "csr"}, target="cpu",
                      schedule=sc.Schedule().workspace("j", kind))
    assert kern.lowered.statements[0].one_pass is not None
    Ad, Bd = A.toarray(), B.toarray()
    if op == "sum":
        ref = Ad @ Bd
    else:   # over every k, implicit zeros included, where some term is stored
        stored = ((Ad != 0).astype(int) @ (Bd != 0).astype(int)) != 0
        ref = np.where(stored, (Ad[:, :, None] * Bd[None, :, :]).max(axis=1), 0.0)
    try:
        for threads in (1, 2):
            sc.set_num_threads(threads)
            C = kern(A=A, B=B)
            np.testing.assert_allclose(C.to_scipy().toarray(), np.asarray(ref), rtol=1e-12, atol=1e-12)
    finally:
        sc.set_num_threads(None)


def test_a_schedule_that_rewrites_the_row_loop_keeps_two_passes():
    """Splitting the parallel row loop moves its chunks off row boundaries: no one-pass kernels then.
    A schedule of an inner loop keeps them, rewritten the same way."""
    rng = np.random.default_rng(SEED + 3)
    A = _csr(rng, 70, 70, 0.05)
    ref = A.toarray() @ A.toarray()
    split = sc.compile(SPGEMM, formats={"A": "csr", "B": "csr", "C": "csr"}, target="cpu",
                       schedule=sc.Schedule().split("i", 8))
    assert split.lowered.statements[0].one_pass is None
    inner = sc.compile(SPGEMM, formats={"A": "csr", "B": "csr", "C": "csr"}, target="cpu",
                       schedule=sc.Schedule().unroll("k", 2))
    one_pass = inner.lowered.statements[0].one_pass
    assert one_pass is not None and "unroll" in kernel_text(one_pass.numeric)
    for kern in (split, inner):
        np.testing.assert_allclose(kern(A=A, B=A).to_scipy().toarray(), ref, rtol=1e-12, atol=1e-12)


def test_other_backends_keep_two_passes():
    """The interpreter (and Triton: one program per row) cannot carry a cursor across rows."""
    kern = sc.compile(SPGEMM, formats={"A": "csr", "B": "csr", "C": "csr"}, target="interp")
    assert kern.lowered.statements[0].one_pass is None


ELEMENTWISE = {   # index notation -> numpy on dense operands
    "C[i,j] = A[i,j] + B[i,j]": lambda a, b: a + b,
    "C[i,j] = A[i,j] * B[i,j]": lambda a, b: a * b,
    "C[i,j] = 2 * A[i,j] - B[i,j] * B[i,j]": lambda a, b: 2 * a - b * b,
    "C[i,j] = A[i,j] + 1": lambda a, b: a + 1,
}


@pytest.mark.parametrize("out", ["csr", "csr_unsorted"])
@pytest.mark.parametrize("text", list(ELEMENTWISE))
@pytest.mark.parametrize("m,n", [(0, 6), (7, 0), (1, 1), (45, 31), (3000, 257)])
def test_one_pass_entries_outputs(monkeypatch, text, out, m, n):
    """Elementwise sparse outputs (union, intersection, every coordinate) in one pass: the bound is the rows'
    stored positions (or the width); numpy oracle, 1 and 2 threads, bitwise equal to the two passes."""
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 64)
    rng = np.random.default_rng(SEED + m + n)
    A, B = _csr(rng, m, n, 0.2), _csr(rng, m, n, 0.3)
    ref = ELEMENTWISE[text](A.toarray(), B.toarray())
    ops = {"A": A, "B": B} if "B[" in text else {"A": A}
    kern = sc.compile(text, formats={**{name: "csr" for name in ops}, "C": out}, target="cpu")
    assert kern.lowered.statements[0].one_pass is not None
    _one_and_two_threads_then_two_passes(monkeypatch, kern, ops, ref, True)


def test_a_far_bound_does_not_stay_allocated_with_the_result(monkeypatch):
    """Many terms per entry: the result's arrays are its own size, not views of the bounded allocation;
    a bound close to the count keeps the views (no copy)."""
    rng = np.random.default_rng(SEED + 4)
    monkeypatch.setattr(runtime, "ONE_PASS_KEEP_SLACK", 0)
    kern = sc.compile(SPGEMM, formats={"A": "csr", "B": "csr", "C": "csr"}, target="cpu")
    A = _csr(rng, 40, 400, 0.05, empty_rows=0.0)                 # ~20 terms a row ...
    B = sps.csr_matrix((rng.standard_normal(4000), np.tile(np.arange(10), 400), np.arange(0, 4001, 10)),
                       shape=(400, 1000))                        # ... into 10 of 1000 columns
    C = kern(A=A, B=B)
    _check(C, A.toarray() @ B.toarray(), True)
    for a in (C.levels[1]["crd"], C.values):
        assert a.base is None or a.base.nbytes == a.nbytes
    diag = sps.identity(40, format="csr")                        # one term per entry: bound == count
    C = kern(A=diag, B=diag)
    np.testing.assert_array_equal(C.to_scipy().toarray(), np.eye(40))
    assert C.values.base is not None   # the kernel's own buffer, not a copy


def test_the_pass_log_shows_the_scheduled_one_pass_kernels():
    """After a loop schedule, the pass log's entry for it lists the rewritten one-pass kernels too."""
    kern = sc.compile(SPGEMM, formats={"A": "csr", "B": "csr", "C": "csr"}, target="cpu",
                      schedule=sc.Schedule().unroll("k", 2))
    scheduled = [text for name, text in kern.lowered.log if name.startswith("schedule")]
    assert len(scheduled) == 1 and "kernel_bound" in scheduled[0] and "kernel_one_pass" in scheduled[0]
