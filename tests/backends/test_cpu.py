"""The LLVM CPU backend (target "cpu"): differential tests, codegen semantics, threads, caches.

Oracles: numpy.einsum in float64 and the loop-IR reference interpreter (target
"interp") on the same small inputs. Every test runs with its own disk-cache
directory (a tmp dir), so nothing here reads or writes ~/.cache.
"""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import sparsec as sc
from sparsec import BackendError, Tensor, api, runtime
from sparsec.backends import cpu
from sparsec.backends.cpu import cache, jit
from sparsec.ir import loop_ir as L
from sparsec.ir.interp import run_kernel

REPO = Path(sc.__file__).resolve().parent.parent
SEED = 20240611


@pytest.fixture(autouse=True, scope="module")
def _private_cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARSEC_CACHE_DIR", str(tmp_path_factory.mktemp("sparsec_cache")))
        yield


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty disk cache and an empty in-memory cache for this test."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path / "cache"))
    cpu.clear_memory_cache()
    yield tmp_path / "cache"
    cpu.clear_memory_cache()


# ------------------------------------------------------------------------------------- helpers
def matrix(rng, m, n, dtype="float64", density=0.35, zero=False):
    """Random m x n values, at most 2 nonzeros per aligned block of 4 columns (so nm(2,4) holds it),
    with an empty row and an empty column when the matrix is big enough."""
    if zero or m == 0 or n == 0:
        return np.zeros((m, n), dtype=dtype)
    if np.issubdtype(np.dtype(dtype), np.integer):
        vals = rng.integers(-4, 5, size=(m, n)).astype(float)
    else:
        vals = rng.uniform(-1, 1, size=(m, n))
    mask = rng.random((m, n)) < density
    for b in range(0, n, 4):
        blk = mask[:, b:b + 4]
        extra = np.cumsum(blk, axis=1) > 2
        blk[extra] = False
    if m > 2:
        mask[m // 2] = False
    if n > 2:
        mask[:, n // 3] = False
    return np.where(mask, vals, 0).astype(dtype)


def dense(x):
    if isinstance(x, Tensor):
        return x.to_numpy()
    return np.asarray(x)


def tol(dtype):
    return {"float64": 1e-12, "float32": 1e-5, "float16": 2e-2}.get(str(np.dtype(dtype)), 0)


def assert_close(got, ref, dtype):
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    t = tol(dtype)
    scale = max(1.0, float(np.abs(ref[np.isfinite(ref)]).max())) if np.isfinite(ref).any() else 1.0
    np.testing.assert_allclose(got, ref, rtol=t, atol=t * scale * max(1, max(ref.shape or (1,))), equal_nan=True)


def einsum3(sub, operands, out_format=None):
    """(cpu result, interp result, numpy float64 reference), all dense."""
    got = api.einsum(sub, *operands, out_format=out_format, target="cpu")
    ref_interp = api.einsum(sub, *operands, out_format=out_format, target="interp")
    if out_format is not None:
        assert isinstance(got, Tensor)
        got.validate()
    ref = np.einsum(sub, *[dense(o).astype(np.float64) for o in operands])
    return dense(got), dense(ref_interp), ref


SHAPES = [(0, 0), (1, 9), (9, 1), (6, 8, "zero"), (13, 10), (17, 23)]


def shapes():
    for s in SHAPES:
        yield s[0], s[1], len(s) > 2


# ------------------------------------------------------------------------------------- differential
SPMV_FORMATS = ["dense", "csr", "csc", "coo", "dcsr", "bsr(2,2)", "ell", "nm(2,4)"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("fmt", SPMV_FORMATS)
def test_spmv_formats(fmt, dtype):
    rng = np.random.default_rng(SEED)
    for m, n, zero in shapes():
        A = matrix(rng, m, n, dtype, zero=zero)
        x = rng.uniform(-1, 1, n).astype(dtype)
        got, interp, ref = einsum3("ij,j->i", [Tensor.from_numpy(A, format=fmt), x])
        assert_close(got, ref, dtype)
        assert_close(got, interp, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
def test_spmm(dtype):
    rng = np.random.default_rng(SEED + 1)
    for m, n, zero in shapes():
        A = matrix(rng, m, n, dtype, zero=zero)
        B = matrix(rng, n, 5, dtype, density=1.0)
        got, interp, ref = einsum3("ik,kj->ij", [Tensor.from_numpy(A, format="csr"), B])
        assert_close(got, ref, dtype)
        assert_close(got, interp, dtype)
        if dtype == "int64":
            assert np.array_equal(got, ref.astype(np.int64))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sddmm(dtype):
    rng = np.random.default_rng(SEED + 2)
    for m, n, zero in shapes():
        S = matrix(rng, m, n, dtype, zero=zero)
        U = rng.uniform(-1, 1, (m, 3)).astype(dtype)
        V = rng.uniform(-1, 1, (3, n)).astype(dtype)
        got, interp, ref = einsum3("ij,ik,kj->ij", [Tensor.from_numpy(S, format="csr"), U, V], out_format="csr")
        assert_close(got, ref, dtype)
        assert_close(got, interp, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
@pytest.mark.parametrize("op,fa,fb", [("add", "csr", "csr"), ("mul", "csr", "csc")])
def test_sparse_elementwise(op, fa, fb, dtype):
    rng = np.random.default_rng(SEED + 3)
    stmt = f"C[i,j] = A[i,j] {'+' if op == 'add' else '*'} B[i,j]"
    for m, n, zero in shapes():
        A = matrix(rng, m, n, dtype, zero=zero)
        B = matrix(rng, m, n, dtype, density=0.5)
        ops = {"A": Tensor.from_numpy(A, format=fa), "B": Tensor.from_numpy(B, format=fb)}
        res = {}
        for target in ("cpu", "interp"):
            k = api.compile(stmt, formats={"A": fa, "B": fb}, out_format="csr", dtype=dtype, target=target)
            out = k(**ops)
            assert isinstance(out, Tensor) and out.format.levels == sc.parse_format("csr", 2).levels
            out.validate()
            res[target] = out.to_numpy()
        ref = A.astype(np.float64) + B if op == "add" else A.astype(np.float64) * B
        assert_close(res["cpu"], ref, dtype)
        assert_close(res["cpu"], res["interp"], dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_spgemm(dtype):
    rng = np.random.default_rng(SEED + 4)
    for m, n, zero in shapes():
        A = matrix(rng, m, n, dtype, zero=zero)
        B = matrix(rng, n, 7, dtype, density=0.4)
        got, interp, ref = einsum3("ik,kj->ij", [Tensor.from_numpy(A, format="csr"),
                                                 Tensor.from_numpy(B, format="csr")], out_format="csr")
        assert_close(got, ref, dtype)
        assert_close(got, interp, dtype)


def _spgemm_rows(rng, row_lengths: list[int], n: int):
    """A (dense rows x K) and B (scipy CSR, K x n) whose product's row r has ``row_lengths[r]`` products."""
    import scipy.sparse as sps

    K = max(row_lengths + [1])
    cols = np.stack([rng.choice(n, 2, replace=False) for _ in range(K)])   # 2 columns per row of B
    B = sps.csr_matrix((rng.standard_normal(2 * K), cols.reshape(-1), np.arange(0, 2 * K + 1, 2)), shape=(K, n))
    A = np.zeros((len(row_lengths), K))
    for r, length in enumerate(row_lengths):
        A[r, rng.choice(K, length, replace=False)] = rng.standard_normal(length)
    return A, B


@pytest.mark.parametrize("target", ["cpu", "interp", "triton"])
@pytest.mark.parametrize("n", [3000, 70000])
def test_spgemm_row_emission_paths(target, n):
    # Each output row leaves the dense workspace in column order by one of three paths, chosen per
    # row from its length c (touched columns) and the column count n: insertion sort (c <= 48), radix
    # sort (8 bits a pass: 2 passes for n = 3000, 3 for n = 70000), or a scan of the workspace
    # (n < 8 c + 512: the row of 340 products and ~600 columns at n = 3000). Rows of 0, 1, 48, 49,
    # 200 and 340 products; max[k] also counts the terms per column (its implicit zeros).
    if target == "triton":
        pytest.importorskip("triton")
        pytest.importorskip("torch")
    rng = np.random.default_rng(SEED + 41)
    A, B = _spgemm_rows(rng, [0, 1, 48, 49, 200, 340], n)
    ops = dict(A=Tensor.from_numpy(A, format="csr"), B=Tensor.from_scipy(B, format="csr"))
    k = api.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, target=target)
    out = k(**ops)
    out.validate()   # sorted, unique columns per row
    np.testing.assert_allclose(out.to_scipy().toarray(), (B.T @ A.T).T, rtol=1e-12, atol=1e-12)
    if n == 3000:
        mk = api.compile("C[i,j] = max[k](A[i,k] * B[k,j])", formats={"A": "csr", "B": "csr", "C": "csr"},
                         target=target)
        got = mk(**ops)
        got.validate()
        np.testing.assert_array_equal(got.to_numpy(), np.max(A[:, :, None] * B.toarray()[None, :, :], axis=1))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("fmt", ["csr", "dense"])
@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_reductions(op, fmt, dtype):
    rng = np.random.default_rng(SEED + 5)
    ref_fn = np.max if op == "max" else np.min
    for m, n, zero in shapes():
        A = matrix(rng, m, n, dtype, zero=zero)
        k_cpu = api.compile(f"y[i] = {op}[j](A[i,j])", formats={"A": fmt}, dtype=dtype, target="cpu")
        k_int = api.compile(f"y[i] = {op}[j](A[i,j])", formats={"A": fmt}, dtype=dtype, target="interp")
        T = Tensor.from_numpy(A, format=fmt)
        got, interp = k_cpu(A=T), k_int(A=T)
        np.testing.assert_array_equal(got, interp)
        if n:
            np.testing.assert_array_equal(got, ref_fn(A, axis=1))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exp_where(dtype):
    rng = np.random.default_rng(SEED + 6)
    stmt = "C[i,j] = where(A[i,j] > 0.25, exp(A[i,j]), B[i,j] * 2)"
    for m, n, zero in shapes():
        A = matrix(rng, m, n, dtype, zero=zero)
        B = rng.uniform(-1, 1, (m, n)).astype(dtype)
        res = {}
        for target in ("cpu", "interp"):
            k = api.compile(stmt, formats={"A": "csr"}, dtype=dtype, target=target)
            res[target] = k(A=Tensor.from_numpy(A, format="csr"), B=B)
        ref = np.where(A > 0.25, np.exp(A.astype(np.float64)), B * 2.0)
        assert_close(res["cpu"], ref, dtype)
        assert_close(res["cpu"], res["interp"], dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ttv_csf(dtype):
    rng = np.random.default_rng(SEED + 7)
    for shape in [(0, 0, 0), (1, 1, 5), (4, 5, 6), (7, 3, 9)]:
        T = (rng.uniform(-1, 1, shape) * (rng.random(shape) < 0.3)).astype(dtype)
        v = rng.uniform(-1, 1, shape[2]).astype(dtype)
        got, interp, ref = einsum3("ijk,k->ij", [Tensor.from_numpy(T, format="csf"), v])
        assert_close(got, ref, dtype)
        assert_close(got, interp, dtype)


def test_float16_spmv_and_unsupported_dtypes():
    rng = np.random.default_rng(SEED + 8)
    A = matrix(rng, 9, 12, "float16")
    x = rng.uniform(-1, 1, 12).astype(np.float16)
    got, interp, ref = einsum3("ij,j->i", [Tensor.from_numpy(A, format="csr"), x])
    assert got.dtype == np.float16
    assert_close(got, ref, "float16")
    assert_close(got, interp, "float16")
    for dt in ("bfloat16", "uint8"):
        i = L.Var("i")
        k = L.Kernel("bad_dtype", (L.BufferParam("a", dt), L.ScalarParam("n")),
                     L.Block((L.For(i, L.const(0), L.Var("n"), L.Block((L.Store("a", i, L.const(1, dt)),))),)))
        with pytest.raises(BackendError, match=dt):
            cpu.CPUBackend().compile(k)


# ------------------------------------------------------------------------------------- NaN / Inf
def test_nan_inf_propagation_matches_interpreter():
    A = np.array([[0.5, np.nan, 0.0, -2.0],
                  [0.0, 0.0, 0.0, 0.0],
                  [-1.0, -3.0, 0.0, 0.0],
                  [np.inf, 1.0, 0.0, np.nan],
                  [-np.inf, 0.0, -1.0, 0.0],
                  [np.nan, 0.0, 0.0, 0.0]])
    for fmt in ("csr", "dense", "coo"):
        T = Tensor.from_numpy(A, format=fmt)
        for op, np_fn in (("max", np.max), ("min", np.min)):
            stmt = f"y[i] = {op}[j](A[i,j])"
            got = api.compile(stmt, formats={"A": fmt}, target="cpu")(A=T)
            want = api.compile(stmt, formats={"A": fmt}, target="interp")(A=T)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got, np_fn(A, axis=1))
    E = np.array([[1000.0, -1000.0, 0.0, 709.0, 710.0, np.nan, np.inf, -np.inf]])
    for dt in ("float64", "float32"):
        got = api.compile("C[i,j] = exp(A[i,j])", dtype=dt, target="cpu")(A=E.astype(dt))
        want = api.compile("C[i,j] = exp(A[i,j])", dtype=dt, target="interp")(A=E.astype(dt))
        with np.errstate(over="ignore"):
            ref = np.exp(E.astype(dt))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_allclose(got, want, rtol=tol(dt), equal_nan=True)
    # 0 * inf and inf - inf inside a vectorized (reassociated) reduction still give NaN
    x = np.array([0.0, 1.0, 1.0, 1.0])
    got = api.einsum("ij,j->i", Tensor.from_numpy(A, format="csr"), x, target="cpu")
    want = api.einsum("ij,j->i", Tensor.from_numpy(A, format="csr"), x, target="interp")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


def test_float_max_min_nan_either_side():
    a = np.array([np.nan, 1.0, np.nan, -np.inf, 2.0, 3.0, np.inf])
    b = np.array([1.0, np.nan, np.nan, 0.0, np.inf, -1.0, np.nan])
    for op in ("max", "min"):
        k = _elementwise(f"nan_{op}", ["float64", "float64"], "float64", lambda x, y: L.BinOp(op, x, y, "float64"))
        got, want = _run_both(k, {"a0": a, "a1": b}, len(a))
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, np.maximum(a, b) if op == "max" else np.minimum(a, b))


# ------------------------------------------------------------------------------------- codegen semantics
def _elementwise(name, in_dtypes, out_dtype, fn):
    """out[i] = fn(a0[i], a1[i], ...) for i in [0, n)."""
    i, n = L.Var("i"), L.Var("n")
    params = [L.BufferParam(f"a{k}", dt) for k, dt in enumerate(in_dtypes)]
    params += [L.BufferParam("out", out_dtype, "out"), L.ScalarParam("n")]
    loads = [L.Load(f"a{k}", i, dt) for k, dt in enumerate(in_dtypes)]
    body = L.Block((L.For(i, L.const(0), n, L.Block((L.Store("out", i, fn(*loads)),))),))
    return L.Kernel(name, tuple(params), body)


_NP = {"bool": np.bool_, "index": np.int64}


def _run_both(kernel, inputs, n, out_len=None, scalars=None):
    """Run on the cpu backend and the interpreter; return both outputs."""
    out_dt = _NP.get(kernel.buffer("out").dtype, kernel.buffer("out").dtype)
    outs = []
    for run in (cpu.CPUBackend().compile(kernel), lambda b, s: run_kernel(kernel, b, s)):
        bufs = {k: np.array(v) for k, v in inputs.items()}
        bufs["out"] = np.zeros(out_len or n, dtype=out_dt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            run(bufs, {"n": n, **(scalars or {})})
        outs.append(bufs["out"])
    return outs


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "index"])
def test_integer_ops_match_interpreter(dtype):
    rng = np.random.default_rng(SEED + 9)
    store = "int64" if dtype == "index" else dtype
    info = np.iinfo(np.dtype(store))
    # |a| < 2**52: the interpreter computes C division as int(a / b) in float64
    lim = min(info.max // 2, 1 << 52)
    a = rng.integers(-lim, lim, 64, dtype=np.int64)
    b = rng.integers(-9, 10, 64, dtype=np.int64)
    b[b == 0] = 3
    a[:4], b[:4] = [7, -7, 7, -7], [2, 2, -2, -2]
    if store != "int64":  # exercise wrap-around of narrow integers
        a[4:8], b[4:8] = info.max, 1
    for op in ("add", "sub", "mul", "div", "floordiv", "mod", "max", "min"):
        k = _elementwise(f"int_{op}_{dtype}", [store, store], store,
                         lambda x, y: L.BinOp(op, L.Cast(x, dtype), L.Cast(y, dtype), dtype))
        got, want = _run_both(k, {"a0": a.astype(store), "a1": b.astype(store)}, len(a))
        np.testing.assert_array_equal(got, want, err_msg=f"{op} {dtype}")
    for op in ("neg", "abs"):
        k = _elementwise(f"int_{op}_{dtype}", [store], store, lambda x: L.UnOp(op, L.Cast(x, dtype), dtype))
        got, want = _run_both(k, {"a0": a.astype(store)}, len(a))
        np.testing.assert_array_equal(got, want, err_msg=f"{op} {dtype}")


def test_integer_division_by_zero_and_overflow_do_not_crash():
    a = np.array([7, -7, 0, np.iinfo(np.int64).min, np.iinfo(np.int64).min], dtype=np.int64)
    b = np.array([0, 0, 0, -1, 1], dtype=np.int64)
    for op in ("div", "floordiv", "mod"):
        k = _elementwise(f"zdiv_{op}", ["int64", "int64"], "int64", lambda x, y: L.BinOp(op, x, y, "int64"))
        ck = cpu.CPUBackend().compile(k)
        out = np.full(len(a), 99, dtype=np.int64)
        ck({"a0": a, "a1": b, "out": out}, {"n": len(a)})
        assert list(out[:3]) == [0, 0, 0]  # numpy's answer for a zero divisor
        assert out[3] == (0 if op == "mod" else np.iinfo(np.int64).min)  # INT_MIN / -1 wraps
        assert out[4] == (0 if op == "mod" else np.iinfo(np.int64).min)


def test_casts_and_bool_storage():
    f = np.array([2.7, -2.7, 0.0, -0.0, 1e-300, np.nan, 126.9, -0.5])
    for dt in ("int8", "int32", "int64", "index"):
        store = "int64" if dt == "index" else dt
        k = _elementwise(f"cast_f_{dt}", ["float64"], store, lambda x: L.Cast(L.Cast(x, dt), store))
        got, want = _run_both(k, {"a0": f[[0, 1, 2, 3, 4, 6, 7]]}, 7)
        np.testing.assert_array_equal(got, want)
    k = _elementwise("cast_f_bool", ["float64"], "bool", lambda x: L.Cast(x, "bool"))
    got, want = _run_both(k, {"a0": f}, len(f))
    np.testing.assert_array_equal(got, want)
    assert list(got) == [True, True, False, False, True, True, True, True]
    ints = np.array([0, 1, -3, 255], dtype=np.int32)
    k = _elementwise("cast_i_bool_f", ["int32"], "float32", lambda x: L.BinOp(
        "add", L.Cast(L.Cast(x, "bool"), "float32"), L.Cast(x, "float32"), "float32"))
    got, want = _run_both(k, {"a0": ints}, 4)
    np.testing.assert_array_equal(got, want)
    flags = np.array([True, False, True, False])
    k = _elementwise("bool_logic", ["bool", "bool"], "bool", lambda x, y: L.BinOp(
        "or", L.BinOp("and", x, L.UnOp("not", y, "bool"), "bool"), L.BinOp("eq", x, y, "bool"), "bool"))
    got, want = _run_both(k, {"a0": flags, "a1": np.array([True, True, False, False])}, 4)
    np.testing.assert_array_equal(got, want)


def test_float_comparisons_with_nan_and_select():
    a = np.array([1.0, np.nan, 2.0, np.nan, -1.0])
    b = np.array([1.0, 1.0, np.nan, np.nan, 3.0])
    for op in L.CMP_OPS:
        k = _elementwise(f"cmp_{op}", ["float64", "float64"], "bool", lambda x, y: L.BinOp(op, x, y, "bool"))
        got, want = _run_both(k, {"a0": a, "a1": b}, len(a))
        np.testing.assert_array_equal(got, want, err_msg=op)
    k = _elementwise("sel", ["float64", "float64"], "float64", lambda x, y: L.Select(
        L.BinOp("lt", x, y, "bool"), L.UnOp("sqrt", L.UnOp("abs", x, "float64"), "float64"),
        L.UnOp("neg", L.UnOp("log", L.UnOp("abs", y, "float64"), "float64"), "float64"), "float64"))
    got, want = _run_both(k, {"a0": a, "a1": b}, len(a))
    np.testing.assert_allclose(got, want, equal_nan=True, rtol=1e-15)


def test_while_locals_and_loop_variable_after_loop():
    # out[0] = last loop value, out[1] = a while-loop count, out[2] = reassigned scalar param
    i, n, u, s = L.Var("i"), L.Var("n"), L.Var("u"), L.Var("s")
    body = L.Block((
        L.Assign(s, L.const(0)),
        L.Assign(i, L.const(-1)),
        L.For(i, L.const(2), n, L.Block((L.Assign(s, s + i),))),
        L.Store("out", L.const(0), i),
        L.Assign(u, n),
        L.While(L.BinOp("gt", u, L.const(0), "bool"), L.Block((L.Assign(u, u - 3),))),
        L.Store("out", L.const(1), u),
        L.Assign(n, n * 2),
        L.Store("out", L.const(2), n + s),
    ))
    k = L.Kernel("locals", (L.BufferParam("out", "int64", "out"), L.ScalarParam("n")), body)
    for nv in (0, 1, 5, 11):
        got, want = _run_both(k, {}, nv, out_len=3)
        np.testing.assert_array_equal(got, want)


_GUARD_SCRIPT = textwrap.dedent("""
    import ctypes, mmap, sys
    import numpy as np
    from sparsec.ir import loop_ir as L
    from sparsec.backends.cpu import CPUBackend
    page = mmap.PAGESIZE
    m = mmap.mmap(-1, 2 * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(base + page), ctypes.c_size_t(page), 0) == 0  # PROT_NONE
    n = page // 8
    buf = np.frombuffer(m, dtype=np.float64, count=n)  # buf[n] would fault
    buf[:] = 1.0
    i, N = L.Var("i"), L.Var("n")
    inb = L.BinOp("lt", i, N, "bool")
    pos = L.BinOp("gt", L.Load("buf", i, "float64"), L.const(0.0, "float64"), "bool")
    notpos = L.BinOp("le", L.Load("buf", i, "float64"), L.const(0.0, "float64"), "bool")
    one = L.Store("cnt", L.const(0), L.const(1, "int64"), "add")
    body = L.Block((
        # i runs one past the end: the load may only run when i < n holds
        L.For(i, L.const(0), N + 1, L.Block((L.If(L.BinOp("and", inb, pos, "bool"), L.Block((one,))),))),
        L.For(i, L.const(0), N + 1, L.Block((
            L.If(L.BinOp("or", L.UnOp("not", inb, "bool"), notpos, "bool"), L.Block(()), L.Block((one,))),))),
    ))
    k = L.Kernel("guarded", (L.BufferParam("buf", "float64"), L.BufferParam("cnt", "int64", "out"),
                             L.ScalarParam("n")), body)
    cnt = np.zeros(1, dtype=np.int64)
    CPUBackend().compile(k)({"buf": buf, "cnt": cnt}, {"n": n})
    print("count", int(cnt[0]), 2 * n)
""")


def _subprocess_env(cache_dir):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["SPARSEC_CACHE_DIR"] = str(cache_dir)
    return env


def test_short_circuit_never_speculates_the_guarded_load(tmp_path):
    # The guarded buffer ends right before a PROT_NONE page: a speculated load segfaults.
    r = subprocess.run([sys.executable, "-c", _GUARD_SCRIPT], env=_subprocess_env(tmp_path), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    _, got, want = r.stdout.split()
    assert got == want


def test_atomic_reducing_stores_from_threads():
    rng = np.random.default_rng(SEED + 10)
    n, bins = 20000, 37
    idx = rng.integers(0, bins, n).astype(np.int32)
    for dt, op in (("float64", "add"), ("int64", "add"), ("float64", "max"), ("int32", "min"), ("float32", "max")):
        vals = (rng.uniform(-100, 100, n) if dt.startswith("float") else rng.integers(-1000, 1000, n)).astype(dt)
        p = L.Var("p")
        kind = L.LoopKind("parallel", atomic=True)
        body = L.Block((L.For(p, L.Var("sc_lo"), L.Var("sc_hi"), L.Block((
            L.Store("out", L.Cast(L.Load("idx", p, "int32"), "index"), L.Load("vals", p, dt), op),)), kind),))
        k = L.Kernel(f"atomic_{op}_{dt}", (L.BufferParam("idx", "int32"), L.BufferParam("vals", dt),
                                         L.BufferParam("out", dt, "out"), L.ScalarParam("sc_lo"),
                                         L.ScalarParam("sc_hi")), body)
        assert "atomicrmw" in cpu.CPUBackend().compile(k).dump("llvm") or op != "add"
        ck = cpu.CPUBackend().compile(k)
        init = {"add": 0, "max": -np.inf if dt.startswith("float") else np.iinfo(dt).min,
                "min": np.inf if dt.startswith("float") else np.iinfo(dt).max}[op]
        out = np.full(bins, init, dtype=dt)
        chunks = runtime.chunk_bounds(0, n, 8, None)
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda c: ck({"idx": idx, "vals": vals, "out": out}, {"sc_lo": c[0], "sc_hi": c[1]}),
                        chunks))
        want = np.full(bins, init, dtype=dt)
        {"add": np.add, "max": np.maximum, "min": np.minimum}[op].at(want, idx, vals)
        if dt.startswith("float") and op == "add":
            np.testing.assert_allclose(out, want, rtol=1e-9)
        else:
            np.testing.assert_array_equal(out, want)


# ------------------------------------------------------------------------------------- vectorization
@pytest.mark.parametrize("dtype,elem", [("float64", "double"), ("float32", "float")])
def test_spmm_inner_loop_vectorizes(dtype, elem):
    k = api.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype=dtype, target="cpu")
    ir_text = k.dump("llvm")
    vec = rf"<(\d+) x {elem}>"
    widths = {int(w) for w in re.findall(vec, ir_text)}
    assert widths and max(widths) >= 2, "no vector type in the optimized IR"
    assert re.search(rf"load {vec}", ir_text), "no vector load"
    assert re.search(rf"store {vec}", ir_text), "no vector store"
    assert re.search(rf"(fmul|fadd)[a-z ]* {vec}|@llvm\.fmuladd\.v\d+f|@llvm\.fma\.v\d+f", ir_text), \
        "no vector arithmetic"
    asm = k.dump("asm")
    if jit.host().triple.startswith("x86_64"):
        assert re.search(r"%[yz]mm\d+", asm) or re.search(r"v(mul|add|fmadd)\w*p[sd]\s.*%xmm", asm)


def test_reductions_carry_reassoc_but_never_nnan():
    k = api.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu")
    ir_text = k.dump("llvm")
    assert "reassoc" in ir_text and "contract" in ir_text
    assert not re.search(r"\b(nnan|ninf|fast)\b", ir_text)


# ------------------------------------------------------------------------------------- threads
def _big_csr(rng, m, n, per_row, dtype="float64"):
    import scipy.sparse as sp
    nnz = m * per_row
    rows = rng.integers(0, m, nnz)
    cols = rng.integers(0, n, nnz)
    A = sp.csr_matrix((rng.uniform(-1, 1, nnz).astype(dtype), (rows, cols)), shape=(m, n))
    A.sum_duplicates()
    return A


class _ChunkRecorder:
    """Records (sc_lo, sc_hi, thread) of every CPUKernel call, however the host reaches the kernel."""

    def __init__(self, monkeypatch):
        self.seen: list[tuple] = []
        original = cpu.CPUKernel.__call__
        lock = threading.Lock()

        def recording(ck, buffers, scalars):
            if "sc_lo" in scalars:
                with lock:
                    self.seen.append((ck.kernel.name, scalars["sc_lo"], scalars["sc_hi"], threading.get_ident()))
            return original(ck, buffers, scalars)

        monkeypatch.setattr(cpu.CPUKernel, "__call__", recording)
        # the fast call path runs chunks on the native team (sparsec.backends.cpu.team): one row of
        # scalars per chunk, claimed by whichever thread is free
        from sparsec.backends.cpu import team

        native = team.NativeTeam.run

        def recording_native(tm, packed, arrays, sig, rows, nthreads, address=None):
            # zero_then chunks carry the kernel's packed entry and the zeroed slice in front of its scalars
            kernel_packed, skip = (int(rows[0, 0]), team.ZERO_WORDS) if packed == tm.zero_then and len(rows) \
                else (packed, 0)
            ck = next((k for k in _live_kernels() if k.packed_entry == kernel_packed), None)
            names = ck.scalar_names if ck is not None else ()
            if "sc_lo" in names:
                lo, hi = names.index("sc_lo") + skip, names.index("sc_hi") + skip
                with lock:
                    self.seen.extend((ck.kernel.name, int(r[lo]), int(r[hi]), "native") for r in rows)
            return native(tm, packed, arrays, sig, rows, nthreads, address)

        monkeypatch.setattr(team.NativeTeam, "run", recording_native)


def _live_kernels():
    import gc

    return [o for o in gc.get_objects() if isinstance(o, cpu.CPUKernel)]


def test_one_vs_two_threads_identical(monkeypatch):
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 32768)  # split these mid-sized inputs
    rng = np.random.default_rng(SEED + 11)
    A = _big_csr(rng, 40000, 3000, 3)
    T = Tensor.from_scipy(A, format="csr")
    x = rng.uniform(-1, 1, 3000)
    B = rng.uniform(-1, 1, (3000, 4))
    A2 = _big_csr(rng, 40000, 3000, 2)
    T2 = Tensor.from_scipy(A2, format="csr")
    Bs = Tensor.from_scipy(_big_csr(rng, 3000, 500, 2), format="csr")
    kernels = {
        "spmv": (api.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu"), {"A": T, "x": x}),
        "spmm": (api.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, target="cpu"), {"A": T, "B": B}),
        "rowmax": (api.compile("y[i] = max[j](A[i,j])", formats={"A": "csr"}, target="cpu"), {"A": T}),
        "add": (api.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr"}, out_format="csr",
                            target="cpu"), {"A": T, "B": T2}),
        "spgemm": (api.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr"}, out_format="csr",
                               target="cpu"), {"A": T, "B": Bs}),
    }
    rec = _ChunkRecorder(monkeypatch)
    try:
        for name, (k, ops) in kernels.items():
            res = {}
            for nt in (1, 2):
                runtime.set_num_threads(nt)
                rec.seen.clear()
                out = k(**ops)
                # the numeric kernel (SpGEMM's: the one-pass kernel, see test_one_pass_workspace_rows)
                chunks = {c[:3] for c in rec.seen if c[0] in ("kernel", "kernel_one_pass")}
                if nt == 2:
                    assert len(chunks) >= 2, f"{name}: not split ({rec.seen})"
                res[nt] = out
            if isinstance(res[1], Tensor):
                for lv1, lv2 in zip(res[1].levels, res[2].levels):
                    for part in lv1:
                        assert np.array_equal(lv1[part], lv2[part]), name
                assert np.array_equal(res[1].values, res[2].values), name
            else:
                assert np.array_equal(res[1], res[2]), name  # bitwise, row-parallel
        ref = A @ x
        np.testing.assert_allclose(kernels["spmv"][0](**kernels["spmv"][1]), ref, rtol=1e-12, atol=1e-12)
    finally:
        runtime.set_num_threads(None)


