"""The row-parallel SpGEMM program template (``sparsec.backends.triton.spgemm``).

Run in Triton's interpreter on the CPU at small sizes (its flavour ranks lanes with
comparisons where the compiled one calls ``tl.sort`` and a scan; everything else is one
source). With ``TRITON_INTERPRET=0`` and CUDA the same tests run the compiled kernels.
The oracle is numpy in float64; the stored pattern must equal the generic lowering's
(the structural union of the products, cancellations included).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import sparsec as sc  # noqa: E402
from sparsec.backends.triton import program_template, spgemm  # noqa: E402

STMT = "C[i,j] = A[i,k] * B[k,j]"
CSR3 = {"A": "csr", "B": "csr", "C": "csr"}
TOL = {"float32": 2e-6, "float64": 1e-13}


def compile_spgemm(dtype: str = "float32", formats=CSR3, stmt: str = STMT, **kw):
    return sc.compile(stmt, formats=formats, dtype=dtype, target="triton", **kw)


def rand(shape, density, seed, dtype="float32", row_lengths=None) -> sp.csr_matrix:
    """A random CSR matrix; ``row_lengths`` ({row: count}) makes those rows that long."""
    rng = np.random.default_rng(seed)
    m = sp.random(*shape, density=density, format="lil", random_state=rng, dtype=np.float64)
    for r, n in (row_lengths or {}).items():
        m[r, rng.choice(shape[1], size=n, replace=False)] = rng.uniform(-1, 1, n)
    return sp.csr_matrix(m).astype(dtype)


def pattern(t) -> tuple[np.ndarray, np.ndarray]:
    return (t.levels[1]["pos"].cpu().numpy().astype(np.int64), t.levels[1]["crd"].cpu().numpy().astype(np.int64))


def check(A: sp.csr_matrix, B: sp.csr_matrix, dtype: str = "float32"):
    """The template's C against numpy (values) and against the generic lowering (stored pattern)."""
    k = compile_spgemm(dtype)
    assert isinstance(program_template(k), spgemm.SpgemmTemplate)
    got = k(A=A, B=B)
    want = A.astype(np.float64).toarray() @ B.astype(np.float64).toarray()
    scale = max(1.0, float(np.abs(A).sum(1).max() * np.abs(B).max())) if A.nnz and B.nnz else 1.0
    np.testing.assert_allclose(got.to_numpy(), want, rtol=0, atol=TOL[dtype] * scale)
    pos, crd = pattern(got)
    assert pos[-1] == crd.size == got.values.numel()
    for r in range(A.shape[0]):     # columns sorted and distinct within each row
        assert np.all(np.diff(crd[pos[r]:pos[r + 1]]) > 0)
    os.environ["SPARSEC_TRITON_TILES"] = "0"
    try:
        generic = compile_spgemm(dtype)
        assert program_template(generic) is None
        ref = generic(A=A, B=B)
    finally:
        del os.environ["SPARSEC_TRITON_TILES"]
    ref_pos, ref_crd = pattern(ref)
    np.testing.assert_array_equal(pos, ref_pos)
    np.testing.assert_array_equal(crd, ref_crd)
    return got


# ------------------------------------------------------------------------------------------- matching
def test_matches_csr_spgemm_and_its_square():
    assert isinstance(program_template(compile_spgemm()), spgemm.SpgemmTemplate)
    square = compile_spgemm(formats={"A": "csr", "C": "csr"}, stmt="C[i,j] = A[i,k] * A[k,j]")
    mt = program_template(square).mt
    assert (mt.a, mt.b, mt.c) == ("A", "A", "C")
    narrow = compile_spgemm("float64", formats={"A": "csr[pos64,crd16]", "B": "csr", "C": "csr[pos64,crd64]"})
    assert program_template(narrow).mt.dtype == "float64"


@pytest.mark.parametrize("why", ["csc output", "dense output", "csc operand", "float16", "int32", "schedule",
                                 "two statements", "other expression", "tiles off"])
