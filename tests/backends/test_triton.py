"""Triton backend, on the CPU through Triton's interpreter (TRITON_INTERPRET=1).

The differential grid of the compiler core with target="triton" against
numpy.einsum in float64, small shapes (the interpreter is slow): SpMV over every
format, SpMM (B dense and B sparse), SDDMM, sparse add/multiply with CSR output,
SpGEMM, TTV/TTM/MTTKRP on CSF, inner product, axis sums, transposed access, exp,
max; float16/bfloat16 with float32 accumulation; tl.dot precision ieee/tf32;
empty tensors and one-row matrices; and checks that the fast paths were taken.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import sparsec as sc  # noqa: E402
import sparsec.api as api  # noqa: E402
from sparsec.backends import triton as tb  # noqa: E402


INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

RNG = np.random.default_rng(20240917)


def rand(shape, density=0.45, nm=False, rng=RNG):
    """A random array with some empty rows; ``nm``: at most 2 nonzeros per 4 columns (last axis)."""
    a = rng.standard_normal(shape)
    a[rng.random(shape) > density] = 0.0
    if a.ndim >= 2 and a.shape[0] > 2:
        a[1] = 0.0  # an empty row
    if nm:
        flat = a.reshape(-1, a.shape[-1])
        for row in flat:
            for b in range(0, row.shape[0], 4):
                nz = np.flatnonzero(row[b:b + 4])
                row[b + nz[2:]] = 0.0
    return a


def tensor(a, fmt):
    return sc.Tensor.from_numpy(np.ascontiguousarray(a), fmt)


def dense(x):
    if isinstance(x, sc.Tensor):
        return x.to_numpy()
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x)


def check(subs, arrays, fmts, out_format=None, rtol=1e-9, atol=1e-9):
    ops = [tensor(a, f) if f is not None else a for a, f in zip(arrays, fmts)]
    got = api.einsum(subs, *ops, target="triton", out_format=out_format)
    want = np.einsum(subs, *[np.asarray(a, dtype=np.float64) for a in arrays])
    np.testing.assert_allclose(dense(got), want, rtol=rtol, atol=atol)
    return got


def einsum_kernel(subs, fmts, out_format=None, dtype="float64"):
    names = [api._operand_name(k) for k in range(len(fmts))]
    from sparsec.frontend import parse_einsum

    stmt = parse_einsum(subs, names, "out")
    ndims = [len(x) for x in subs.split("->")[0].split(",")]
    formats = {n: sc.formats.as_format(f, nd) for n, f, nd in zip(names, fmts, ndims)}
    return api.compile(stmt, formats=formats, dtype=dtype, target="triton", out_format=out_format)


# ------------------------------------------------------------------------------------- SpMV
SPMV_FORMATS = ["dense", "csr", "csc", "coo", "dcsr", "bsr(2, 2)", "ell", "nm(2, 4)"]


@pytest.mark.parametrize("fmt", SPMV_FORMATS)
@pytest.mark.parametrize("shape", [(9, 8), (1, 8)])
def test_spmv(fmt, shape):
    A = rand(shape, nm=fmt.startswith("nm"))
    x = RNG.standard_normal(shape[1])
    check("ij,j->i", [A, x], [fmt, None])


@pytest.mark.parametrize("fmt", ["csr", "coo", "dense"])
def test_spmv_empty(fmt):
    check("ij,j->i", [np.zeros((0, 5)), RNG.standard_normal(5)], [fmt, None])
    check("ij,j->i", [np.zeros((4, 5)), RNG.standard_normal(5)], [fmt, None])


def test_spmv_fast_path_source():
    k = einsum_kernel("ij,j->i", ["csr", "dense"])
    src = k.dump("triton")
    assert "tl.arange(0, ROWS)" in src and "tl.arange(0, BLOCK)" in src
    assert "tl.sum(" in src and "map-tile" in src
    assert "# for pA1 in" in src and "j: compressed level 1 of A" in src  # loops tied to index variables


def test_spmv_long_and_short_rows():
    A = rand((13, 40), density=0.3)
    A[3, :] = RNG.standard_normal(40)  # one long row
    x = RNG.standard_normal(40)
    with tb.options(rows=4, block=8):
        check("ij,j->i", [A, x], ["csr", None])
    check("ij,j->i", [A, x], ["csr", None])


# ------------------------------------------------------------------------------------- SpMM
@pytest.mark.parametrize("fmt", ["csr", "coo", "bsr(2, 2)", "dense", "dcsr"])
def test_spmm_b_dense(fmt):
    A = rand((7, 6))
    B = RNG.standard_normal((6, 5))
    check("ik,kj->ij", [A, B], [fmt, None])


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_spmm_b_sparse(fmt):
    A = RNG.standard_normal((5, 6))
    B = rand((6, 7))
    check("ik,kj->ij", [A, B], [None, fmt])


def test_spmm_fast_path_source():
    src = einsum_kernel("ik,kj->ij", ["csr", "dense"]).dump("triton")
    assert "acc-tile" in src and "tl.arange(0, BLOCK_N)" in src and "_t_jb" in src


def test_spmm_sparse_times_sparse_dense_out():
    check("ik,kj->ij", [rand((5, 6)), rand((6, 4))], ["csr", "csr"])


# ------------------------------------------------------------------------------------- SDDMM
@pytest.mark.parametrize("shape", [(6, 7, 5), (1, 4, 3)])
def test_sddmm(shape):
    m, n, kk = shape
    M = rand((m, n))
    U = RNG.standard_normal((m, kk))
    V = RNG.standard_normal((kk, n))
    got = check("ij,ik,kj->ij", [M, U, V], ["csr", None, None], out_format="csr")
    assert isinstance(got, sc.Tensor)


def test_sddmm_fast_path_source():
    src = einsum_kernel("ij,ik,kj->ij", ["csr", "dense", "dense"], out_format="csr").dump("triton")
    assert "LANES" in src and "tl.sum(" in src and "tl.arange(0, BLOCK)" in src


# ------------------------------------------------------------------------------------- add / multiply
PAIRS = [("csr", "csr"), ("csr", "csc"), ("coo", "csr"), ("dcsr", "coo"), ("csc", "dcsr"), ("coo", "coo")]


@pytest.mark.parametrize("op", ["+", "*"])
@pytest.mark.parametrize("fa,fb", PAIRS)
def test_add_mul(op, fa, fb):
    A, B = rand((6, 7)), rand((6, 7))
    k = api.compile(f"C[i,j] = A[i,j] {op} B[i,j]", formats={"A": fa, "B": fb, "C": "csr"}, target="triton")
    got = k(A=tensor(A, fa), B=tensor(B, fb))
    want = A + B if op == "+" else A * B
    np.testing.assert_allclose(dense(got), want, rtol=1e-12, atol=1e-12)


def test_spgemm():
    A, B = rand((7, 6)), rand((6, 8))
    check("ik,kj->ij", [A, B], ["csr", "csr"], out_format="csr")
    check("ik,kj->ij", [np.zeros((3, 6)), B], ["csr", "csr"], out_format="csr")


def test_spgemm_dense_workspace_scan():
    # rows with many products trigger the scan of the dense workspace instead of the sort
    A = np.zeros((3, 4))
    A[0] = 1.0
    B = rand((4, 5), density=0.9)
    check("ik,kj->ij", [A, B], ["csr", "csr"], out_format="csr")


# ------------------------------------------------------------------------------------- tensors
def test_ttv_csf():
    A = rand((4, 5, 6), density=0.3)
    x = RNG.standard_normal(6)
    check("ijk,k->ij", [A, x], ["csf", None])


def test_ttm_csf():
    A = rand((4, 3, 5), density=0.3)
    B = RNG.standard_normal((5, 6))
    check("ijl,lk->ijk", [A, B], ["csf", None])


def test_mttkrp_csf():
    B = rand((4, 5, 3), density=0.3)
    C = RNG.standard_normal((5, 6))
    D = RNG.standard_normal((3, 6))
    check("ikl,kj,lj->ij", [B, C, D], ["csf", None, None])


# ------------------------------------------------------------------------------------- reductions etc.
def test_inner_product():
    A, B = rand((5, 6)), rand((5, 6))
    got = check("ij,ij->", [A, B], ["csr", "csr"])
    assert np.ndim(got) == 0


@pytest.mark.parametrize("subs", ["ij->i", "ij->j"])
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_axis_sums(subs, fmt):
    check(subs, [rand((6, 5))], [fmt])


def test_transposed_access():
    A = rand((5, 7))
    x = RNG.standard_normal(5)
    check("ji,j->i", [A, x], ["csr", None])


@pytest.mark.parametrize("out", ["dense", "csr"])
def test_exp(out):
    A = rand((4, 5))
    k = api.compile("C[i,j] = exp(A[i,j])", formats={"A": "csr", "C": out}, target="triton")
    np.testing.assert_allclose(dense(k(A=tensor(A, "csr"))), np.exp(A), rtol=1e-12)


def test_max_reduction_and_elementwise():
    A = rand((6, 5))
    A[2] = -np.abs(RNG.standard_normal(5)) - 1.0  # a full negative row
    k = api.compile("y[i] = max[j](A[i,j])", formats={"A": "csr"}, target="triton")
    np.testing.assert_allclose(dense(k(A=tensor(A, "csr"))), A.max(axis=1))
    k2 = api.compile("C[i,j] = max(A[i,j], B[i,j])", formats={"A": "csr"}, target="triton")
    B = RNG.standard_normal((6, 5))
    np.testing.assert_allclose(dense(k2(A=tensor(A, "csr"), B=B)), np.maximum(A, B))


def test_where_select():
    A = rand((5, 4))
    k = api.compile("C[i,j] = where(A[i,j] > 0, A[i,j], 2 * A[i,j])", formats={"A": "csr"}, target="triton")
    np.testing.assert_allclose(dense(k(A=tensor(A, "csr"))), np.where(A > 0, A, 2 * A))


def test_csc_spmv_atomic_grid():
    k = einsum_kernel("ij,j->i", ["csc", "dense"])
    src = k.dump("triton")
    assert "tl.atomic_add" in src and "grid mapping: atomic" in src
    A = rand((7, 9))
    x = RNG.standard_normal(9)
    np.testing.assert_allclose(dense(k(A=tensor(A, "csc"), B=x)), A @ x, rtol=1e-12)


# ------------------------------------------------------------------------------------- low precision
@pytest.mark.parametrize("dt", [torch.float16, torch.bfloat16])
def test_spmm_low_precision(dt):
    A = rand((9, 16)).astype(np.float32)
    B = RNG.standard_normal((16, 8)).astype(np.float32)
    At = torch.from_numpy(A).to(dt).to_sparse_csr()
    Bt = torch.from_numpy(B).to(dt)
    got = tb.einsum("ik,kj->ij", At, Bt)
    assert got.dtype == dt
    want = torch.from_numpy(A).to(dt).double().numpy() @ Bt.double().numpy()
    np.testing.assert_allclose(dense(got), want, rtol=3e-2, atol=3e-2)


# Triton's interpreter computes bfloat16 tl.dot wrongly: there the block products cast to float32 (codegen)
@pytest.mark.parametrize("dt", [torch.float16, torch.bfloat16, torch.float32])
def test_bsr_dot_low_precision(dt):
    A = np.zeros((32, 48), dtype=np.float32)
    A[:16, 16:32] = RNG.standard_normal((16, 16))
    A[16:, 32:] = RNG.standard_normal((16, 16))
    B = RNG.standard_normal((48, 16)).astype(np.float32)
    At = torch.from_numpy(A).to(dt).to_sparse_bsr((16, 16))
    Bt = torch.from_numpy(B).to(dt)
    got = tb.einsum("ik,kj->ij", At, Bt)
    want = torch.from_numpy(A).to(dt).double().numpy() @ Bt.double().numpy()
    tol = 1e-4 if dt == torch.float32 else 5e-2
    np.testing.assert_allclose(dense(got), want, rtol=tol, atol=tol)


def test_bsr_dot_source_and_precision():
    k = einsum_kernel("ik,kj->ij", ["bsr(16, 16)", "dense"], dtype="float32")
    src = k.dump("triton")
    assert "tl.dot(" in src and "input_precision=PREC" in src
    A = np.zeros((32, 32), dtype=np.float32)
    A[16:, :16] = RNG.standard_normal((16, 16))
    B = RNG.standard_normal((32, 20)).astype(np.float32)
    want = A.astype(np.float64) @ B
    for prec, tol in (("ieee", 1e-5), ("tf32", 2e-2)):
        with tb.options(precision=prec):
            got = dense(k(A=tensor(A, "bsr(16, 16)"), B=B))
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    with pytest.raises(sc.BackendError):
        tb.set_options(precision="fp8")


@pytest.mark.parametrize("n", [1, 16, 80])
def test_bsr_dot_grid_is_block_major(n):
    # A tl.dot tile split across programs by its column blocks runs block-major (program p takes block
    # p // rows, row p % rows: consecutive programs share their columns of X); other tiles stay row-major.
    # Several blocks and block rows (empty ones too), a block count of 1, and the row-split grid (whose
    # "rows" are segments) must each cover every output element once: outputs are poisoned (NaN) here.
    k = einsum_kernel("ik,kj->ij", ["bsr(16, 16)", "dense"], dtype="float32")
    src = k.dump("triton")
    assert "consecutive programs share a block" in src and "_t_tile = tl.program_id(0) // _t_nrow" in src
    assert "consecutive programs share a row" in einsum_kernel("ik,kj->ij", ["csr", "dense"]).dump("triton")
    A = RNG.standard_normal((83, 70)).astype(np.float32)
    A[16:48] = 0                          # two empty block rows
    A[:, 32:48] = 0
    A[64:, :16] = 0
    B = RNG.standard_normal((70, n)).astype(np.float32)
    want = A.astype(np.float64) @ B
    for opts in (dict(block_n=16), dict(), dict(block_n=16, split_rows=True, split_segments=3)):
        with tb.options(**opts):
            got = dense(k(A=tensor(A, "bsr(16, 16)"), B=B))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_dot_block_n_rule():
    # 256 columns for tl.dot tiles of 16, 32 and 128 rows when the columns reach 256; 64 rows keep the heuristic's
    from sparsec.backends.triton.codegen import Codegen

    cg = Codegen.__new__(Codegen)
    cg.dot_k_step = None
    for m, want in ((16, 256), (32, 256), (64, None), (128, 256)):
        cg.dot_shape = (m, "BLOCK_N")
        assert cg.dot_block_n({}, {"BLOCK_N": 4096}).get("BLOCK_N") == want, m
        assert cg.dot_block_n({}, {"BLOCK_N": 200}) == {}      # too few columns
    cg.dot_k_step = 64                                         # blocks run in 64-deep steps keep theirs
    assert cg.dot_block_n({}, {"BLOCK_N": 4096}) == {}
    assert cg.dot_warps({"BLOCK_N": 128}) == 4 and cg.dot_warps({"BLOCK_N": 256}) == 8
    cg.dot_shape = None
    assert cg.dot_block_n({}, {"BLOCK_N": 4096}) == {}


@pytest.mark.parametrize("fmt", ["bsr(128, 128)", "bsr(64, 128)"])
def test_bsr_dot_runs_deep_blocks_in_k_steps(fmt):
    # Blocks 128 deep along the reduction run as two tl.dot steps of 64 in one flattened loop. Partial
    # blocks at both edges (the last block column has 72 of its 128 columns: its second step only 8),
    # empty block rows, and a block row with one block must all come out right.
    k = einsum_kernel("ik,kj->ij", [fmt, "dense"], dtype="float32")
    src = k.dump("triton")
    assert "tl.dot steps of 64 per position" in src and "% 2) * 64) + tl.arange(0, 64)" in src
    assert "tl.dot steps" not in einsum_kernel("ik,kj->ij", ["bsr(128, 64)", "dense"]).dump("triton")
    A = RNG.standard_normal((300, 200)).astype(np.float32)
    A[128:256] = 0                              # an empty block row (of 128 or 64 rows)
    A[:64, 128:] = 0                            # a block row with one block
    B = RNG.standard_normal((200, 24)).astype(np.float32)
    want = A.astype(np.float64) @ B
    for opts in (dict(block_n=16), dict()):
        with tb.options(**opts):
            got = dense(k(A=tensor(A, fmt), B=B))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_small_bsr_uses_sum_not_dot():
    src = einsum_kernel("ik,kj->ij", ["bsr(2, 2)", "dense"]).dump("triton")
    assert "acc-tile sum" in src and "tl.sum(" in src and "tl.dot(" not in src


# ------------------------------------------------------------------------------------- runtime
def test_device_resident_call_returns_torch():
    A = rand((6, 5))
    x = torch.from_numpy(RNG.standard_normal(5))
    At = torch.from_numpy(A).to_sparse_csr()
    y = tb.einsum("ij,j->i", At, x)
    assert isinstance(y, torch.Tensor) and y.device.type == ("cpu" if INTERPRETING else "cuda")
    np.testing.assert_allclose(y.cpu().numpy(), A @ x.numpy(), rtol=1e-12)
    S = tb.einsum("ij,ik,kj->ij", At, torch.ones(6, 3, dtype=torch.float64), torch.ones(3, 5, dtype=torch.float64),
                  out_format="csr")
    assert isinstance(S, tb.DeviceTensor)
    st = S.to_torch()
    assert st.layout == torch.sparse_csr
    np.testing.assert_allclose(st.to_dense().cpu().numpy(), A * 3.0, rtol=1e-12)


def test_sparse_output_is_csr_on_device():
    A, B = rand((5, 6)), rand((5, 6))
    k = api.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, target="triton")
    C = tb.call(k, torch.from_numpy(A).to_sparse_csr(), torch.from_numpy(B).to_sparse_csr())
    assert isinstance(C, tb.DeviceTensor)
    np.testing.assert_allclose(C.to_numpy(), A + B)
    np.testing.assert_allclose(C.to_scipy().toarray(), A + B)


def test_cache_dir_and_names(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    k = api.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="triton", name="spmv")
    k(A=tensor(rand((3, 4)), "csr"), x=np.ones(4))
    files = list((tmp_path / "triton").glob("spmv_*.py"))
    assert files and "def spmv(" in files[0].read_text()


def test_int64_index_variant():
    k = einsum_kernel("ij,j->i", ["csr", "dense"])
    ck = next(iter(k._compiled.values()))
    assert "tl.int64" in ck.source(True) and "index arithmetic: int64" in ck.source(True)


def test_no_gpu_no_interpreter_is_a_clear_error(monkeypatch):
    from sparsec.backends.triton import device

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(sc.BackendError, match="TRITON_INTERPRET=1"):
        device.pick_device([np.ones(3)])


def test_generic_fallback_matches_fast_paths():
    A = rand((8, 6))
    x = RNG.standard_normal(6)
    with tb.options(fast_paths=False):
        k = api.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="triton")
    src = k.dump("triton")
    assert "tl.arange" not in src
    np.testing.assert_allclose(dense(k(A=tensor(A, "csr"), x=x)), A @ x, rtol=1e-12)


def test_integer_values():
    A = (rand((5, 6)) * 10).astype(np.int64)
    x = np.arange(6, dtype=np.int64)
    got = api.einsum("ij,j->i", tensor(A, "csr"), x, target="triton")
    np.testing.assert_array_equal(dense(got), A @ x)


# ------------------------------------------------------------------------------------- the shared grid
from grid import check as grid_check, extra_cases, grid, run_case  # noqa: E402

GRID = grid() + extra_cases()


@pytest.mark.parametrize("case", GRID, ids=[c.id() for c in GRID])
def test_grid(case):
    """The compiler core's differential grid (tests/grid.py) on target="triton"."""
    got, ref = run_case(case, "triton")
    grid_check(got, ref, case.dtype)


