"""Higher-order and less common tensor expressions (probe/tensorhunt/), on every target.

3-d and 4-d sparse tensors in csf / coo / mixed dense-compressed formats: MTTKRP, TTV, TTM, inner products,
contractions over two indices, transpositions, diagonals, broadcasting, outer products into sparse outputs,
sums into a 0-d output, repeated operands, einsum strings with unusual letters and implicit outputs, and
int / float / bool / mixed dtypes. Oracle: ``numpy.einsum`` in float64.

The bugs it found are fixed; their tests assert the right behaviour (each failed on the tree before its fix);
the other tests pin behaviours that were checked and found correct.
"""
from __future__ import annotations

import numpy as np
import pytest
from hostarray import host

import sparsec as sc
from sparsec import runtime
from sparsec.errors import FormatError, SparsecError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(runtime, "POISON", True)   # a missed store shows as NaN


TARGETS = ["cpu", "interp", "triton"]

DCC = "#sparse_tensor.encoding<{ map = (i, j, k) -> (i : dense, j : compressed, k : compressed) }>"
DDC = "#sparse_tensor.encoding<{ map = (i, j, k) -> (i : dense, j : dense, k : compressed) }>"
CDC = "#sparse_tensor.encoding<{ map = (i, j, k) -> (i : compressed, j : dense, k : compressed) }>"
KID = "#sparse_tensor.encoding<{ map = (i, j, k) -> (k : dense, i : compressed, j : dense) }>"
FORMATS3 = ["csf", "coo", "csf(2,0,1)", DDC, CDC]


def sparse(rng, shape, density=0.35, dtype=np.float64):
    x = np.where(rng.random(shape) < density, rng.uniform(-2, 2, shape), 0.0)
    if np.dtype(dtype).kind in "iu":
        x = np.round(x * 3)
    if np.dtype(dtype) == np.bool_:
        x = x != 0
    return x.astype(dtype)


def oracle(subscripts, *ops):
    return np.einsum(subscripts, *[np.asarray(o, dtype=np.float64) for o in ops])


def run(expr, formats, target, dtype=None, **ops):
    return host(sc.compile(expr, formats=formats, target=target, dtype=dtype)(**ops))


# ------------------------------------------------------------------------------------------------ bugs

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("expr", ["A[i,j] = B[i,j] + x[j]", "A[i,j] = B[i,j] * x[j] + B[i,j]"])
def test_bool_operands_added_into_int_output(expr, target):
    """``B[i,j] + x[j]`` over bool operands into int32: sparsec's verifier refuses a bool output ("the right-hand
    side is int"), so the sum counts (1 + 1 = 2, as einsum's bool kernels do). Now the add runs in i1
    (``Sparsifier._arith`` -> ``promote('bool', 'bool')``) and each target wraps it its own way."""
    B = np.array([[True, False], [True, True]])
    x = np.array([True, False])
    got = run(expr, {"B": "csr"}, target, {"B": "bool", "x": "bool", "A": "int32"}, B=B, x=x)
    np.testing.assert_array_equal(got, [[2, 0], [2, 1]])


