"""The fast call path agrees with the general runtime, is really taken, and falls back when it must."""

import os

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc
from sparsec import fastcall
from sparsec.fastcall import FALLBACK
from sparsec.frontend import parse_statement

CASES = [
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, None),
    ("y[i] = A[i,j] * x[j]", {"A": "csc"}, None),
    ("y[i] = A[i,j] * x[j]", {"A": "coo"}, None),
    ("C[i,j] = A[i,k] * B[k,j]", {"A": "csr"}, None),
    ("y[i] = max[j](A[i,j])", {"A": "dcsr"}, None),
    ("S[i,j] = M[i,j] * U[i,k] * V[k,j]", {"M": "csr"}, "csr"),
    ("y[i] = A[i,j] * x[j]", {"A": "bsr(2,3)"}, None),
]


def operands(text, formats, rng):
    shapes = {"A": (13, 9), "x": (9,), "B": (9, 4), "M": (6, 7), "U": (6, 3), "V": (3, 7)}
    names = sorted({a.tensor for a in parse_statement(text).accesses()})
    out = {}
    for n in names:
        a = rng.uniform(-1, 1, shapes[n])
        if n in formats:
            a = np.where(rng.random(shapes[n]) < 0.35, a, 0.0)
            out[n] = sc.Tensor.from_numpy(a, formats[n], name=n)
        else:
            out[n] = a
    return out


@pytest.mark.parametrize("target", ["cpu", "interp"])
@pytest.mark.parametrize("text,formats,out", CASES)
def test_fast_path_matches_general_path(target, text, formats, out):
    rng = np.random.default_rng(7)
    k = sc.compile(text, formats=formats, out_format=out, target=target)
    assert k._fast is not None, "this kernel should have a fast call plan"
    ops = operands(text, formats, rng)
    fast = k._fast(ops)
    assert fast is not FALLBACK
    general = k.run(**ops)[k.outputs[0]]
    if isinstance(fast, sc.Tensor):
        np.testing.assert_array_equal(fast.to_numpy(), general.to_numpy())
    else:
        np.testing.assert_array_equal(fast, general.to_numpy())
    # and the public call takes the fast path
    calls = []
    orig = k._fast.__call__

    class Spy:
        def __call__(self, given):
            calls.append(1)
            return orig(given)

    k._fast = Spy()
    k(**ops)
    assert calls


def test_fallbacks_give_the_same_answers_and_errors():
    rng = np.random.default_rng(8)
    A = np.where(rng.random((8, 6)) < 0.4, rng.uniform(-1, 1, (8, 6)), 0.0)
    x = rng.uniform(-1, 1, 6)
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu")
    ref = A @ x
    # another format (converted), another dtype (cast), a scipy matrix, a non-contiguous vector
    assert k._fast({"A": sc.Tensor.from_numpy(A, "csc"), "x": x}) is FALLBACK
    np.testing.assert_allclose(k(A=sc.Tensor.from_numpy(A, "csc"), x=x), ref)
    np.testing.assert_allclose(k(A=sc.Tensor.from_numpy(A.astype(np.float32), "csr"), x=x), ref, rtol=1e-6)
    np.testing.assert_allclose(k(A=sp.csr_matrix(A), x=x), ref)
    x2 = np.repeat(x, 2)[::2]
    assert not x2.flags.c_contiguous
    np.testing.assert_allclose(k(A=sp.csr_matrix(A), x=x2), ref)
    # a shape mismatch still gets the precise message from the general path
    with pytest.raises(sc.ShapeError, match="index j has extent 6"):
        k(A=sc.Tensor.from_numpy(A, "csr"), x=np.ones(5))


def test_host_bounds_compile_to_closures():
    from sparsec.ir import loop_ir as L

    e = L.binop("floordiv", L.binop("add", L.Var("n"), 3), 4)
    assert fastcall.host_expr(e)({}, {"n": 9}) == 3
    load = L.Cast(L.Load("p", L.Const(1), "int32"), "index")
    assert fastcall.host_expr(load)({"p": np.array([2, 5])}, {}) == 5
    assert fastcall.host_value(L.Const(0)) == 0 and fastcall.host_value(L.Var("n")) == "n"