def test_row_split_variant_agrees_and_is_chosen_for_skewed_rows():
    # one long row among short ones: segments of that row are added atomically into C
    A = rand((40, 30), 0.05)
    A[3] = RNG.standard_normal(30)
    B = RNG.standard_normal((30, 20))
    k = api.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, target="triton")
    assert "row-split variant" in k.dump("triton") and "_t_work" in k.dump("triton")
    tk = k._runner.runners[0].numeric
    for opts in (dict(split_rows=True, split_segments=50), dict(split_rows=False), dict()):
        with tb.options(**opts):
            np.testing.assert_allclose(dense(k(A=tensor(A, "csr"), B=B)), A @ B, rtol=1e-10, atol=1e-12)
    assert any(split for (_, split) in tk._variants), "the skewed matrix did not take the split variant"


def _skewed_csr(m: int, n: int, long_rows: dict[int, int]) -> np.ndarray:
    """A sparse m x n matrix (about 5% dense, some empty rows) whose rows ``long_rows`` have the given lengths."""
    A = rand((m, n), 0.05)
    A[::7] = 0
    for r, length in long_rows.items():
        A[r] = 0
        A[r, RNG.choice(n, length, replace=False)] = RNG.standard_normal(length)
    return A


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_spmv_row_split_agrees_with_unsplit(dtype):
    # SpMV's map tile: long rows cut into segments whose partial sums are added atomically into a
    # zeroed y. Outputs are poisoned under the tests, so a missed zeroing (first launch or memoized)
    # shows as NaN; segment lengths that do not divide the rows exercise the ragged last segment.
    A = _skewed_csr(70, 300, {2: 290, 41: 133, 69: 77})
    x = RNG.standard_normal(300)
    ref = A @ x
    k = api.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype=dtype, target="triton")
    src = k.dump("triton")
    assert "row-split variant" in src and "tl.atomic_add(y_vals + i" in src
    tk = k._runner.runners[0].numeric
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    dev = "cpu" if INTERPRETING else "cuda"
    At = torch.from_numpy(A.astype(dtype)).to_sparse_csr().to(dev)
    xt = torch.from_numpy(x.astype(dtype)).to(dev)
    for opts in (dict(split_rows=True, segment=3), dict(split_rows=True, segment=16), dict(split_rows=False),
                 dict(), dict(split_rows=True, segment=1000)):
        with tb.options(**opts):
            for _ in range(2):  # the second call takes the memoized launch
                np.testing.assert_allclose(dense(tb.call(k, A=At, x=xt)), ref, **tol)
            np.testing.assert_allclose(dense(k(A=tensor(A.astype(dtype), "csr"), x=x.astype(dtype))), ref, **tol)
    assert any(split for (_, split) in tk._variants), "the skewed matrix did not take the split variant"


