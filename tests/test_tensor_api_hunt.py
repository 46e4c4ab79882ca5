"""Hunt of the Python DSL and the Tensor / DeviceTensor object API (probe/apihunt3/).

The bugs it found are fixed; their tests assert the correct behaviour. The rest pin behaviours checked
and found correct that other tests do not cover.
"""
from __future__ import annotations

import copy
import os
import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hostarray import host

import sparsec as sc
from sparsec.errors import SparsecError
from sparsec.frontend import (
    abs_,
    index_vars,
    maximum,
    program,
    reduce_max,
    reduce_sum,
    tensor,
    where,
)

i, j = index_vars("i j")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))


def _mat(seed=0, shape=(5, 6)):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal(shape)
    m[rng.random(shape) < 0.5] = 0
    return m


def _device_result():
    """A DeviceTensor: the CSR result of a Triton SDDMM (under TRITON_INTERPRET=1 it lives on the CPU)."""
    rng = np.random.default_rng(1)
    m, u, v = _mat(), rng.random((5, 3)), rng.random((3, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = sc.einsum("ij,ik,kj->ij", sp.csr_matrix(m), u, v, out_format="csr", target="triton")
    return d, m * (u @ v)


# =====================================================================================
# bugs (fixed)
# =====================================================================================


def test_compile_dsl_program_keeps_declared_formats_and_dtypes():
    A = tensor("A", 2, format="csr", dtype="float32")
    B = tensor("B", 2, format="csr", dtype="float32")
    C = tensor("C", 2, format="csr", dtype="float32")
    C[i, j] = A[i, j] * B[i, j]
    k = sc.compile(program(C))
    assert {d.name: str(d.format) for d in k.program.decls} == {"A": "csr", "B": "csr", "C": "csr"}
    eye = sp.eye(3, format="csr", dtype=np.float32)
    got = k(A=eye, B=eye)
    assert isinstance(got, sc.Tensor) and got.dtype == np.float32   # observed: dense float64 ndarray
    np.testing.assert_array_equal(got.to_numpy(), np.eye(3, dtype=np.float32))


def test_compile_dsl_program_checks_declared_shape():
    A, y = tensor("A", 1, shape=(3,)), tensor("y", 1, shape=(3,))
    y[i] = A[i] * 2
    k = sc.compile(program(y))
    with pytest.raises(SparsecError, match="A"):
        k(A=np.arange(5.0))


def test_compile_dsl_tensor_includes_the_statements_it_reads():
    A, x, t, z = tensor("A", 2), tensor("x", 1), tensor("t", 1), tensor("z", 1)
    t[i] = A[i, j] * x[j]
    z[i] = t[i] * 2.0
    got = sc.compile(z)(A=np.eye(2), x=np.ones(2))      # z, with t fused (sc.compile(program(z)) returns both)
    np.testing.assert_allclose(host(got), [2.0, 2.0])


def test_dsl_structural_equality_result_is_not_used_as_a_literal():
    A, B, C = tensor("A", 1), tensor("B", 1), tensor("C", 1)
    with pytest.raises(TypeError):
        C[i] = (A[i] == B[i]) * A[i]                    # observed: C[i] = false * A[i], i.e. all zeros
    with pytest.raises(TypeError):
        C[i] = (A[i] == B[i]) | (A[i] > 0)              # observed: logical_or(false, A[i] > 0)


def test_dsl_0d_tensor_abs_and_compare():
    s, x, y = tensor("s", 0), tensor("x", 1), tensor("y", 1)
    y[i] = abs(s) * x[i]
    y[i] = where(s > 0, x[i], 0.0)


def test_dsl_tensor_accepts_numpy_dtypes():
    A, y = tensor("A", 1, dtype=np.float32), tensor("y", 1, dtype=np.float32)
    y[i] = A[i] * 2
    assert program(y).decl("A").dtype == "float32"


def test_device_tensor_astype_numpy_type():
    d, want = _device_result()
    got = d.astype(np.float32)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.to_numpy(), want, rtol=1e-6)


def test_device_tensor_astype_refuses_unsupported_dtype():
    d, _ = _device_result()
    with pytest.raises(SparsecError):
        d.astype("complex128")


@pytest.mark.parametrize("target", ["cpu", "interp"])
def test_device_tensor_into_cpu_einsum(target):
    d, want = _device_result()
    x = np.arange(6.0)
    try:
        got = sc.einsum("ij,j->i", d, x, target=target)
    except SparsecError as e:    # a clear refusal naming the operand is fine too
        assert "'A'" in str(e) and ("to_host" in str(e) or "DeviceTensor" in str(e))
        return
    np.testing.assert_allclose(host(got), want @ x)


def test_device_tensor_into_cpu_kernel():
    d, want = _device_result()
    x = np.arange(6.0)
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"})
    try:
        got = k(A=d, x=x)
    except SparsecError as e:    # a clear refusal naming the operand is fine too
        assert "'A'" in str(e) and ("to_host" in str(e) or "DeviceTensor" in str(e))
        return
    np.testing.assert_allclose(got, want @ x)


def test_device_tensor_to_coo():
    d, want = _device_result()
    coords, vals = d.to_coo()
    dense = np.zeros(d.shape)
    dense[tuple(coords)] = vals
    np.testing.assert_allclose(dense, want)


@pytest.mark.parametrize("kind", ["scipy", "tensor"])
def test_from_numpy_of_a_non_array_names_the_type(kind):
    obj = sp.csr_matrix(np.eye(3)) if kind == "scipy" else sc.Tensor.from_numpy(np.eye(3), "csr")
    with pytest.raises(SparsecError, match="csr_matrix|Tensor|from_scipy|type"):
        sc.Tensor.from_numpy(obj)


def test_from_coo_uint64_coordinate_reported_as_given():
    with pytest.raises(SparsecError, match=str(2**64 - 1)):
        sc.Tensor.from_coo(np.array([[0], [2**64 - 1]], dtype=np.uint64), np.array([1.0]), (2, 5), "csr")


@pytest.mark.parametrize("target", ["cpu", "triton"])
def test_kernel_checks_values_length_of_a_mutated_tensor(target):
    """A shorter values array was read past its end by the kernels. Replacing a built tensor's values now
    checks their length (Tensor.__setattr__); a tensor from the plain constructor (which trusts its
    arguments: it is for sparsec's own code) is checked where a kernel binds it, on the general path
    (``run``) and on the fast call path (once per tensor), naming the operand."""
    M = _mat()
    T = sc.Tensor.from_numpy(M, "csr")
    with pytest.raises(sc.FormatError, match="values has"):
        T.values = T.values[:-1]
    assert len(T.values) == np.count_nonzero(M)          # the failed assignment left the tensor whole
    short = sc.Tensor(T.format, T.shape, T.levels, T.values[:-1])
    with pytest.raises(SparsecError):
        short.validate()                                 # validate() sees it
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target=target)
    with pytest.raises(SparsecError, match="'A'"):
        k.run(A=short, x=np.arange(6.0))                 # observed: a result, reading one value past the end
    for _ in range(2):                                   # the fast path (observed: a result, on the CPU)
        with pytest.raises(sc.FormatError, match="'A'.*values has"):
            k(A=short, x=np.arange(6.0))
    np.testing.assert_allclose(host(k(A=T, x=np.arange(6.0))), M @ np.arange(6.0))
    short.values = np.append(short.values, T.values[-1])  # mended in place: accepted again
    np.testing.assert_allclose(host(k(A=short, x=np.arange(6.0))), M @ np.arange(6.0))


