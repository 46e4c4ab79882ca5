"""Register tiles of the CPU backend (sparsec/backends/cpu/regtile.py) and the fast call path around them.

SpMM-like loop nests are compiled with the inner dense loop tiled into vector
registers (interchanged with the loop over nonzeros); on AVX-512 hosts the tiles
are aligned to the loaded rows and masked at both ends. These tests check the
results against numpy over column counts that hit every tile size and remainder,
every alignment of the dense operand, several dtypes, inner ranges that do not
start at 0, schedules that steer or disable the tiling, and loop nests that must
not be tiled.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc
from sparsec import runtime
from sparsec.backends import cpu
from sparsec.backends.cpu import codegen, jit, panels, regtile
from sparsec.ir import loop_ir as L
from grid import csr_tensor

SEED = 20261122
NS = (1, 3, 8, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 100, 128, 129, 200, 257)


def _csr(m: int, k: int, density: float, seed: int, dtype=np.float64) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    a = sp.random(m, k, density=density, format="csr", random_state=rng, dtype=np.float64)
    a.data = np.round(rng.uniform(-4, 4, a.nnz))       # small integers: exact in every dtype
    a.indptr[-5:] = a.indptr[-6]                          # empty rows at the end
    a = sp.csr_matrix((a.data[: a.indptr[-1]], a.indices[: a.indptr[-1]], a.indptr), shape=(m, k))
    return a.astype(dtype) if dtype != np.float16 else a


def _placed(x: np.ndarray, offset: int) -> np.ndarray:
    """``x`` copied to an address ``offset`` elements past a 64-byte boundary."""
    buf = np.empty(x.size + 64, x.dtype)
    start = (-buf.ctypes.data % 64) // x.itemsize + offset
    out = buf[start: start + x.size].reshape(x.shape)
    out[...] = x
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32"])
def test_spmm_every_width_and_alignment(dtype: str) -> None:
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype=dtype)
    a = _csr(37, 29, 0.3, SEED)
    A = csr_tensor(a, dtype=dtype, validate=True)
    rng = np.random.default_rng(SEED + 1)
    for n in NS:
        b = np.round(rng.uniform(-3, 3, (29, n))).astype(dtype)
        want = a.toarray() @ b.astype(np.float64)
        for off in (0, 1, 3, 4, 7, 8, 15):
            got = k(A=A, B=_placed(b, off))
            assert got.shape == (37, n) and got.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(got.astype(np.float64), want, err_msg=f"n={n} offset={off}")


def test_spmm_values_in_place_and_nan_propagate() -> None:
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float64")
    a = _csr(20, 16, 0.4, SEED + 2)
    b = np.random.default_rng(3).uniform(-1, 1, (16, 40))
    np.testing.assert_allclose(k(A=a, B=b), a @ b, rtol=1e-13, atol=1e-13)
    b[3, 5] = np.nan
    b[4, 6] = np.inf
    want = a @ b                                      # sparse semantics: absent entries contribute nothing
    got = k(A=a, B=b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-13, atol=1e-13)


def test_one_accumulator_set_is_bitwise_the_untiled_nest() -> None:
    """``unroll(k, 1)`` keeps one accumulator per element: the same sums in the same order as the scalar nest."""
    a = _csr(60, 50, 0.2, SEED + 3)
    b = np.random.default_rng(4).uniform(-1, 1, (50, 77))
    tiled = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, schedule=sc.Schedule().unroll("k", 1))
    plain = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, schedule=sc.Schedule().vectorize("j", 1))
    assert len(regtile.find_plans(tiled.lowered.statements[0].numeric, 512)) == 1
    assert regtile.find_plans(plain.lowered.statements[0].numeric, 512) == {}
    np.testing.assert_array_equal(tiled(A=a, B=b), plain(A=a, B=b))


@pytest.mark.parametrize("schedule", [None, sc.Schedule().vectorize("j", 1), sc.Schedule().vectorize("j", 4),
                                      sc.Schedule().unroll("k", 3), sc.Schedule().split("i", 7),
                                      # the tiled nest then runs once per block of a row's nonzeros: each
                                      # run must add to what the previous ones stored
                                      sc.Schedule().split("k", 3), sc.Schedule().split("i", 5).split("k", 2)])
def test_schedules_steer_the_tiles(schedule) -> None:
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float32", schedule=schedule)
    a = _csr(45, 33, 0.25, SEED + 4, np.float32)
    b = np.round(np.random.default_rng(5).uniform(-3, 3, (33, 70))).astype(np.float32)
    np.testing.assert_array_equal(k(A=a, B=b), (a.toarray() @ b).astype(np.float32))
    plans = regtile.find_plans(k.lowered.statements[0].numeric, 512)
    if schedule is not None and schedule.of("vectorize") and schedule.of("vectorize")[0].args[1] == 1:
        assert not plans                       # vectorize(j, 1): the user asked for scalar code
    else:
        assert len(plans) == 1
        plan = next(iter(plans.values()))
        if schedule is not None and schedule.of("vectorize"):
            assert [v.lanes for v in plan.variants] == [4]
        if schedule is not None and schedule.of("unroll"):
            assert set(plan.variants[0].splits) == {3}


@pytest.mark.parametrize("fmt", ["bsr(2,2)", "bsr(4,1)", "dcsr", "coo"])
def test_other_formats_of_a(fmt: str) -> None:
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": fmt}, dtype="float64")
    a = _csr(26, 18, 0.3, SEED + 12)
    b = np.round(np.random.default_rng(13).uniform(-3, 3, (18, 37)))
    got = k(A=sc.Tensor.from_scipy(a, format=fmt), B=b)
    np.testing.assert_array_equal(got, a.toarray() @ b)


def test_dense_matmul_and_sums_of_products_are_tiled() -> None:
    rng = np.random.default_rng(6)
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", dtype="float64")
    assert len(regtile.find_plans(k.lowered.statements[0].numeric, 512)) == 1
    a, b = rng.uniform(-1, 1, (13, 21)), rng.uniform(-1, 1, (21, 35))
    np.testing.assert_allclose(k(A=a, B=b), a @ b, rtol=1e-13, atol=1e-13)
    k2 = sc.compile("C[i,j] = A[i,k] * (B[k,j] + D[k,j]) * 2.0", formats={"A": "csr"}, dtype="float64")
    assert len(regtile.find_plans(k2.lowered.statements[0].numeric, 512)) == 1
    s = _csr(13, 21, 0.3, SEED + 5)
    d = rng.uniform(-1, 1, (21, 35))
    np.testing.assert_allclose(k2(A=s, B=b, D=d), 2 * (s @ (b + d)), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("text,formats,out", [
    ("C[i,j] = A[i,k] * B[k,j]", {"A": "csc"}, None),              # rows of C move with the nonzeros
    ("S[i,j] = M[i,j] * U[i,k] * V[k,j]", {"M": "csr"}, "csr"),    # a scalar reduction (SDDMM)
    ("C[i,j] = max[k](A[i,k] * B[k,j])", {"A": "csr"}, None),     # co-iteration with guards
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, None),                  # SpMV: a gather, no unit stride
])
def test_nests_that_are_not_tiled(text, formats, out) -> None:
    k = sc.compile(text, formats=formats, out_format=out, dtype="float32")
    assert regtile.find_plans(k.lowered.statements[-1].numeric, 512) == {}


def _hand_kernel(name: str, dtype: str) -> L.Kernel:
    """``out[i * n + j] += a[p] * b[crd[p] * n + j]`` for p in row i, j in ``[jlo, jhi)``."""
    idx = L.INDEX
    i, p, j, kk = L.Var("i"), L.Var("p"), L.Var("j"), L.Var("kk")
    n, jlo, jhi, m = L.Var("n"), L.Var("jlo"), L.Var("jhi"), L.Var("m")
    inner = L.For(j, jlo, jhi, L.Block((L.Store("out", i * n + j, L.BinOp(
        "mul", L.Load("a", p, dtype), L.Load("b", kk * n + j, dtype), dtype), "add"),)))
    outer = L.For(p, L.Cast(L.Load("pos", i, "int32"), idx), L.Cast(L.Load("pos", i + 1, "int32"), idx),
                  L.Block((L.Assign(kk, L.Cast(L.Load("crd", p, "int32"), idx)), inner)))
    body = L.Block((L.For(i, L.const(0), m, L.Block((outer,))),))
    params = (L.BufferParam("pos", "int32"), L.BufferParam("crd", "int32"), L.BufferParam("a", dtype),
              L.BufferParam("b", dtype), L.BufferParam("out", dtype, "out"), L.ScalarParam("m"), L.ScalarParam("n"),
              L.ScalarParam("jlo"), L.ScalarParam("jhi"))
    return L.Kernel(name, params, body)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inner_ranges_not_starting_at_zero(dtype: str) -> None:
    kern = _hand_kernel(f"rt_range_{dtype}", dtype)
    assert len(regtile.find_plans(kern, 512)) == 1
    ck = cpu.CPUBackend().compile(kern)
    a = _csr(11, 9, 0.4, SEED + 6)
    rng = np.random.default_rng(7)
    for n in (5, 16, 40, 67):
        b = np.round(rng.uniform(-3, 3, (9, n))).astype(dtype)
        full = a.toarray() @ b.astype(np.float64)
        for jlo, jhi in ((0, n), (1, n), (3, n - 1), (n // 2, n), (2, 2), (n - 1, n)):
            for off in (0, 3):
                out = np.full(11 * n, 0.0, dtype)
                ck({"pos": a.indptr.astype(np.int32), "crd": a.indices.astype(np.int32), "a": a.data.astype(dtype),
                    "b": _placed(b, off).reshape(-1), "out": out}, {"m": 11, "n": n, "jlo": jlo, "jhi": jhi})
                want = np.zeros((11, n))
                want[:, jlo:jhi] = full[:, jlo:jhi]
                np.testing.assert_array_equal(out.reshape(11, n), want, err_msg=f"n={n} [{jlo},{jhi}) off={off}")


def test_avx512_hosts_use_masked_aligned_tiles() -> None:
    if "+avx512f" not in jit.host().features.split(","):
        pytest.skip("no AVX-512 on this host")
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float32")
    text = k.dump("llvm")
    assert "llvm.masked.load.v16f32" in text and "<16 x float>" in text
    assert "llvm.masked.load.v8f32" in text        # the 256-bit tiles for rows at varying offsets, masked at the end
    assert '"min-legal-vector-width"="512"' in codegen.generate_text(k.lowered.statements[0].numeric)


# ------------------------------------------------------------------------------------ the fast path around them
def _spmm_operands(seed: int, m: int = 300, kdim: int = 64, n: int = 32, density: float = 0.5):
    a = _csr(m, kdim, density, seed, np.float32)
    b = np.random.default_rng(seed).uniform(-1, 1, (kdim, n)).astype(np.float32)
    return a, b


def test_misaligned_dense_operand_reused_often_is_copied_aligned(monkeypatch: pytest.MonkeyPatch) -> None:
    from sparsec import fastcall

    if "+avx512f" not in jit.host().features.split(","):   # only the 512-bit masked tiles load aligned rows
        pytest.skip("no AVX-512 on this host")

    monkeypatch.setattr(fastcall, "_ALIGN_MIN_SIZE", 1)
    seen = []
    orig = fastcall.FastCall._aligned_operand

    def spy(self, arr, *args):
        out = orig(self, arr, *args)
        seen.append((arr.__array_interface__["data"][0] % 64, out.__array_interface__["data"][0] % 64))
        return out

    monkeypatch.setattr(fastcall.FastCall, "_aligned_operand", spy)
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float32")   # plans bind it now
    a, b = _spmm_operands(8)
    mis = _placed(b, 4)
    np.testing.assert_allclose(k(A=a, B=mis), a @ b, rtol=1e-5, atol=1e-5)
    assert seen and seen[-1] == (16, 0)
    np.testing.assert_array_equal(mis, b)             # the operand itself is left alone


@pytest.mark.parametrize("threads", [1, 2])
def test_native_team_chunks_match_one_thread(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 1)
    a, b = _spmm_operands(9, m=500)
    x = b[:, 0].copy()
    kv = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float32")
    km = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float32")
    runtime.set_num_threads(1)
    try:
        want_v, want_m = kv(A=a, x=x), km(A=a, B=b)
        runtime.set_num_threads(threads)
        for _ in range(20):
            np.testing.assert_array_equal(kv(A=a, x=x), want_v)
            np.testing.assert_array_equal(km(A=a, B=b), want_m)
    finally:
        runtime.set_num_threads(None)


def test_native_team_from_many_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent parallel calls: one uses the team, the others run their chunks themselves."""
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 1)
    runtime.set_num_threads(2)
    kv = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float64")
    mats = [_csr(400, 300, 0.05, SEED + 10 + t) for t in range(6)]
    xs = [np.random.default_rng(t).uniform(-1, 1, 300) for t in range(6)]
    errors = []

    def work(t: int) -> None:
        try:
            for rep in range(100):
                j = (t + rep) % 6
                np.testing.assert_allclose(kv(A=mats[j], x=xs[j]), mats[j] @ xs[j], rtol=1e-12, atol=1e-12)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    try:
        ts = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        runtime.set_num_threads(None)
    assert not errors, errors[0]


