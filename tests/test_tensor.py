"""Runtime tensors: every format round-trips, converts to every other, and interoperates.

The oracle is the dense numpy array. Arrays used with every format keep at most 2
nonzeros in each block of 4 columns, so nm(2, 4) can hold them too.

Timing of the 10M-nonzero conversions (``test_ten_million_nonzeros``, run with
``SPARSEC_BENCH=1 python -m pytest -q -s tests/test_tensor.py -k ten_million``) on
the 2-core dev VM (shared, numpy 2.4), random 200000 x 200000 matrix with 10M
nonzeros: CSR -> CSC 1.4-4.3 s (the argsort of 10M int64 keys is ~0.75 s of it; the
spread is page faults and load), CSC -> CSR 2.4-3.1 s, CSR -> COO 0.4-0.8 s,
COO -> CSR 0.45-0.65 s (already sorted: no sort), from_coo(shuffled) -> CSR
3.5-4.5 s, from_scipy(csr) 0.1-0.25 s.
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc
from sparsec import FormatError, Tensor, parse_format
from sparsec.tensor import _needed_format

SEED = 20240611

FORMATS_2D = [
    "dense",
    "csr",
    "csc",
    "coo",
    "dcsr",
    "dcsc",
    "csf(1, 0)",
    "bsr(2, 2)",
    "bsr(2, 3)",
    "ell",
    "nm(2, 4)",
    "nm(2, 4, packed)",
    "(i, j) -> (j : dense, i : dense)",
    "(i, j) -> (i floordiv 2 : dense, j floordiv 3 : dense, i mod 2 : dense, j mod 3 : dense)",
    "(i, j) -> (j floordiv 2 : dense, i floordiv 3 : compressed, j mod 2 : dense, i mod 3 : dense)",
    "(i, j) -> (i : compressed(nonunique, nonordered), j : singleton(nonordered))",
    "(i, j) -> (i : dense, j : loose_compressed(nonordered))",
    "(i, j) -> (i : compressed, j : dense)",
    "{ map = (i, j) -> (i : dense, j : compressed), posWidth = 64, crdWidth = 64 }",
]

DTYPES = [np.float32, np.float64, np.int64, np.bool_]

SHAPES = {
    "0x0": (0, 0),
    "1xN": (1, 9),
    "Nx1": (9, 1),
    "0xN": (0, 5),
    "Nx0": (5, 0),
    "1x1": (1, 1),
    "empty-rows-cols": (7, 9),
    "all-zero": (4, 6),
    "random": (13, 10),
}


def nm_pattern(arr: np.ndarray, n: int = 2, m: int = 4) -> np.ndarray:
    """Zero all but the first n nonzeros in every block of m columns (per row)."""
    rows, cols = arr.shape
    pad = -cols % m
    blocks = np.pad(arr, ((0, 0), (0, pad))).reshape(rows, (cols + pad) // m, m)
    keep = np.cumsum(blocks != 0, axis=2) <= n
    return (blocks * keep).reshape(rows, cols + pad)[:, :cols].astype(arr.dtype)


def make_array(kind: str, dtype, seed: int = SEED) -> np.ndarray:
    """A 2:4-patterned test array of the named shape kind."""
    rng = np.random.default_rng(seed)
    shape = SHAPES[kind]
    vals = rng.integers(1, 9, size=shape) * rng.choice([-1, 1], size=shape)
    arr = np.where(rng.random(shape) < 0.45, vals, 0)
    if kind == "all-zero":
        arr[:] = 0
    if kind == "empty-rows-cols":
        arr[[0, 3, 6], :] = 0
        arr[:, [1, 4, 8]] = 0
    return nm_pattern(arr).astype(dtype)


def canonical(text: str, ndim: int = 2):
    return parse_format(text, ndim).with_widths(32, 32)


def check_tensor(t: Tensor, expected: np.ndarray) -> None:
    """Full consistency of a tensor against its dense oracle."""
    t.validate()
    assert t.shape == expected.shape and t.dtype == expected.dtype
    got = t.to_numpy()
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    coords, vals = t.to_coo()
    assert coords.shape == (t.ndim, len(vals)) and coords.dtype == np.int64
    if len(vals):
        assert np.array_equal(expected[tuple(coords)], vals)
    assert np.count_nonzero(vals) == np.count_nonzero(expected)
    lc = t.level_coords()
    assert len(lc) == t.format.rank and all(len(c) == len(lc[0]) for c in lc)


# -- round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("fmt", FORMATS_2D)
def test_round_trip(fmt, dtype, kind):
    arr = make_array(kind, dtype)
    t = Tensor.from_numpy(arr, fmt, name="A")
    assert t.format.with_widths(32, 32) == canonical(fmt)
    check_tensor(t, arr)
    # the buffers we build are accepted by full validation and give the same tensor
    u = Tensor.from_buffers(t.format, t.shape, t.levels, t.values, name="A")
    assert u.format == t.format
    assert np.array_equal(u.to_numpy(), arr)
    for a, b in zip(t.levels, u.levels):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_dense_levels_store_everything_and_sparse_levels_do_not():
    arr = make_array("random", np.float64)
    nnz = np.count_nonzero(arr)
    assert Tensor.from_numpy(arr, "dense").nse == arr.size
    assert Tensor.from_numpy(arr, "csr").nse == nnz
    assert Tensor.from_numpy(arr, "coo").nse == nnz
    bsr = Tensor.from_numpy(arr, "bsr(2, 2)")
    blocks = {(i // 2, j // 2) for i, j in zip(*np.nonzero(arr))}
    assert bsr.nse == 4 * len(blocks)
    assert bsr.buffer(1, "pos")[-1] == len(blocks)
    nm = Tensor.from_numpy(arr, "nm(2, 4)")
    assert nm.nse == arr.shape[0] * 3 * 2  # 13 rows x ceil(10 / 4) blocks x 2 slots


def test_index_dtypes_follow_widths():
    arr = make_array("random", np.float32)
    t = Tensor.from_numpy(arr, "csr")
    assert t.buffer(1, "pos").dtype == np.int32 and t.buffer(1, "crd").dtype == np.int32
    w = t.to("csr[pos64,crd32]")
    assert w.buffer(1, "pos").dtype == np.int64 and w.buffer(1, "crd").dtype == np.int32
    assert w.format.pos_width == 64 and np.array_equal(w.to_numpy(), arr)
    with pytest.raises(FormatError, match="no buffer 'pos'"):
        t.buffer(0, "pos")
    with pytest.raises(FormatError, match="no level 5"):
        t.buffer(5, "crd")


# -- conversions ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def conversion_sources():
    arr = make_array("random", np.float64, seed=7)
    return arr, {f: Tensor.from_numpy(arr, f, name="A") for f in FORMATS_2D}


@pytest.mark.parametrize("src", FORMATS_2D)
def test_convert_between_every_pair(conversion_sources, src):
    arr, tensors = conversion_sources
    for dst in FORMATS_2D:
        out = tensors[src].to(dst)
        assert out.format.with_widths(32, 32) == canonical(dst), (src, dst)
        assert out.name == "A"
        check_tensor(out, arr)


def test_conversion_keeps_explicit_zeros_of_sparse_levels():
    m = sp.csr_matrix((np.array([1.0, 0.0, 2.0]), np.array([0, 2, 1]), np.array([0, 2, 3])), shape=(2, 3))
    t = Tensor.from_scipy(m)
    assert t.nse == 3
    for f in ("csc", "coo", "dcsr", "ell"):
        u = t.to(f)
        coords, vals = u.to_coo()
        assert len(vals) == 3 and 0.0 in vals, f
    assert t.to("dense").to("csr").nse == 2  # a dense tensor's zeros are not entries


def test_convert_to_same_format_is_identity_and_widths_only_cast():
    t = Tensor.from_numpy(make_array("random", np.float64), "csr")
    assert t.to("csr") is t
    w = t.to(parse_format("csr").with_widths(64, 64))
    assert w.buffer(1, "crd").dtype == np.int64 and np.array_equal(w.to_numpy(), t.to_numpy())


def test_nm_conversion_rejects_a_pattern_that_is_not_nm():
    arr = np.zeros((4, 10))
    arr[0, :2] = 1
    arr[2, 4:7] = [1, 2, 3]  # row 2, column block 1 holds three nonzeros
    arr[3, 4:8] = 1
    t = Tensor.from_numpy(arr, "csr", name="W")
    with pytest.raises(FormatError) as info:
        t.to("nm(2, 4)")
    msg = str(info.value)
    assert msg.startswith("tensor 'W', level 2 (structured[2, 4]): ")
    assert "row 2, column block 1 (columns 4..7) has 3 nonzeros" in msg and "not 2:4" in msg
    fits = arr.copy()
    fits[3, 7] = 0
    assert Tensor.from_numpy(fits, "nm(4, 4)").to("nm(3, 4)").nse == 4 * 3 * 3


def test_nm_padding_past_the_edge_is_dropped():
    arr = np.array([[0, 0, 0, 0, 5.0]])  # last block holds column 4 only; padding goes to 5, 6 or 7
    t = Tensor.from_numpy(arr, "nm(2, 4)")
    assert t.nse == 4
    coords, vals = t.to_coo()
    assert np.all(coords[1] < 5) and vals.tolist().count(5.0) == 1
    assert np.array_equal(t.to_numpy(), arr)


@pytest.mark.parametrize("ndim,shape", [(3, (3, 4, 5)), (4, (2, 3, 2, 3))])
def test_csf_every_level_order(ndim, shape):
    rng = np.random.default_rng(SEED + ndim)
    arr = np.where(rng.random(shape) < 0.3, rng.standard_normal(shape), 0.0)
    arr[0] = 0  # an empty slice
    formats = [f"csf({', '.join(map(str, p))})" for p in itertools.permutations(range(ndim))]
    formats += ["coo", "dense", "csf"]
    tensors = [Tensor.from_numpy(arr, f, name="X") for f in formats]
    for f, t in zip(formats, tensors):
        assert t.format.with_widths(32, 32) == canonical(f, ndim)
        check_tensor(t, arr)
    # every order to coo and to the reverse order, and coo to every order
    coo = tensors[-3]
    rev = f"csf({', '.join(map(str, reversed(range(ndim))))})"
    for f, t in zip(formats, tensors):
        check_tensor(t.to("coo"), arr)
        check_tensor(t.to(rev), arr)
        check_tensor(coo.to(f), arr)


def test_3d_mixed_levels():
    rng = np.random.default_rng(3)
    arr = np.where(rng.random((4, 3, 5)) < 0.4, rng.integers(1, 5, (4, 3, 5)), 0).astype(np.int64)
    fmt = "(i, j, k) -> (k : dense, i : compressed, j : compressed)"
    check_tensor(Tensor.from_numpy(arr, fmt), arr)
    coo3 = "(i, j, k) -> (i : compressed(nonunique), j : singleton(nonunique), k : singleton)"
    check_tensor(Tensor.from_numpy(arr, coo3), arr)
    assert Tensor.from_numpy(arr, "coo").format == parse_format(coo3)


def test_1d_vectors():
    v = np.array([0, 3.0, 0, 0, -1.0])
    for f in ("dense", "coo", "csf"):
        t = Tensor.from_numpy(v, f)
        check_tensor(t, v)
    assert Tensor.from_numpy(v, "coo").nse == 2


# -- from_coo, from_level_coords -----------------------------------------------------------

def test_from_coo_sums_duplicates_and_keeps_explicit_zeros():
    coords = np.array([[2, 0, 2, 1, 2], [1, 3, 1, 0, 1]])
    vals = np.array([1.0, 5.0, 2.0, 0.0, 4.0])
    for f in ("coo", "csr", "csc", "dense", "bsr(2, 2)", "ell"):
        t = Tensor.from_coo(coords, vals, (3, 4), f)
        expected = np.zeros((3, 4))
        expected[2, 1], expected[0, 3] = 7.0, 5.0
        assert np.array_equal(t.to_numpy(), expected), f
    coo = Tensor.from_coo(coords, vals, (3, 4))
    assert coo.nse == 3  # (0,3), (1,0) explicit zero, (2,1) summed
    c, v = coo.to_coo()
    assert c.tolist() == [[0, 1, 2], [3, 0, 1]] and v.tolist() == [5.0, 0.0, 7.0]
    # a sequence of 1-D arrays works too; booleans "sum" with or
    b = Tensor.from_coo([np.array([0, 0]), np.array([1, 1])], np.array([True, True]), (1, 2), "csr")
    assert b.to_numpy().tolist() == [[False, True]] and b.nse == 1


def test_from_coo_out_of_range():
    with pytest.raises(FormatError, match=r"tensor 'B': entry 2 has coordinate 4 in dimension 1, out of range \[0, 4\)"):
        Tensor.from_coo(np.array([[0, 1, 2], [0, 1, 4]]), np.ones(3), (3, 4), "csr", name="B")
    with pytest.raises(FormatError, match=r"entry 0 has coordinate -1 in dimension 0"):
        Tensor.from_coo(np.array([[-1], [0]]), np.ones(1), (3, 4))
    with pytest.raises(FormatError, match=r"coords must have shape \(2, 3\)"):
        Tensor.from_coo(np.zeros((3, 3), dtype=int), np.ones(3), (3, 4))
    with pytest.raises(FormatError, match="coords must be integers"):
        Tensor.from_coo(np.zeros((2, 3)), np.ones(3), (3, 4))


def test_from_level_coords_bsr():
    rng = np.random.default_rng(11)
    arr = np.where(rng.random((7, 8)) < 0.3, rng.standard_normal((7, 8)), 0.0)
    i, j = np.nonzero(arr)
    perm = rng.permutation(len(i))
    lc = [i // 2, j // 4, i % 2, j % 4]
    t = Tensor.from_level_coords("bsr(2, 4)", arr.shape, [c[perm] for c in lc], arr[i, j][perm], name="C")
    check_tensor(t, arr)
    sorted_t = Tensor.from_level_coords("bsr(2, 4)", arr.shape, lc, arr[i, j], presorted=False)
    assert np.array_equal(sorted_t.values, t.values)
    order = np.lexsort(lc[::-1])
    pre = Tensor.from_level_coords("bsr(2, 4)", arr.shape, [c[order] for c in lc], arr[i, j][order], presorted=True)
    assert np.array_equal(pre.values, t.values) and np.array_equal(pre.buffer(1, "crd"), t.buffer(1, "crd"))


def test_from_level_coords_errors():
    with pytest.raises(FormatError, match="duplicate entry"):
        Tensor.from_level_coords("csr", (2, 2), [np.array([0, 0]), np.array([1, 1])], np.ones(2))
    with pytest.raises(FormatError, match=r"level 1 \(compressed\): entry 1 has level coordinate 2"):
        Tensor.from_level_coords("csr", (2, 2), [np.array([0, 1]), np.array([1, 2])], np.ones(2))
    with pytest.raises(FormatError, match="has 2 levels, got 1"):
        Tensor.from_level_coords("csr", (2, 2), [np.array([0])], np.ones(1))


def test_singleton_cannot_hold_two_coordinates_for_one_parent():
    arr = np.array([[1.0, 2.0], [0.0, 3.0]])
    with pytest.raises(FormatError) as info:
        Tensor.from_numpy(arr, "(i, j) -> (i : dense, j : singleton)", name="S")
    assert str(info.value).startswith("tensor 'S', level 1 (singleton): row 0 has two coordinates (0 and 1)")
    ok = np.array([[0.0, 2.0], [0.0, 0.0], [4.0, 0.0]])
    check_tensor(Tensor.from_numpy(ok, "(i, j) -> (i : compressed, j : singleton)"), ok)


# -- widening ------------------------------------------------------------------------------

def test_coordinates_past_int32_widen_crd():
    n = 2**31 + 10
    t = Tensor.from_coo(np.array([[5, 2**31 + 5]]), np.array([1.5, 2.5]), (n,), "coo", name="v")
    assert t.format.crd_width == 64 and t.format.pos_width == 32
    assert t.buffer(0, "crd").dtype == np.int64 and t.buffer(0, "pos").dtype == np.int32
    assert t.buffer(0, "crd").tolist() == [5, 2**31 + 5]
    coords, vals = t.to_coo()
    assert coords.tolist() == [[5, 2**31 + 5]] and vals.tolist() == [1.5, 2.5]
    t.validate()
    u = Tensor.from_buffers("coo", (n,), [{"pos": [0, 1], "crd": np.array([2**31 + 1], dtype=np.uint64)}], [1.0])
    assert u.format.crd_width == 64 and u.buffer(0, "crd")[0] == 2**31 + 1
    small = Tensor.from_coo(np.array([[5]]), np.array([1.0]), (10,))
    assert small.format.crd_width == 32


def test_wide_matrix_widens_only_crd():
    t = Tensor.from_coo(np.array([[1], [2**31 + 1]]), np.array([3.0]), (2, 2**31 + 3), "csr")
    assert (t.format.pos_width, t.format.crd_width) == (32, 64)
    assert t.to_coo()[0].tolist() == [[1], [2**31 + 1]]


def test_position_counts_past_int32_widen_pos():
    csr = parse_format("csr")
    assert _needed_format(csr, (10, 10), (10, 2**31 - 1)) == csr
    assert _needed_format(csr, (10, 10), (10, 2**31)) == csr.with_widths(64, 32)
    assert _needed_format(csr, (10, 2**31 + 1), (10, 5)) == csr.with_widths(32, 64)
    assert _needed_format(csr.with_widths(64, 64), (1, 1), (1, 1)) == csr.with_widths(64, 64)  # never narrowed


def test_narrow_widths_widen_to_the_narrowest_that_fits_per_level():
    csr8 = parse_format("csr[pos8,crd8]")
    assert _needed_format(csr8, (10**6, 128), (10**6, 127)) == csr8       # rows own no buffer
    assert _needed_format(csr8, (3, 129), (3, 128)) == csr8.with_widths(16, 16)
    assert _needed_format(csr8, (3, 32769), (3, 5)) == csr8.with_widths(8, 32)
    assert _needed_format(csr8, (3, 5), (3, 2**31)) == csr8.with_widths(64, 8)
    nm = parse_format("nm(2, 4)[pos8,crd8]")
    assert _needed_format(nm, (10**4, 10**4 // 4, 4), (10**4, 10**4 // 4 * 10**4, 10**8)) == nm
    assert _needed_format(csr8.with_widths(16, 32), (1, 1), (1, 1)) == csr8.with_widths(16, 32)   # never narrowed


# -- scipy ---------------------------------------------------------------------------------

SCIPY_TYPES = [
    (sp.csr_matrix, "csr"), (sp.csc_matrix, "csc"), (sp.coo_matrix, "coo"), (sp.dia_matrix, "csr"),
    (sp.lil_matrix, "csr"), (sp.dok_matrix, "csr"), (sp.csr_array, "csr"), (sp.csc_array, "csc"),
    (sp.coo_array, "coo"), (sp.dia_array, "csr"), (sp.lil_array, "csr"), (sp.dok_array, "csr"),
]


@pytest.mark.parametrize("kind", ["random", "empty-rows-cols", "0x0", "Nx0", "all-zero"])
@pytest.mark.parametrize("ctor,natural", SCIPY_TYPES, ids=lambda x: getattr(x, "__name__", x))
def test_from_scipy_every_type(ctor, natural, kind):
    arr = make_array(kind, np.float64)
    t = Tensor.from_scipy(ctor(arr), name="M")
    assert t.format == canonical(natural) and t.name == "M"
    check_tensor(t, arr)
    assert np.array_equal(Tensor.from_scipy(ctor(arr), format="dcsc").to_numpy(), arr)


@pytest.mark.parametrize("ctor", [sp.bsr_matrix, sp.bsr_array])
def test_from_scipy_bsr(ctor):
    arr = make_array("random", np.float64)[:12]  # 12 x 10
    m = ctor(arr, blocksize=(3, 2))
    assert not m.has_sorted_indices  # scipy builds unsorted block columns from a dense array
    t = Tensor.from_scipy(m)
    assert str(t.format) == "bsr(3, 2)" and t.nse == m.data.size
    check_tensor(t, arr)
    m.sort_indices()
    assert np.array_equal(t.buffer(1, "pos"), m.indptr) and np.array_equal(t.buffer(1, "crd"), m.indices)
    assert np.array_equal(t.values, m.data.ravel())
    direct = Tensor.from_scipy(m)  # canonical: buffers taken over as they are
    assert np.array_equal(direct.values, m.data.ravel()) and direct.nse == m.data.size
    check_tensor(Tensor.from_scipy(m, format="csr"), arr)
    back = t.to_scipy()
    assert back.format == "bsr" and back.blocksize == (3, 2) and np.array_equal(back.toarray(), arr)


def test_from_scipy_unsorted_duplicates_and_explicit_zeros():
    # row 0: columns 3, 1 (unsorted) and 1 again (duplicate); row 1: explicit zero at column 2
    m = sp.csr_matrix((np.array([1.0, 2.0, 4.0, 0.0]), np.array([3, 1, 1, 2]), np.array([0, 3, 4])), shape=(2, 4))
    assert not m.has_sorted_indices
    expected = np.array([[0, 6.0, 0, 1.0], [0, 0, 0, 0]])
    for fmt in (None, "csc", "coo"):
        t = Tensor.from_scipy(m, format=fmt)
        check_tensor(t, expected)
        assert t.nse == 3  # (0,1) summed, (0,3), explicit zero (1,2)
    t = Tensor.from_scipy(m)
    assert t.buffer(1, "crd").tolist() == [1, 3, 2] and t.values.tolist() == [6.0, 1.0, 0.0]
    csc = sp.csc_matrix((np.array([0.0, 5.0]), np.array([1, 0]), np.array([0, 2, 2])), shape=(2, 2))
    assert Tensor.from_scipy(csc).nse == 2
    coo = sp.coo_matrix((np.array([1, 2, 0]), (np.array([1, 1, 0]), np.array([0, 0, 0]))), shape=(2, 1))
    t = Tensor.from_scipy(coo)
    assert t.dtype == coo.dtype and t.to_numpy().ravel().tolist() == [0, 3] and t.nse == 2


def test_to_scipy():
    arr = make_array("random", np.float64)
    t = Tensor.from_numpy(arr, "csr")
    m = t.to_scipy()
    assert m.format == "csr" and np.array_equal(m.toarray(), arr)
    assert np.shares_memory(m.indices, t.buffer(1, "crd")) and np.shares_memory(m.indptr, t.buffer(1, "pos"))
    assert t.to("csc").to_scipy().format == "csc"
    assert t.to("coo").to_scipy().format == "coo"
    for f in ("dense", "dcsr", "ell", "nm(2, 4)", "bsr(2, 3)", "csf(1, 0)"):
        s = t.to(f).to_scipy()
        assert s.format == "csr" and np.array_equal(s.toarray(), arr), f
        assert s.nnz == np.count_nonzero(arr), f  # fill zeros of blocks / padding are not exported
    h = Tensor.from_numpy(arr.astype(np.float16), "csr").to_scipy()
    assert h.dtype == np.float32
    with pytest.raises(FormatError, match="to_scipy needs a 2-D tensor"):
        Tensor.from_numpy(np.ones(3), "coo").to_scipy()


# -- torch ---------------------------------------------------------------------------------

torch = pytest.importorskip("torch")


def torch_layouts(arr: np.ndarray):
    t = torch.from_numpy(arr)
    return {
        "strided": (t, "dense"),
        "coo": (t.to_sparse_coo(), "coo"),
        "csr": (t.to_sparse_csr(), "csr"),
        "csc": (t.to_sparse_csc(), "csc"),
        "bsr": (t.to_sparse_bsr((2, 2)), "bsr(2, 2)"),
    }


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", ["strided", "coo", "csr", "csc", "bsr"])
def test_from_torch_every_layout(layout, dtype):
    arr = make_array("random", dtype)[:12]  # 12 x 10: a multiple of the 2 x 2 blocks
    tt, natural = torch_layouts(arr)[layout]
    t = Tensor.from_torch(tt, name="T")
    assert t.format == canonical(natural)
    check_tensor(t, arr)
    back = t.to_torch()
    assert back.layout == tt.layout
    assert np.array_equal(back.to_dense().numpy(), arr)


def test_from_torch_uncoalesced_coo_sums_duplicates():
    idx = torch.tensor([[0, 1, 0], [2, 0, 2]])
    t = torch.sparse_coo_tensor(idx, torch.tensor([1.0, 2.0, 3.0]), (2, 3), check_invariants=True)
    assert not t.is_coalesced()
    s = Tensor.from_torch(t, format="csr")
    assert s.to_numpy().tolist() == [[0, 0, 4.0], [2.0, 0, 0]] and s.nse == 2


def test_to_torch_other_formats_give_coalesced_coo():
    arr = make_array("random", np.float64)
    for f in ("coo", "dcsr", "ell", "nm(2, 4)", "bsr(2, 3)", "(i, j) -> (i : compressed(nonunique, nonordered), j : singleton(nonordered))"):
        tt = Tensor.from_numpy(arr, f).to_torch()
        assert tt.layout == torch.sparse_coo and tt.is_coalesced(), f
        assert np.array_equal(tt.to_dense().numpy(), arr), f
        assert tt._nnz() == np.count_nonzero(arr), f
    dense = Tensor.from_numpy(arr, "dense").to_torch()
    assert dense.layout == torch.strided and np.array_equal(dense.numpy(), arr)


def test_torch_errors():
    with pytest.raises(FormatError, match="bfloat16"):
        Tensor.from_torch(torch.ones(2, 2, dtype=torch.bfloat16))
    hybrid = torch.sparse_coo_tensor(torch.tensor([[0, 1]]), torch.ones(2, 3), (2, 3), check_invariants=True)
    with pytest.raises(FormatError, match="hybrid or batched"):
        Tensor.from_torch(hybrid)


# -- misc API ------------------------------------------------------------------------------

def test_astype_copy_repr():
    arr = make_array("random", np.float64)
    t = Tensor.from_numpy(arr, "csr", name="A")
    assert repr(t) == f"Tensor(name='A', shape=(13, 10), format=csr, dtype=float64, nse={np.count_nonzero(arr)})"
    i = t.astype(np.int32)
    assert i.dtype == np.int32 and np.array_equal(i.to_numpy(), arr.astype(np.int32))
    c = t.copy()
    c.values[:] = 0
    c.buffer(1, "crd")[:] = 0
    assert np.array_equal(t.to_numpy(), arr)
    assert t.ndim == 2 and t.level_sizes == (13, 10)
    with pytest.raises(FormatError, match="complex128 is not supported"):
        t.astype(np.complex128)


def test_constructors_do_not_alias_inputs():
    vals = np.array([1.0, 2.0])
    t = Tensor.from_coo(np.array([[0, 1], [1, 0]]), vals, (2, 2), "csr")
    vals[:] = 9
    assert t.values.tolist() == [1.0, 2.0]
    arr = np.eye(3)
    d = Tensor.from_numpy(arr)
    arr[0, 0] = 7
    assert d.to_numpy()[0, 0] == 1.0
    m = sp.csr_matrix(np.eye(3))
    s = Tensor.from_scipy(m)
    m.data[:] = 5
    m.indices[:] = 0
    assert np.array_equal(s.to_numpy(), np.eye(3))


def test_unsupported_inputs():
    with pytest.raises(FormatError, match="uint8 is not supported"):
        Tensor.from_numpy(np.ones((2, 2), dtype=np.uint8))
    with pytest.raises(FormatError, match="0-dimensional"):
        Tensor.from_numpy(np.float64(1.0))
    with pytest.raises(FormatError, match="tensor 'Z': format 'csr' is 2-D"):
        Tensor.from_numpy(np.ones(3), "csr", name="Z")
    with pytest.raises(FormatError, match="from_scipy needs a scipy.sparse"):
        Tensor.from_scipy(np.ones((2, 2)))


@pytest.mark.skipif(not os.environ.get("SPARSEC_BENCH"), reason="10M-nonzero timing; set SPARSEC_BENCH=1 to run")
def test_ten_million_nonzeros():
    """Measures the conversions quoted in this module's docstring (prints timings)."""
    rng = np.random.default_rng(0)
    n, nnz = 200_000, 10_000_000
    m = sp.coo_matrix((rng.random(nnz), (rng.integers(0, n, nnz), rng.integers(0, n, nnz))), shape=(n, n)).tocsr()
    timings = {}

    def timed(label, fn):
        start = time.perf_counter()
        out = fn()
        timings[label] = time.perf_counter() - start
        return out

    a = timed("from_scipy(csr)", lambda: Tensor.from_scipy(m))
    csc = timed("csr->csc", lambda: a.to("csc"))
    coo = timed("csr->coo", lambda: a.to("coo"))
    csr = timed("coo->csr", lambda: coo.to("csr"))
    back = timed("csc->csr", lambda: csc.to("csr"))
    shuffled = rng.permutation(m.nnz)
    rows = np.repeat(np.arange(n), np.diff(m.indptr))[shuffled]
    unsorted = timed("from_coo(shuffled)->csr", lambda: Tensor.from_coo((rows, m.indices[shuffled]), m.data[shuffled], m.shape, "csr"))
    assert np.array_equal(unsorted.buffer(1, "crd"), m.indices)
    print({k: round(v, 2) for k, v in timings.items()}, f"nnz={m.nnz}")
    ref = m.tocsc()
    assert np.array_equal(csc.buffer(1, "pos"), ref.indptr) and np.array_equal(csc.buffer(1, "crd"), ref.indices)
    assert np.array_equal(csc.values, ref.data)
    assert np.array_equal(csr.values, m.data) and np.array_equal(back.buffer(1, "crd"), m.indices)