@pytest.mark.parametrize("dtype,base", [("int32", 0), ("int64", 0), ("int64", 3 << 31)])
def test_chunk_bounds_balance_nonzeros(dtype, base):
    """Cuts of a pos array (any width, any sub-range) at the first row reaching each equal share of nonzeros."""
    rng = np.random.default_rng(SEED + 14)
    lengths = rng.integers(0, 30, 5000) * (rng.uniform(size=5000) < 0.7)  # many empty rows
    pos = (base + np.concatenate([[0], np.cumsum(lengths)])).astype(dtype)
    for lo, hi, n in ((0, 5000, 8), (17, 4000, 3), (100, 101, 4), (0, 5000, 1), (2500, 2510, 64)):
        chunks = runtime.chunk_bounds(lo, hi, n, pos)
        assert chunks[0][0] == lo and chunks[-1][1] == hi and len(chunks) <= n
        assert all(a < b for a, b in chunks) and all(b == c for (_, b), (c, _) in zip(chunks, chunks[1:]))
        first, last, n = int(pos[lo]), int(pos[hi]), min(n, hi - lo)
        targets = [first + (last - first) * c // n for c in range(1, n)]
        want = sorted({lo, hi} | {lo + int(np.searchsorted(pos[lo: hi + 1].astype(np.int64), t)) for t in targets})
        assert [a for a, _ in chunks] + [hi] == want


#: native teams made by tests: their workers never exit and read the team's state, so it stays alive
_TEAMS: list = []


def _spmv_chunks(rng, nchunks):
    """A compiled CSR SpMV kernel, its arrays tuple and ``sig`` array, and one row of scalars per chunk."""
    import scipy.sparse as sp

    A = sp.random(3000, 500, density=0.02, format="csr", random_state=int(rng.integers(1 << 30)))
    x = rng.uniform(-1, 1, 500)
    k = api.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu")
    ck = k._runner.runners[0].numeric
    y = np.zeros(3000)
    given = {"A_pos1": A.indptr, "A_crd1": A.indices, "A_vals": A.data, "x_vals": x, "y_vals": y}
    arrays = tuple(given[p.name] for p in ck.buffer_params)
    sig = ck.signature()
    cuts = runtime.chunk_bounds(0, 3000, nchunks, A.indptr)
    extents = {"n_i": 3000, "n_j": 500}
    rows = np.array([[lo if n == "sc_lo" else hi if n == "sc_hi" else extents[n] for n in ck.scalar_names]
                     for lo, hi in cuts], dtype=np.int64)
    return ck, arrays, sig, rows, y, A @ x


def test_native_team_wakes_sleeping_workers(monkeypatch):
    """Workers that sleep on the futex after every task (no spinning) are woken for each call."""
    from sparsec.backends.cpu import team

    if not team.available() or not cpu.kernel.fast_path_available():
        pytest.skip("no native thread team on this platform")
    assert team.team(1)._state[team.SPIN_TICKS] > 0  # the process's team spins a while
    monkeypatch.setattr(team, "SPIN_US", 0)
    tm = team.NativeTeam(1)
    _TEAMS.append(tm)
    assert tm._state[team.SPIN_TICKS] == 0
    ck, arrays, sig, rows, y, want = _spmv_chunks(np.random.default_rng(SEED + 13), 16)
    for _ in range(20):
        for _ in range(5000):  # until the worker sleeps (it does so at once)
            if tm._state[team.SLEEPERS] == 1:
                break
            threading.Event().wait(0.001)
        assert tm._state[team.SLEEPERS] == 1
        y[:] = np.nan
        assert tm.run(ck.packed_entry, arrays, sig.ctypes.data, rows, 2) == 0
        np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


def test_same_kernel_called_from_many_threads():
    k = _elementwise("mt_axpy", ["float64", "float64"], "float64", lambda a, b: L.BinOp(
        "add", L.BinOp("mul", a, L.const(3.0, "float64"), "float64"), b, "float64"))
    ck = cpu.CPUBackend().compile(k)
    rng = np.random.default_rng(SEED + 12)

    def work(seed):
        r = np.random.default_rng(seed)
        a, b = r.uniform(-1, 1, 5000), r.uniform(-1, 1, 5000)
        want = np.empty(5000)
        ck({"a0": a, "a1": b, "out": want}, {"n": 5000})
        np.testing.assert_allclose(want, a * 3.0 + b, rtol=1e-15)  # an FMA may round once
        out = np.empty(5000)
        for _ in range(50):
            out[:] = 0
            ck({"a0": a, "a1": b, "out": out}, {"n": 5000})
            if not np.array_equal(out, want):
                return False
        return True

    with ThreadPoolExecutor(8) as ex:
        assert all(ex.map(work, rng.integers(0, 1 << 30, 16)))


# ------------------------------------------------------------------------------------- call path
def _axpy_kernel(name="call_axpy"):
    return _elementwise(name, ["float64", "float64"], "float64",
                        lambda a, b: L.BinOp("add", a, b, "float64"))


def test_call_path_checks_and_fallbacks():
    ck = cpu.CPUBackend().compile(_axpy_kernel())
    a, b = np.arange(6.0), np.ones(6)
    out = np.zeros(6)
    ck({"a0": a, "a1": b, "out": out}, {"n": 6})
    assert list(out) == [1, 2, 3, 4, 5, 6]
    # numpy integer scalar, strided input (copied by the checked path), equal-but-not-identical dtype object
    out[:] = 0
    big = np.arange(12.0)
    ck({"a0": big[::2], "a1": np.array(b, dtype=np.dtype("<f8")), "out": out}, {"n": np.int64(6)})
    assert list(out) == list(big[::2] + 1)
    with pytest.raises(BackendError, match="missing buffer 'a1'"):
        ck({"a0": a, "out": out}, {"n": 6})
    with pytest.raises(BackendError, match="missing scalar 'n'"):
        ck({"a0": a, "a1": b, "out": out}, {})
    with pytest.raises(BackendError, match="'a1' has dtype float32"):
        ck({"a0": a, "a1": b.astype(np.float32), "out": out}, {"n": 6})
    with pytest.raises(BackendError, match="'a0' must be a numpy array"):
        ck({"a0": [1.0] * 6, "a1": b, "out": out}, {"n": 6})
    with pytest.raises(BackendError, match="'a0' must be 1-D"):
        ck({"a0": a.reshape(2, 3), "a1": b, "out": out}, {"n": 6})
    ro = np.zeros(6)
    ro.flags.writeable = False
    with pytest.raises(BackendError, match="'out' is read-only"):
        ck({"a0": a, "a1": b, "out": ro}, {"n": 6})
    with pytest.raises(BackendError, match="output buffer 'out' must be contiguous"):
        ck({"a0": a, "a1": b, "out": np.zeros(12)[::2]}, {"n": 6})
    with pytest.raises(BackendError, match="scalar 'n'"):
        ck({"a0": a, "a1": b, "out": out}, {"n": 2.5})
    with pytest.raises(BackendError, match="64 bits"):
        ck({"a0": a, "a1": b, "out": out}, {"n": np.uint64(2**64 - 1)})
    with pytest.raises(ValueError, match="unknown stage"):
        ck.dump("ptx")


# ------------------------------------------------------------------------------------- caches
def _unique_kernel(tag):
    """A small kernel whose cache key is new to this process and cache dir."""
    return _elementwise(f"k_{tag}_{os.getpid()}", ["float64"], "float64",
                        lambda a: L.BinOp("mul", a, L.const(2.5, "float64"), "float64"))


def _check_unique(ck):
    a = np.arange(7.0)
    out = np.zeros(7)
    ck({"a0": a, "out": out}, {"n": 7})
    np.testing.assert_array_equal(out, a * 2.5)


_SECOND_PROCESS = textwrap.dedent("""
    import json
    import numpy as np
    import sparsec as sc
    from sparsec import api, Tensor
    from sparsec.backends import cpu
    A = np.zeros((5, 6)); A[0, 1] = 2.0; A[3, 5] = -1.5; A[4, 0] = 4.0
    k = api.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu")
    y = k(A=Tensor.from_numpy(A, format="csr"), x=np.arange(6.0))
    print(json.dumps({"stats": cpu.stats.snapshot(), "y": y.tolist(), "llvm": len(k.dump("llvm")),
                      "asm": len(k.dump("asm"))}))
""")


def test_second_process_loads_from_disk(tmp_path):
    env = _subprocess_env(tmp_path / "cache")
    runs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", _SECOND_PROCESS], env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["stats"]["compiles"] >= 1 and first["stats"]["disk_writes"] >= 1
    assert second["stats"]["compiles"] == 0, second
    assert second["stats"]["disk_hits"] >= 1, second
    assert first["y"] == second["y"] == [2.0, 0.0, 0.0, -7.5, 0.0]
    assert second["llvm"] > 0 and second["asm"] > 0
    assert list((tmp_path / "cache" / "cpu").glob("*.bin"))


def test_disk_hit_in_process_keeps_dumps(fresh_cache):
    k = _unique_kernel("dump")
    before = cpu.stats.snapshot()
    ck = cpu.CPUBackend().compile(k)
    llvm_text, asm_text = ck.dump("llvm"), ck.dump("asm")
    assert "define" in llvm_text and asm_text
    cpu.clear_memory_cache()
    ck2 = cpu.CPUBackend().compile(k)
    after = cpu.stats.snapshot()
    assert after["compiles"] - before["compiles"] == 1
    assert after["disk_hits"] - before["disk_hits"] == 1
    assert ck2.dump("llvm") == llvm_text and ck2.dump("asm") == asm_text
    _check_unique(ck2)
    ck3 = cpu.CPUBackend().compile(k)
    assert cpu.stats.snapshot()["memory_hits"] - after["memory_hits"] == 1
    _check_unique(ck3)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_cache_file_warns_and_recompiles(fresh_cache, damage):
    k = _unique_kernel(f"corrupt_{damage}")
    cpu.CPUBackend().compile(k)
    files = list((fresh_cache / "cpu").glob("*.bin"))
    assert len(files) == 1
    path = files[0]
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "garbage":
        data = bytearray(b"not a sparsec cache file" * 10)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    cpu.clear_memory_cache()
    before = cpu.stats.snapshot()
    with pytest.warns(RuntimeWarning, match=re.escape(path.name)):
        ck = cpu.CPUBackend().compile(k)
    after = cpu.stats.snapshot()
    assert after["compiles"] - before["compiles"] == 1
    assert after["corrupt_files"] - before["corrupt_files"] == 1
    _check_unique(ck)
    # the entry was rewritten: the next process-like lookup is a clean disk hit
    cpu.clear_memory_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ck = cpu.CPUBackend().compile(k)
    assert cpu.stats.snapshot()["disk_hits"] - after["disk_hits"] == 1
    _check_unique(ck)


def test_concurrent_compiles_of_one_kernel(fresh_cache):
    k = _unique_kernel("threads")
    before = cpu.stats.snapshot()
    barrier = threading.Barrier(8)

    def work(_):
        barrier.wait()
        ck = cpu.CPUBackend().compile(k)
        _check_unique(ck)
        return True

    with ThreadPoolExecutor(8) as ex:
        assert all(ex.map(work, range(8)))
    after = cpu.stats.snapshot()
    assert after["compiles"] - before["compiles"] == 1
    assert after["memory_hits"] - before["memory_hits"] == 7


def test_concurrent_disk_writers_leave_a_valid_file(fresh_cache):
    c = jit.Compiled(b"\x7fELF" + bytes(range(256)) * 40, "define void @f() { ret void }", "asm text")
    key = "ab" * 32
    with ThreadPoolExecutor(8) as ex:
        assert all(ex.map(lambda _: cache.disk_write(key, c), range(32)))
    assert cache.disk_read(key) == c
    assert not [p for p in (fresh_cache / "cpu").iterdir() if p.suffix == ".tmp"]


def test_cache_key_covers_kernel_and_host():
    h = jit.host()
    k1, k2 = _unique_kernel("key"), _unique_kernel("key")
    assert cache.kernel_key(k1, h) == cache.kernel_key(k2, h)
    k3 = _elementwise(k1.name, ["float32"], "float64", lambda a: L.BinOp(
        "mul", L.Cast(a, "float64"), L.const(2.5, "float64"), "float64"))
    assert cache.kernel_key(k3, h) != cache.kernel_key(k1, h)
    import dataclasses
    other = dataclasses.replace(h, features=h.features + ",-avx2")
    assert cache.kernel_key(k1, other) != cache.kernel_key(k1, h)


def test_cache_key_covers_the_code_generators_source(monkeypatch):
    """An edited code generator (same CODEGEN_VERSION) does not load what the previous one compiled."""
    h = jit.host()
    k1 = _unique_kernel("src")
    assert len(cache.source_digest()) == 64
    before = cache.kernel_key(k1, h)
    monkeypatch.setattr(cache, "_SOURCE_DIGEST", "0" * 64)
    assert cache.kernel_key(k1, h) != before


def test_source_digest_covers_every_module_codegen_imports():
    """Each sibling module the code generator imports shapes the generated code: its source is in the key."""
    from sparsec.backends.cpu import codegen

    src = Path(codegen.__file__).read_text()
    siblings = {name.strip() for line in re.findall(r"^from \. import (.+)$", src, re.M) for name in line.split(",")}
    assert siblings and {f"{n}.py" for n in siblings} | {"codegen.py"} <= set(cache._GENERATORS)


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path / "x"))
    assert cache.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("SPARSEC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "sparsec"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.cache_dir() == Path.home() / ".cache" / "sparsec"
    monkeypatch.setenv("SPARSEC_CACHE_DIR", "")
    assert cache.cache_dir() is None and cache.disk_read("00" * 32) is None


def test_memory_cache_is_bounded_and_unloads(fresh_cache, monkeypatch):
    monkeypatch.setattr(cpu, "_MEMORY", cache.LRU(capacity=3))
    jit.collect_retired()
    before = cpu.stats.snapshot()
    kept = cpu.CPUBackend().compile(_unique_kernel("lru0"))
    ref = weakref.ref(kept._loaded)
    trackers = [kept._loaded.tracker]
    for t in range(1, 6):
        ck = cpu.CPUBackend().compile(_unique_kernel(f"lru{t}"))
        trackers.append(ck._loaded.tracker)
        _check_unique(ck)
        del ck
    assert len(cpu._MEMORY) == 3
    assert cpu.stats.snapshot()["evictions"] - before["evictions"] == 3
    _check_unique(kept)  # evicted from the cache, still alive through its kernel
    assert not trackers[0].closed
    del kept
    gc.collect()
    assert ref() is None
    jit.collect_retired()
    # the JIT libraries of evicted, unreferenced kernels are unloaded; cached ones stay
    assert [t.closed for t in trackers] == [True, True, True, False, False, False]
