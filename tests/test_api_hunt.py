"""Regression tests for bugs found by the API/frontend hunt (probe/hunt2/bugN.py). Failing cases are strict xfails."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hostarray import host

import sparsec as sc
from sparsec.errors import SparsecError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))


@pytest.mark.parametrize("target", ["cpu", "triton"])
@pytest.mark.parametrize("scalar", [np.array(2.0), 2.0, np.float32(2.0), 2], ids=["0d-array", "float", "np-float32", "int"])
def test_einsum_0d_operand(scalar, target):
    """bug1: a 0-d operand was bound as shape (1,) and its empty subscripts refused (ParseError)."""
    x = np.arange(3.0)
    got = sc.einsum(",i->i", scalar, x, target=target)
    np.testing.assert_allclose(host(got), np.einsum(",i->i", scalar, x))
    got = sc.einsum("ij,->ij", sp.csr_matrix(np.eye(3)), scalar, out_format="csr", target=target)
    got = got.to_host() if hasattr(got, "to_host") else got
    np.testing.assert_allclose(got.to_numpy(), 2 * np.eye(3))
    assert float(host(sc.einsum(",->", scalar, 3.0, target=target))) == 6.0


def test_einsum_0d_torch_operand():
    torch = pytest.importorskip("torch")
    got = sc.einsum(",i->i", torch.tensor(2.0, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    np.testing.assert_allclose(host(got), [2.0, 2.0, 2.0])


def test_kernel_0d_input_as_0d_array_works():
    k = sc.compile("y[i] = s*x[i]")
    np.testing.assert_allclose(k(s=np.array(2.0), x=np.ones(3)), 2 * np.ones(3))


@pytest.mark.parametrize("s", [2.0, np.float64(2.0), 2])
def test_kernel_0d_input_scalar(s):
    """bug2: a Python or numpy scalar for a 0-d input raised FormatError on the general path."""
    k = sc.compile("y[i] = s*x[i]")
    np.testing.assert_allclose(k(s=s, x=np.ones(3)), 2 * np.ones(3))
    k = sc.compile("y[i] = s*A[i,j]*x[j]", formats={"A": "csr"})   # with a sparse operand: the general path
    np.testing.assert_allclose(k(s=s, A=sp.eye(3, format="csr"), x=np.ones(3)), 2 * np.ones(3))
    np.testing.assert_allclose(k.run(s=s, A=sp.eye(3, format="csr"), x=np.ones(3))["y"].to_numpy(), 2 * np.ones(3))


def _spmv():
    return sc.compile("y[i] = A[i,j]*x[j]", formats={"A": "csr"}), sp.csr_matrix(np.eye(3)), np.arange(3.0)


def test_run_checks_duplicate_and_extra_operands():
    k, A, x = _spmv()
    with pytest.raises(TypeError):
        k.run(A, x, x=2 * x)
    with pytest.raises(TypeError):
        k.run(A, x, np.ones(3))


def test_call_rejects_duplicate_operand():
    k, A, x = _spmv()
    with pytest.raises(TypeError):
        k(A, x, x=2 * x)


def test_call_rejects_extra_positional():
    k, A, x = _spmv()
    with pytest.raises(TypeError):
        k(A, x, np.ones(3))


@pytest.mark.parametrize("target", ["cpu", "interp", "triton"])
@pytest.mark.parametrize("name", ["self", "kernel", "args", "kwargs"])
def test_tensor_named_like_a_call_parameter(name, target):
    """bug4: a tensor named ``self`` could not be passed by name (``Kernel.__call__(self, ...)``)."""
    k = sc.compile(f"y[i] = {name}[i,j]*x[j]", target=target)
    ops = {name: np.ones((2, 2)), "x": np.ones(2)}
    np.testing.assert_allclose(host(k(**ops)), [2.0, 2.0])
    np.testing.assert_allclose(host(k.run(**ops)["y"]), [2.0, 2.0])


def test_autotune_operand_names_that_are_option_names(capsys):
    k = sc.compile("y[i] = repeat[i,j]*x[j]", formats={"repeat": "csr"})
    with pytest.raises(TypeError, match="tensor 'repeat' has the name of an autotune option"):
        sc.autotune(k, repeat=np.eye(2), x=np.ones(2))
    best = sc.autotune(k, {"repeat": 2 * np.eye(2), "x": np.ones(2)}, repeat=1)
    np.testing.assert_allclose(best(repeat=2 * np.eye(2), x=np.ones(2)), [2.0, 2.0])
    with pytest.raises(TypeError, match="either as a mapping or by name"):
        sc.autotune(k, {"repeat": np.eye(2)}, x=np.ones(2))
    k2 = sc.compile("y[i] = kernel[i,j]*x[j]", formats={"kernel": "csr"})
    np.testing.assert_allclose(sc.autotune(k2, kernel=np.eye(2), x=np.ones(2), repeat=1)(kernel=np.eye(2), x=np.ones(2)),
                               [1.0, 1.0])


_SPMV_SPMM = [("y[{n}] = A[{n},j]*x[j]", False), ("Y[{n},k] = A[{n},j]*X[j,k]", True),
              ("Y[i,{n}] = A[i,j]*X[j,{n}]", True), ("y[i] = A[i,{n}]*x[{n}]", False)]


@pytest.mark.parametrize("target", ["cpu", "triton"])
@pytest.mark.parametrize("name", ["ROWS", "BLOCK", "BLOCK_N", "LANES", "A_vals", "A_pos1", "y_vals", "X_vals", "n_j"])
def test_index_names_like_generated_names(name, target):
    """bug5: on Triton an index named ``ROWS`` (a launch constant) or ``A_vals`` (a buffer) shadowed the
    generated name and crashed; launch constants now avoid the kernel's names and clashing variables are renamed."""
    A = sp.random(5, 4, density=0.5, format="csr", random_state=1)
    for expr, matrix in _SPMV_SPMM:
        k = sc.compile(expr.format(n=name), formats={"A": "csr"}, target=target)
        x = np.arange(12.0).reshape(4, 3) if matrix else np.arange(4.0)
        got = k(A=A, **{"X" if matrix else "x": x})
        np.testing.assert_allclose(host(got), A @ x, err_msg=expr.format(n=name))