def test_fast_path_takes_scipy_operands_and_returns_owned_arrays() -> None:
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float64")
    a = _csr(30, 20, 0.3, SEED + 11)
    b = np.random.default_rng(12).uniform(-1, 1, (20, 16))
    from sparsec.fastcall import FALLBACK

    got = k._fast({"A": a, "B": b})
    assert got is not FALLBACK
    np.testing.assert_allclose(got, a @ b, rtol=1e-13, atol=1e-13)
    assert got.shape == (30, 16) and got.flags.c_contiguous and got.flags.owndata
    # a misnamed operand (right count) still gets the general path's message
    with pytest.raises(TypeError, match="unknown operand 'X'"):
        k(A=a, X=b)


def test_builtin_entry_point_rejects_bad_calls_without_running() -> None:
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float64")
    ck = k._runner.runners[0].numeric
    if not cpu.fast_path_available():
        pytest.skip("no entry point on this interpreter")
    e = ck.entry
    nb = len(ck.buffer_params)
    assert e((1,) * nb, ck._sig, 1, 1, 0, 1) == 1                  # not an ndarray: buffer 1 rejected
    assert e((np.zeros(1),) * (nb - 1), ck._sig, 1, 1, 0, 1) == nb + 1   # wrong tuple length
    assert e([np.zeros(1)] * nb, ck._sig, 1, 1, 0, 1) == nb + 1          # not a tuple
    assert e((), ck._sig, 1) == -1                                       # wrong argument count
    with pytest.raises(TypeError):
        e((), ck._sig, "a", 1, 0, 1)


