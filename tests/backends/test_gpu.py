"""Triton backend on a real CUDA GPU: the differential grid at larger sizes, and CUDA-resident operands.

Skipped ("needs a CUDA GPU") when torch.cuda.is_available() is False. With a GPU the
module sets TRITON_INTERPRET=0 (these tests are about compiled kernels). Run alone:
``python -m pytest -q tests/backends/test_gpu.py``.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if torch.cuda.is_available() and "triton" not in sys.modules:
    # tests/conftest.py defaults TRITON_INTERPRET=1 for GPU-less machines; with a GPU the kernels
    # must be compiled, and Triton takes that decision when it (and each kernel module) is imported
    os.environ["TRITON_INTERPRET"] = "0"
pytest.importorskip("triton")
COMPILED = os.environ.get("TRITON_INTERPRET", "0") in ("", "0")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(torch.cuda.is_available() and not COMPILED,
                       reason="triton was imported in interpreter mode first; run tests/backends/test_gpu.py "
                              "in its own pytest process"),
]

import sparsec as sc  # noqa: E402
import sparsec.api as api  # noqa: E402
from sparsec.backends import triton as tb  # noqa: E402

RNG = np.random.default_rng(7)


def rand(shape, density=0.1, nm=False):
    a = RNG.standard_normal(shape)
    a[RNG.random(shape) > density] = 0.0
    if a.ndim >= 2 and a.shape[0] > 2:
        a[1] = 0.0
    if nm:
        flat = a.reshape(-1, a.shape[-1])
        for row in flat:
            for b in range(0, row.shape[0], 4):
                nz = np.flatnonzero(row[b:b + 4])
                row[b + nz[2:]] = 0.0
    return a


def dense(x):
    if isinstance(x, sc.Tensor):
        return x.to_numpy()
    if isinstance(x, torch.Tensor):
        if x.layout != torch.strided:
            x = x.to_dense()
        return x.detach().cpu().double().numpy()
    return np.asarray(x)


def check(subs, arrays, fmts, out_format=None, rtol=1e-9, atol=1e-9):
    ops = [sc.Tensor.from_numpy(a, f) if f is not None else a for a, f in zip(arrays, fmts)]
    got = api.einsum(subs, *ops, target="triton", out_format=out_format)
    want = np.einsum(subs, *[np.asarray(a, dtype=np.float64) for a in arrays])
    np.testing.assert_allclose(dense(got), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc", "coo", "dcsr", "bsr(4, 4)", "ell", "nm(2, 4)"])
def test_spmv(fmt):
    A = rand((301, 260), nm=fmt.startswith("nm"))
    check("ij,j->i", [A, RNG.standard_normal(260)], [fmt, None])


@pytest.mark.parametrize("fmt", ["csr", "coo", "bsr(4, 4)", "bsr(16, 16)", "dense"])
def test_spmm(fmt):
    check("ik,kj->ij", [rand((130, 96)), RNG.standard_normal((96, 70))], [fmt, None])


def test_spmm_b_sparse():
    check("ik,kj->ij", [RNG.standard_normal((50, 60)), rand((60, 70))], [None, "csr"])


def test_sddmm():
    check("ij,ik,kj->ij", [rand((120, 90)), RNG.standard_normal((120, 40)), RNG.standard_normal((40, 90))],
          ["csr", None, None], out_format="csr")


@pytest.mark.parametrize("op", ["+", "*"])
@pytest.mark.parametrize("fa,fb", [("csr", "csr"), ("coo", "csc"), ("dcsr", "csr")])
def test_add_mul(op, fa, fb):
    A, B = rand((150, 120)), rand((150, 120))
    k = api.compile(f"C[i,j] = A[i,j] {op} B[i,j]", formats={"A": fa, "B": fb, "C": "csr"}, target="triton")
    got = k(A=sc.Tensor.from_numpy(A, fa), B=sc.Tensor.from_numpy(B, fb))
    np.testing.assert_allclose(dense(got), A + B if op == "+" else A * B, rtol=1e-12, atol=1e-12)


def test_spgemm():
    check("ik,kj->ij", [rand((200, 150)), rand((150, 180))], ["csr", "csr"], out_format="csr")


def test_tensor_kernels():
    A = rand((20, 30, 25), density=0.05)
    check("ijk,k->ij", [A, RNG.standard_normal(25)], ["csf", None])
    check("ijl,lk->ijk", [A, RNG.standard_normal((25, 17))], ["csf", None])
    check("ikl,kj,lj->ij", [A, RNG.standard_normal((30, 16)), RNG.standard_normal((25, 16))], ["csf", None, None])


def test_reductions_and_elementwise():
    A, B = rand((90, 70)), rand((90, 70))
    check("ij,ij->", [A, B], ["csr", "csr"])
    check("ij->i", [A], ["csr"])
    check("ij->j", [A], ["csr"])
    check("ji,j->i", [A, RNG.standard_normal(90)], ["csr", None])
    k = api.compile("y[i] = max[j](A[i,j])", formats={"A": "csr"}, target="triton")
    np.testing.assert_allclose(dense(k(A=sc.Tensor.from_numpy(A, "csr"))), A.max(axis=1))
    k = api.compile("C[i,j] = exp(A[i,j])", formats={"A": "csr"}, target="triton")
    np.testing.assert_allclose(dense(k(A=sc.Tensor.from_numpy(A, "csr"))), np.exp(A), rtol=1e-12)


@pytest.mark.parametrize("dt", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fmt", ["csr", "bsr16"])
def test_low_precision(dt, fmt):
    A = rand((128, 96), density=0.3).astype(np.float32)
    if fmt == "bsr16":
        A[:, :] = 0
        A[16:32, 32:48] = RNG.standard_normal((16, 16))
        A[64:80, :16] = RNG.standard_normal((16, 16))
    B = RNG.standard_normal((96, 64)).astype(np.float32)
    At = torch.from_numpy(A).to(dt).cuda()
    At = At.to_sparse_bsr((16, 16)) if fmt == "bsr16" else At.to_sparse_csr()
    Bt = torch.from_numpy(B).to(dt).cuda()
    got = tb.einsum("ik,kj->ij", At, Bt)
    assert got.device.type == "cuda" and got.dtype == dt
    want = dense(At) @ dense(Bt)
    np.testing.assert_allclose(dense(got), want, rtol=3e-2, atol=6e-2)


def test_precision_tf32_vs_ieee():
    A = np.zeros((64, 64), dtype=np.float32)
    A[:16, 16:32] = RNG.standard_normal((16, 16))
    A[48:, :16] = RNG.standard_normal((16, 16))
    B = RNG.standard_normal((64, 48)).astype(np.float32)
    k = api.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "bsr(16, 16)"}, dtype="float32", target="triton")
    want = A.astype(np.float64) @ B
    with tb.options(precision="ieee"):
        ieee = dense(k(A=sc.Tensor.from_numpy(A, "bsr(16, 16)"), B=B))
    with tb.options(precision="tf32"):
        tf32 = dense(k(A=sc.Tensor.from_numpy(A, "bsr(16, 16)"), B=B))
    np.testing.assert_allclose(ieee, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tf32, want, rtol=3e-2, atol=3e-2)


def test_cuda_resident_inputs_stay_on_device(monkeypatch):
    from sparsec.backends.triton import device

    def no_host(*a, **k):
        raise AssertionError("host round trip")

    A = rand((400, 300))
    At = torch.from_numpy(A).cuda().to_sparse_csr()
    x = torch.from_numpy(RNG.standard_normal(300)).cuda()
    B = torch.from_numpy(RNG.standard_normal((300, 40))).cuda()
    monkeypatch.setattr(device.DeviceTensor, "to_host", no_host)
    monkeypatch.setattr(device, "from_host", no_host)
    monkeypatch.setattr(sc.Tensor, "from_torch", classmethod(lambda *a, **k: no_host()))
    y = tb.einsum("ij,j->i", At, x)
    C = tb.einsum("ik,kj->ij", At, B)
    S = tb.einsum("ij,ik,kj->ij", At, torch.ones((400, 5), dtype=torch.float64, device="cuda"),
                  torch.ones((5, 300), dtype=torch.float64, device="cuda"), out_format="csr")
    assert y.is_cuda and C.is_cuda and S.values.is_cuda
    monkeypatch.undo()
    np.testing.assert_allclose(y.cpu().numpy(), A @ x.cpu().numpy(), rtol=1e-10)
    np.testing.assert_allclose(C.cpu().numpy(), A @ B.cpu().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(S.to_torch().to_dense().cpu().numpy(), A * 5.0, rtol=1e-10)


def test_cuda_sparse_output_and_torch_roundtrip():
    A, B = rand((200, 100)), rand((200, 100))
    k = api.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, target="triton")
    C = tb.call(k, torch.from_numpy(A).cuda().to_sparse_csr(), torch.from_numpy(B).cuda().to_sparse_csr())
    assert C.values.is_cuda
    ct = C.to_torch()
    assert ct.layout == torch.sparse_csr and ct.is_cuda
    np.testing.assert_allclose(ct.to_dense().cpu().numpy(), A + B)


def test_large_spmv_int32_rows_per_program():
    # a larger CSR SpMV (many short rows: several rows per program)
    n = 200_000
    nnz_per_row = 5
    rows = np.repeat(np.arange(n), nnz_per_row)
    cols = RNG.integers(0, n, size=n * nnz_per_row)
    vals = RNG.standard_normal(n * nnz_per_row)
    import scipy.sparse as sp

    A = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    x = RNG.standard_normal(n)
    At = torch.sparse_csr_tensor(torch.from_numpy(A.indptr).cuda(), torch.from_numpy(A.indices).cuda(),
                                 torch.from_numpy(A.data).cuda(), size=(n, n))
    y = tb.einsum("ij,j->i", At, torch.from_numpy(x).cuda())
    np.testing.assert_allclose(y.cpu().numpy(), A @ x, rtol=1e-9, atol=1e-9)


@pytest.mark.skipif(os.environ.get("SPARSEC_BENCH") != "1", reason="benchmark: set SPARSEC_BENCH=1")
def test_bench_side_by_side():
    """Prints timings (not asserted): CSR SpMV / SpMM / SDDMM vs torch (cuSPARSE) and the bandwidth floor."""

    from triton.testing import do_bench

    def csr(n, m, per_row, dtype):
        g = torch.Generator(device="cuda").manual_seed(0)
        crow = torch.arange(0, n * per_row + 1, per_row, device="cuda", dtype=torch.int32)
        col = torch.randint(0, m, (n * per_row,), device="cuda", generator=g, dtype=torch.int32)
        col = col.view(n, per_row).sort(dim=1).values.reshape(-1)
        vals = torch.randn(n * per_row, device="cuda", dtype=dtype, generator=g)
        return torch.sparse_csr_tensor(crow, col, vals, size=(n, m))

    rows = []
    for n, per_row in ((1_000_000, 16), (1_000_000, 4), (100_000, 128)):
        A = csr(n, n, per_row, torch.float32)
        x = torch.randn(n, device="cuda")
        k = api.compile("y[i] = A[i,j] * x[j]", formats={"A": sc.formats.as_format("csr", 2)}, dtype="float32",
                        target="triton")
        bound = tb.device.bind_operand(A, "A", None, None, A.device)
        t_sc = do_bench(lambda: tb.call(k, bound, x))
        t_torch = do_bench(lambda: A @ x)
        # the kernel alone (no runtime/binding overhead), and a few tile shapes
        ck = next(iter(k._compiled.values()))
        y = torch.zeros(n, device="cuda")
        bufs = {"A_pos1": A.crow_indices(), "A_crd1": A.col_indices(), "A_vals": A.values(), "x_vals": x,
                "y_vals": y}
        scal = {p.name: n for p in ck.kernel.scalars}
        scal.update(sc_lo=0, sc_hi=n)
        t_k = do_bench(lambda: ck(bufs, scal))
        sweep = []
        for r_, b_, w_ in ((1, 16, 1), (4, 16, 2), (16, 16, 4), (32, 16, 8), (8, 32, 4), (64, 4, 4), (2, 128, 4)):
            with tb.options(rows=r_, block=b_, num_warps=w_):
                sweep.append(f"{r_}x{b_}/w{w_}={do_bench(lambda: ck(bufs, scal)):.3f}")
        nnz = n * per_row
        bytes_moved = nnz * (4 + 4 + 4) + (n + 1) * 4 + n * 4 + n * 4
        floor = bytes_moved / 3.0e12 * 1e3
        rows.append(f"spmv n={n} nnz/row={per_row}: sparsec call {t_sc:.3f} ms, kernel {t_k:.3f} ms, "
                    f"torch/cuSPARSE {t_torch:.3f} ms, bandwidth floor ~{floor:.3f} ms; ROWSxBLOCK/warps: "
                    + " ".join(sweep))
    A = csr(100_000, 100_000, 16, torch.float32)
    for N in (32, 128):
        B = torch.randn(100_000, N, device="cuda")
        k = api.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float32", target="triton")
        bound = tb.device.bind_operand(A, "A", None, None, A.device)
        t_sc = do_bench(lambda: tb.call(k, bound, B))
        t_torch = do_bench(lambda: A @ B)
        rows.append(f"spmm n=100000 nnz/row=16 N={N}: sparsec {t_sc:.3f} ms, torch/cuSPARSE {t_torch:.3f} ms")
    U = torch.randn(100_000, 64, device="cuda")
    V = torch.randn(64, 100_000, device="cuda")
    k = api.compile("S[i,j] = A[i,j] * U[i,k] * V[k,j]", formats={"A": "csr", "S": "csr"}, dtype="float32",
                    target="triton")
    bound = tb.device.bind_operand(A, "A", None, None, A.device)
    t_sc = do_bench(lambda: tb.call(k, bound, U, V))
    rows.append(f"sddmm n=100000 nnz/row=16 K=64: sparsec {t_sc:.3f} ms")
    print("\n" + "\n".join(rows))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_repeated_calls_take_the_direct_launch_and_agree():
    # the second call with the same operands reuses the compiled kernel without Triton's binder

    for text, fmts, shapes in [("y[i] = A[i,j] * x[j]", {"A": "csr"}, {"x": (300,)}),
                               ("C[i,j] = A[i,k] * B[k,j]", {"A": "csr"}, {"B": (300, 48)})]:
        A = np.where(RNG.random((500, 300)) < 0.05, RNG.standard_normal((500, 300)), 0.0).astype(np.float32)
        At = torch.from_numpy(A).to_sparse_csr().cuda()
        other = {n: torch.randn(*s, device="cuda") for n, s in shapes.items()}
        k = sc.compile(text, formats=fmts, dtype="float32", target="triton")
        first = k(A=At, **other).clone()
        memo = next(iter(k._triton_fast.tk._launch_memo.values()))
        assert memo.direct is not None, "no direct launcher was made"
        second = k(A=At, **other)
        torch.testing.assert_close(second, first)
        ref = A @ next(iter(other.values())).cpu().numpy()
        np.testing.assert_allclose(second.cpu().numpy(), ref, rtol=1e-4, atol=1e-4)
    # a tile template (zero-skipping GEMV): its constexprs come last too, so it launches directly as well
    k = sc.compile("Y[r,i] = X[r,k] * Wt[k,i]", dtype="float16", target="triton", schedule=sc.Schedule().skip_zeros("X"))
    X = torch.where(torch.rand(1, 256, device="cuda") < 0.5, torch.randn(1, 256, device="cuda"), 0).half()
    Wt = torch.randn(256, 64, device="cuda").half()
    first = k(X=X, Wt=Wt).clone()
    assert k._triton_fast.tk.tile is not None
    assert next(iter(k._triton_fast.tk._launch_memo.values())).direct is not None, "no direct launcher for the tile"
    torch.testing.assert_close(k(X=X, Wt=Wt), first)
    torch.testing.assert_close(first.float(), X.float() @ Wt.float(), rtol=2e-2, atol=2e-2)
