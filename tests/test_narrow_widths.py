"""8- and 16-bit position / coordinate widths (MLIR's ``posWidth`` / ``crdWidth`` = 8 or 16).

Differential tests against numpy float64 over formats x widths x (SpMV, SpMM, an
elementwise add with a sparse output) on the CPU backend, the loop-IR interpreter
and Triton (interpreter mode); automatic widening when coordinates or positions do
not fit (the 127 / 128 boundary of int8), the errors where widening is not possible
(a compiled kernel, a sparse output), explicit buffers, and sign extension of
narrow index loads in every backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import sparsec as sc
from sparsec import FormatError, Tensor
from sparsec.ir import loop_ir as L

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

TARGETS = ("cpu", "interp", "triton")
SEED = 8016
FORMATS_2D = ("csr", "csc", "coo", "dcsr", "bsr(2, 2)", "nm(2, 4)")


def with_widths(name: str, pos: int, crd: int) -> str:
    return f"{name}[pos{pos},crd{crd}]"


def rand(shape, rng, density=0.4, nm=False):
    """A random array with empty rows (0 and 3); ``nm``: at most 2 nonzeros per 4 columns."""
    a = rng.standard_normal(shape)
    a[rng.random(shape) > density] = 0.0
    a[0] = 0.0
    if shape[0] > 3:
        a[3] = 0.0
    if nm:
        blocks = a.reshape(*shape[:-1], shape[-1] // 4, 4)
        blocks[..., 1:3][(blocks[..., 0] != 0) & (blocks[..., 3] != 0)] = 0.0
        blocks[..., 2][blocks[..., 1] != 0] = 0.0
    return a


def dense(x) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.to_numpy()
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def index_dtypes(t: Tensor) -> set[str]:
    return {str(np.asarray(b.cpu() if isinstance(b, torch.Tensor) else b).dtype) for lv in t.levels for b in lv.values()}


def param_dtypes(k) -> dict[str, str]:
    return {p.name: p.dtype for s in k.lowered.statements for p in s.numeric.params if isinstance(p, L.BufferParam)}


def check_result_format(out, declared: str) -> None:
    """A sparse result keeps the declared widths (or wider where its entries need it) and matching buffers."""
    want = sc.parse_format(declared, out.ndim)
    assert out.format.with_widths(32, 32) == want.with_widths(32, 32)
    assert out.format.pos_width >= want.pos_width and out.format.crd_width >= want.crd_width
    for lvl, bufs in zip(out.format.levels, out.levels):
        for part, b in bufs.items():
            width = lvl.buffer_width(part, out.format.pos_width, out.format.crd_width)
            assert str(b.dtype).replace("torch.", "") == f"int{width}", (out.format, part, b.dtype)


# ------------------------------------------------------------------------------ 2-D differential
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("width", (8, 16))
@pytest.mark.parametrize("name", FORMATS_2D)
def test_spmv_spmm_add_2d(name: str, width: int, target: str) -> None:
    rng = np.random.default_rng(SEED + width)
    nm = name.startswith("nm")
    a, b = rand((10, 12), rng, nm=nm), rand((10, 12), rng, nm=nm)
    fmt = with_widths(name, width, width)
    A, B = Tensor.from_numpy(a, fmt), Tensor.from_numpy(b, fmt)
    assert A.format == sc.parse_format(fmt, 2), A.format        # small enough: nothing widened
    assert index_dtypes(A) == {f"int{width}"}
    x, X = rng.standard_normal(12), rng.standard_normal((12, 3))

    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": fmt}, target=target)
    assert {d for n, d in param_dtypes(k).items() if n.startswith("A_") and "vals" not in n} == {f"int{width}"}
    np.testing.assert_allclose(dense(k(A=A, x=x)), a @ x, rtol=1e-12, atol=1e-12)
    k = sc.compile("C[i,k] = A[i,j] * X[j,k]", formats={"A": fmt}, target=target)
    np.testing.assert_allclose(dense(k(A=A, X=X)), a @ X, rtol=1e-12, atol=1e-12)

    out = with_widths("csr" if nm else name, width, width)
    k = sc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": fmt, "B": fmt}, out_format=out, target=target)
    C = k(A=A, B=B)
    np.testing.assert_allclose(dense(C), a + b, rtol=1e-12, atol=1e-12)
    check_result_format(C, out)


@pytest.mark.parametrize("target", TARGETS)
def test_csf_3d(target: str) -> None:
    rng = np.random.default_rng(SEED)
    a, b = rand((4, 5, 6), rng), rand((4, 5, 6), rng)
    x, X = rng.standard_normal(6), rng.standard_normal((6, 2))
    for width in (8, 16):
        fmt = with_widths("csf", width, width)
        A, B = Tensor.from_numpy(a, fmt), Tensor.from_numpy(b, fmt)
        assert A.format.crd_width == width and index_dtypes(A) == {f"int{width}"}
        pos = A.format.pos_width                                    # 8 bits hold the 4*5*6 = 120 positions at most
        assert pos == width
        np.testing.assert_allclose(dense(sc.einsum("ijk,k->ij", A, x, target=target)), np.einsum("ijk,k->ij", a, x))
        np.testing.assert_allclose(dense(sc.einsum("ijk,kl->ijl", A, X, target=target)),
                                   np.einsum("ijk,kl->ijl", a, X))
        k = sc.compile("C[i,j,k] = A[i,j,k] + B[i,j,k]", formats={"A": fmt, "B": fmt}, out_format=fmt,
                       target=target)
        C = k(A=A, B=B)
        np.testing.assert_allclose(dense(C), a + b)
        check_result_format(C, fmt)


@pytest.mark.parametrize("target", TARGETS)
def test_empty_tensors_and_rows(target: str) -> None:
    x = np.arange(8.0)
    for name in ("csr", "coo", "nm(2, 4)", "bsr(2, 2)"):
        fmt = with_widths(name, 8, 8)
        for a in (np.zeros((5, 8)), np.zeros((0, 8))):
            A = Tensor.from_numpy(a, fmt)
            assert A.format == sc.parse_format(fmt, 2)
            np.testing.assert_array_equal(dense(sc.einsum("ij,j->i", A, x, target=target)), a @ x)
            k = sc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": fmt, "B": fmt},
                           out_format=with_widths("csr", 8, 8), target=target)
            C = k(A=A, B=A)
            assert C.shape == a.shape and dense(C).sum() == 0.0
    a = np.zeros((6, 8))
    a[5, 7] = 2.0                                                    # rows 0..4 empty, the last entry last
    A = Tensor.from_numpy(a, "csr[pos8,crd8]")
    np.testing.assert_array_equal(dense(sc.einsum("ij,j->i", A, x, target=target)), a @ x)


# ------------------------------------------------------------------------------ widening
@pytest.mark.parametrize("target", TARGETS)
def test_int8_boundary_127_128_widens(target: str) -> None:
    # the largest coordinate 127 fits int8; 128 does not: the tensor is widened to 16 bits (a kernel
    # reading a truncated 128 (-128 as int8) would gather x[-128] or fault)
    x = np.arange(1.0, 130.0)
    for ncols, last in ((128, 127), (129, 128)):
        a = np.zeros((3, ncols))
        a[0, last] = 1.0
        a[2, [0, last - 1, last]] = [2.0, 3.0, 4.0]
        for name in ("csr", "coo", "dcsr"):
            A = Tensor.from_numpy(a, with_widths(name, 8, 8))
            crd = 8 if last == 127 else 16
            assert A.format.crd_width == crd, A.format
            assert int(A.levels[1]["crd"].max()) == last and A.levels[1]["crd"].dtype == np.dtype(f"int{crd}")
            np.testing.assert_array_equal(dense(sc.einsum("ij,j->i", A, x[:ncols], target=target)), a @ x[:ncols])
    # positions: 127 entries fit pos8, 128 do not
    for nnz, pos in ((127, 8), (128, 16)):
        a = np.zeros((2, 100))
        a.reshape(-1)[:nnz] = 1.0
        A = Tensor.from_numpy(a, "csr[pos8,crd8]")
        assert (A.format.pos_width, A.format.crd_width) == (pos, 8) and A.levels[1]["pos"][-1] == nnz
        np.testing.assert_array_equal(dense(sc.einsum("ij,j->i", A, np.ones(100), target=target)), a.sum(1))


def test_widening_follows_the_levels_that_own_the_buffers() -> None:
    rng = np.random.default_rng(SEED + 1)
    a = rand((300, 400), rng, density=0.05, nm=True)
    # an N:M level stores in-block coordinates 0..3: 8 bits at any shape
    W = Tensor.from_numpy(a, "nm(2, 4)[pos32,crd8]")
    assert W.format == sc.parse_format("nm(2,4)[pos32,crd8]") and W.levels[2]["crd"].dtype == np.int8
    # CSR's crd holds columns only (300 rows do not count), BSR's the block columns
    assert Tensor.from_numpy(a[:, :100], "csr[pos32,crd8]").format.crd_width == 8
    assert Tensor.from_numpy(a, "csr[pos32,crd8]").format.crd_width == 16
    assert Tensor.from_numpy(a[:, :254], "bsr(2,2)[pos32,crd8]").format.crd_width == 8
    assert Tensor.from_numpy(a, "bsr(2,2)[pos32,crd8]").format.crd_width == 16
    # from scipy / coordinates / another format: widened the same way, never narrowed below the declared
    import scipy.sparse as sp

    m = sp.csr_matrix(a)
    assert Tensor.from_scipy(m, "csr[pos16,crd8]").format == sc.parse_format("csr[pos16,crd16]")
    coords = np.array(np.nonzero(a))
    t = Tensor.from_coo(coords, a[tuple(coords)], a.shape, "coo[pos8,crd8]")
    assert (t.format.pos_width, t.format.crd_width) == (16, 16)
    assert Tensor.from_numpy(a, "csr").to("csr[pos8,crd8]").format == sc.parse_format("csr[pos16,crd16]")
    assert Tensor.from_numpy(a[:2, :4], "csr[pos64,crd16]").format == sc.parse_format("csr[pos64,crd16]")
    # 16 bits: 32767 is the largest coordinate
    assert Tensor.from_coo([[0], [32767]], [1.0], (1, 32768), "csr[pos8,crd16]").format.crd_width == 16
    assert Tensor.from_coo([[0], [32768]], [1.0], (1, 32769), "csr[pos8,crd16]").format.crd_width == 32


@pytest.mark.parametrize("target", TARGETS)
def test_kernel_compiled_narrower_than_the_operand_names_it(target: str) -> None:
    a = np.zeros((4, 200))
    a[1, 150] = a[3, 7] = 1.0
    A = Tensor.from_numpy(a, "csr[pos8,crd8]")
    assert A.format == sc.parse_format("csr[pos8,crd16]")
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr[pos8,crd8]"}, target=target)
    with pytest.raises(FormatError, match=r"operand 'A' .* needs 8-bit positions and 16-bit coordinates, but the "
                                          r"kernel was compiled for csr\[pos8,crd8\]"):
        k(A=A, x=np.ones(200))
    # a wider tensor whose entries fit is narrowed to the kernel's widths
    small = Tensor.from_numpy(a[:, :100], "csr")
    np.testing.assert_array_equal(dense(k(A=small, x=np.ones(100))), a[:, :100].sum(1))
    # an earlier statement's result widened past its declared width reaches the next one: the same error
    k2 = sc.compile("C[i,j] = A[i,j] + B[i,j]\ny[i] = C[i,j] * x[j]",
                    formats={"A": "csr", "B": "csr", "C": "csr[pos8,crd8]"}, target=target, outputs=["C", "y"])
    assert len(k2.lowered.statements) == 2
    b = np.ones((2, 100))
    with pytest.raises(FormatError, match=r"operand 'C' .* needs 16-bit positions"):
        k2(A=b, B=b, x=np.ones(100))
    np.testing.assert_array_equal(dense(k2(A=b[:, :50], B=b[:, :50], x=np.ones(50))["y"]), [100.0, 100.0])


@pytest.mark.parametrize("target", TARGETS)
def test_narrow_output_whose_coordinates_do_not_fit(target: str) -> None:
    a = np.zeros((2, 200))
    a[0, 199] = a[1, 3] = 1.0
    k = sc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr"}, out_format="csr[pos8,crd8]",
                   target=target)
    with pytest.raises(FormatError, match=r"output 'C' of shape \(2, 200\) needs 16-bit coordinates, but the "
                                          r"kernel stores 8-bit ones"):
        k(A=a, B=a)
    C = k(A=a[:, :128], B=a[:, :128])       # columns 0..127 fit
    np.testing.assert_array_equal(dense(C), 2 * a[:, :128])
    check_result_format(C, "csr[pos8,crd8]")


def test_conversion_of_a_narrow_operand_is_compiled_wide_enough() -> None:
    # a narrow operand's widths fit its own levels; a converted copy arranges them otherwise: csr[crd8]
    # bounds the columns, its CSC copy stores rows (200); nm(2,4)[crd8] stores 0..3, its CSR copy columns
    rng = np.random.default_rng(SEED + 2)
    a, b = rand((200, 100), rng, density=0.03), rand((200, 100), rng, density=0.03)
    w, v = rand((20, 200), rng, density=0.3, nm=True), rand((20, 200), rng, density=0.05)
    cases = [("csc[pos16,crd16]", "csr[pos16,crd8]", a, b), ("nm(2,4)[pos32,crd8]", "csr", w, v)]
    for fa, fb, x, y in cases:
        A, B = Tensor.from_numpy(x, fa), Tensor.from_numpy(y, fb)
        assert (A.format, B.format) == (sc.parse_format(fa), sc.parse_format(fb))
        for target in ("cpu", "interp"):
            k = sc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": fa, "B": fb}, out_format="csr", target=target)
            convs = k.lowered.statements[0].space.conversions
            assert convs and all(min(c.dst.pos_width, c.dst.crd_width) >= 32 for c in convs), convs
            np.testing.assert_allclose(k(A=A, B=B).to_numpy(), x + y)


# ------------------------------------------------------------------------------ explicit buffers
def test_explicit_buffers() -> None:
    pos, crd, vals = np.array([0, 1, 3]), np.array([2, 0, 5]), np.array([1.0, 2.0, 3.0])
    t = Tensor.from_buffers("csr[pos8,crd8]", (2, 6), [{}, {"pos": pos, "crd": crd}], vals)
    assert t.levels[1]["pos"].dtype == np.int8 and t.levels[1]["crd"].dtype == np.int8
    same = Tensor.from_buffers("csr[pos8,crd8]", (2, 6), [{}, dict(t.levels[1])], vals)
    assert same.levels[1]["crd"] is t.levels[1]["crd"]              # the right dtype is not copied
    # coordinates past int8 widen instead of wrapping
    wide = Tensor.from_buffers("csr[pos8,crd8]", (2, 300), [{}, {"pos": pos, "crd": np.array([2, 0, 299])}], vals)
    assert wide.format == sc.parse_format("csr[pos8,crd16]") and wide.levels[1]["crd"][2] == 299
    with pytest.raises(FormatError, match=r"crd must have an integer dtype, got float64"):
        Tensor.from_buffers("csr[pos8,crd8]", (2, 6), [{}, {"pos": pos, "crd": crd.astype(float)}], vals)
    bad = Tensor(sc.parse_format("csr[pos8,crd8]"), (2, 6), [{}, {"pos": pos.astype(np.int8), "crd": crd}], vals)
    with pytest.raises(FormatError, match=r"crd has dtype int64, the format says int8"):
        bad.validate()
    # a uint8 crd of 200 is a valid coordinate: read as int16, not as int8's -56
    u8 = Tensor.from_buffers("csr[pos8,crd8]", (1, 256), [{}, {"pos": np.array([0, 1]), "crd": np.array([200], np.uint8)}],
                             np.array([5.0]))
    assert u8.format.crd_width == 16 and u8.to_numpy()[0, 200] == 5.0


def test_torch_and_device_round_trips() -> None:
    a = np.zeros((3, 5))
    a[0, 4] = a[2, 1] = 1.0
    t = Tensor.from_numpy(a, "csr[pos8,crd8]")
    tt = t.to_torch()                      # torch sparse takes int32 / int64 indices
    assert tt.crow_indices().dtype == torch.int32
    np.testing.assert_array_equal(tt.to_dense().numpy(), a)
    from sparsec.backends.triton.device import from_host

    d = from_host(t, torch.device("cpu"))
    assert d.levels[1]["crd"].dtype == torch.int8
    wide = d.to("csr")
    assert wide.levels[1]["crd"].dtype == torch.int32
    back = wide.to("csr[pos8,crd8]")
    assert back.format == t.format and back.levels[1]["pos"].dtype == torch.int8
    np.testing.assert_array_equal(back.to_numpy(), a)


# ------------------------------------------------------------------------------ sign extension
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", ("int8", "int16"))
def test_narrow_index_loads_sign_extend(dtype: str, target: str) -> None:
    """``index(buf[p])`` of an int8 / int16 buffer sign-extends (a zero extension reads -1 as 255 / 65535)."""
    from sparsec.backends import get_backend

    info = np.iinfo(dtype)
    n = 37                                            # more than a vector of lanes, with a remainder
    idx = np.resize(np.array([-1, info.min, info.max, 5, 0, -2], dtype=dtype), n)
    off = -int(info.min)
    vals = np.arange(info.min, info.max + 1, dtype=np.float64)     # vals[c + off] == c
    i = L.Var("i")
    c = L.Cast(L.Load("idx", i, dtype), "index")
    body = L.Block((L.For(i, L.Var("sc_lo"), L.Var("sc_hi"), L.Block((
        L.Store("out", i, L.Cast(c, "int64")),
        L.Store("gathered", i, L.Load("vals", L.binop("add", c, off), "float64")),
    )), L.LoopKind("parallel")),))
    k = L.Kernel(f"sext_{dtype}", (L.BufferParam("idx", dtype), L.BufferParam("vals", "float64"),
                                   L.BufferParam("out", "int64", "out"), L.BufferParam("gathered", "float64", "out"),
                                   L.ScalarParam("sc_lo"), L.ScalarParam("sc_hi")), body)
    bufs = {"idx": idx, "vals": vals, "out": np.zeros(n, np.int64), "gathered": np.zeros(n)}
    if target == "triton":
        from sparsec.backends.triton.launch import interpreting

        device = "cpu" if interpreting() or not torch.cuda.is_available() else "cuda"
        bufs = {name: torch.from_numpy(b).to(device) for name, b in bufs.items()}
    get_backend(target).compile(k)(bufs, {"sc_lo": 0, "sc_hi": n})
    np.testing.assert_array_equal(dense(bufs["out"]), idx.astype(np.int64))
    np.testing.assert_array_equal(dense(bufs["gathered"]), idx.astype(np.float64))
