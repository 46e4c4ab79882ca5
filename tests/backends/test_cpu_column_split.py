"""CPU fast path: a call of a kernel whose whole body is one panel-cut row loop (a pruned 1x1
convolution ``Y[o,p] = W[o,c] * X[c,p]``) may be split across threads by columns instead of rows.

Each thread then runs every row over its own window of columns. conftest sets
SPARSEC_POISON_OUTPUTS=1: the output is left uninitialized (NaN-filled in tests), so a column
no window covered shows up as NaN, one covered twice as a wrong sum only where it adds.
"""

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc
from sparsec import fastcall, runtime
from sparsec.fastcall import FALLBACK

CONV = "Y[o,p] = W[o,c] * X[c,p]"


@pytest.fixture
def threads(request):
    old = runtime.get_num_threads()
    yield runtime.set_num_threads
    runtime.set_num_threads(old)


@pytest.fixture
def windows(monkeypatch):
    """Records what every parallel call's column split decided (a list of windows, or None)."""
    seen: list = []
    real = fastcall.FastCall._column_chunks

    def spy(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(fastcall.FastCall, "_column_chunks", spy)
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 1)
    return seen


def _weight(co, ci, density, seed, empty_rows=False):
    w = sp.random(co, ci, density=density, format="csr", random_state=seed, dtype=np.float64)
    if empty_rows and co:
        w = w.tolil()
        w[1::4] = 0
        w = w.tocsr()
        w.eliminate_zeros()
    return w


def _run(k, w, x, dtype):
    wt = sc.Tensor.from_scipy(w.astype(dtype), "csr", name="W")
    r = k._fast({"W": wt, "X": x.astype(dtype)})
    assert r is not FALLBACK
    return r


def test_window_only_on_a_single_panel_loop():
    """The conv kernel takes a column window over ``[0, n_p)``; SpMV (no panels) and a kernel whose rows
    run more than the panel nest (``split(c, 3)``: tiles per block of a row's nonzeros) do not."""
    conv = sc.compile(CONV, formats={"W": "csr"}, dtype="float32", target="cpu")
    assert conv._fast.kernel_fn.column_window == (0, "n_p")
    spmv = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float32", target="cpu")
    assert spmv._fast.kernel_fn.column_window is None
    split = sc.compile(CONV, formats={"W": "csr"}, dtype="float32", target="cpu", schedule=sc.Schedule().split("c", 3))
    assert split._fast.kernel_fn.column_window is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nthreads", [2, 3])
@pytest.mark.parametrize("co,ci,pixels,density,empty_rows", [
    (16, 24, 3136, 0.2, False),    # panels of 128 columns inside each window
    (9, 7, 513, 0.5, True),        # 2 threads: windows of 256 / 257 columns; 3 threads: rows split
    (40, 64, 1000, 0.1, True),     # a window ends inside a vector of the output row
    (12, 30, 800, 0.0, False),     # no nonzeros: every window writes zeros
    (3, 5, 4096, 1.0, False),     # dense rows
    (10, 200, 300, 0.5, False),    # 100 nonzeros per row: split from 64 columns per thread
    (10, 200, 100, 0.5, True),     # ... 50 per thread (2 threads): rows split
])
def test_column_split_matches_dense(threads, windows, dtype, nthreads, co, ci, pixels, density, empty_rows):
    threads(nthreads)
    k = sc.compile(CONV, formats={"W": "csr"}, dtype=dtype, target="cpu")
    w = _weight(co, ci, density, 5, empty_rows)
    x = np.random.default_rng(2).uniform(-1, 1, (ci, pixels))
    want = w @ x
    for _ in range(2):   # twice: the second call reuses a dirty allocation
        got = _run(k, w, x, dtype)
        assert not np.isnan(got).any()
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5)
    taken = [c for c in windows if c is not None]
    dense_rows = w.nnz >= fastcall.COLUMN_SPLIT_DENSE_ROW * co and pixels >= fastcall.COLUMN_SPLIT_DENSE_MIN_COLUMNS * nthreads
    assert windows and bool(taken) == (pixels >= fastcall.COLUMN_SPLIT_MIN_COLUMNS * nthreads or dense_rows)
    for cut in taken:
        assert len(cut) == min(nthreads, -(-pixels // (64 // np.dtype(dtype).itemsize)))
        assert cut[0][0] == 0 and cut[-1][1] == pixels
        assert all(a[1] == b[0] for a, b in zip(cut, cut[1:]))


@pytest.mark.parametrize("co,ci,pixels,why", [
    (64, 64, 500, "too few columns per thread"),
    (64, 64, 300, "over 64 columns per thread, but rows of ~19 nonzeros"),
    (600, 600, 1024, "the nonzeros exceed COLUMN_SPLIT_SPARSE_BYTES"),
])
def test_rows_split_otherwise(threads, windows, co, ci, pixels, why):
    threads(2)
    k = sc.compile(CONV, formats={"W": "csr"}, dtype="float32", target="cpu")
    w = _weight(co, ci, 0.3, 7)
    x = np.random.default_rng(3).uniform(-1, 1, (ci, pixels))
    got = _run(k, w, x, "float32")
    np.testing.assert_allclose(got, w @ x, rtol=1e-5, atol=1e-5)
    assert windows and all(c is None for c in windows), why


def test_checked_call_runs_every_column():
    """The kernel's ordinary call (no fast path) passes the whole window."""
    k = sc.compile(CONV, formats={"W": "csr"}, dtype="float32", target="cpu")
    w = _weight(8, 16, 0.3, 9)
    x = np.random.default_rng(4).uniform(-1, 1, (16, 700)).astype(np.float32)
    ck = k._fast.kernel_fn
    y = np.full(8 * 700, np.nan, np.float32)
    wt = sc.Tensor.from_scipy(w.astype(np.float32), "csr", name="W")
    bufs = {"W_pos1": wt.levels[1]["pos"].astype(np.int32), "W_crd1": wt.levels[1]["crd"].astype(np.int32),
            "W_vals": wt.values, "X_vals": x.reshape(-1), "Y_vals": y}
    ck._checked_call(tuple(bufs[p.name] for p in ck.buffer_params),
                     tuple({"n_c": 16, "n_o": 8, "n_p": 700, "sc_lo": 0, "sc_hi": 8}[n] for n in ck.scalar_names))
    np.testing.assert_allclose(y.reshape(8, 700), w @ x, rtol=1e-5, atol=1e-5)