def test_spmv_row_split_heuristic_and_segments():
    # the map-tile policy: split only when the longest row is over 8x the average, segments of
    # the average row (32..1024); every position is covered exactly once, in row order
    k = api.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="triton")
    tk = k._runner.runners[0].numeric
    assert tk.plan.split is not None and tk.plan.split.kind == "map"
    even = torch.arange(0, 101 * 20, 20, dtype=torch.int32)             # 100 rows of 20
    assert tk.split_work(even, torch.device("cpu"), False) is None
    lens = torch.tensor([4] * 200 + [700, 0, 3], dtype=torch.int64)
    pos = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lens, 0)]).to(torch.int32)
    sw = tk.split_work(pos, torch.device("cpu"), False)
    assert sw is not None and sw.seg_len == 32
    w = sw.work.reshape(-1, 3).to(torch.int64)
    assert sw.count == w.shape[0] == 200 + 22 + 0 + 1
    assert bool((w[1:, 1] == w[:-1, 2]).all()) and int(w[0, 1]) == 0 and int(w[-1, 2]) == int(pos[-1])
    assert int((w[:, 2] - w[:, 1]).max()) == 32 and int((w[:, 0] == 200).sum()) == 22


def test_memos_are_not_fooled_by_reused_addresses():
    # Regression: a matrix freed and the next one of the same size allocated at the same address
    # once received the previous matrix's row-split work list (seen on an H200 in the benchmarks).
    # Two tensors over one numpy buffer have the same address, length and version counter.
    k = api.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, target="triton")
    tk = k._runner.runners[0].numeric
    buf = np.array([0, 40, 41, 42, 43], dtype=np.int32)
    with tb.options(split_rows=True, split_segments=8):
        first = tk.split_work(torch.from_numpy(buf), torch.device("cpu"), False)
        buf[:] = [0, 1, 2, 3, 43]            # another matrix at the same address
        second = tk.split_work(torch.from_numpy(buf), torch.device("cpu"), False)
    rows = lambda w: w.work.reshape(-1, 3)[:, 0].tolist()  # noqa: E731
    assert rows(first) != rows(second)
    assert rows(second)[-1] == 3 and second.work.reshape(-1, 3)[:, 2].max().item() == 43