def test_triton_fast_path_checks_a_device_tensors_values_length():
    """A DeviceTensor from the plain constructor with too few values: refused naming the operand (the compiled
    kernel would read past the end of the values on the GPU)."""
    torch = pytest.importorskip("torch")
    from sparsec.backends.triton.device import DeviceTensor
    dev = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0") else "cpu"
    M = _mat()
    good = sc.Tensor.from_numpy(M, "csr").to_device(dev)
    short = DeviceTensor(good.format, good.shape, good.levels, good.values[:-1], "W")
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="triton")
    x = torch.arange(6.0, dtype=torch.float64, device=dev)
    np.testing.assert_allclose(host(k(A=good, x=x)), M @ np.arange(6.0))
    for _ in range(2):
        with pytest.raises(sc.FormatError, match="'A'.*values has"):
            k(A=short, x=x)


# =====================================================================================
# checked and correct
# =====================================================================================


def _dsl_case(n):
    A, x, b, y = tensor("A", 2, format="csr"), tensor("x", 1), tensor("b", 1), tensor("y", 1)
    if n == 0:
        y[i] = 2 - A[i, j] * x[j] / 4 + b[i]
        return y, "y[i] = 2 - A[i,j] * x[j] / 4 + b[i]", lambda M, x, b: 2 - (M @ x) / 4 + b
    if n == 1:
        y[i] = reduce_max(j, maximum(A[i, j], 0.5) * -x[j])
        return y, "y[i] = max[j](max(A[i,j], 0.5) * -x[j])", lambda M, x, b: (np.maximum(M, 0.5) * -x).max(1)
    if n == 2:
        y[i] = reduce_sum(j, where(0 < A[i, j], abs(x[j]), 1 - A[i, j]))
        return (y, "y[i] = sum[j](where(A[i,j] > 0, abs(x[j]), 1 - A[i,j]))",
                lambda M, x, b: np.where(M > 0, np.abs(x), 1 - M).sum(1))
    y[i] = -(A[i, j] * x[j]) + 3 / (2 + abs_(x[j]))
    return y, "y[i] = -(A[i,j] * x[j]) + 3 / (2 + abs(x[j]))", lambda M, x, b: -(M @ x) + (3 / (2 + abs(x))).sum()


