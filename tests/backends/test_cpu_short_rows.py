"""CPU short-row loops (:mod:`sparsec.backends.cpu.shortrows`): which loops are versioned, and that
both versions compute every row right: every row length from 0 past the long-row threshold, every
residue of the masked lanes, one and two threads, several sums in one loop, dtypes, and a last row
whose nonzeros end right before a page that faults when read."""

import ctypes
import mmap
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc
from sparsec import runtime
from sparsec.backends.cpu import shortrows
from sparsec.ir import loop_ir as L
from grid import csr_tensor

#: the masked loop's loads (the ordinary vector loop loads whole vectors): seen in the optimized IR
PRED = "@llvm.masked.load"


@pytest.fixture(autouse=True)
def masked_loop_on_every_host(monkeypatch):
    """The masked loop is tested on every host, also where :func:`shortrows.pays_off` keeps it off."""
    monkeypatch.setattr(shortrows, "FORCE", True)


def test_masked_loop_only_where_it_pays_off(monkeypatch):
    """AVX-512 hosts other than AMD Zen get the masked loop; the choice is part of the kernel's cache key."""
    from sparsec.backends.cpu import cache, jit

    monkeypatch.setattr(shortrows, "FORCE", None)
    for cpu, feats, want in (("skylake-avx512", "+avx2,+avx512f", True), ("znver3", "+avx2,-avx512f", False),
                             ("znver4", "+avx2,+avx512f", False), ("haswell", "+avx2,-avx512f", False),
                             ("neoverse-v1", "+neon,+sve", False)):
        fake = jit.Host("", cpu, feats, "", "", None, None)
        monkeypatch.setattr(jit, "host", lambda fake=fake: fake)
        assert shortrows.pays_off() is want, cpu
    monkeypatch.undo()
    text = "y[i] = A[i,j] * x[j]"
    monkeypatch.setattr(shortrows, "FORCE", True)
    on = sc.compile(text, formats={"A": "csr"}, dtype="float32", target="cpu", name="spmv_short_on")
    assert PRED in on.dump("llvm")
    numeric = on.lowered.statements[0].numeric
    key_on = cache.kernel_key(numeric, jit.host())
    monkeypatch.setattr(shortrows, "FORCE", False)
    off = sc.compile(text, formats={"A": "csr"}, dtype="float32", target="cpu", name="spmv_short_off")
    assert PRED not in off.dump("llvm")
    assert cache.kernel_key(numeric, jit.host()) != key_on     # the same kernel IR, keyed apart by the choice


def _rows_of_every_length(max_len: int, ncols: int, dtype, seed: int, repeat: int = 2) -> sp.csr_matrix:
    """Rows with 0, 1, ..., max_len nonzeros (each length ``repeat`` times, shuffled), random columns."""
    rng = np.random.default_rng(seed)
    lengths = rng.permutation(np.repeat(np.arange(max_len + 1), repeat))
    crd = np.concatenate([np.sort(rng.choice(ncols, n, replace=False)) for n in lengths]).astype(np.int32)
    pos = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    vals = rng.uniform(-1, 1, len(crd)).astype(dtype)
    return sp.csr_matrix((vals, crd, pos), shape=(len(lengths), ncols))


def _tol(dtype) -> dict:
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_spmv_every_row_length(dtype, threads, monkeypatch):
    """Rows of 0..2*LONG_ROW+9 nonzeros: both loops, every masked tail; the kernel is versioned.
    With 2 threads every call is split (threshold lowered), so chunks start at any row."""
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 1)
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype=np.dtype(dtype).name, target="cpu")
    assert PRED in k.dump("llvm")
    a = _rows_of_every_length(2 * shortrows.LONG_ROW + 9, 300, dtype, seed=1)
    x = np.random.default_rng(2).uniform(-1, 1, 300).astype(dtype)
    old = sc.get_num_threads()
    sc.set_num_threads(threads)
    try:
        got = k(A=csr_tensor(a, "A"), x=x)
    finally:
        sc.set_num_threads(old)
    np.testing.assert_allclose(got, a.astype(np.float64) @ x.astype(np.float64), **_tol(dtype))


def test_two_sums_and_a_product_in_one_loop():
    """A loop with two float sums and a local product per nonzero (both sums in the masked loop)."""
    text = "y[i] = A[i,j] * x[j] * z[j] + A[i,j] * w[j]"
    k = sc.compile(text, formats={"A": "csr"}, dtype="float64", target="cpu")
    a = _rows_of_every_length(70, 90, np.float64, seed=3)
    rng = np.random.default_rng(4)
    x, z, w = (rng.uniform(-1, 1, 90) for _ in range(3))
    np.testing.assert_allclose(k(A=csr_tensor(a, "A"), x=x, z=z, w=w), a @ (x * z) + a @ w, rtol=1e-12, atol=1e-12)