# ------------------------------------------------------------------------------------ column panels (cpu/panels.py)
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_long_rows_cut_into_panels_match_numpy(dtype: str) -> None:
    """Rows of 256 columns and more run panel by panel: every panel boundary, width and alignment."""
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype=dtype)
    assert panels.find_panels(k.lowered.statements[-1].numeric, 512)[1], "the SpMM row loop is not cut into panels"
    a = _csr(23, 19, 0.4, SEED + 20)
    A = csr_tensor(a, dtype=dtype, validate=True)
    rng = np.random.default_rng(SEED + 21)
    for n in (255, 256, 257, 300, 383, 512, 641):
        b = np.round(rng.uniform(-3, 3, (19, n))).astype(dtype)
        want = a.toarray() @ b.astype(np.float64)
        for off in (0, 1, 5):
            got = k(A=A, B=_placed(b, off))
            np.testing.assert_array_equal(got.astype(np.float64), want, err_msg=f"n={n} offset={off}")


def test_panels_keep_each_elements_order_of_terms() -> None:
    """With one accumulator set, panels change no sum: bitwise the scalar nest, over many panels and threads."""
    a = _csr(90, 70, 0.3, SEED + 22)
    b = np.random.default_rng(23).uniform(-1, 1, (70, 1000))
    tiled = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, schedule=sc.Schedule().unroll("k", 1))
    plain = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, schedule=sc.Schedule().vectorize("j", 1))
    assert panels.find_panels(tiled.lowered.statements[0].numeric, 512)[1]
    want = plain(A=a, B=b)
    before = sc.get_num_threads()
    try:
        for threads in (1, 2):
            sc.set_num_threads(threads)
            np.testing.assert_array_equal(tiled(A=a, B=b), want, err_msg=f"{threads} threads")
    finally:
        sc.set_num_threads(before)