def test_launch_memo_follows_option_changes():
    # Regression: the launch memo was keyed by id() of the options object; a `with options(...)`
    # block's object is freed on exit and the next block's object may get the same id, so the
    # second block silently launched with the first block's tile sizes (seen when tuning on an H100).
    A = rand((64, 48), 0.2)
    x = RNG.standard_normal(48)
    dev = "cpu" if INTERPRETING else "cuda"
    At = torch.from_numpy(A).to_sparse_csr().to(dev)
    xt = torch.from_numpy(x).to(dev)
    k = api.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="triton")
    seen = []
    for block in (4, 8, 4, 16):
        with tb.options(block=block, rows=2):
            np.testing.assert_allclose(dense(tb.call(k, A=At, x=xt)), A @ x, rtol=1e-10, atol=1e-12)
            tk = k._triton_fast.tk
            used = {m.kwargs[c.name] for m in tk._launch_memo.values()
                    for c in tk.plan.constexprs if c.role == "inner"}
            seen.append(block in used)
    assert all(seen), seen
    # the memo key: a number that changes on every change of the options, entering and leaving a block
    from sparsec.backends.triton.options import options_generation

    g0 = options_generation()
    with tb.options(block=4):
        g1 = options_generation()
    assert len({g0, g1, options_generation()}) == 3