def test_does_not_match(why, monkeypatch):
    formats, dtype, stmt, kw = dict(CSR3), "float32", STMT, {}
    if why == "csc output":
        formats["C"] = "csc"
    elif why == "dense output":
        formats["C"] = "dense"
    elif why == "csc operand":
        formats["B"] = "csc"
    elif why in ("float16", "int32"):
        dtype = why
    elif why == "schedule":
        kw["schedule"] = sc.Schedule().workspace("j", "dense")
    elif why == "two statements":
        stmt = STMT + "\nD[i,j] = C[i,j] * 2"
        formats["D"] = "csr"
    elif why == "other expression":
        stmt = "C[i,j] = A[i,k] * B[k,j] * 2"
    else:
        monkeypatch.setenv("SPARSEC_TRITON_TILES", "0")
    assert program_template(compile_spgemm(dtype, formats, stmt, **kw)) is None


def test_dump_shows_the_template():
    text = compile_spgemm().dump("triton")
    assert "program template: row-parallel SpGEMM (A=A, B=B, C=C, float32)" in text
    assert "def spgemm_chunks(" in text and "def spgemm_wide_compact(" in text


# ------------------------------------------------------------------------------------------- results
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_random_rectangular(dtype):
    check(rand((23, 17), 0.2, 1, dtype), rand((17, 29), 0.2, 2, dtype), dtype)


def test_empty_rows_columns_and_operands():
    A = rand((12, 9), 0.3, 3)
    A[[0, 5, 11], :] = 0                      # empty rows of A, at the ends too
    A.eliminate_zeros()
    B = rand((9, 10), 0.3, 4)
    B[[2, 3], :] = 0                          # rows of B that contribute nothing
    B.eliminate_zeros()
    check(A, B)
    check(sp.csr_matrix((12, 9), dtype=np.float32), B)           # no entries in A
    check(A, sp.csr_matrix((9, 10), dtype=np.float32))           # no entries in B
    check(sp.csr_matrix((0, 9), dtype=np.float32), B)            # no rows
    check(rand((4, 3), 0.5, 5), sp.csr_matrix((3, 0), dtype=np.float32))   # no columns


def test_cancellation_keeps_the_stored_zero():
    A = sp.csr_matrix(np.array([[1.0, 1.0], [0.0, 2.0]], dtype=np.float32))
    B = sp.csr_matrix(np.array([[1.0, 3.0], [-1.0, 0.0]], dtype=np.float32))
    got = check(A, B)
    assert got.values.numel() == 3 and 0.0 in got.values.tolist()


def test_square_through_one_operand():
    A = rand((20, 20), 0.15, 6)
    k = compile_spgemm(formats={"A": "csr", "C": "csr"}, stmt="C[i,j] = A[i,k] * A[k,j]")
    got = k(A=A)
    np.testing.assert_allclose(got.to_numpy(), A.toarray().astype(np.float64) @ A.toarray(), atol=1e-5)


@pytest.mark.parametrize("b_format", ["csr", "csr[pos64,crd64]"])
def test_one_tensor_passed_as_both_operands(b_format):
    """One object given as A and B is bound once when both are declared alike, and as each declares
    otherwise (B's 64-bit indices)."""
    M = sc.Tensor.from_scipy(rand((20, 20), 0.15, 16), format="csr")
    k = compile_spgemm(formats={"A": "csr", "B": b_format, "C": "csr"})
    assert isinstance(program_template(k), spgemm.SpgemmTemplate)
    want = M.to_numpy().astype(np.float64) @ M.to_numpy()
    np.testing.assert_allclose(k(A=M, B=M).to_numpy(), want, atol=1e-5)


