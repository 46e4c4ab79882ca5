"""CPU fast path: the native team's chunk rows are remembered per operand (``FastCall._chunk_rows``).

A remembered split must never change a result: operands used in turn, a pos array rewritten in
place (same object, other rows), fresh operands whose ids may repeat a freed one's, different
ranges and scalars over one pos array, and calls from several Python threads into one kernel
whose chunks zero their own output rows. conftest poisons uninitialized outputs (NaN), so a row
that no chunk wrote shows up.
"""

import threading

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc
from sparsec import fastcall, runtime
from sparsec.backends.cpu import team as _team
from grid import csr_tensor


@pytest.fixture
def two_threads_always_parallel(monkeypatch):
    if _team.team(1) is None:
        pytest.skip("no native team here")
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 1)
    old = runtime.get_num_threads()
    runtime.set_num_threads(2)
    yield
    runtime.set_num_threads(old)


def _csr(m: int, n: int, density: float, seed: int) -> sp.csr_matrix:
    a = sp.random(m, n, density=density, format="csr", random_state=seed, dtype=np.float64)
    a.sort_indices()
    return a


def _spy_chunk_bounds(monkeypatch) -> list:
    calls = []
    real = fastcall.chunk_bounds

    def spy(*args, **kw):
        calls.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(fastcall, "chunk_bounds", spy)
    return calls


def test_operands_used_in_turn(two_threads_always_parallel, monkeypatch):
    """Three matrices of one shape, called in turn: each keeps its own chunks (split once), results exact."""
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu")
    calls = _spy_chunk_bounds(monkeypatch)
    mats = [_csr(3000, 200, d, s) for s, d in enumerate((0.002, 0.05, 0.2))]
    # rows crowded at the top for one of them: its balanced cuts differ from the others'
    mats[1] = sp.vstack([_csr(300, 200, 0.9, 7), _csr(2700, 200, 0.001, 8)]).tocsr()
    tensors = [csr_tensor(a) for a in mats]
    x = np.random.default_rng(0).uniform(-1, 1, 200)
    for _ in range(4):
        for a, t in zip(mats, tensors):
            np.testing.assert_allclose(k(A=t, x=x), a @ x, rtol=1e-12, atol=1e-14)
    assert len(calls) == 3


def test_pos_rewritten_in_place(two_threads_always_parallel):
    """The same pos object with other contents (nonzeros moved between rows): stale chunks still cover every row."""
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu")
    m, n, nnz = 2000, 50, 6000
    pos = np.zeros(m + 1, dtype=np.int32)
    crd = np.zeros(nnz, dtype=np.int32)
    vals = np.zeros(nnz)
    t = sc.Tensor.from_buffers("csr", (m, n), [{}, {"pos": pos, "crd": crd}], vals, name="A", validate=False)
    x = np.random.default_rng(1).uniform(-1, 1, n)
    rng = np.random.default_rng(2)
    for weights in (np.ones(m), np.r_[np.full(100, 50.0), np.ones(m - 100)], np.r_[np.ones(m - 10), np.full(10, 500.0)]):
        counts = np.minimum(rng.multinomial(nnz, weights / weights.sum()), n)
        total = int(counts.sum())
        pos[:] = np.r_[0, np.cumsum(counts)]
        crd[:total] = np.concatenate([np.sort(rng.choice(n, c, replace=False)) for c in counts])
        vals[:total] = rng.uniform(-1, 1, total)
        want = sp.csr_matrix((vals[:total], crd[:total], pos), shape=(m, n)) @ x
        np.testing.assert_allclose(k(A=t, x=x), want, rtol=1e-12, atol=1e-14)


def test_fresh_operands_every_call(two_threads_always_parallel, monkeypatch):
    """New pos arrays each call (a freed one's id may come back): each is split anew, never given
    another operand's chunks (which would still be right, only unbalanced)."""
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu")
    calls = _spy_chunk_bounds(monkeypatch)
    x = np.random.default_rng(3).uniform(-1, 1, 80)
    for seed in range(40):
        m = 500 + 37 * (seed % 5)
        a = _csr(m, 80, 0.01 + 0.02 * (seed % 3), seed)
        np.testing.assert_allclose(k(A=csr_tensor(a), x=x), a @ x, rtol=1e-12, atol=1e-14)
    assert len(calls) == 40


def test_ranges_and_scalars_over_one_pos(two_threads_always_parallel):
    """One pos array, other row ranges and other column counts: each call gets chunks of its own range."""
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, target="cpu")
    f = k._fast
    a = _csr(700, 60, 0.08, 4)
    at = csr_tensor(a)
    pos, crd = at.levels[1]["pos"], at.levels[1]["crd"]
    rng = np.random.default_rng(5)
    for lo, hi, ncols in [(0, 700, 5), (0, 700, 9), (33, 402, 5), (33, 402, 9), (0, 700, 5), (699, 700, 9)]:
        b = rng.uniform(-1, 1, (60, ncols))
        out = np.full((700, ncols), np.nan)
        svals = [700, ncols, 60, lo, hi]
        assert f._parallel_entry((pos, crd, at.values, b, out), svals, lo, hi, pos) == 0
        np.testing.assert_allclose(out[lo:hi], (a @ b)[lo:hi], rtol=1e-12, atol=1e-14)
        assert np.isnan(out[:lo]).all() and np.isnan(out[hi:]).all()


def test_zeroing_chunks_from_several_threads(two_threads_always_parallel):
    """A kernel whose chunks zero their own rows (SDDMM into a dense output), called from four Python
    threads at once with the same operands: each call's rows go to its own output."""
    k = sc.compile("C[i,j] = A[i,j] * B[i,j]", formats={"A": "csr"}, target="cpu")
    assert k._fast.zero_rows is not None
    a = _csr(1200, 300, 0.05, 6)
    at = csr_tensor(a)
    rng = np.random.default_rng(7)
    bs = [rng.uniform(-1, 1, (1200, 300)) for _ in range(4)]
    wants = [a.multiply(b).toarray() for b in bs]
    barrier = threading.Barrier(4)
    errors = []

    def work(t: int) -> None:
        barrier.wait()
        try:
            for _ in range(15):
                np.testing.assert_allclose(k(A=at, B=bs[t]), wants[t], rtol=1e-12, atol=1e-14)
        except AssertionError as e:   # re-raised below, on the test's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[0]


def test_entry_of_a_reused_id_is_not_taken(two_threads_always_parallel, monkeypatch):
    """An entry filed under an array's id but made for another array (what a freed array's reused id
    leaves behind) is recomputed: the new array gets its own balanced cuts."""
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu")
    f = k._fast
    top = sp.vstack([_csr(100, 64, 0.9, 1), _csr(900, 64, 0.01, 2)]).tocsr()
    flat = _csr(1000, 64, 0.1, 3)
    x = np.ones(64)
    k(A=csr_tensor(top), x=x)
    k(A=csr_tensor(flat), x=x)
    (key_top, entry_top), (key_flat, _) = list(f._rows_memo.items())
    assert entry_top[0]() is top.indptr
    f._rows_memo.put(top.indptr, key_flat, entry_top[1])   # as if flat's pos had taken the freed array's id
    calls = _spy_chunk_bounds(monkeypatch)
    t = csr_tensor(flat)
    np.testing.assert_allclose(k(A=t, x=x), flat @ x, rtol=1e-12, atol=1e-14)
    assert len(calls) == 1
    rows, _ = f._rows_memo.get(t.levels[1]["pos"], key_flat)
    assert not np.array_equal(rows, entry_top[1][0])