def test_einsum_scipy_view_sees_values_changed_in_place():
    A = sp.random(20, 15, 0.3, format="csr", random_state=3)
    x = np.random.default_rng(3).random(15)
    np.testing.assert_allclose(sc.einsum("ij,j->i", A, x), A @ x)
    A.data[:] = -A.data
    np.testing.assert_allclose(sc.einsum("ij,j->i", A, x), A @ x)
    A2 = A.copy()
    A2.indices[0] = 10 ** 6      # corrupt a *new* matrix object: validated before any kernel runs
    with pytest.raises(sc.FormatError):
        sc.einsum("ij,j->i", A2, x)


def test_triton_fast_path_matches_and_rebinds_edited_tensors():
    torch = pytest.importorskip("torch")
    from sparsec.backends import triton as tb

    rng = np.random.default_rng(9)
    A = np.where(rng.random((12, 9)) < 0.4, rng.uniform(-1, 1, (12, 9)), 0.0).astype(np.float32)
    x = rng.uniform(-1, 1, 9).astype(np.float32)
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float32", target="triton")
    # compiled Triton (TRITON_INTERPRET=0 on a GPU machine) needs the operands on the GPU
    dev = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0") else "cpu"
    At, xt = torch.from_numpy(A).to_sparse_csr().to(dev), torch.from_numpy(x).to(dev)
    y = k(A=At, x=xt).cpu()
    assert k._triton_fast is not None
    np.testing.assert_allclose(y.numpy(), A @ x, rtol=1e-5, atol=1e-6)
    # the fast path's result equals the general device path's
    k._triton_fast, fast = None, k._triton_fast
    general = tb.call(k, A=At, x=xt).cpu()
    k._triton_fast = fast
    np.testing.assert_array_equal(y.numpy(), general.numpy())
    # an in-place edit bumps the tensor's version: the cached binding is not reused
    expected = A @ (2 * x)
    xt.mul_(2)                       # (on the CPU x shares xt's memory, so expected was taken first)
    np.testing.assert_allclose(k(A=At, x=xt).cpu().numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", ["cpu", "interp"])
def test_torch_cpu_operands_take_the_fast_path(target, monkeypatch):
    """Dense CPU torch operands go to the fast path as numpy views; the result is a torch tensor, as from the
    general path, and equal to it. Operands the views cannot serve (non-contiguous, sparse layouts) fall back."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    a = np.where(rng.random((13, 9)) < 0.35, rng.uniform(-1, 1, (13, 9)), 0.0)
    A = sc.Tensor.from_numpy(a, "csr")
    b = rng.uniform(-1, 1, (9, 4))
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, target=target)
    want = k(A=A, B=b)
    general = type(k._runner).run
    took_general = []
    monkeypatch.setattr(type(k._runner), "run", lambda self, t: took_general.append(1) or general(self, t))
    for B in (torch.from_numpy(b.copy()), torch.from_numpy(b.copy()).requires_grad_(True)):
        got = k(A=A, B=B)
        assert type(got) is torch.Tensor and got.dtype == torch.float64 and not took_general
        np.testing.assert_array_equal(got.numpy(), want)
    # a transposed view is not C-contiguous: the general path copies it; same answer, still a torch tensor
    bt = torch.from_numpy(np.ascontiguousarray(b.T)).t()
    got = k(A=A, B=bt)
    assert type(got) is torch.Tensor and took_general
    np.testing.assert_array_equal(got.numpy(), want)
    # a torch sparse operand is not a dense view: the general path converts it
    took_general.clear()
    got = k(A=torch.from_numpy(a).to_sparse_csr(), B=torch.from_numpy(b))
    assert took_general
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
