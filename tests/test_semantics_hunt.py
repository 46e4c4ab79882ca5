"""Numerical-semantics hunt against the numpy oracle (probe/semhunt/). The bugs it found are fixed and their
tests assert the right values; the other tests pin behaviours that were checked and found correct."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hostarray import host

import sparsec as sc
from sparsec import runtime
from sparsec.errors import SparsecError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    # outputs the runtime leaves uninitialized are NaN-poisoned (conftest sets it too), so a missed store fails
    monkeypatch.setattr(runtime, "POISON", True)


TARGETS = ["cpu", "interp", "triton"]


# ---------------------------------------------------------------------------------- bugs (fixed)

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("expr", ["C[i,j] = A[i,j] * 0", "y[i] = A[i,j] * 0", "y[i] = max[j](A[i,j] * 0)",
                                  "C[i,j] = where(1 > 2, A[i,j], 0)", "y[i] = where(1 > 2, A[i,j], 0)"])
def test_zero_body_dense_output_is_written(expr, target):
    """semhunt bug1: a body that simplified to 0 left an empty kernel that still claimed to write every element,
    so the output came back uninitialized. ``A * 0`` is computed now (a written 0 is no structural zero);
    ``where(1 > 2, ...)`` still folds to an empty kernel, whose output is now filled."""
    k = sc.compile(expr, target=target)
    got = host(k(A=np.ones((2, 3))))
    assert got.shape == ((2, 3) if expr.startswith("C") else (2,))
    np.testing.assert_array_equal(got, np.zeros(got.shape))


@pytest.mark.parametrize("target", ["cpu", "triton"])
@pytest.mark.parametrize("expr", ["C[i,j] = A[i,j] * 0", "C[i,j] = where(1 > 2, A[i,j], 0)"])
@pytest.mark.parametrize("out", ["csr", "dcsr", "coo"])
def test_zero_body_sparse_output_is_well_formed(expr, out, target):
    """semhunt bug1b: the empty kernel's csr output had a pos array of the wrong length (IndexError)."""
    k = sc.compile(expr, formats={"A": "csr", "C": out}, target=target)
    C = k(A=np.eye(3))
    C = C.to_host() if hasattr(C, "to_host") else C
    C.validate()
    np.testing.assert_array_equal(host(C), np.zeros((3, 3)))
    assert C.to_scipy().shape == (3, 3)


# semhunt bug2 (A/B, both sparse: 0/B gave NaN) was fixed during the hunt (commit e25d5d7); kept as a regression test
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmts", [("csr", "csr"), ("coo", "csc"), ("dcsr", "bitmap")])
def test_sparse_div_only_denominator_present(fmts, target):
    A = np.array([[0.0, 1.0, 0.0]])
    B = np.array([[2.0, 4.0, 0.0]])
    k = sc.compile("C[i,j] = A[i,j] / B[i,j]", formats={"A": fmts[0], "B": fmts[1]}, target=target)
    got = host(k(A=A, B=B))
    # A absent, B = 2 -> 0 / 2 = 0 under any convention (numpy and structural-zero alike)
    assert got[0, 0] == 0.0
    assert got[0, 1] == 0.25
    # and every format pair agrees with the sparse/dense one
    ref = host(sc.compile("C[i,j] = A[i,j] / B[i,j]", formats={"A": "csr", "B": "dense"}, target=target)(A=A, B=B))
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_triton_sqrt(dtype):
    """semhunt bug3: tl.sqrt_rn takes float32 only; float64 kernels raised a raw Triton error."""
    k = sc.compile("y[i] = sqrt(x[i])", target="triton", dtype=dtype)
    np.testing.assert_allclose(host(k(x=np.array([4.0, 9.0, 2.0], dtype))), np.sqrt([4.0, 9.0, 2.0]), rtol=1e-3)


@pytest.mark.parametrize("fmt,expr", [("csr", "C[i,j] = A[i,j] * 0 + B[i,j]"), ("coo", "C[i,j] = A[i,j] * 0 + B[i,j]"),
                                      ("dense", "y[i] = A[i,j] * 0 + B[i,j]")])
def test_stored_nan_times_literal_zero(fmt, expr):
    """semhunt bug4: a written 0 annihilated stored NaN / Inf like a structural zero does (lattice.Implicit)."""
    A = np.array([[np.nan, 0.0, np.inf], [1.0, 0.0, 0.0]])
    B = np.ones((2, 3))
    got = host(sc.compile(expr, formats={"A": fmt, "B": "dense"})(A=A, B=B))
    with np.errstate(invalid="ignore"):
        ref = A * 0 + B if expr.startswith("C") else (A * 0).sum(1) + B.sum(1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))