@pytest.mark.parametrize("half,pmax,wide", [(4, 16, 16), (8, 32, 32), (16, 64, 64), (4, 32, 8)])
def test_every_row_path(half, pmax, wide, monkeypatch):
    """Small limits send rows through the chunks, one-row programs at each size, and the dense rows (from
    ``wide`` products on: below PMAX, the one-row programs leave the rows over it to the dense rows)."""
    monkeypatch.setattr(spgemm, "HALF", half)
    monkeypatch.setattr(spgemm, "PMAX", pmax)
    monkeypatch.setattr(spgemm, "WIDE_FROM", wide)
    A = rand((30, 25), 0.08, 7, row_lengths={3: 12, 10: 25, 17: 5, 29: 20})
    B = rand((25, 40), 0.1, 8, row_lengths={1: 30, 4: 9})
    ub = np.diff(B.indptr)[A.indices]
    ub = np.add.reduceat(np.append(ub, 0), A.indptr[:-1])[:A.shape[0]] * (np.diff(A.indptr) > 0)
    assert (ub > pmax).any() and ((ub > half) & (ub <= pmax)).any() and ((ub > 0) & (ub <= half)).any()
    check(A, B)


def test_wide_b_takes_64_bit_sort_keys():
    """(row, column) keys of a chunk need 64 bits when B is this wide (compiled flavour)."""
    n_j = (1 << 22) + 5
    A = rand((15, 12), 0.3, 9)
    rng = np.random.default_rng(10)
    B = sp.csr_matrix((rng.uniform(-1, 1, 40), (rng.integers(0, 12, 40), rng.integers(0, n_j, 40))),
                      shape=(12, n_j), dtype=np.float32)
    got = compile_spgemm()(A=A, B=B).to_scipy().tocsr()
    want = (A.astype(np.float64) @ B.astype(np.float64)).tocsr()
    want.sort_indices()
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.data, want.data, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("parts,step,segments", [(1, 64, 1024), (3, 4, 3), (8, 8, 2)])
def test_dense_rows_in_batches_segments_and_parts(parts, step, segments, monkeypatch):
    """The dense-row kernels with three dense rows at a time (the compaction leaves them cleared for the
    next batch), each row accumulated by ``parts`` programs taking every ``parts``-th pair of its entries,
    counted and compacted in segments of a whole number of ``step`` columns (at most ``segments`` of them:
    40 columns in 1 to 10 segments)."""
    monkeypatch.setattr(spgemm, "PMAX", 8)
    monkeypatch.setattr(spgemm, "HALF", 4)
    monkeypatch.setattr(spgemm, "WIDE_FROM", 4)
    monkeypatch.setattr(spgemm, "DENSE_BYTES", 3 * 40 * 5)    # three float32 dense rows of 40 columns
    monkeypatch.setattr(spgemm, "WIDE_PARTS", parts)
    monkeypatch.setattr(spgemm, "WIDE_ENTRIES", 2)
    monkeypatch.setattr(spgemm, "WIDE_STEP", step)
    monkeypatch.setattr(spgemm, "WIDE_SEGMENTS", segments)
    A = rand((12, 10), 0.5, 11)
    A[4] = 0
    A.eliminate_zeros()
    B = rand((10, 40), 0.4, 12)
    check(A, B)


def test_wide_rows_follow_the_width_of_b(monkeypatch):
    """Rows go to the dense-row kernels from n_j / 16 products on (where scanning the dense row costs less
    than sorting), never below HALF nor above PMAX; a fixed WIDE_FROM overrides the rule."""
    assert [spgemm.wide_from(n) for n in (100, 8297, 23133, 10**6)] == [spgemm.HALF, 518, 1445, spgemm.PMAX]
    monkeypatch.setattr(spgemm, "WIDE_FROM", 700)
    assert spgemm.wide_from(100) == 700


def test_dense_rows_over_power_law_rows_of_b(monkeypatch):
    """The dense-row path over rows of B of very different lengths (one row of B holding most of a
    row's products, empty rows of B, entry tiles cut at the end of a row of A, rows of B longer than
    a step's lanes): every product lands on its column."""
    monkeypatch.setattr(spgemm, "PMAX", 8)
    monkeypatch.setattr(spgemm, "HALF", 4)
    B = rand((70, 600), 0.004, 21, row_lengths={3: 590, 40: 300, 41: 1})
    B = sp.csr_matrix(B)
    B[[7, 8, 9]] = 0
    B.eliminate_zeros()
    A = rand((9, 70), 0.4, 22, row_lengths={0: 70, 5: 37})
    A[2, 3] = 1.5
    check(A, B)