@pytest.mark.parametrize("fmt", ["bsr(8,8)", "bsr(16,4)", "csr", "dcsr"])
def test_row_tile_output_needs_no_zero_fill(fmt):
    # A kernel whose programs each accumulate one tile of output rows and store it once writes every
    # element, empty rows included (their tile stays 0), so the fast path allocates the output with
    # torch.empty. Outputs are poisoned (NaN) under the tests: an element no program stores shows as NaN.
    # The row-split variant adds segments atomically, so the launch zeroes the output itself (forced
    # here with split_rows=True); dcsr binds the rows from stored coordinates, so it keeps the zero fill.
    W = rand((37, 45), 0.3)
    W[8:24] = 0                          # empty rows: whole empty block rows for the blocked formats
    W[:, 40:] = 0
    X = RNG.standard_normal((45, 19))
    k = api.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": fmt}, target="triton")
    dev = "cpu" if INTERPRETING else "cuda"
    Wb = tb.device.bind_operand(tensor(W, fmt), "W", None, "float64", torch.device(dev))
    Xt = torch.from_numpy(X).to(dev)
    for opts in (dict(), dict(split_rows=True, split_segments=4), dict(split_rows=False)):
        with tb.options(**opts):
            for _ in range(2):   # the second call takes the memoized launch
                np.testing.assert_allclose(dense(tb.call(k, W=Wb, X=Xt)), W @ X, rtol=1e-10, atol=1e-12)
    fast = k._triton_fast
    assert fast is not None and fast.writes_all == (fmt != "dcsr")