@pytest.mark.parametrize("target", ["cpu", "triton"])
@pytest.mark.parametrize("n", range(4))
def test_dsl_program_equals_its_text_and_numpy(n, target):
    rng = np.random.default_rng(n)
    M, x, b = _mat(n), rng.standard_normal(6), rng.standard_normal(5)
    y, text, ref = _dsl_case(n)
    prog = program(y)
    assert prog.statements[0] == sc.frontend.parse_statement(text)
    ops = {"A": sp.csr_matrix(M), "x": x, "b": b}
    kw = {d.name: ops[d.name] for d in prog.decls if d.name != "y"}
    got_dsl = host(sc.compile(prog, formats={"A": "csr"}, target=target)(**kw))
    got_txt = host(sc.compile(text, formats={"A": "csr"}, target=target)(**kw))
    np.testing.assert_allclose(got_dsl, ref(M, x, b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_txt, got_dsl, rtol=0, atol=0)


def test_dsl_unsupported_operators_raise_type_error():
    A, B = tensor("A", 1), tensor("B", 1)
    for f in (lambda: A[i] ** 2, lambda: 2 ** A[i], lambda: A[i] @ B[i], lambda: A[i] % 2, lambda: A[i] // 2,
              lambda: A[i] * 1j, lambda: A[i] * np.array([2.0]), lambda: A[i] != 0, lambda: A[i] == np.int64(0),
              lambda: A[i] == np.float32(0), lambda: (A[i] > 0) and (B[i] > 0)):
        with pytest.raises(TypeError):
            f()


def test_dsl_numpy_scalars_on_either_side():
    A, C = tensor("A", 1), tensor("C", 1)
    C[i] = np.float32(2.0) * A[i] + np.int64(1) - (np.float64(3.0) < A[i]) * A[i]
    assert C.assignment == sc.frontend.parse_statement("C[i] = 2.0 * A[i] + 1 - (A[i] > 3.0) * A[i]")


def test_dsl_index_vars_reused_across_programs():
    A, x, y, z = tensor("A", 2), tensor("x", 1), tensor("y", 1), tensor("z", 1)
    y[i] = A[i, j] * x[j]
    z[j] = A[i, j] * x[i]
    M, v = _mat(3, (4, 4)), np.arange(4.0)
    np.testing.assert_allclose(sc.compile(program(y))(A=M, x=v), M @ v)
    np.testing.assert_allclose(sc.compile(program(z))(A=M, x=v), M.T @ v)


def test_tensor_pickle_deepcopy_repr():
    M = _mat()
    T = sc.Tensor.from_numpy(M, "csr", name="W")
    for U in (pickle.loads(pickle.dumps(T)), copy.deepcopy(T)):
        np.testing.assert_array_equal(U.to_numpy(), M)
        assert U.name == "W" and U.format == T.format
    huge = sc.Tensor.from_coo(np.array([[0], [1]]), np.array([1.0]), (10**9, 10**9), "dcsr")
    assert len(repr(huge)) < 200 and len(str(huge)) < 200


def test_device_tensor_basics():
    d, want = _device_result()
    assert d.dtype == np.float64 and d.shape == (5, 6) and d.ndim == 2 and str(d.format) == "csr"
    assert "DeviceTensor" in repr(d)
    np.testing.assert_allclose(d.to_host().to_numpy(), want)
    np.testing.assert_allclose(d.to_scipy().toarray(), want)
    np.testing.assert_allclose(d.to_torch().to_dense().cpu().numpy(), want)
    np.testing.assert_allclose(d.to("csc").to_numpy(), want)
    np.testing.assert_allclose(d.to("bsr(2,2)").to_numpy(), want)
    np.testing.assert_allclose(d.astype("float32").to_numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(d.copy().to_numpy(), want)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(d)).to_numpy(), want)
    assert d.renamed("Q").name == "Q" and d.to_device(d.device) is d
    d.validate()


