"""Regression tests from the fusion / workspace / format-conversion hunt (probe/fushunt/).

Multi-statement programs (fused with ``outputs=`` and materialized), epilogues, softmax over a
sparse row's nonzeros, level orders that conflict with the loop order, and SpGEMM workspaces.
Oracle: numpy in float64. The bugs it found (bug1-bug4) are fixed; their tests assert the correct value.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))


def sparse(rng, shape, density=0.4):
    return np.where(rng.random(shape) < density, rng.uniform(-1, 1, shape), 0.0)


def res(x):
    if isinstance(x, dict):
        return {k: res(v) for k, v in x.items()}
    if isinstance(x, sc.Tensor):
        return x.to_numpy()
    if hasattr(x, "to_host"):
        return x.to_host().to_numpy()
    if hasattr(x, "cpu"):
        return x.cpu().numpy()
    return np.asarray(x)


def run(text, ops, formats, target="cpu", **kw):
    k = sc.compile(text, formats=formats, target=target, **kw)
    args = {n: sc.Tensor.from_numpy(v, formats[n]) if n in formats else v for n, v in ops.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return res(k(**args))


def softmax_rows(A, mask=None):
    """Softmax of each row over its entries where ``mask`` (default: A's nonzeros); rows without any: 0."""
    mask = A != 0 if mask is None else mask
    P = np.zeros_like(A)
    for r in range(A.shape[0]):
        nz = mask[r]
        if nz.any():
            e = np.exp(A[r, nz] - A[r, nz].max())
            P[r, nz] = e / e.sum()
    return P


def attention_ref(M, Q, K, V, scale):
    return softmax_rows(M * (Q @ K.T) * scale, M != 0) @ V


# ------------------------------------------------------------------------------------------ bugs

ROWNORM = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0]])   # row 1 has no entries


@pytest.mark.parametrize("fmt,target", [("dcsr", "cpu"), ("coo", "cpu"), ("dcsr", "interp")])
def test_row_normalize_of_an_empty_row_does_not_depend_on_the_format(fmt, target):
    """bug1: 0/0 of a row absent at a compressed outer level (dcsr, coo) folded to NaN before the
    structural-zero rule (lattice.simplify); csr / csc gave 0."""
    text = "P[i,j] = A[i,j] / sum[k](A[i,k])"
    want = run(text, {"A": ROWNORM}, {"A": "csr"}, "cpu")
    np.testing.assert_array_equal(want[1], 0.0)          # the structural-zero rule: absent / anything = 0
    got = run(text, {"A": ROWNORM}, {"A": fmt}, target)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("fmt,target", [("dcsr", "cpu"), ("coo", "cpu"), ("dcsr", "triton")])