NONUNIQUE_PARENT = {
    "compressed(nonunique), singleton(nonunique), compressed":
        "#sparse_tensor.encoding<{ map = (i, j, k) -> (i : compressed(nonunique), j : singleton(nonunique), "
        "k : compressed) }>",
    "compressed(nonunique), singleton(nonunique), dense":
        "#sparse_tensor.encoding<{ map = (i, j, k) -> (i : compressed(nonunique), j : singleton(nonunique), "
        "k : dense) }>",
    "compressed, compressed(nonunique), compressed":
        "#sparse_tensor.encoding<{ map = (i, j, k) -> (i : compressed, j : compressed(nonunique), k : compressed) }>",
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmt", list(NONUNIQUE_PARENT), ids=list(NONUNIQUE_PARENT))
@pytest.mark.parametrize("case", ["ttv", "inner"])
def test_nonunique_level_above_a_compressed_or_dense_level(case, fmt, target):
    """``Tensor.from_numpy`` stores these formats with one entry per nonzero in the non-unique level, so
    (i, j) repeats and every repeat owns one child segment. ``Sparsifier`` (sparsify.py, the non-unique branch
    "children get [p, seg)") gives a compressed / dense child ``pos[p]..pos[p+1]`` only: e.g.
    ``A[i,j] = E[i,j,k] * x[k]`` keeps one of the k entries of each (i, j)."""
    rng = np.random.default_rng(7)
    E = sparse(rng, (3, 4, 5), 0.4)
    T = sc.Tensor.from_numpy(E, format=NONUNIQUE_PARENT[fmt])
    assert np.array_equal(T.to_numpy(), E)      # the tensor itself is right
    x = rng.random(5)
    if case == "ttv":
        got, ref = run("A[i,j] = E[i,j,k] * x[k]", {"E": T.format}, target, E=T, x=x), oracle("ijk,k->ij", E, x)
    else:
        got = run("s[] = E[i,j,k] * B[i,j,k]", {"E": T.format, "B": "csf"}, target, E=T, B=E)
        ref = oracle("ijk,ijk->", E, E)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def _coo_with_duplicate_tuples():
    """A 3-d COO tensor whose raw buffers repeat the tuple (0, 1, 2): validate() accepts it, conversions sum it
    (README: "COO input with duplicate coordinates is summed")."""
    fmt = sc.Tensor.from_numpy(np.zeros((2, 3, 4)), format="coo").format
    i, j, k = (np.array(c, np.int32) for c in ([0, 0, 0, 1, 1], [1, 1, 1, 0, 2], [2, 2, 3, 0, 0]))
    v = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    T = sc.Tensor(fmt, (2, 3, 4), [{"pos": np.array([0, 5], np.int32), "crd": i}, {"crd": j}, {"crd": k}], v)
    T.validate()
    dense = np.zeros((2, 3, 4))
    np.add.at(dense, (i, j, k), v)
    return T, dense


@pytest.mark.parametrize("target", TARGETS)
def test_coo_duplicate_tuples_summed_by_reductions(target):
    T, dense = _coo_with_duplicate_tuples()
    assert np.array_equal(T.to_numpy(), dense)
    np.testing.assert_allclose(run("s[] = T[i,j,k]", {"T": "coo"}, target, T=T), dense.sum())
    x = np.array([1.0, 10.0, 100.0, 1000.0])
    np.testing.assert_allclose(run("A[i,j] = T[i,j,k] * x[k]", {"T": "coo"}, target, T=T, x=x), dense @ x)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", ["scale", "times-csf", "inner"])
def test_coo_duplicate_tuples_summed_elementwise(case, target):
    T, dense = _coo_with_duplicate_tuples()
    if case == "scale":
        got, ref = run("A[i,j,k] = T[i,j,k] * 2", {"T": "coo"}, target, T=T), 2 * dense
    elif case == "times-csf":
        got = run("A[i,j,k] = T[i,j,k] * U[i,j,k]", {"T": "coo", "U": "csf"}, target, T=T, U=dense)
        ref = dense * dense
    else:
        got = run("s[] = T[i,j,k] * U[i,j,k]", {"T": "coo", "U": "csf"}, target, T=T, U=dense)
        ref = (dense * dense).sum()
    np.testing.assert_allclose(got, ref)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("expr", ["A[i,j,k] = T[i,j,k] * 2", "A[k,j,i] = T[i,j,k]"])
def test_coo_duplicate_tuples_into_sparse_output(expr, target):
    T, dense = _coo_with_duplicate_tuples()
    ref = 2 * dense if "2" in expr else dense.transpose(2, 1, 0)
    np.testing.assert_allclose(run(expr, {"T": "coo", "A": "csf"}, target, T=T), ref)


@pytest.mark.parametrize("fmt", ["csf", "dense"])
def test_triton_ndim_mismatch_names_operand(fmt):
    k = sc.compile("A[i,j] = B[i,j,k] * x[k]", formats={"B": fmt}, target="triton")
    with pytest.raises(SparsecError, match="'B'"):
        k(B=np.ones((4, 5)), x=np.ones(3))


@pytest.mark.parametrize("target", ["cpu", "interp"])
def test_ndim_mismatch_names_operand(target):
    k = sc.compile("A[i,j] = B[i,j,k] * x[k]", formats={"B": "csf"}, target=target)
    with pytest.raises(FormatError, match="tensor 'B'"):
        k(B=np.ones((4, 5)), x=np.ones(3))
    with pytest.raises(FormatError, match="tensor 'x'"):
        k(B=np.ones((4, 5, 3)), x=np.ones((3, 1)))


@pytest.mark.parametrize("target", TARGETS)
def test_wrong_ndim_sc_tensor_names_operand(target):
    k = sc.compile("A[i,j] = B[i,j,k] * x[k]", formats={"B": "csf"}, target=target)
    with pytest.raises(FormatError, match="'B'"):
        k(B=sc.Tensor.from_numpy(np.ones((4, 5)), format="csr"), x=np.ones(3))


@pytest.mark.parametrize("formats", [{"B": "csr"}, {"A": "csf(0,1,2)"}])
def test_compile_format_ndim_mismatch_names_tensor(formats):
    name = next(iter(formats))
    with pytest.raises(FormatError, match=f"'{name}'"):
        sc.compile("A[i,j] = B[i,j,k] * x[k]", formats=formats)


# ------------------------------------------------------------------------------- checked and correct

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmt", FORMATS3)
def test_mttkrp(fmt, target):
    rng = np.random.default_rng(1)
    B = sparse(rng, (5, 7, 3))
    B[2] = 0.0
    C, D = rng.random((7, 4)), rng.random((3, 4))
    got = run("A[i,r] = B[i,k,l] * C[k,r] * D[l,r]", {"B": fmt}, target, B=B, C=C, D=D)
    np.testing.assert_allclose(got, oracle("ikl,kr,lr->ir", B, C, D), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmt,out", [("coo", "dense"), ("csf(1,2,0)", "csr"), (DCC, "csc")])
def test_ttv_and_ttm(fmt, out, target):
    rng = np.random.default_rng(2)
    B = sparse(rng, (5, 6, 3))
    x, M = rng.random(3), rng.random((2, 3))
    got = run("A[i,k] = B[i,k,l] * x[l]", {"B": fmt, "A": out}, target, B=B, x=x)
    np.testing.assert_allclose(got, oracle("ikl,l->ik", B, x), rtol=1e-12, atol=1e-12)
    got = run("A[i,k,r] = B[i,k,l] * M[r,l]", {"B": fmt}, target, B=B, M=M)
    np.testing.assert_allclose(got, oracle("ikl,rl->ikr", B, M), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fb,fe", [("csf", "csf"), ("coo", "csf(2,0,1)"), ("csf(2,1,0)", "coo"), (KID, DCC)])
def test_inner_product_and_two_index_contraction(fb, fe, target):
    rng = np.random.default_rng(3)
    B, B2, E = sparse(rng, (4, 5, 6)), sparse(rng, (4, 5, 6)), sparse(rng, (5, 6, 3))
    got = run("s[] = B[i,j,k] * F[i,j,k]", {"B": fb, "F": fe}, target, B=B, F=B2)
    np.testing.assert_allclose(got, oracle("ijk,ijk->", B, B2), rtol=1e-12)
    got = run("C[i,m] = B[i,j,k] * E[j,k,m]", {"B": fb, "E": fe, "C": "csr"}, target, B=B, E=E)
    np.testing.assert_allclose(got, oracle("ijk,jkm->im", B, E), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fa", ["csr", "coo", "dcsc"])
def test_transpose_diagonal_trace_repeated(fa, target):
    rng = np.random.default_rng(4)
    A, S = sparse(rng, (5, 7)), sparse(rng, (6, 6))
    for out in ("csr", "csc"):
        np.testing.assert_array_equal(run("C[j,i] = A[i,j]", {"A": fa, "C": out}, target, A=A), A.T)
    np.testing.assert_array_equal(run("y[i] = A[i,i]", {"A": fa}, target, A=S), np.diag(S))
    np.testing.assert_allclose(run("s[] = A[i,i]", {"A": fa}, target, A=S), np.trace(S))
    np.testing.assert_allclose(run("C[i,j] = A[i,j] * A[i,j]", {"A": fa, "C": "csr"}, target, A=A), A * A)
    np.testing.assert_allclose(run("C[i,j] = A[i,j] * A[j,i]", {"A": fa, "C": "csr"}, target, A=S), S * S.T)
    np.testing.assert_allclose(run("s[] = A[i,j] * A[j,i]", {"A": fa}, target, A=S), oracle("ij,ji->", S, S))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmt", ["csf", "coo", "csf(2,0,1)", CDC])
def test_broadcast_permute_and_sum_3d(fmt, target):
    rng = np.random.default_rng(5)
    B, y = sparse(rng, (4, 5, 3)), rng.random(5)
    np.testing.assert_allclose(run("A[i,k,l] = B[i,k,l] * y[k]", {"B": fmt, "A": fmt}, target, B=B, y=y),
                               B * y[None, :, None])
    np.testing.assert_array_equal(run("A[l,k,i] = B[i,k,l]", {"B": fmt, "A": fmt}, target, B=B), B.transpose(2, 1, 0))
    np.testing.assert_allclose(run("s[] = B[i,k,l]", {"B": fmt}, target, B=B), B.sum())
    np.testing.assert_allclose(run("v[l] = B[i,k,l]", {"B": fmt}, target, B=B), B.sum((0, 1)))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape", [(0, 3, 2), (3, 0, 2), (1, 1, 1), (2, 1, 3)])
@pytest.mark.parametrize("fmt", ["csf", "coo"])
def test_edge_shapes(shape, fmt, target):
    rng = np.random.default_rng(6)
    B = sparse(rng, shape, 0.6)
    C, D = rng.random((shape[1], 2)), rng.random((shape[2], 2))
    got = run("A[i,r] = B[i,k,l] * C[k,r] * D[l,r]", {"B": fmt}, target, B=B, C=C, D=D)
    np.testing.assert_allclose(got, oracle("ikl,kr,lr->ir", B, C, D), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run("s[] = B[i,k,l]", {"B": fmt}, target, B=B), B.sum())
    np.testing.assert_array_equal(run("A[l,k,i] = B[i,k,l]", {"B": fmt, "A": fmt}, target, B=B), B.transpose(2, 1, 0))


@pytest.mark.parametrize("target", TARGETS)
def test_einsum_unusual_letters_and_implicit_outputs(target):
    rng = np.random.default_rng(8)
    B = sparse(rng, (4, 5, 3))
    x = rng.random(3)
    T, U = sc.Tensor.from_numpy(B, format="csf"), sc.Tensor.from_numpy(B, format="coo")
    M = B[:, :, 0]
    D3 = B[:3, :3]
    cases = [("zyx,x", (T, x), (B, x)), ("ZyX,X", (U, x), (B, x)), ("zyx", (T,), (B,)), ("abc,abc", (T, U), (B, B)),
             ("iij->ij", (sc.Tensor.from_numpy(D3, format="csf"),), (D3,)),
             ("Qq,qQ", (sc.Tensor.from_numpy(M, format="csr"), M.T.copy()), (M, M.T))]
    for sub, ops, refs in cases:
        got = host(sc.einsum(sub, *ops, target=target))
        np.testing.assert_allclose(got, oracle(sub, *refs), rtol=1e-12, atol=1e-12, err_msg=sub)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmt", ["csf", "coo", "csf(3,1,0,2)",
                                 "#sparse_tensor.encoding<{ map = (a, b, c, d) -> (b : dense, d : dense, "
                                 "a : compressed, c : compressed) }>"])
def test_4d(fmt, target):
    rng = np.random.default_rng(9)
    B = sparse(rng, (3, 2, 4, 5), 0.3)
    T = sc.Tensor.from_numpy(B, format=fmt)
    F, G, H = rng.random((2, 3)), rng.random((4, 3)), rng.random((5, 3))
    np.testing.assert_allclose(host(sc.einsum("abcd,br,cr,dr->ar", T, F, G, H, target=target)),
                               oracle("abcd,br,cr,dr->ar", B, F, G, H), rtol=1e-12)
    np.testing.assert_array_equal(host(sc.einsum("abcd->dcba", T, out_format=fmt, target=target)),
                                  B.transpose(3, 2, 1, 0))
    np.testing.assert_allclose(host(sc.einsum("abcd,abcd->", T, T, target=target)), oracle("abcd,abcd->", B, B))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("out", ["csr", "csc", "coo", "dcsc"])
def test_outer_products_into_sparse_outputs(out, target):
    rng = np.random.default_rng(10)
    x, y, z = sparse(rng, (6,), 0.5), sparse(rng, (4,), 0.5), sparse(rng, (3,), 0.7)
    xs, zs = sc.Tensor.from_numpy(x, format="coo"), sc.Tensor.from_numpy(z, format="coo")
    np.testing.assert_allclose(host(sc.einsum("i,j->ij", xs, y, out_format=out, target=target)), np.outer(x, y))
    np.testing.assert_allclose(host(sc.einsum("i,j->ji", xs, y, out_format=out, target=target)), np.outer(y, x))
    np.testing.assert_allclose(host(sc.einsum("i,j,k->kji", xs, y, zs, out_format="csf(2,0,1)", target=target)),
                               oracle("i,j,k->kji", x, y, z))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dt", ["int32", "int64", "float32", "bool"])
def test_einsum_dtypes(dt, target):
    rng = np.random.default_rng(11)
    B, x = sparse(rng, (4, 5, 3), dtype=dt), sparse(rng, (3,), 0.9, dtype=dt)
    T = sc.Tensor.from_numpy(B, format="csf")
    for sub, ops, refs in [("ijk,k->ij", (T, x), (B, x)), ("ijk,ijk->", (T, B), (B, B)), ("ijk->", (T,), (B,))]:
        got = host(sc.einsum(sub, *ops, target=target))
        want = np.einsum(sub, *refs)
        assert got.dtype == want.dtype, sub
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=1e-5, err_msg=sub)
    got = host(sc.einsum("ijk,k->ijk", T, x, out_format="csf", target=target))
    np.testing.assert_allclose(got.astype(np.float64), np.einsum("ijk,k->ijk", B, x).astype(np.float64), rtol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dts", [("int32", "float32", "float32"), ("int64", "int32", "int64"),
                                 ("bool", "float64", "float64"), ("float32", "float64", "float64")])