@pytest.mark.parametrize("target", ["cpu", "interp", "triton"])
def test_int_literal_out_of_range_is_refused(target):
    """bug6: ``300 * A`` in an int8 kernel wrapped to 44 on store; numpy refuses the literal too."""
    with pytest.raises(SparsecError, match="literal 300 does not fit int8"):
        sc.compile("y[i] = 300 * A[i]", dtype="int8", target=target)
    k = sc.compile("y[i] = -128 + 100 * A[i]", dtype="int8", target=target)   # in range: accepted
    np.testing.assert_array_equal(host(k(A=np.ones(3, np.int8))), [-28] * 3)


@pytest.mark.parametrize("target", ["cpu", "interp", "triton"])
@pytest.mark.parametrize("dtype,literal", [("float16", "1e300"), ("float16", "70000"), ("float32", "1e300")])
def test_float_literal_out_of_range_is_inf(dtype, literal, target):
    """bug6: ``1e300`` in a float16 kernel raised llvmlite's OverflowError; as numpy casts it, it is inf."""
    k = sc.compile(f"y[i] = {literal} * A[i]", dtype=dtype, target=target)
    got = host(k(A=np.ones(3, dtype)))
    assert got.dtype == np.dtype(dtype) and np.isposinf(got).all()


@pytest.mark.parametrize("target", ["cpu", "triton"])
def test_lossy_operand_cast_is_not_silent(target):
    """bug7: float (and NaN) operands were truncated into an int32 kernel, and int64 ones wrapped."""
    k = sc.compile("y[i] = A[i,j]*x[j]", formats={"A": "csr"}, dtype="int32", target=target)
    A = sp.csr_matrix(np.eye(2, dtype=np.int32))
    with pytest.raises(TypeError, match="operand 'x': its float64 values would be truncated"):
        k(A=A, x=np.array([1.7, np.nan]))
    with pytest.raises(OverflowError, match="operand 'x': its values span 1 to 1099511627776"):
        k(A=A, x=np.array([1, 2**40]))
    ok = k(A=A, x=np.array([1, -(2**31)]))           # int64 values that fit int32, and bools, pass
    np.testing.assert_array_equal(host(ok), [1, -(2**31)])
    np.testing.assert_array_equal(host(k(A=A, x=np.array([True, False]))), [1, 0])
    f = sc.compile("y[i] = A[i,j]*x[j]", formats={"A": "csr"}, dtype="float32", target=target)
    np.testing.assert_allclose(host(f(A=A, x=np.array([1.5, 2.5]))), [1.5, 2.5])  # float64 -> float32


@pytest.mark.parametrize("target", ["cpu", "triton"])
@pytest.mark.parametrize("subscripts", ["ij,j->i", "ij->", "ij,kj->ik", "j,j->"])
def test_bool_einsum_is_logical_like_numpy(subscripts, target):
    """bug8: einsum of bools returned float64 counts; numpy returns bool (an "or" of "and"s)."""
    rng = np.random.default_rng(0)
    a, v = rng.random((5, 6)) < 0.4, rng.random(6) < 0.5
    ops = [a if len(term) == 2 else v for term in subscripts.split("->")[0].split(",")]
    want = np.einsum(subscripts, *ops)
    got = sc.einsum(subscripts, *ops, target=target)
    got = host(got)
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, want)


def test_bool_einsum_sparse_output_is_bool():
    a = np.random.default_rng(1).random((6, 5)) < 0.3
    got = sc.einsum("ij,kj->ik", sp.csr_matrix(a), a, out_format="csr")
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got.to_numpy(), np.einsum("ij,kj->ik", a, a))


_LONG_SUMS = [
    ("y = a[i]*b[i]", {}, {"a": np.ones(3000, np.float16), "b": np.ones(3000, np.float16)}, 3000.0),
    ("y[i] = A[i,j]*x[j]", {"A": "csr"}, {"A": np.ones((2, 3000), np.float16), "x": np.ones(3000, np.float16)},
     np.full(2, 3000.0)),
    # the row workspace of a sparse output (dense row and hash table) holds float32 too
    ("C[i,j] = A[i,k]*B[k,j]", {"A": "csr", "B": "csr", "C": "csr"},
     {"A": np.ones((2, 3000), np.float16), "B": np.ones((3000, 3), np.float16)}, np.full((2, 3), 3000.0)),
]


@pytest.mark.parametrize("target", ["cpu", "interp", "triton"])
@pytest.mark.parametrize("expr,formats,operands,want", _LONG_SUMS, ids=["dot", "csr-spmv", "spgemm"])
def test_f16_sums_accumulate_in_float32(expr, formats, operands, want, target):
    """bug9: a float16 sum of 3000 ones stalled at 2048 + rounding (2994); numpy's einsum sums half in float."""
    k = sc.compile(expr, formats=formats, dtype="float16", target=target)
    got = k(**operands)
    got = host(got)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got.astype(np.float64), want)


def test_f16_einsum_matches_numpy():
    a = np.ones(3000, np.float16)
    assert float(sc.einsum("i,i->", a, a)) == float(np.einsum("i,i->", a, a)) == 3000.0