def test_masked_attention_row_without_entries_is_zero(fmt, target):
    """bug1 again: masked_attention's general lowering gave NaN rows for mask rows without entries."""
    rng = np.random.default_rng(3)
    M = (rng.random((6, 7)) < 0.4).astype(float)
    M[0, 0] = 1.0
    M[2] = 0.0                                           # a mask row with no entries
    Q, K, V = rng.standard_normal((6, 3)), rng.standard_normal((7, 3)), rng.standard_normal((7, 4))
    got = run(sc.masked_attention(scale=0.5, heads=False), {"M": M, "Q": Q, "K": K, "V": V}, {"M": fmt}, target,
              outputs=["O"])
    np.testing.assert_allclose(got, attention_ref(M, Q, K, V, 0.5), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fmt", ["dcsr", "coo"])
def test_row_normalize_into_the_same_sparse_format(fmt):
    """bug2: the same_pattern store of bug1's NaN lattice point had no position (TypeError at compile)."""
    A = np.array([[1.0, 2.0, 0.0], [0.0, 4.0, 0.0], [0.0, 3.0, 5.0]])  # no empty rows
    k = sc.compile("P[i,j] = A[i,j] / sum[k](A[i,k])", formats={"A": fmt}, out_format=fmt)
    got = k(A=sc.Tensor.from_numpy(A, fmt)).to_numpy()
    np.testing.assert_allclose(got, A / A.sum(1, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("text,outputs", [
    ("C[i,j] = A[i,k]*B[k,j] + D[i,j]", None),
    ("T[i,j] = A[i,k]*B[k,j]\nC[i,j] = T[i,j] + D[i,j]", ["C"]),
])
def test_spgemm_plus_sparse_addend_keeps_the_output_sparse(text, outputs):
    """bug3: A @ B + D into csr precomputed A @ B into a dense n x n temporary and stored every coordinate
    of C (explicit zeros). The temporary now takes the sparse output's format."""
    A = sp.random(40, 40, density=0.03, format="csr", random_state=1)
    D = sp.random(40, 40, density=0.03, format="csr", random_state=2)
    formats = {"A": "csr", "B": "csr", "D": "csr", "C": "csr"}
    if "T[" in text:
        formats["T"] = "csr"
    k = sc.compile(text, formats=formats, outputs=outputs)
    C = k(A=A, B=A, D=D)
    ref = (A @ A + D).toarray()
    np.testing.assert_allclose(C.to_numpy(), ref, rtol=1e-12, atol=1e-14)
    bound = (A @ A).nnz + D.nnz
    assert C.to_scipy().nnz <= bound, f"{C.to_scipy().nnz} stored entries for at most {bound} nonzeros"


@pytest.mark.parametrize("schedule", [sc.Schedule().vectorize("j", 4), sc.Schedule().split("j", 2)])
def test_schedule_names_the_users_loop_of_a_fused_producer(schedule):
    """bug4: inlining renamed the producer's summed-over j to j1 even without a clash, so a schedule
    naming the user's loop j was refused ('no statement has that loop; the loops are i')."""
    A, x = np.array([[1.0, 0, -2], [0, 0, 0], [3, 4, 0]]), np.array([1.0, 2, 3])
    # the single-statement spelling accepts the same schedule
    single = sc.compile("y[i] = max(sum[j](A[i,j]*x[j]), 0)", formats={"A": "csr"}, schedule=schedule)
    np.testing.assert_allclose(single(A=sc.Tensor.from_numpy(A, "csr"), x=x), np.maximum(A @ x, 0))
    k = sc.compile("t[i] = A[i,j]*x[j]\ny[i] = max(t[i], 0)", formats={"A": "csr"}, outputs=["y"], schedule=schedule)
    np.testing.assert_allclose(k(A=sc.Tensor.from_numpy(A, "csr"), x=x), np.maximum(A @ x, 0))


@pytest.mark.parametrize("target", ["cpu", "triton"])
@pytest.mark.parametrize("text,reference", [
    ("C[i,j] = A[i,k]*B[k,j] + A[i,k]*E[k,j]", lambda A, E: A @ A + A @ E),
    ("C[i,j] = max(sum[k](A[i,k]*B[k,j]), 0)", lambda A, E: (A @ A).maximum(0)),
    ("C[i,j] = 3*max[k](A[i,k]*B[k,j])", None),
], ids=["two-products", "relu-epilogue", "max-reduction"])
def test_extracted_reductions_into_a_sparse_output_stay_sparse(text, reference, target):
    """bug3's other spellings: each extracted reduction is computed as a csr temporary (a row workspace),
    and C stores only its nonzeros."""
    A = sp.random(40, 40, density=0.03, format="csr", random_state=1)
    E = sp.random(40, 40, density=0.05, format="csr", random_state=3)
    used = {n for n in "ABE" if f"{n}[" in text}
    k = sc.compile(text, formats={n: "csr" for n in used | {"C"}}, target=target)
    assert [s.strategy for s in k.lowered.statements][0] == "workspace"
    C = k(**{n: {"A": A, "B": A, "E": E}[n] for n in used})
    C = C.to_host() if hasattr(C, "to_host") else C
    if reference is None:
        dense = A.toarray()
        want = 3 * (dense[:, :, None] * dense[None, :, :]).max(axis=1)
    else:
        want = reference(A, E).toarray()
    np.testing.assert_allclose(C.to_numpy(), want, rtol=1e-12, atol=1e-14)
    assert C.to_scipy().nnz == np.count_nonzero(want)


# --------------------------------------------------------------------- behaviours found correct

@pytest.mark.parametrize("target,mf,sf", [("cpu", "csc", "csr"), ("cpu", "coo", "dense"), ("cpu", "dcsr", "csc"),
                                           ("cpu", "bsr(2,3)", "coo"), ("triton", "dcsr", "csc"),
                                           ("triton", "coo", "dense")])
def test_sddmm_into_spmm_and_transposed_consumer(target, mf, sf):
    rng = np.random.default_rng(1)
    M = (rng.random((8, 9)) < 0.35).astype(float)
    M[3] = 0
    Q, K = rng.standard_normal((8, 3)), rng.standard_normal((9, 3))
    V, W = rng.standard_normal((9, 4)), rng.standard_normal((8, 4))
    S = M * (Q @ K.T)
    fm = {"M": mf, "S": sf}
    text = "S[i,j] = M[i,j] * Q[i,d] * K[j,d]\nY[i,e] = S[i,j] * V[j,e]"
    np.testing.assert_allclose(run(text, {"M": M, "Q": Q, "K": K, "V": V}, fm, target, outputs=["Y"]), S @ V,
                               rtol=1e-10, atol=1e-12)
    text = "S[i,j] = M[i,j] * Q[i,d] * K[j,d]\nZ[j,e] = S[i,j] * W[i,e]"   # reads the intermediate transposed
    got = run(text, {"M": M, "Q": Q, "K": K, "W": W}, fm, target)
    np.testing.assert_allclose(got["Z"], S.T @ W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["S"], S, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("target,fmt", [("cpu", "bsr(3,4)"), ("cpu", "coo"), ("cpu", "dcsr"), ("cpu", "ell"),
                                        ("cpu", "csc"), ("triton", "dcsr"), ("triton", "csc")])
def test_spmm_bias_relu_epilogue_on_empty_rows(target, fmt):
    rng = np.random.default_rng(14)
    A = sparse(rng, (10, 8), 0.3)
    A[[0, 4, 5, 9]] = 0
    B, bias, rb = rng.standard_normal((8, 5)), rng.standard_normal(5), rng.standard_normal(10)
    got = run("C[i,j] = max(sum[k](A[i,k]*B[k,j]) + bias[j], 0)", {"A": A, "B": B, "bias": bias}, {"A": fmt}, target)
    np.testing.assert_allclose(got, np.maximum(A @ B + bias, 0), rtol=1e-12, atol=1e-12)
    got = run("C[i,j] = 2*sum[k](A[i,k]*B[k,j]) - rb[i]", {"A": A, "B": B, "rb": rb}, {"A": fmt}, target)
    np.testing.assert_allclose(got, 2 * (A @ B) - rb[:, None], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target,tf", [("cpu", "dense"), ("cpu", "csr"), ("cpu", "dcsr"), ("triton", "csr")])
def test_spmm_then_epilogue_as_two_statements(target, tf):
    rng = np.random.default_rng(15)
    A = sparse(rng, (9, 7), 0.3)
    A[[1, 6]] = 0
    B, bias = rng.standard_normal((7, 4)), rng.standard_normal(4)
    text = "T[i,j] = A[i,k]*B[k,j]\nC[i,j] = max(T[i,j] + bias[j], 0) * 0.5"
    ref = np.maximum(A @ B + bias, 0) * 0.5
    for outputs in (["C"], None):
        got = run(text, {"A": A, "B": B, "bias": bias}, {"A": "dcsr", "T": tf}, target, outputs=outputs)
        np.testing.assert_allclose(got if outputs else got["C"], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target,pf", [("cpu", "csr"), ("cpu", "dense"), ("cpu", "coo"), ("triton", "csr")])
def test_softmax_in_four_statements_with_extreme_values(target, pf):
    A = sparse(np.random.default_rng(15), (7, 9), 0.4)
    A[1] = 0                                  # empty row
    A[3] = 0
    A[3, 4] = 2.0                             # one nonzero
    A[5, 2], A[5, 6], A[6, 1] = 800.0, -700.0, -1e300
    text = ("m[i] = max[j](where(A[i,j] != 0, A[i,j], -inf))\n"
            "E[i,j] = where(A[i,j] != 0, exp(A[i,j] - m[i]), 0)\n"
            "s[i] = E[i,j]\n"
            "P[i,j] = E[i,j] / s[i]")
    fm = {"A": "csr", "E": "csr", "P": pf}
    ref = softmax_rows(A)
    np.testing.assert_allclose(run(text, {"A": A}, fm, target, outputs=["P"]), ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(run(text, {"A": A}, fm, target)["P"], ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("fmt", ["csr", "csc", "bsr(1,2)"])
def test_masked_attention_general_lowering_large_scores(fmt):
    rng = np.random.default_rng(2)
    M = (rng.random((8, 10)) < 0.3) * rng.uniform(0.5, 2, (8, 10))
    M[2] = 0
    M[5] = 0
    M[5, 3] = 1.0
    Q, K, V = rng.standard_normal((8, 3)), rng.standard_normal((10, 3)), rng.standard_normal((10, 4))
    got = run(sc.masked_attention(scale=300.0, heads=False), {"M": M, "Q": Q, "K": K, "V": V}, {"M": fmt}, "cpu",
              outputs=["O"])
    np.testing.assert_allclose(got, attention_ref(M, Q, K, V, 300.0), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("schedule", [None, "auto"])
@pytest.mark.parametrize("text,formats,out", [
    ("C[i,j] = A[i,k]*B[k,j]", {"A": "csc", "B": "csc"}, "csr"),
    ("C[i,j] = A[i,k]*B[k,j]", {"A": "csr", "B": "csr"}, "csc"),
    ("C[i,j] = A[i,j] * E[j,i]", {"A": "csr", "E": "csr"}, "csr"),
    ("C[i,j] = A[i,j] + E[j,i]", {"A": "coo", "E": "dcsr"}, "coo"),
])
def test_conflicting_level_orders_default_and_auto(schedule, text, formats, out):
    rng = np.random.default_rng(6)
    A, B, E = sparse(rng, (7, 9)), sparse(rng, (9, 7)), sparse(rng, (9, 7))
    A[3] = 0
    ops = {"A": A, "B": B} if "B[" in text else {"A": A, "E": E}
    ref = A @ B if "B[" in text else (A * E.T if "*" in text else A + E.T)
    np.testing.assert_allclose(run(text, ops, formats, out_format=out, schedule=schedule), ref, rtol=1e-12,
                               atol=1e-12)
    if "E[j,i]" in text:
        k = sc.compile(text, formats=formats, out_format=out, schedule=schedule)
        assert "sparse_tensor.convert %E" in k.dump("loops") and "converted E" in k.dump("loops")


@pytest.mark.parametrize("fmt", ["csf", "csf(2,0,1)", "csf(2,1,0)", "coo"])
def test_permuted_csf_contractions(fmt):
    rng = np.random.default_rng(7)
    T = sparse(rng, (4, 5, 6), 0.3)
    T[1] = 0
    a, M = rng.standard_normal(4), rng.standard_normal((6, 3))
    for sched in (None, "auto"):
        np.testing.assert_allclose(run("B[j,k] = T[i,j,k]*a[i]", {"T": T, "a": a}, {"T": fmt}, schedule=sched),
                                   np.einsum("ijk,i->jk", T, a), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(run("B[i,j,l] = T[i,j,k]*M[k,l]", {"T": T, "M": M}, {"T": fmt}, schedule=sched),
                                   np.einsum("ijk,kl->ijl", T, M), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target,kind", [("cpu", "dense"), ("cpu", "hash"), ("triton", "hash")])
@pytest.mark.parametrize("text,fa,of", [
    ("C[i,j] = A[i,k]*(B[k,j] + E[k,j])", "csr", "dcsr"),
    ("C[i,j] = A[i,k]*B[k,j]", "dcsr", "coo"),
    ("C[i,j] = A[i,k]*B[k,j]", "coo", "csr"),
])
def test_spgemm_workspaces_with_wide_and_empty_rows(target, kind, text, fa, of):
    rng = np.random.default_rng(8)
    A = sparse(rng, (12, 10), 0.3)
    A[[2, 5]] = 0
    A[7] = 1.0                                  # a row touching every row of B: a wide output row
    B, E = sparse(rng, (10, 14), 0.3), sparse(rng, (10, 14), 0.3)
    B[4] = 0
    ops = {"A": A, "B": B, "E": E} if "E[" in text else {"A": A, "B": B}
    fm = {n: ("csr" if n != "A" else fa) for n in ops}
    got = run(text, ops, fm, target, out_format=of, schedule=sc.Schedule().workspace("j", kind))
    ref = A @ B + (A @ E if "E[" in text else 0)   # (A@B + A@E and a CSC A are refused with a ScheduleError)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tf", ["csr", "csc", "dense"])
def test_spgemm_chain_through_an_intermediate(tf):
    rng = np.random.default_rng(17)
    A, B, D = sparse(rng, (8, 7), 0.3), sparse(rng, (7, 9), 0.3), sparse(rng, (9, 6), 0.3)
    A[2] = 0
    text = "T[i,j] = A[i,k]*B[k,j]\nC[l,i] = T[i,j]*D[j,l]"
    fm = {"A": "csr", "B": "csr", "D": "csc", "T": tf, "C": "csr"}
    for outputs in (["C"], None):
        got = run(text, {"A": A, "B": B, "D": D}, fm, outputs=outputs)
        np.testing.assert_allclose(got if outputs else got["C"], (A @ B @ D).T, rtol=1e-12, atol=1e-12)


def test_intermediate_read_twice_and_normalized_by_its_own_total():
    rng = np.random.default_rng(9)
    A, x = sparse(rng, (6, 5)), rng.standard_normal(5)
    A[1] = 0
    t = A @ x
    for target in ("interp", "cpu"):
        got = run("t[i] = A[i,j]*x[j]\ny[i] = t[i] / sum[k](t[k]) + t[i]*t[i]", {"A": A, "x": x}, {"A": "csr"},
                  target, outputs=["y"])
        np.testing.assert_allclose(got, t / t.sum() + t * t, rtol=1e-12)


def test_fused_intermediate_keeps_shape_checks():
    with pytest.raises(sc.ShapeError, match="index j has extent 6"):
        k = sc.compile("t[i] = A[i,j]*x[j]\ny[j] = t[j]*z[j]", formats={"A": "csr"}, outputs=["y"])
        k(A=sc.Tensor.from_numpy(np.eye(6, 5), "csr"), x=np.ones(5), z=np.ones(5))