@pytest.mark.parametrize("fmt", ["csr", "bitmap", "bsr(2, 2)"])
def test_to_device_binds_once_and_agrees(fmt):
    """``Tensor.to_device`` gives a DeviceTensor the kernel takes as is (no host copy per call)."""
    from sparsec.backends.triton import device

    A = rand((12, 10))
    t = sc.Tensor.from_numpy(A, fmt)
    on = t.to_device("cuda" if torch.cuda.is_available() and not INTERPRETING else "cpu")
    assert isinstance(on, device.DeviceTensor) and on.format == t.format and on.to_device(on.device) is on
    np.testing.assert_array_equal(on.to_host().to_numpy(), t.to_numpy())
    k = api.compile("y[i] = A[i,j] * x[j]", formats={"A": fmt}, dtype="float64", target="triton")
    x = rand((10,), density=1.0)
    calls = []
    real = device.from_host
    try:
        device.from_host = lambda *a, **kw: calls.append(a) or real(*a, **kw)
        y = k(A=on, x=torch.from_numpy(x).to(on.device))
    finally:
        device.from_host = real
    assert calls == []
    np.testing.assert_allclose(np.asarray(y.cpu() if hasattr(y, "cpu") else y), A @ x, rtol=1e-12)


def test_repeated_upload_or_conversion_is_reported_from_the_second_call():
    from sparsec.backends.triton import device
    from sparsec.formats import parse_format

    bitmap, dense = parse_format("bitmap", 2), parse_format("dense", 2)
    w, other = object(), object()
    device._BOUND_BEFORE.clear()
    assert device.repeated_work(w, "W", None, bitmap) == ""            # a first call: unavoidable, silent
    again = device.repeated_work(w, "W", None, bitmap)
    assert "'W' is copied from host memory to the GPU at every call" in again and ".to_device(" in again
    assert device.repeated_work(other, "W", None, bitmap) == ""        # another object
    assert device.repeated_work(w, "V", dense, bitmap) == ""           # the same object as another operand
    assert "converted from dense to bitmap" in device.repeated_work(w, "V", dense, bitmap)
    assert issubclass(sc.PerformanceWarning, UserWarning)