def test_panels_over_inner_ranges_not_starting_at_zero() -> None:
    kern = _hand_kernel("rt_panel_range", "float64")
    assert len(panels.find_panels(kern, 512)[1]) == 1
    ck = cpu.CPUBackend().compile(kern)
    a = _csr(13, 9, 0.4, SEED + 24)
    n = 700
    b = np.round(np.random.default_rng(25).uniform(-3, 3, (9, n)))
    full = a.toarray() @ b
    for jlo, jhi in ((0, n), (3, n - 1), (100, 356), (450, 700), (5, 260)):
        out = np.zeros(13 * n)
        ck({"pos": a.indptr.astype(np.int32), "crd": a.indices.astype(np.int32), "a": a.data, "b": b.reshape(-1),
            "out": out}, {"m": 13, "n": n, "jlo": jlo, "jhi": jhi})
        want = np.zeros((13, n))
        want[:, jlo:jhi] = full[:, jlo:jhi]
        np.testing.assert_array_equal(out.reshape(13, n), want, err_msg=f"[{jlo},{jhi})")


def test_rows_with_definitions_that_move_are_not_cut_into_panels() -> None:
    """A row-loop definition reading a name the row loop assigns later would not be re-run identically."""
    kern = _hand_kernel("rt_panel_no", "float64")
    rows = kern.body.stmts[0]
    bad = L.Assign(L.Var("t"), L.Var("kk") + 1)         # reads kk, which the nonzero loop assigns
    rows2 = L.For(rows.var, rows.lo, rows.hi, L.Block((bad,) + rows.body.stmts))
    kern2 = L.Kernel(kern.name, kern.params, L.Block((rows2,)))
    assert panels.find_panels(kern2, 512)[1] == {}
    spmv = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float32")
    assert panels.find_panels(spmv.lowered.statements[-1].numeric, 512)[1] == {}


