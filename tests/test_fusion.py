"""Fusion: nested reductions computed as scalars in the consumer's loop nest, and
multi-statement programs whose intermediates never reach memory."""

import numpy as np
import pytest

import sparsec as sc
from sparsec import api
from sparsec.frontend import parse_program
from sparsec.ir.tensor_eval import evaluate_program
from sparsec.ir.tensor_ir import Program

TARGETS = ["interp", "cpu"]


def sparse(rng, shape, density=0.4):
    return np.where(rng.random(shape) < density, rng.uniform(-1, 1, shape), 0.0)


def no_temporaries(k):
    return not k.lowered.temporaries and "tmp" not in k.dump("loops")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmt", ["csr", "dcsr", "coo"])
def test_bias_and_relu_epilogue(target, fmt):
    rng = np.random.default_rng(1)
    A, x, b = sparse(rng, (9, 7)), rng.standard_normal(7), rng.standard_normal(9)
    # the implicit sum would wrap the whole single-term right-hand side, so the epilogue names it
    k = api.compile("y[i] = max(sum[j](A[i,j] * x[j]) + b[i], 0)", formats={"A": fmt}, target=target)
    assert no_temporaries(k)
    got = k(A=sc.Tensor.from_numpy(A, fmt), x=x, b=b)
    np.testing.assert_allclose(got, np.maximum(A @ x + b, 0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target", TARGETS)
def test_softmax_over_row_nonzeros_is_one_kernel(target):
    rng = np.random.default_rng(2)
    A = sparse(rng, (8, 11))
    A[3] = 0                                       # an empty row
    text = ("P[i,j] = where(A[i,j] != 0, exp(A[i,j] - max[k](where(A[i,k] != 0, A[i,k], -inf))), 0)"
            " / sum[k](where(A[i,k] != 0, exp(A[i,k] - max[l](where(A[i,l] != 0, A[i,l], -inf))), 0))")
    k = api.compile(text, formats={"A": "csr", "P": "csr"}, target=target)
    assert no_temporaries(k) and len(k.lowered.statements) == 1
    P = k(A=sc.Tensor.from_numpy(A, "csr"))
    ref = np.zeros_like(A)
    for r in range(A.shape[0]):
        nz = A[r] != 0
        if nz.any():
            e = np.exp(A[r, nz] - A[r, nz].max())
            ref[r, nz] = e / e.sum()
    np.testing.assert_allclose(P.to_numpy(), ref, rtol=1e-12, atol=1e-14)
    # with -inf as the mask value the max skips absent entries instead of visiting every column
    assert "every coordinate" not in k.dump("loops")


@pytest.mark.parametrize("target", TARGETS)
def test_sddmm_feeding_spmm_never_materializes_scores(target):
    rng = np.random.default_rng(3)
    M = (rng.random((10, 12)) < 0.3).astype(float)
    Q, K, V = rng.standard_normal((10, 4)), rng.standard_normal((12, 4)), rng.standard_normal((12, 5))
    text = "S[i,j] = M[i,j] * Q[i,d] * K[j,d]\nY[i,e] = S[i,j] * V[j,e]"
    k = api.compile(text, formats={"M": "csr", "S": "csr"}, target=target, outputs=["Y"])
    assert no_temporaries(k) and len(k.lowered.statements) == 1
    assert "S_vals" not in k.dump("loops")
    Y = k(M=sc.Tensor.from_numpy(M, "csr"), Q=Q, K=K, V=V)
    np.testing.assert_allclose(Y, (M * (Q @ K.T)) @ V, rtol=1e-12, atol=1e-12)
    # the dot product over d runs once per nonzero, not once per (nonzero, e)
    loops = k.dump("loops")
    assert loops.index("for d") < loops.index("for e")


@pytest.mark.parametrize("target", TARGETS)
def test_unfusable_reduction_falls_back_to_a_temporary(target):
    # sum over l depends on (k, j); the outer loop i would recompute it, so it is materialized
    rng = np.random.default_rng(4)
    A, B, D = sparse(rng, (5, 6)), sparse(rng, (6, 4)), rng.standard_normal((4, 3))
    text = "C[i,j] = A[i,k] * sum[l](B[k,l] * D[l,j])"
    k = api.compile(text, formats={"A": "csr", "B": "csr"}, target=target)
    assert k.lowered.temporaries and "precompute-nested" in k.dump("passes")
    got = k(A=sc.Tensor.from_numpy(A, "csr"), B=sc.Tensor.from_numpy(B, "csr"), D=D)
    np.testing.assert_allclose(got, A @ (B @ D), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target", TARGETS)
def test_intermediates_kept_when_requested(target):
    rng = np.random.default_rng(5)
    A, x = sparse(rng, (6, 6)), rng.standard_normal(6)
    text = "t[i] = A[i,j] * x[j]\ny[i] = exp(t[i]) * 2"
    both = api.compile(text, formats={"A": "csr"}, target=target)
    res = both(A=sc.Tensor.from_numpy(A, "csr"), x=x)
    assert set(res) == {"t", "y"}
    ref = evaluate_program(Program(tuple(parse_program(text))), {"A": A, "x": x})
    np.testing.assert_allclose(res["y"], ref["y"], rtol=1e-12)
    only_y = api.compile(text, formats={"A": "csr"}, target=target, outputs=["y"])
    assert len(only_y.lowered.statements) == 1
    np.testing.assert_allclose(only_y(A=sc.Tensor.from_numpy(A, "csr"), x=x), ref["y"], rtol=1e-12)


def test_unknown_output_is_rejected():
    with pytest.raises(sc.VerificationError, match="not written"):
        api.compile("y[i] = A[i,j] * x[j]", target="interp", outputs=["z"])