def test_device_tensor_back_into_triton():
    d, want = _device_result()
    x = np.arange(6.0)
    np.testing.assert_allclose(host(sc.einsum("ij,j->i", d, x, target="triton")), want @ x)
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csc"}, target="triton")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(host(k(A=d, x=x)), want @ x)


def test_big_endian_inputs():
    M = _mat()
    Mb = M.astype(">f8")
    np.testing.assert_array_equal(sc.Tensor.from_numpy(Mb, "csr").to_numpy(), M)
    np.testing.assert_allclose(sc.einsum("ij,j->i", Mb, np.ones(6, ">f8")), M.sum(1))
    cs = sp.csr_matrix(M)
    T = sc.Tensor.from_buffers("csr", M.shape, [{}, {"pos": cs.indptr.astype(">i4"), "crd": cs.indices.astype(">i4")}],
                               cs.data.astype(">f8"))
    np.testing.assert_allclose(sc.einsum("ij,j->i", T, np.arange(6.0)), M @ np.arange(6.0))
    c = cs.tocoo()
    T = sc.Tensor.from_coo(np.array([c.row, c.col]).astype(">i8"), c.data.astype(">f4"), M.shape, "csr")
    np.testing.assert_allclose(T.to_numpy(), M.astype(np.float32))


def test_strided_and_readonly_inputs():
    M = _mat()
    cs = sp.csr_matrix(M)
    x = np.arange(6.0)
    vals = np.zeros(2 * cs.nnz)
    vals[::2] = cs.data
    crd = np.zeros(2 * cs.nnz, np.int32)
    crd[::2] = cs.indices
    T = sc.Tensor.from_buffers("csr", M.shape, [{}, {"pos": cs.indptr, "crd": crd[::2]}], vals[::2])
    np.testing.assert_allclose(sc.einsum("ij,j->i", T, x), M @ x)
    np.testing.assert_allclose(sc.einsum("ij,jk->ik", np.asfortranarray(M), M.T[::-1]), M @ M.T[::-1])
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"})
    ro, xr = M.copy(), x.copy()
    ro.flags.writeable = xr.flags.writeable = False
    np.testing.assert_allclose(k(A=sc.Tensor.from_numpy(ro, "csr"), x=xr), M @ x)
    np.testing.assert_allclose(k(A=cs, x=np.arange(12.0)[::2]), M @ np.arange(12.0)[::2])
    np.testing.assert_allclose(k(A=cs, x=x[::-1]), M @ x[::-1])


@pytest.mark.parametrize("target", ["cpu", "triton"])
def test_inputs_mutated_in_place_between_calls(target):
    M = _mat()
    x = np.arange(6.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target=target)
        for A in (sc.Tensor.from_numpy(M, "csr"), sc.Tensor.from_numpy(M, "csc"), sp.csr_matrix(M), sp.csc_matrix(M)):
            k(A=A, x=x)
            (A.values if isinstance(A, sc.Tensor) else A.data)[:] *= 2
            np.testing.assert_allclose(host(k(A=A, x=x)), 2 * M @ x)
        xx = x.copy()
        k(A=sp.csr_matrix(M), x=xx)
        xx[:] = 1.0
        np.testing.assert_allclose(host(k(A=sp.csr_matrix(M), x=xx)), M.sum(1))
        S = sp.csr_matrix(np.eye(5, 6))
        sc.einsum("ij,j->i", S, x, target=target)
        S.indices[:] = [1, 2, 3, 4, 5]
        np.testing.assert_allclose(host(sc.einsum("ij,j->i", S, x, target=target)), [1, 2, 3, 4, 5])


def test_from_coo_wide_shape_and_out_of_range():
    T = sc.Tensor.from_coo(np.array([[0], [2**31 + 3]]), np.array([1.0]), (2, 2**31 + 5), "csr")
    assert T.levels[1]["crd"].dtype == np.int64
    with pytest.raises(SparsecError, match="2147483651 in dimension 1"):
        sc.Tensor.from_coo(np.array([[0], [2**31 + 3]]), np.array([1.0]), (2, 5), "csr")