def test_row_tile_shapes():
    """(BLOCK, ROWS) of CSR row tiles for the default 256-element tile: a power of two covering the
    average row up to 8 lanes below 16 nonzeros per row, 16 from 16 on, wide blocks past 32, and an
    eighth of the longest row (with fewer rows) when rows are skewed."""
    from sparsec.backends.triton.options import _row_tile

    assert _row_tile(3.0, 5, 256) == (4, 64)
    assert _row_tile(6.0, 10, 256) == (8, 32)
    assert _row_tile(11.0, 11, 256) == (8, 32)      # banded rows of 11: two steps of 8
    assert _row_tile(15.9, 30, 256) == (8, 32)
    assert _row_tile(16.0, 30, 256) == (16, 16)
    assert _row_tile(100.0, 150, 256) == (128, 2)
    assert _row_tile(12.5, 893, 256) == (128, 8)    # skewed (wiki-Vote): an eighth of the longest row


def test_launch_memo_entries_belong_to_the_sparse_inputs():
    # a memoized launch counts only for the very index and value tensors it was set up for (an id is
    # reused once its tensor is freed); a dense operand is keyed by its length and alignment only
    A = rand((64, 48), 0.2)
    x = RNG.standard_normal(48)
    dev = "cpu" if INTERPRETING else "cuda"
    At = torch.from_numpy(A).to_sparse_csr().to(dev)
    k = api.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="triton")
    tb.call(k, A=At, x=torch.from_numpy(x).to(dev))
    tk = k._triton_fast.tk
    ((key, (refs, launch)),) = tk._launch_memo.items()
    owners = tuple(r() for r in refs)
    assert len(owners) == len(tk._input_names) - len(tk._dense_inputs) >= 2 and None not in owners
    assert tk._launch_memo.get(owners, key) is launch
    assert tk._launch_memo.get(tuple(o.clone() for o in owners), key) is None   # same key, other tensors
    np.testing.assert_allclose(dense(tb.call(k, A=At, x=torch.from_numpy(x).to(dev))), A @ x, rtol=1e-10, atol=1e-12)