def test_medium_conversion_matches_scipy():
    """CSR -> CSC / COO -> CSR on 200k nonzeros agree with scipy exactly."""
    rng = np.random.default_rng(5)
    n, nnz = 3000, 200_000
    m = sp.coo_matrix((rng.random(nnz), (rng.integers(0, n, nnz), rng.integers(0, n, nnz))), shape=(n, n + 7))
    t = Tensor.from_scipy(m)  # coo with duplicates
    csr = t.to("csr")
    ref = m.tocsr()
    ref.sum_duplicates()
    assert np.array_equal(csr.buffer(1, "pos"), ref.indptr) and np.array_equal(csr.buffer(1, "crd"), ref.indices)
    assert np.allclose(csr.values, ref.data)
    csc = csr.to("csc")
    refc = ref.tocsc()
    assert np.array_equal(csc.buffer(1, "pos"), refc.indptr) and np.array_equal(csc.buffer(1, "crd"), refc.indices)
    assert np.allclose(csc.values, refc.data)
    assert np.array_equal(csc.to("csr").values, csr.values)


def test_public_exports():
    assert sc.Tensor is Tensor and callable(sc.read_mtx) and callable(sc.write_mtx)
    assert {"Tensor", "read_mtx", "write_mtx"} <= set(sc.__all__)