def test_panels_know_the_dense_rows_they_read() -> None:
    """A panel sizes its block of the dense operand by the extent of the index its rows are strided by."""
    spmm = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float32")
    (pn,) = panels.find_panels(spmm.lowered.statements[-1].numeric, 512)[1].values()
    assert pn.dense_rows == ("n_k",)
    conv = sc.compile("Y[o,p] = W[o,c] * X[c,p]", formats={"W": "csr"}, dtype="float32")
    (pn,) = panels.find_panels(conv.lowered.statements[-1].numeric, 512)[1].values()
    assert pn.dense_rows == ("n_c",)
    (pn,) = panels.find_panels(_hand_kernel("rt_panel_rows", "float64"), 512)[1].values()
    assert pn.dense_rows == ()      # no extents known: the columns alone decide


@pytest.mark.parametrize("slab", [0, 19 * 512, 1 << 40])
def test_panels_or_one_panel_by_the_dense_block_match_numpy(monkeypatch: pytest.MonkeyPatch, slab: int) -> None:
    """Whether the dense block of a panel fits (19 dense rows: at the limit, over it, under it), the result is
    numpy's, on one thread and two."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", "")
    monkeypatch.setattr(panels, "PANEL_SLAB_BYTES", slab)
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float64", name=f"rt_slab_{slab}")
    a = _csr(40, 19, 0.4, SEED + 26)
    rng = np.random.default_rng(SEED + 27)
    before = sc.get_num_threads()
    try:
        for n in (256, 700):
            b = np.round(rng.uniform(-3, 3, (19, n)))
            for threads in (1, 2):
                sc.set_num_threads(threads)
                np.testing.assert_array_equal(k(A=a, B=b), a.toarray() @ b, err_msg=f"n={n} {threads} threads")
    finally:
        sc.set_num_threads(before)


# ------------------------------------------------------------------------------------ packed rows (cpu/pack.py)
@pytest.fixture
def pack_knobs(monkeypatch: pytest.MonkeyPatch):
    """Set :mod:`pack`'s thresholds for kernels compiled in the test (no disk cache: the thresholds are not part
    of the cache key; kernels get names of their own so the in-memory cache does not hand them to other tests)."""
    from sparsec.backends.cpu import pack

    monkeypatch.setenv("SPARSEC_CACHE_DIR", "")

    def knobs(min_reuse: int, max_bytes: int) -> None:
        monkeypatch.setattr(pack, "MIN_REUSE", min_reuse)
        monkeypatch.setattr(pack, "MAX_BYTES", max_bytes)

    return knobs


def _rows_with_gaps(m: int, k: int, seed: int, dtype) -> sp.csr_matrix:
    """A CSR matrix with empty rows at the start, the middle and the end, and one dense row."""
    a = _csr(m, k, 0.3, seed).tolil()
    a[0, :] = 0
    a[m // 2, :] = 0
    a[1, :] = np.arange(1, k + 1) % 5 - 2.0
    return sp.csr_matrix(a, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("forced", ["always", "never"])
def test_packed_rows_match_numpy(pack_knobs, monkeypatch: pytest.MonkeyPatch, dtype: str, forced: str) -> None:
    """Short misaligned rows of B (N not a multiple of the vector) read from the packed copy, or not: every
    tile size and row-end mask, operand offsets, empty rows, one thread and chunks on two."""
    if forced == "always":
        pack_knobs(0, 1 << 30)
    else:
        pack_knobs(1 << 30, 0)
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 1)
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype=dtype, name=f"packed_{forced}_{dtype}")
    assert "@malloc" in k.dump("llvm") or "+avx512f" not in jit.host().features.split(",")
    a = _rows_with_gaps(41, 23, SEED + 30, dtype)
    A = csr_tensor(a, dtype=dtype, validate=True)
    rng = np.random.default_rng(SEED + 31)
    before = sc.get_num_threads()
    try:
        for n in (1, 7, 15, 16, 17, 49, 63, 64, 65, 196, 300):
            b = np.round(rng.uniform(-3, 3, (23, n))).astype(dtype)
            want = a.toarray().astype(np.float64) @ b.astype(np.float64)
            for off in (0, 1, 5):
                for threads in (1, 2):
                    sc.set_num_threads(threads)
                    got = k(A=A, B=_placed(b, off))
                    np.testing.assert_array_equal(got.astype(np.float64), want,
                                                  err_msg=f"n={n} offset={off} threads={threads}")
    finally:
        sc.set_num_threads(before)


def test_packed_rows_are_bitwise_the_unpacked_tiles_on_aligned_rows(pack_knobs) -> None:
    """Packing changes where the rows are read from, not the sums: the same tiles over the same terms."""
    pack_knobs(0, 1 << 30)
    a = _csr(70, 40, 0.3, SEED + 32)
    b = np.random.default_rng(33).uniform(-1, 1, (40, 49))
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float32", name="packed_bitwise")
    got = k(A=a.astype(np.float32), B=b.astype(np.float32))            # 49 columns: rows misaligned, packed
    wide = np.zeros((40, 64), np.float32)
    wide[:, :49] = b                                                  # 64 columns: rows aligned, not packed
    ref = k(A=a.astype(np.float32), B=_placed(wide, 0))[:, :49]
    if "+avx512f" in jit.host().features.split(","):
        np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-5)


def test_dense_matmul_rows_are_packed_too(pack_knobs) -> None:
    pack_knobs(0, 1 << 30)
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", dtype="float64", name="packed_dense")
    rng = np.random.default_rng(34)
    for n in (5, 33, 130):
        a, b = np.round(rng.uniform(-3, 3, (19, 13))), np.round(rng.uniform(-3, 3, (13, n)))
        np.testing.assert_array_equal(k(A=a, B=_placed(b, 3)), a @ b, err_msg=f"n={n}")


def test_which_nests_pack() -> None:
    from sparsec.backends.cpu import pack

    def found(text: str, formats: dict, dtype: str = "float32", **kw) -> bool:
        kern = sc.compile(text, formats=formats, dtype=dtype, **kw).lowered.statements[-1].numeric
        rewritten, pns = panels.find_panels(kern, 512)
        plans = regtile.find_plans(rewritten, 512)
        dtypes = {p.name: p.dtype for p in rewritten.buffers}
        hits = []
        for pn in pns.values():
            nz = [c for c in pn.rows.body.stmts if not isinstance(c, L.Comment)][-1]
            if id(nz) in plans:
                hits.append(pack.find_pack(pn.rows, plans[id(nz)], pn.lo_var, dtypes, 0))
        return any(h is not None for h in hits)

    assert found("C[i,j] = A[i,k] * B[k,j]", {"A": "csr"})
    assert found("C[i,j] = A[i,k] * B[k,j]", {})                                   # dense GEMM rows
    assert not found("C[i,j] = A[i,k] * (B[k,j] + D[k,j])", {"A": "csr"})          # two operands read per row
    assert not found("C[i,j] = A[i,k] * B[k,j]", {"A": "csr"}, schedule=sc.Schedule().vectorize("j", 8))
    assert not found("y[i] = A[i,j] * x[j]", {"A": "csr"})                         # no register tiles


def test_linear_splits_index_arithmetic() -> None:
    from sparsec.backends.cpu import pack

    c, n, b = L.Var("c"), L.Var("n"), L.Var("b")
    coef, rest = pack.linear(c * n + b * 2, "c")
    assert coef == n and rest == b * 2
    coef, rest = pack.linear((c + 1) * n, "c")
    assert coef == n and rest == n
    assert pack.linear(c * c, "c") is None
    assert pack.linear(L.Cast(L.Var("c", "int32"), L.INDEX) * n, "c") is None