def test_output_widths_follow_the_declared_format():
    k = compile_spgemm(formats={"A": "csr", "B": "csr", "C": "csr[pos64,crd16]"})
    got = k(A=rand((6, 5), 0.5, 13), B=rand((5, 300), 0.3, 14))
    assert got.levels[1]["pos"].dtype == torch.int64 and got.levels[1]["crd"].dtype == torch.int16
    assert got.format.crd_width == 16


def test_shape_mismatch_is_reported_by_the_general_path():
    with pytest.raises(sc.errors.ShapeError, match="index k has extent 5 in 'A'"):
        compile_spgemm()(A=rand((4, 5), 0.5, 15), B=rand((6, 3), 0.5, 16))


def test_einsum_takes_the_template():
    A, B = rand((9, 8), 0.3, 17), rand((8, 7), 0.3, 18)
    got = sc.einsum("ik,kj->ij", A, B, target="triton", out_format="csr")
    np.testing.assert_allclose(got.to_numpy(), A.toarray().astype(np.float64) @ B.toarray(), atol=1e-5)


def test_structure_is_memoized_by_index_buffers():
    """A second call on the same index buffers reuses the counts and C's row pointers; new values are
    read afresh; an index buffer changed in place (its version moves) is counted again."""
    from sparsec.backends.triton.device import bind_operand, pick_device
    from sparsec.formats import parse_format

    k = compile_spgemm()
    template = program_template(k)
    csr = parse_format("csr", 2)
    A0, B0 = rand((14, 11), 0.3, 19), rand((11, 13), 0.3, 20)
    B0[0, :] = 0
    B0[0, [3, 7]] = [1.5, -0.5]
    B0.eliminate_zeros()
    dev = pick_device([A0])
    A, B = (bind_operand(x, n, csr, "float32", dev) for x, n in ((A0, "A"), (B0, "B")))

    def want():
        return A.to_numpy().astype(np.float64) @ B.to_numpy().astype(np.float64)

    first = k(A=A, B=B)
    assert len(template._plans) == 1
    plan = next(iter(template._plans.values()))
    A.values.mul_(-2.0)                          # same structure, new values
    second = k(A=A, B=B)
    assert next(iter(template._plans.values())) is plan and len(template._plans) == 1
    np.testing.assert_allclose(second.to_numpy(), want(), atol=1e-5)
    np.testing.assert_array_equal(pattern(first)[1], pattern(second)[1])
    second.levels[1]["pos"].zero_()              # the caller's result does not alias the memo
    crd = B.levels[1]["crd"]
    assert int(crd[0]) > 0 and int(B.levels[1]["pos"][1]) >= 1   # row 0 of B starts past column 0
    crd[0] = 0                                   # in place: row 0 of B moves its first entry to column 0
    third = k(A=A, B=B)
    assert len(template._plans) == 2
    np.testing.assert_allclose(third.to_numpy(), want(), atol=1e-5)


def test_rows_with_many_entries_take_several_entry_tiles(monkeypatch):
    """Rows of A longer than one tile of entries (16 in chunks, 32 in the long-row and dense kernels) on every path."""
    monkeypatch.setattr(spgemm, "HALF", 64)
    monkeypatch.setattr(spgemm, "PMAX", 128)
    monkeypatch.setattr(spgemm, "WIDE_FROM", 128)
    n = 120
    rng = np.random.default_rng(21)
    B = sp.lil_matrix((n, n))
    for r in range(n):                      # one or two entries a row, columns often shared across rows
        B[r, rng.choice(30, size=1 + r % 2, replace=False)] = rng.uniform(-1, 1, 1 + r % 2)
    A = rand((8, n), 0.02, 22, row_lengths={1: 34, 3: 70, 5: 110})
    B = sp.csr_matrix(B).astype(np.float32)
    ub = np.array([np.diff(B.indptr)[A.indices[A.indptr[r]:A.indptr[r + 1]]].sum() for r in range(A.shape[0])])
    assert ub[1] <= 64 < ub[3] <= 128 < ub[5]
    check(A, B)