def _guarded(values: np.ndarray, keep: list) -> np.ndarray:
    """A copy of ``values`` that ends where an inaccessible page begins (a read past its end faults)."""
    page = mmap.PAGESIZE
    nbytes = values.nbytes
    pages = -(-nbytes // page) + 1
    buf = mmap.mmap(-1, pages * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(base + (pages - 1) * page), page, 0) == 0   # PROT_NONE
    out = np.frombuffer(buf, dtype=values.dtype, count=values.size, offset=(pages - 1) * page - nbytes)
    out[:] = values
    keep.append(buf)
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect through libc")
@pytest.mark.parametrize("last_row", [1, 3, 7, 8, 9, 31, 33])
def test_rows_ending_at_an_unreadable_page(last_row):
    """The masked loop reads no element past a row's end: the column and value arrays end right
    before a page that faults when touched, and the last row has ``last_row`` nonzeros."""
    a = _rows_of_every_length(12, 40, np.float32, seed=5, repeat=1)
    rng = np.random.default_rng(6)
    last = sp.csr_matrix((rng.uniform(-1, 1, last_row).astype(np.float32),
                          np.sort(rng.choice(40, last_row, replace=False)), [0, last_row]), shape=(1, 40))
    a = sp.vstack([a, last]).tocsr()
    assert np.diff(a.indptr)[-1] == last_row
    keep: list = []
    t = sc.Tensor.from_buffers("csr", a.shape, [{}, {"pos": a.indptr, "crd": _guarded(a.indices, keep)}],
                               _guarded(a.data, keep), name="A", validate=False)
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float32", target="cpu")
    x = np.linspace(-1, 1, 40, dtype=np.float32)
    np.testing.assert_allclose(k(A=t, x=x), a.astype(np.float64) @ x, rtol=1e-5, atol=1e-5)


def _loop(body: list[L.Stmt], hi: L.LExpr | None = None, kind: L.LoopKind = L.SERIAL) -> L.For:
    p = L.Var("p", L.INDEX)
    hi = hi if hi is not None else L.Load("A_pos1", L.Var("i", L.INDEX) + 1, "int32")
    return L.For(p, L.Load("A_pos1", L.Var("i", L.INDEX), "int32"), hi, L.Block(body), kind=kind)


def test_which_loops_are_versioned():
    acc = L.Var("acc", "float32")
    term = L.Load("A_vals", L.Var("p", L.INDEX), "float32")
    s = L.Assign(acc, L.BinOp("add", acc, term, "float32"))
    assert shortrows.is_short_row_sum(_loop([s]))
    assert shortrows.is_short_row_sum(_loop([L.Assign(acc, L.BinOp("add", term, acc, "float32"))]))
    # not a sum, a sum of its own square, an integer sum, a store, a dense range, a scheduled loop
    assert not shortrows.is_short_row_sum(_loop([L.Assign(acc, L.BinOp("mul", acc, term, "float32"))]))
    assert not shortrows.is_short_row_sum(_loop([L.Assign(acc, L.BinOp("add", acc, L.BinOp("mul", acc, acc,
                                                                                         "float32"), "float32"))]))
    n = L.Var("n", "int64")
    assert not shortrows.is_short_row_sum(_loop([L.Assign(n, L.BinOp("add", n, L.Const(1, "int64"), "int64"))]))
    assert not shortrows.is_short_row_sum(_loop([s, L.Store("y_vals", L.Var("p", L.INDEX), acc)]))
    assert not shortrows.is_short_row_sum(_loop([s], hi=L.Var("n_j", L.INDEX)))
    assert not shortrows.is_short_row_sum(_loop([s], kind=L.LoopKind("vector", 4)))
    # a local defined in the loop first, then summed: the sum is not declared before the loop
    assert not shortrows.is_short_row_sum(_loop([L.Assign(acc, term), s]))


def _versioned_loops(k: sc.Kernel) -> list[L.For]:
    return [s for st in k.lowered.statements for s in st.numeric.body.walk()
            if isinstance(s, L.For) and shortrows.is_short_row_sum(s)]


def test_which_kernels_are_versioned():
    """SpMV-like row sums are; CSR SpMM (register tiles, stores), a max over a row, a CSC SpMV
    (scattered stores) and a dense reduction are not."""
    for text, formats in [("y[i] = A[i,j] * x[j]", {"A": "csr"}), ("y[i] = A[i,j]", {"A": "dcsr"})]:
        assert len(_versioned_loops(sc.compile(text, formats=formats, target="cpu"))) == 1, text
    for text, formats in [("C[i,j] = A[i,k] * B[k,j]", {"A": "csr"}), ("y[i] = max[j](A[i,j])", {"A": "csr"}),
                          ("y[i] = A[i,j] * x[j]", {"A": "csc"}), ("y[i] = B[i,j] * x[j]", {})]:
        assert _versioned_loops(sc.compile(text, formats=formats, target="cpu")) == [], text