def test_dense_nan_times_literal_zero_elementwise_propagates():
    A = np.array([[np.nan, 0.0, np.inf], [1.0, 0.0, 0.0]])
    got = host(sc.compile("C[i,j] = A[i,j] * 0 + B[i,j]")(A=A, B=np.ones((2, 3))))
    np.testing.assert_array_equal(np.isnan(got), [[True, False, True], [False, False, False]])


# ------------------------------------------------------------------------- correct behaviours (pass)

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmts", [("csr", "csr"), ("coo", "csc"), ("dcsr", "bitmap"), ("csr", "dense")])
def test_union_sub_disjoint_patterns(fmts, target):
    A = np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, 0]])
    B = np.array([[0, 3.0, 0], [0, 0, 0], [4, 0, 5]])
    for expr, ref, out in [("C[i,j] = A[i,j] - B[i,j]", A - B, None), ("C[i,j] = -A[i,j] + B[i,j]", B - A, "csr"),
                           ("C[i,j] = A[i,j] - 2*B[i,j]", A - 2 * B, "csr"), ("y[i] = A[i,j] - B[i,j]", (A - B).sum(1), None)]:
        f = {"A": fmts[0], "B": fmts[1]}
        if out:
            f["C"] = out
        got = host(sc.compile(expr, formats=f, target=target)(A=A, B=B))
        np.testing.assert_allclose(got, ref, err_msg=expr)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmt", ["dense", "csr", "csc", "coo", "dcsr", "bitmap", "ell"])
def test_implicit_zero_annihilates_nan_in_dense_operand(fmt, target):
    # README: absent entries are structural zeros, 0 * NaN = 0; stored NaN/Inf propagate
    A = np.array([[1.0, 0, np.nan], [0, 0, 0], [0, np.inf, 2]])
    x = np.array([np.nan, 1.0, 2.0])
    got = host(sc.einsum("ij,j->i", A if fmt == "dense" else sc.Tensor.from_numpy(A, format=fmt), x, target=target))
    if fmt == "dense":
        np.testing.assert_array_equal(np.isnan(got), [True, True, True])
    else:
        assert np.isnan(got[0]) and got[1] == 0.0 and got[2] == np.inf


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmt", ["dense", "csr", "csc", "coo", "bitmap"])
@pytest.mark.parametrize("dt", ["float64", "int32"])
def test_max_min_reductions_see_implicit_zeros(fmt, target, dt):
    A = np.array([[-3, 0, -1], [0, 0, 0], [-5, -2, -7], [4, 0, 0]]).astype(dt)
    kmax = sc.compile("y[i] = max[j](A[i,j])", formats={"A": fmt}, dtype=dt, target=target)
    kmin = sc.compile("y[j] = min[i](A[i,j])", formats={"A": fmt}, dtype=dt, target=target)
    got = host(kmax(A=A))
    assert got.dtype == np.dtype(dt)
    np.testing.assert_array_equal(got, A.max(1))
    np.testing.assert_array_equal(host(kmin(A=A)), A.min(0))


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_max_over_empty_range_is_identity(fmt):
    E = np.zeros((3, 0))
    got = host(sc.compile("y[i] = max[j](A[i,j])", formats={"A": fmt})(A=E))
    np.testing.assert_array_equal(got, np.full(3, -np.inf))


@pytest.mark.parametrize("target", TARGETS)
def test_duplicate_coo_summed_everywhere(target):
    r, c, v = np.array([0, 0, 1, 0]), np.array([1, 1, 0, 2]), np.array([1.0, 2.0, 3.0, 4.0])
    D = np.zeros((2, 3))
    np.add.at(D, (r, c), v)
    x = np.array([1.0, 10, 100])
    S = sp.coo_matrix((v, (r, c)), shape=(2, 3))
    np.testing.assert_allclose(host(sc.einsum("ij,j->i", S, x, target=target)), D @ x)
    k = sc.compile("y[i] = max[j](A[i,j])", formats={"A": "csr"}, target=target)
    np.testing.assert_allclose(host(k(A=S)), D.max(1))  # summed before the max, not max of duplicates
    k = sc.compile("C[i,j] = A[i,j]*A[i,j]", formats={"A": "coo"}, target=target)
    np.testing.assert_allclose(host(k(A=S)), D * D)