@pytest.mark.parametrize("fa,fb", [("csr[pos64,crd64]", "csr[pos32,crd16]"), ("csr[pos16,crd8]", "csr[pos64,crd8]")])
def test_operand_index_widths(fa, fb):
    """Operands declared with 8/16/64-bit index buffers run through the template (loads widened in the kernels)."""
    k = compile_spgemm(formats={"A": fa, "B": fb, "C": "csr"})
    assert isinstance(program_template(k), spgemm.SpgemmTemplate)
    A, B = rand((10, 12), 0.3, 23), rand((12, 9), 0.3, 24)
    got = k(A=A, B=B)
    np.testing.assert_allclose(got.to_numpy(), A.toarray().astype(np.float64) @ B.toarray(), atol=1e-5)


def _products_per_row(ub: list[int]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """A and B whose product has ``ub[r]`` products in row r: row r of A selects one row of B that long
    (rows of nothing select an empty row of B, or nothing)."""
    lengths = sorted(set(ub) | {0})
    width = max(lengths) + 1
    B = sp.csr_matrix((np.ones(sum(lengths), np.float32),
                       np.concatenate([np.arange(n) for n in lengths]).astype(np.int64),
                       np.concatenate([[0], np.cumsum(lengths)])), shape=(len(lengths), width))
    rows = [r for r, n in enumerate(ub) if n or r % 2]
    A = sp.csr_matrix((np.ones(len(rows), np.float32), ([r for r in rows], [lengths.index(ub[r]) for r in rows])),
                      shape=(len(ub), len(lengths)))
    return A, B


def _cases(half: int) -> list[list[int]]:
    rng = np.random.default_rng(7)
    return [[0, 0, 3, 0, 40, 1, 4, 4, 0, 0], [half] * 9 + [0, 0], [2 * half + 1], [1] * 300 + [0], [0, 5], [0, 0],
            list(rng.choice([0, 1, 2, 7, 3 * half], size=257))]


@pytest.mark.parametrize("half", [4, 16])
@pytest.mark.parametrize("placed_by", ["spgemm_count", "spgemm_starts"])
def test_structure_plan_matches_numpy(half, placed_by, monkeypatch):
    """The structure step against numpy: the product offsets (``spgemm_entry_scan``'s look-back over tiles
    of 8 entries, 2 tiles a look-back step), each entry's row, the lists of long rows, and the chunks' first
    rows, ``searchsorted(ub_off[:n_i], c * HALF)`` for every chunk up to the last (placed by
    ``spgemm_count``, or with a capacity of one start by ``spgemm_starts``): rows without products, rows
    spanning many chunks, offsets on chunk boundaries, trailing empty rows."""
    from sparsec.backends.triton.device import bind_operand, pick_device
    from sparsec.formats import parse_format

    monkeypatch.setattr(spgemm, "HALF", half)
    monkeypatch.setattr(spgemm, "PMAX", 2 * half)
    monkeypatch.setattr(spgemm, "WIDE_FROM", 2 * half)
    monkeypatch.setattr(spgemm, "COUNT_ROWS", 8)
    monkeypatch.setattr(spgemm, "SCAN_ENTRIES", 8)
    monkeypatch.setattr(spgemm, "LOOK", 2)
    if placed_by == "spgemm_starts":
        monkeypatch.setattr(spgemm, "_starts_capacity", lambda n_i, nnz_a: 1)
    template = program_template(compile_spgemm())
    csr = parse_format("csr", 2)
    for ub in _cases(half):
        A0, B0 = _products_per_row(ub)
        dev = pick_device([A0])
        plan = template._plan(*(bind_operand(x, n, csr, "float32", dev) for x, n in ((A0, "A"), (B0, "B"))), dev)
        ub_off = np.concatenate([[0], np.cumsum(ub)])
        np.testing.assert_array_equal(plan.ub_off.cpu().numpy(), ub_off, err_msg=str(ub))
        rows = np.repeat(np.arange(len(ub)), np.diff(A0.indptr))
        np.testing.assert_array_equal(plan.a_row.cpu().numpy()[:A0.nnz], rows)
        chunks = -(-int(ub_off[-1]) // half)
        want = np.searchsorted(ub_off[:-1], np.arange(chunks + 1) * half)
        np.testing.assert_array_equal(plan.starts.cpu().numpy(), want, err_msg=str(ub))
        n_i, lists = len(ub), plan.lists.cpu().numpy()
        long_rows = [r for r, n in enumerate(ub) if n > half]
        assert plan.wide == 2 * half
        assert (plan.total, plan.n_large, plan.n_big) == (ub_off[-1], len(long_rows), sum(n > 2 * half for n in ub))
        assert sorted(lists[:plan.n_large]) == long_rows
        assert sorted(lists[n_i:n_i + plan.n_big]) == [r for r, n in enumerate(ub) if n > 2 * half]


def test_small_tiles_on_every_kernel(monkeypatch):
    """Every kernel with tiles far smaller than a GPU's: look-back scans over many tiles (the product
    offsets by entry and C's row pointers), chunk expansion steps of 4 entries x 2 columns (entries of several rows
    a step, rows of B longer than a step, empty rows)."""
    for name, value in (("HALF", 8), ("PMAX", 16), ("WIDE_FROM", 16), ("COUNT_ROWS", 4), ("SCAN_ENTRIES", 4),
                        ("POS_ROWS", 4), ("LOOK", 2), ("CHUNK_ENTRIES", 4), ("CHUNK_BLK", 2)):
        monkeypatch.setattr(spgemm, name, value)
    A = rand((45, 30), 0.08, 31, row_lengths={3: 12, 7: 1, 20: 25, 44: 4})
    A[[0, 8, 11, 12, 40]] = 0
    A.eliminate_zeros()
    B = rand((30, 33), 0.1, 32, row_lengths={2: 20, 9: 3})
    check(A, B)


_LOOKBACK_PROBE = '''

@triton.jit
def lookback_probe(state, out, t, aggregate, LOOK: tl.constexpr):
    tl.store(out, _exclusive_prefix(state, t, aggregate, LOOK))
'''


@pytest.mark.parametrize("published", ["aggregates only", "an inclusive prefix midway"])
def test_look_back_walks_past_aggregates(published):
    """``_exclusive_prefix`` on tile 7 of a state where the tiles before it published only their sums (tile 0
    its inclusive prefix), or tile 3 its inclusive prefix too: the look-back reads 2 tiles a step back to the
    nearest inclusive prefix and publishes tile 7's own. (Launched tiles in Triton's interpreter run one
    after another, so the kernels there always find the tile just before finished.)"""
    from sparsec.backends.triton.launch import interpreting, load_kernel

    device = "cpu" if interpreting() else "cuda"
    agg_flag, inc_flag = 1 << 61, 1 << 62
    sums = [5, 0, 7, 11, 2, 9, 4]
    state = [7] + [agg_flag | v for v in sums] + [0]
    state[1] = inc_flag | sums[0]
    if published != "aggregates only":
        state[4] = inc_flag | sum(sums[:4])
        state[3] = 0                    # not published yet: the walk must stop at tile 3 before reading it
    probe = load_kernel("spgemm_probe", spgemm.source(interpreting()) + _LOOKBACK_PROBE, "lookback_probe")
    st = torch.tensor(state, dtype=torch.int64, device=device)
    out = torch.zeros(1, dtype=torch.int64, device=device)
    probe[(1,)](st, out, 7, 6, LOOK=2)
    assert int(out[0]) == sum(sums)
    assert int(st[8]) == inc_flag | (sum(sums) + 6)