def test_singleton_under_dense_with_an_empty_dimension():
    """Each parent of a singleton level keeps a coordinate (0 where it has no entry), which a dimension of
    extent 0 does not have: a FormatError naming the level, not an out-of-range coordinate."""
    fmt = "(i, j) -> (i : dense, j : singleton)"
    with pytest.raises(FormatError, match=r"level 1 \(singleton\): 2 parent positions need a coordinate"):
        Tensor.from_numpy(np.zeros((2, 0)), fmt)
    assert Tensor.from_numpy(np.zeros((0, 3)), fmt).to_numpy().shape == (0, 3)
    np.testing.assert_array_equal(Tensor.from_numpy(np.diag([1.0, 2.0]), fmt).to_numpy(), np.diag([1.0, 2.0]))


def test_singleton_fillers_under_a_dense_level_are_not_carried_over():
    """A row without an entry keeps coordinate 0 and a zero in (dense, singleton); converting drops that filler
    like a dense level's zeros (it is not an explicit entry)."""
    t = Tensor.from_numpy(np.array([[0.0, 0.0], [0.0, 5.0]]), "(i, j) -> (i : dense, j : singleton)")
    assert t.nse == 2
    c = t.to("csr")
    assert c.nse == 1 and c.to_numpy().tolist() == [[0.0, 0.0], [0.0, 5.0]]