def test_mixed_operand_dtypes(dts, target):
    rng = np.random.default_rng(12)
    B, x = sparse(rng, (4, 5, 3), dtype=dts[0]), sparse(rng, (3,), 0.9, dtype=dts[1])
    dtype = {"B": dts[0], "x": dts[1], "A": dts[2]}
    got = run("A[i,j] = B[i,j,k] * x[k]", {"B": "coo"}, target, dtype, B=B, x=x)
    assert got.dtype == np.dtype(dts[2])
    np.testing.assert_allclose(got, oracle("ijk,k->ij", B, x), rtol=1e-5)
    got = run("A[i,j,k] = B[i,j,k] * x[k]", {"B": "csf", "A": "csf"}, target, dtype, B=B, x=x)
    np.testing.assert_allclose(got, oracle("ijk,k->ijk", B, x), rtol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_shape_errors_name_operands(target):
    B = sc.Tensor.from_numpy(np.ones((4, 5, 3)), format="csf")
    k = sc.compile("A[i,r] = B[i,k,l] * C[k,r] * D[l,r]", formats={"B": "csf"}, target=target)
    with pytest.raises(sc.ShapeError, match="index r has extent 2 in 'C'.*3 in 'D'"):
        k(B=B, C=np.ones((5, 2)), D=np.ones((3, 3)))
    with pytest.raises(sc.ShapeError, match="index i has extent 3 in 'A' .* 4 in 'A'"):
        sc.einsum("iij->ij", sc.Tensor.from_numpy(np.ones((3, 4, 2)), format="csf"), target=target)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmt", ["csf", "coo", DCC])
def test_max_over_two_sparse_levels_counts_implicit_zeros(fmt, target):
    rng = np.random.default_rng(13)
    B = -np.abs(sparse(rng, (4, 3, 5), 0.5))
    B[1] = 0.0            # an empty slice
    B[2] = -1.0           # a slice stored in full: no implicit zero
    got = run("y[i] = max[j,k](B[i,j,k])", {"B": fmt}, target, B=B)
    np.testing.assert_array_equal(got, B.max(axis=(1, 2)))