def test_sparse_output_launches_are_memoized_and_follow_new_offsets():
    # the general device path (a sparse output: symbolic counts, offsets, numeric kernel) replays a memoized
    # launch for the same operands; the output offsets, new on every call, are keyed by length only, so a
    # repeated call with edited values, and calls with other patterns, still read their own offsets
    dev = "cpu" if INTERPRETING else "cuda"
    k = api.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, target="triton")
    numeric = k._runner.runners[0].numeric
    assert "C_off" in numeric._dense_inputs
    A, B = rand((40, 30), 0.2), rand((40, 30), 0.3)
    dA = sc.Tensor.from_numpy(A, format="csr").to_device(dev)
    for B_now in (B, 2 * B, rand((40, 30), 0.5)):   # the same pattern twice, then another with other row counts
        dB = sc.Tensor.from_numpy(B_now, format="csr").to_device(dev)
        for _ in range(2):   # the second call takes the memoized launch
            np.testing.assert_allclose(tb.call(k, A=dA, B=dB).to_scipy().toarray(), A + B_now, rtol=1e-12)
    assert 1 <= len(numeric._launch_memo) <= 3


def test_atomic_order_setting_is_checked() -> None:
    """SPARSEC_TRITON_ATOMIC_SEM reaches generated source, so anything but a Triton memory order is refused at import."""
    import subprocess
    import sys

    env = dict(os.environ, SPARSEC_TRITON_ATOMIC_SEM="relaxed'); import os #")
    done = subprocess.run([sys.executable, "-c", "import sparsec.backends.triton.codegen"], env=env,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "expected relaxed, acquire, release or acq_rel" in done.stderr
    from sparsec.backends.triton import codegen

    assert codegen.ATOMIC_SEM in ("relaxed", "acquire", "release", "acq_rel")
