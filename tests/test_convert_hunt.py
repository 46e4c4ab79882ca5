"""Tensor construction and format conversion, hunted against numpy float64 (probe/convhunt/).

Confirmed bugs are strict xfails asserting the right behaviour; the rest are behaviours that were
checked and found correct (round trips between format pairs, odd shapes, 0-size dimensions, dtypes,
NaN / inf / -0.0, explicit zeros, duplicates, index widths, pickling, astype, copy, validate, interop).
"""

from __future__ import annotations

import copy
import pickle
import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc
from sparsec.errors import FormatError, ParseError
from sparsec.formats import parse_format

from hostarray import host

BLOCKED_COO = ("(i, j) -> (i floordiv 4 : dense, j floordiv 8 : compressed, i mod 4 : compressed(nonunique), "
               "j mod 8 : singleton)")

FORMATS_2D = ["dense", "csr", "csc", "coo", "dcsr", "dcsc", "csf(1,0)", "bsr(2,3)", "bsr(4,4)", "nm(1,2)",
              "nm(2,4,packed)", "bitmap", "csr_unsorted", "ell", BLOCKED_COO, "csr[pos8,crd8]", "coo[pos16,crd16]"]


def _pattern(shape, seed, density=0.35):
    """A random float64 array whose every row has at most 1 nonzero per pair of columns (fits nm(1,2)
    and so nm(2,4) too), with a NaN and an inf when there is room."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    a[rng.random(shape) > density] = 0
    if a.ndim == 2:
        for j0 in range(0, a.shape[1] - 1, 2):
            both = (a[:, j0] != 0) & (a[:, j0 + 1] != 0)
            a[both, j0 + 1] = 0
        nz = np.argwhere(a != 0)
        if len(nz) >= 2:
            a[tuple(nz[0])] = np.nan
            a[tuple(nz[-1])] = -np.inf
    return a


def _dense(x) -> np.ndarray:
    """A torch (sparse or strided) or scipy result as a numpy array."""
    if hasattr(x, "toarray"):
        return x.toarray()
    if "sparse" in str(getattr(x, "layout", "")):
        return x.to_dense().numpy()
    return host(x)


# ---------------------------------------------------------------------------------------------------
# checked and correct: conversions between every pair of formats
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (0, 3), (3, 0), (9, 13), (6, 1)], ids=str)
def test_every_pair_round_trips(shape):
    a = _pattern(shape, seed=sum(shape))
    for f1 in FORMATS_2D:
        t1 = sc.Tensor.from_numpy(a, f1, name="A")
        t1.validate()
        np.testing.assert_array_equal(host(t1), a, err_msg=f1)
        for f2 in FORMATS_2D:
            t2 = t1.to(f2)
            t2.validate()
            got = host(t2)
            assert got.shape == a.shape and got.dtype == a.dtype, (f1, f2)
            np.testing.assert_array_equal(got, a, err_msg=f"{f1} -> {f2}")
            coords, vals = t2.to_coo()
            acc = np.zeros(a.shape)
            np.add.at(acc, tuple(coords), vals)
            np.testing.assert_array_equal(acc, a, err_msg=f"to_coo {f1} -> {f2}")
            np.testing.assert_array_equal(t2.to_scipy().toarray(), a, err_msg=f"to_scipy {f2}")


F3 = ["dense", "coo", "csf", "csf(2,0,1)", "(i,j,k)->(k:dense,i:dense,j:compressed)",
      "(i,j,k)->(i:dense,j floordiv 2:compressed,k:dense,j mod 2:dense)", "(i,j,k)->(i:dense,j:dense,k:bitmap)",
      "(i,j,k)->(i:dense,j:loose_compressed,k:compressed)", "coo[pos8,crd8]"]
F4 = ["dense", "coo", "csf", "csf(3,1,0,2)", "(a,b,c,d)->(a:dense,b:compressed,c:dense,d:compressed)"]


@pytest.mark.parametrize("shape,fmts", [((3, 4, 5), F3), ((1, 1, 1), F3), ((2, 0, 3), F3),
                                        ((2, 3, 1, 4), F4), ((3, 0, 2, 2), F4)], ids=lambda x: str(x)[:12])
def test_nd_pairs_round_trip_and_reassemble(shape, fmts):
    a = _pattern(shape, seed=7)
    for f1 in fmts:
        t1 = sc.Tensor.from_numpy(a, f1)
        for f2 in fmts:
            t2 = t1.to(f2)
            t2.validate()
            np.testing.assert_array_equal(host(t2), a, err_msg=f"{f1} -> {f2}")
            pos = t2._entries()[1]
            again = sc.Tensor.from_level_coords(t2.format, shape, t2.level_coords(), t2.values[pos])
            np.testing.assert_array_equal(host(again), a)
            np.testing.assert_array_equal(host(sc.Tensor.from_buffers(t2.format, shape, t2.levels, t2.values)), a)
            p = pickle.loads(pickle.dumps(t2))
            assert p.format == t2.format
            np.testing.assert_array_equal(host(p), a)


# ---------------------------------------------------------------------------------------------------
# checked and correct: values, dtypes, zeros
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["bool", "int8", "int16", "int64", "float16", "float32"])
@pytest.mark.parametrize("fmt", ["csr", "bsr(2,3)", "bitmap", "coo", "nm(1,2)"])
def test_value_dtype_is_kept(dtype, fmt):
    a = (np.arange(20).reshape(4, 5) % 2 * np.arange(20).reshape(4, 5) % 7).astype(dtype)
    t = sc.Tensor.from_numpy(a, fmt)
    assert t.dtype == np.dtype(dtype)
    got = host(t.to("csc"))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, a)
    tt = t.to_torch()
    np.testing.assert_array_equal(_dense(tt), a)
    back = sc.Tensor.from_torch(tt, fmt)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(host(back), a)


def test_nan_inf_kept_and_negative_zero_stays_in_dense():
    a = np.array([[np.nan, -0.0, 0.0], [np.inf, -np.inf, 1.0]])
    for f in ["coo", "csr", "csc", "bsr(2,2)", "bitmap", "ell", "dense"]:
        got = host(sc.Tensor.from_numpy(a, f).to("dcsr"))
        np.testing.assert_array_equal(got, a, err_msg=f)
    assert np.signbit(host(sc.Tensor.from_numpy(a))[0, 1])


def test_explicit_negative_zero_survives_sparse_conversions():
    t = sc.Tensor.from_coo([[0], [0]], [-0.0], (2, 4), "csr")
    for f in ["bitmap", "bsr(2,2)", "nm(2,4)", "dense", "csc", "dcsr"]:
        assert np.signbit(host(t.to(f))[0, 0]), f
    for f in ["coo", "bitmap", "csc"]:   # sparse levels keep it as a stored entry
        assert np.signbit(host(t.to(f).to("csr"))[0, 0]), f
    assert np.signbit(host(t)[0, 0])


def test_duplicates_summed_and_explicit_zeros_kept():
    c = np.array([[0, 1, 2, 2], [0, 3, 1, 1]])
    v = np.array([0.0, 2.0, 3.0, -3.0])
    want = np.zeros((3, 4))
    want[1, 3] = 2.0
    for f in ["coo", "csr", "csc", "dcsr", "bitmap", "csr_unsorted", "ell"]:
        t = sc.Tensor.from_coo(c, v, (3, 4), f)
        assert t.nse == 3, f                       # (0,0)=0 explicit, (1,3)=2, (2,1)=3-3 explicit
        assert t.to("coo").nse == 3, f
        assert t.to_scipy().nnz == 3, f
        np.testing.assert_array_equal(host(t), want)


def test_duplicates_in_buffers_are_summed_by_conversion():
    t = sc.Tensor.from_buffers("coo", (2, 3), [{"pos": [0, 2], "crd": [1, 1]}, {"crd": [2, 2]}], [1.0, 2.0])
    want = np.zeros((2, 3))
    want[1, 2] = 3.0
    np.testing.assert_array_equal(host(t), want)
    np.testing.assert_array_equal(host(t.to("csr")), want)
    np.testing.assert_array_equal(t.to_scipy().toarray(), want)


def test_astype_copy_pickle():
    a = _pattern((5, 6), seed=3)
    a = np.nan_to_num(a, posinf=5.0, neginf=-5.0)
    for f in ["csr", "bsr(2,2)", "nm(1,2)", "bitmap", "dense", "coo"]:
        t = sc.Tensor.from_numpy(a, f, name="W")
        np.testing.assert_array_equal(host(t.astype(np.int8)), a.astype(np.int8))
        b = t.astype(bool)
        b.validate()
        np.testing.assert_array_equal(host(b), a.astype(bool))
        with pytest.raises(FormatError, match="complex64"):
            t.astype("complex64")
        c = t.copy()
        c.values[:] = 9
        np.testing.assert_array_equal(host(t), a)
        p = pickle.loads(pickle.dumps(t))
        assert p.name == "W" and p.format == t.format
        np.testing.assert_array_equal(host(p), a)
        np.testing.assert_array_equal(host(copy.deepcopy(t)), a)


# ---------------------------------------------------------------------------------------------------
# checked and correct: index widths
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,want", [("csr[pos32,crd16]", "csr"), ("bsr(2,4)[pos8,crd8]", "bsr(2, 4)[pos8,crd16]"),
                                      ("csc[pos8,crd8]", "csc[pos8,crd8]"), ("bitmap[pos8,crd8]", "bitmap[pos8,crd8]"),
                                      ("nm(2,4,packed)[pos8,crd8]", "nm(2, 4, packed)[pos8,crd8]"),
                                      ("coo[pos8,crd8]", "coo[pos8,crd32]")])
def test_16bit_crd_with_70000_columns_is_widened(fmt, want):
    rows, cols = np.array([0, 0, 1, 2]), np.array([5, 69999, 40000, 32768])
    m = sp.csr_matrix((np.array([1.0, 2, 3, 4]), (rows, cols)), shape=(3, 70000))
    a = m.toarray()
    for t in (sc.Tensor.from_scipy(m, fmt), sc.Tensor.from_numpy(a, fmt), sc.Tensor.from_coo(np.stack([rows, cols]),
              [1.0, 2, 3, 4], a.shape, fmt), sc.Tensor.from_numpy(a, "csr").to(fmt)):
        t.validate()
        assert str(t.format) == want
        np.testing.assert_array_equal(host(t), a)


def test_pos8_with_300_entries_is_widened_from_buffers():
    t = sc.Tensor.from_buffers("csr[pos8,crd8]", (1, 300), [{}, {"pos": [0, 300], "crd": np.arange(300)}],
                               np.ones(300))
    assert str(t.format) == "csr[pos16,crd16]"
    np.testing.assert_array_equal(host(t), np.ones((1, 300)))


# ---------------------------------------------------------------------------------------------------
# checked and correct: interop
# ---------------------------------------------------------------------------------------------------

def test_scipy_unsorted_duplicates_and_other_kinds():
    m = sp.csr_matrix((np.array([1.0, 2, 3, 0]), np.array([2, 0, 2, 1]), np.array([0, 4, 4])), shape=(2, 3))
    for f in [None, "csr", "csc", "csr_unsorted", "bsr(2,2)"]:
        np.testing.assert_array_equal(host(sc.Tensor.from_scipy(m, f)), m.toarray())
    np.testing.assert_array_equal(host(sc.Tensor.from_scipy(m.tocsc())), m.toarray())
    r = sp.random(4, 5, density=0.4, random_state=0)
    for kind in ["lil", "dok", "dia", "bsr"]:
        np.testing.assert_array_equal(host(sc.Tensor.from_scipy(r.asformat(kind))), r.toarray())
    b = sp.bsr_matrix((np.ones((2, 2, 2)), np.array([1, 1]), np.array([0, 2, 2])), shape=(4, 4))
    np.testing.assert_array_equal(host(sc.Tensor.from_scipy(b)), b.toarray())


def test_torch_layouts_round_trip():
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        i, v = torch.tensor([[0, 0, 1], [1, 1, 0]]), torch.tensor([1.0, 2.0, 3.0])
        np.testing.assert_array_equal(host(sc.Tensor.from_torch(torch.sparse_coo_tensor(i, v, (2, 2)))),
                                      [[0, 3], [3, 0]])
        e = torch.eye(6)
        for t in (e.to_sparse_csr(), e.to_sparse_csc(), e.to_sparse_bsr((2, 2)), e.to_sparse_bsc((3, 3)), e.to_sparse()):
            for f in (None, "csr", "bsr(4,4)", "coo"):
                np.testing.assert_array_equal(host(sc.Tensor.from_torch(t, f)), np.eye(6))
        with pytest.raises(FormatError, match="bfloat16"):
            sc.Tensor.from_torch(torch.ones(2, dtype=torch.bfloat16))


# ---------------------------------------------------------------------------------------------------
# checked and correct: validation and errors name the operand
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,shape,levels,values,msg", [
    ("csr", (2, 3), [{}, {"pos": [0, 1], "crd": [0]}], [1.0], "pos has 2 entries"),
    ("csr", (2, 3), [{}, {"pos": [0, 1, 1], "crd": [3]}], [1.0], r"crd\[0\]=3 is out of range"),
    ("csr", (2, 3), [{}, {"pos": [0, 2, 2], "crd": [1, 1]}], [1.0, 2.0], "strictly increasing"),
    ("csr", (2, 3), [{}, {"pos": [0, 2, 2], "crd": [0, 1]}], [1.0], "values has 1 entries"),
    ("bsr(2,2)", (3, 3), [{}, {"pos": [0, 1, 1], "crd": [1]}, {}, {}], [1.0, 2, 3, 4], "padding must be 0"),
    ("nm(2,4)", (1, 4), [{}, {}, {"crd": [1, 1]}], [1.0, 2.0], "strictly increasing within block"),
    ("bitmap", (2, 3), [{}, {"pos": [0, 2, 2], "bits": np.array([0b100001])}], [1.0, 2.0], "bits set"),
    ("ell", (2, 3), [{}, {"pos": [1, 0, 1, 2], "crd": [0, 2]}], [1.0, 2.0], "lo > hi"),
    ("coo", (2, 3), [{"pos": [0, 2], "crd": [1, 1]}, {"crd": [2, 0]}], [1.0, 2.0], "must not decrease"),
])
def test_from_buffers_rejects_malformed(fmt, shape, levels, values, msg):
    with pytest.raises(FormatError, match=msg) as e:
        sc.Tensor.from_buffers(fmt, shape, levels, values, name="A")
    assert "'A'" in str(e.value)


def test_from_level_coords_in_range_and_duplicates():
    with pytest.raises(FormatError, match="out of range"):
        sc.Tensor.from_level_coords("bsr(2,2)", (3, 3), [[2], [0], [0], [0]], [5.0], name="L")
    with pytest.raises(FormatError, match="duplicate"):
        sc.Tensor.from_level_coords("csr", (2, 3), [[1, 1], [2, 2]], [1.0, 2.0], name="L")
    t = sc.Tensor.from_level_coords("bitmap", (2, 3), [[1, 0], [0, 2]], [1.0, 2.0])
    np.testing.assert_array_equal(host(t), [[0, 0, 2], [1, 0, 0]])


@pytest.mark.parametrize("text,msg", [
    ("bsr(0,2)", "positive block sizes"), ("nm(3,2)", "0 < n <= m"), ("nm(2,20,packed)", "m <= 16"),
    ("csr(1)", "takes no arguments"), ("csf(0,0)", "permutation"), ("csr[pos7,crd8]", "posWidth"),
    ("(i,j)->(i:dense)", "dimension 1 is not stored"), ("(i,j)->(i:dense,j:bogus)", "unknown level type 'bogus'"),
    ("(i,j)->(i floordiv 2:dense,j:compressed,i mod 3:dense)", "same b"),
    ("(i,j)->(i:singleton,j:dense)", "needs a parent"), ("(i,j)->(i:bitmap,j:dense)", "innermost"),
    ("(i,j)->(i:dense,k:compressed)", "not a dimension"), ("csf(0,1,2)", "orders 3 dimensions"),
    ("blah", "unknown format"),
])
def test_parser_errors(text, msg):
    with pytest.raises((FormatError, ParseError), match=msg):
        parse_format(text, 2)


def test_constructor_errors_name_the_operand():
    with pytest.raises(FormatError, match="'B'.*out of range"):
        sc.Tensor.from_coo([[-1], [0]], [1.0], (2, 2), name="B")
    with pytest.raises(FormatError, match="'B'.*uint8"):
        sc.Tensor.from_numpy(np.ones((2, 2), np.uint8), "csr", name="B")
    with pytest.raises(FormatError, match="'B'.*2-D"):
        sc.Tensor.from_numpy(np.ones(3), "bsr(2,2)", name="B")
    with pytest.raises(FormatError, match="from_scipy"):
        sc.Tensor.from_numpy(sp.eye(2), "csr")


def test_nm_conversion_refuses_real_overflow():
    t = sc.Tensor.from_numpy(np.array([[1.0, 2.0, 3.0, 0.0]]), "coo")
    with pytest.raises(FormatError, match="not 2:4"):
        t.to("nm(2,4)")


# ---------------------------------------------------------------------------------------------------
# bugs (strict xfails asserting the right behaviour)
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["to", "from_coo", "from_scipy"])
def test_nm_ignores_explicit_zeros(how):
    c, v = np.array([[0, 0, 0], [0, 1, 2]]), np.array([1.0, 0.0, 3.0])
    want = np.array([[1.0, 0.0, 3.0, 0.0]])
    if how == "to":
        t = sc.Tensor.from_coo(c, v, (1, 4)).to("nm(2,4)")
    elif how == "from_coo":
        t = sc.Tensor.from_coo(c, v, (1, 4), "nm(2,4)")
    else:
        t = sc.Tensor.from_scipy(sp.csr_matrix((v, (c[0], c[1])), shape=(1, 4)), "nm(2,4)")
    t.validate()
    np.testing.assert_array_equal(host(t), want)


@pytest.mark.parametrize("fmt", ["bsr(99999999999999999999,2)", "nm(1,99999999999999999999)",
                                 "(i,j)->(i floordiv 99999999999999999999:dense,j:compressed,"
                                 "i mod 99999999999999999999:dense)"])
def test_huge_block_factor_is_a_format_error(fmt):
    with pytest.raises(FormatError):
        sc.Tensor.from_numpy(np.ones((2, 3)), fmt, name="H")


def test_ragged_input_is_a_format_error():
    with pytest.raises(FormatError, match="'R'"):
        sc.Tensor.from_numpy([[0.0, 1.0], [2.0]], "csr", name="R")


def test_nd_assembly_error_names_coordinates_readably():
    with pytest.raises(FormatError) as e:
        sc.Tensor.from_numpy(np.ones((1, 1, 2)), "(i,j,k)->(i:dense,j:dense,k:singleton)", name="T")
    assert re.search(r"dimension \d+ \d+", str(e.value)) is None, str(e.value)


def test_blank_format_error_quotes_the_input():
    with pytest.raises(FormatError, match=re.escape("'   '")):
        parse_format("   ", 2)


@pytest.mark.parametrize("fmt,shape,lc", [("bsr(2,2)", (3, 3), [[1], [1], [1], [1]]), ("nm(2,4)", (1, 3), [[0], [0], [3]])])
def test_from_level_coords_rejects_nonzero_padding(fmt, shape, lc):
    with pytest.raises(FormatError, match="padding"):
        sc.Tensor.from_level_coords(fmt, shape, lc, [5.0], name="L")


@pytest.mark.parametrize("fmt", ["coo", BLOCKED_COO, "(i,j)->(i:dense,j:compressed(nonunique))"])
def test_nonunique_to_numpy_keeps_negative_zero(fmt):
    t = sc.Tensor.from_coo([[0], [0]], [-0.0], (4, 8), fmt)
    assert np.signbit(host(t)[0, 0])
    assert np.signbit(host(t.to("dense"))[0, 0])


def test_singleton_filler_under_dense_is_dropped_in_2d():
    b = np.zeros((3, 2))
    b[0, 1] = 5.0
    t = sc.Tensor.from_numpy(b, "(i,j)->(i:dense,j:singleton)")
    assert t.nse == 3                      # one slot per row, two of them fillers
    assert t.to("coo").nse == 1
    assert t.to_scipy().nnz == 1
    np.testing.assert_array_equal(host(t.to("csr")), b)


def test_singleton_chain_under_dense_drops_fillers():
    a = np.zeros((3, 2, 2))
    a[0, 1, 1], a[2, 0, 1] = 5.0, 7.0
    t = sc.Tensor.from_numpy(a, "(i,j,k)->(i:dense,j:singleton,k:singleton)")
    np.testing.assert_array_equal(host(t), a)
    c = t.to("coo")
    assert c.nse == 2, c.to_coo()


NM_SINGLETON = "(i,j,k)->(i:dense,j floordiv 4:dense,j mod 4:structured[{n},4],k:singleton)"


@pytest.mark.parametrize("check", ["coo_nse", "to_1_4"])
def test_nm_padding_above_singleton_is_not_an_entry(check):
    a = np.zeros((2, 4, 3))
    a[0, 1, 2], a[1, 3, 0] = 5.0, 7.0
    t = sc.Tensor.from_numpy(a, NM_SINGLETON.format(n=2))
    t.validate()
    np.testing.assert_array_equal(host(t), a)
    if check == "coo_nse":
        assert t.to("coo").nse == 2
    else:
        np.testing.assert_array_equal(host(t.to(NM_SINGLETON.format(n=1))), a)