@pytest.mark.parametrize("target", TARGETS)
def test_unsorted_scipy_csr(target):
    S = sp.csr_matrix((np.array([4.0, 1, 3]), np.array([2, 1, 0]), np.array([0, 2, 3])), shape=(2, 3))
    D = S.toarray()
    np.testing.assert_allclose(host(sc.einsum("ij,j->i", S, np.array([1.0, 10, 100]), target=target)),
                               D @ [1.0, 10, 100])
    np.testing.assert_allclose(host(sc.einsum("ij,ij->ij", S, S, target=target, out_format="csr")), D * D)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape", [(0, 3, 4), (3, 0, 4), (3, 4, 0), (1, 1, 1)])
def test_empty_and_tiny_shapes(shape, target):
    m, k, n = shape
    rng = np.random.default_rng(0)
    A, B, x = rng.random((m, k)), rng.random((k, n)), rng.random(k)
    np.testing.assert_allclose(host(sc.compile("C[i,j] = A[i,k]*B[k,j]", formats={"A": "csr"}, target=target)(A=A, B=B)),
                               A @ B)
    np.testing.assert_allclose(host(sc.compile("y[i] = A[i,k]*x[k]", formats={"A": "coo"}, target=target)(A=A, x=x)), A @ x)
    np.testing.assert_allclose(host(sc.compile("c = A[i,k]", formats={"A": "csr"}, target=target)(A=A)), A.sum())
    got = sc.compile("C[i,j] = A[i,k]*B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, target=target)(A=A, B=B)
    np.testing.assert_allclose(host(got), A @ B)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmt", ["csr", "coo", "dense"])
def test_diagonal_trace_transpose(fmt, target):
    A = np.array([[1.0, 0, 2], [0, 0, 0], [-1, 3, 5]])
    B = np.array([[0, 2.0, 4], [1, 0, 0], [0, 3, 0]])
    for expr, ref in [("y[i] = A[i,i]", np.diag(A)), ("c = A[i,i]", np.trace(A)), ("C[i,j] = A[j,i]", A.T),
                      ("c = A[i,j]*B[j,i]", np.trace(A @ B)), ("y[i] = A[i,i]*B[i,i]", np.diag(A) * np.diag(B)),
                      ("y[i] = A[i,j]*B[j,k]*x[k]", A @ B @ np.arange(3.0))]:
        ops = {"A": A, "B": B, "x": np.arange(3.0)}
        ops = {n: v for n, v in ops.items() if f"{n}[" in expr}
        f = {n: fmt for n in ("A", "B") if n in ops}
        np.testing.assert_allclose(host(sc.compile(expr, formats=f, target=target)(**ops)), ref, err_msg=expr)


@pytest.mark.parametrize("target", ["cpu", "triton"])
def test_mixed_dtype_promotion_matches_numpy(target):
    cases = [(np.int8, np.float32), (np.int64, np.float32), (np.int32, np.float16), (np.int16, np.float32),
             (np.float32, np.float64), (np.int32, np.int32)]
    for da, db in cases:
        a = (np.arange(6).reshape(2, 3) % 3).astype(da)
        b = (np.arange(3) + 1).astype(db)
        ref = np.einsum("ij,j->i", a, b)
        got = host(sc.einsum("ij,j->i", sc.Tensor.from_numpy(a, format="csr"), b, target=target))
        assert got.dtype == ref.dtype, (da, db)
        np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_int32_overflow_wraps_like_numpy(target):
    a = np.full((2, 3), 2**30, np.int32)
    v = np.full(3, 4, np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.einsum("ij,j->i", a, v)
    np.testing.assert_array_equal(host(sc.einsum("ij,j->i", a, v, target=target)), ref)


def test_uint8_refused_clearly():
    with pytest.raises(SparsecError, match="uint8"):
        sc.einsum("ij,j->i", np.ones((2, 2), np.uint8), np.ones(2, np.uint8))


@pytest.mark.parametrize("target", TARGETS)
def test_sparse_div_by_dense_and_scalar(target):
    A = np.array([[1.0, 0, 2], [0, 0, 0], [-1, 3, 0]])
    x = np.array([1.0, 2, 4])
    np.testing.assert_allclose(host(sc.compile("C[i,j] = A[i,j] / x[j]", formats={"A": "csr"}, target=target)(A=A, x=x)),
                               A / x)
    np.testing.assert_allclose(host(sc.compile("C[i,j] = A[i,j] / 2", formats={"A": "csr"}, target=target)(A=A)), A / 2)
