"""Every validation error of Tensor.from_buffers / Tensor.validate, with its message.

Messages name the tensor (or ``<unnamed>``), the level and the first bad position.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from sparsec import FormatError, Tensor

COO_UNORDERED = "(i, j) -> (i : compressed(nonunique, nonordered), j : singleton(nonordered))"
CSR_NONORDERED = "(i, j) -> (i : dense, j : compressed(nonordered))"
CSR_NONUNIQUE = "(i, j) -> (i : dense, j : compressed(nonunique))"
ELL_NONORDERED = "(i, j) -> (i : dense, j : loose_compressed(nonordered))"
ROW_SINGLETON = "(i, j) -> (i : dense, j : singleton)"


def csr(pos, crd):
    return [{}, {"pos": pos, "crd": crd}]


def nm(crd):
    return [{}, {}, {"crd": crd}]


ONES3 = np.ones(3)

# (id, format, shape, levels, values, exact message)
CASES = [
    # compressed
    ("pos-not-monotone", "csr", (3, 4), csr([0, 2, 1, 3], [0, 1, 2]), ONES3,
     "tensor 'A', level 1 (compressed): pos is not monotone: pos[1]=2 > pos[2]=1"),
    ("pos-first-not-zero", "csr", (3, 4), csr([1, 2, 2, 3], [0, 1, 2]), ONES3,
     "tensor 'A', level 1 (compressed): pos[0]=1, expected 0"),
    ("pos-length", "csr", (3, 4), csr([0, 2, 3], [0, 1, 2]), ONES3,
     "tensor 'A', level 1 (compressed): pos has 3 entries, expected 4 (number of parent positions + 1)"),
    ("pos-end-vs-crd", "csr", (3, 4), csr([0, 2, 2, 4], [0, 1, 2]), ONES3,
     "tensor 'A', level 1 (compressed): pos[3]=4, but crd has 3 entries"),
    ("crd-too-large", "csr", (3, 4), csr([0, 2, 2, 3], [0, 4, 2]), ONES3,
     "tensor 'A', level 1 (compressed): crd[1]=4 is out of range [0, 4)"),
    ("crd-negative", "csr", (3, 4), csr([0, 2, 2, 3], [0, 1, -2]), ONES3,
     "tensor 'A', level 1 (compressed): crd[2]=-2 is out of range [0, 4)"),
    ("crd-unsorted", "csr", (3, 4), csr([0, 1, 3, 3], [3, 2, 0]), ONES3,
     "tensor 'A', level 1 (compressed): crd is not strictly increasing within a segment: crd[1]=2, crd[2]=0"),
    ("crd-duplicate-ordered", "csr", (3, 4), csr([0, 0, 3, 3], [1, 1, 2]), ONES3,
     "tensor 'A', level 1 (compressed): crd is not strictly increasing within a segment: crd[0]=1, crd[1]=1"),
    ("crd-duplicate-unordered", CSR_NONORDERED, (3, 4), csr([0, 3, 3, 3], [2, 0, 2]), ONES3,
     "tensor 'A', level 1 (compressed(nonordered)): duplicate coordinate in a segment: crd[0]=crd[2]=2"),
    ("crd-decreasing-nonunique", CSR_NONUNIQUE, (3, 4), csr([0, 3, 3, 3], [2, 2, 0]), ONES3,
     "tensor 'A', level 1 (compressed(nonunique)): crd is not nondecreasing within a segment: crd[1]=2, crd[2]=0"),
    ("dcsr-level0-unsorted", "dcsr", (3, 4), [{"pos": [0, 2], "crd": [2, 1]}, {"pos": [0, 1, 2], "crd": [0, 0]}],
     np.ones(2), "tensor 'A', level 0 (compressed): crd is not strictly increasing within a segment: crd[0]=2, crd[1]=1"),
    ("dcsr-child-pos-length", "dcsr", (3, 4), [{"pos": [0, 2], "crd": [0, 1]}, {"pos": [0, 1], "crd": [0]}],
     np.ones(1), "tensor 'A', level 1 (compressed): pos has 2 entries, expected 3 (number of parent positions + 1)"),
    # coo: compressed(nonunique) + singleton
    ("coo-level0-unsorted", "coo", (3, 4), [{"pos": [0, 3], "crd": [0, 2, 1]}, {"crd": [0, 0, 0]}], ONES3,
     "tensor 'A', level 0 (compressed(nonunique)): crd is not nondecreasing within a segment: crd[1]=2, crd[2]=1"),
    ("singleton-length", "coo", (3, 4), [{"pos": [0, 3], "crd": [0, 1, 1]}, {"crd": [0, 0]}], ONES3,
     "tensor 'A', level 1 (singleton): crd has 2 entries, expected 3 (one per parent position)"),
    ("singleton-range", "coo", (3, 4), [{"pos": [0, 3], "crd": [0, 1, 1]}, {"crd": [0, 0, 7]}], ONES3,
     "tensor 'A', level 1 (singleton): crd[2]=7 is out of range [0, 4)"),
    ("singleton-under-dense", ROW_SINGLETON, (3, 4), [{}, {"crd": [0, 1]}], np.ones(2),
     "tensor 'A', level 1 (singleton): crd has 2 entries, expected 3 (one per parent position)"),
    # loose_compressed
    ("loose-pos-length", "ell", (2, 4), csr([0, 2, 2], [0, 1, 0, 0]), np.ones(4),
     "tensor 'A', level 1 (loose_compressed): pos has 3 entries, expected 4 (a lo, hi pair per parent position)"),
    ("loose-lo-gt-hi", "ell", (2, 4), csr([0, 2, 3, 2], [0, 1, 0, 0]), np.ones(4),
     "tensor 'A', level 1 (loose_compressed): lo > hi for parent 1: pos[2]=3 > pos[3]=2"),
    ("loose-lo-negative", "ell", (2, 4), csr([-1, 2, 2, 3], [0, 1, 0, 0]), np.ones(4),
     "tensor 'A', level 1 (loose_compressed): pos[0]=-1 is negative"),
    ("loose-hi-past-end", "ell", (2, 4), csr([0, 2, 2, 5], [0, 1, 0, 0]), np.ones(4),
     "tensor 'A', level 1 (loose_compressed): pos[3]=5 is past the end of crd (4 entries)"),
    ("loose-crd-range", "ell", (2, 4), csr([0, 2, 2, 3], [0, 1, 9, 0]), np.ones(4),
     "tensor 'A', level 1 (loose_compressed): crd[2]=9 is out of range [0, 4)"),
    ("loose-unsorted", "ell", (2, 4), csr([0, 2, 2, 3], [1, 0, 0, 0]), np.ones(4),
     "tensor 'A', level 1 (loose_compressed): crd is not strictly increasing within a segment: crd[0]=1, crd[1]=0"),
    ("loose-unordered-duplicate", ELL_NONORDERED, (2, 4), csr([0, 3, 3, 3], [2, 0, 2, 0]), np.ones(4),
     "tensor 'A', level 1 (loose_compressed(nonordered)): duplicate coordinate in a segment: crd[0]=crd[2]=2"),
    # n_out_of_m
    ("nm-length", "nm(2, 4)", (1, 5), nm([0, 1, 0]), ONES3,
     "tensor 'A', level 2 (structured[2, 4]): crd has 3 entries, expected 4 (2 per block)"),
    ("nm-range", "nm(2, 4)", (1, 5), nm([0, 1, 0, 4]), np.ones(4),
     "tensor 'A', level 2 (structured[2, 4]): crd[3]=4 is out of range [0, 4)"),
    ("nm-not-increasing", "nm(2, 4)", (1, 8), nm([0, 3, 2, 2]), np.ones(4),
     "tensor 'A', level 2 (structured[2, 4]): crd is not strictly increasing within block 1: crd[2]=2, crd[3]=2"),
    # n_out_of_m, packed: 2:4 coordinates at 2 bits, 4 to a byte (slot 0 in the lowest bits)
    ("nm-packed-length", "nm(2, 4, packed)", (1, 9), nm(np.array([0b11100100], np.uint8)), np.ones(6),
     "tensor 'A', level 2 (structured[2, 4, packed]): crd has 1 bytes, expected 2 (2 per block, "
     "4 packed 2-bit coordinates per byte)"),
    ("nm-packed-not-increasing", "nm(2, 4, packed)", (1, 8), nm(np.array([0b10110100], np.uint8)), np.ones(4),
     "tensor 'A', level 2 (structured[2, 4, packed]): crd is not strictly increasing within block 1: "
     "coordinate 2 (byte 0 of crd)=3, coordinate 3 (byte 0 of crd)=2"),
    ("nm-packed-not-increasing-byte-1", "nm(2, 4, packed)", (1, 12),
     nm(np.array([0b11100100, 0b0111], np.uint8)), np.ones(6),
     "tensor 'A', level 2 (structured[2, 4, packed]): crd is not strictly increasing within block 2: "
     "coordinate 4 (byte 1 of crd)=3, coordinate 5 (byte 1 of crd)=1"),
    ("nm-packed-range", "nm(2, 3, packed)", (1, 6), nm(np.array([0b11010100], np.uint8)), np.ones(4),
     "tensor 'A', level 2 (structured[2, 3, packed]): coordinate 3 (byte 0 of crd)=3 is out of range [0, 3)"),
    ("nm-packed-tail-bits", "nm(2, 4, packed)", (1, 4), nm(np.array([0b01000100], np.uint8)), np.ones(2),
     "tensor 'A', level 2 (structured[2, 4, packed]): the unused bits after the last coordinate of crd are "
     "not zero"),
    # values and padding
    ("values-length", "csr", (3, 4), csr([0, 2, 2, 3], [0, 1, 2]), np.ones(4),
     "tensor 'A': values has 4 entries, but level 1 (compressed) has 3 positions"),
    ("values-dtype", "csr", (3, 4), csr([0, 2, 2, 3], [0, 1, 2]), np.ones(3, dtype=complex),
     "tensor 'A': values dtype complex128 is not supported (supported: bool, int8, int16, int32, int64, float16, float32, float64)"),
    ("values-unsigned", "csr", (3, 4), csr([0, 0, 0, 0], []), np.ones(0, dtype=np.uint16),
     "tensor 'A': values dtype uint16 is not supported (supported: bool, int8, int16, int32, int64, float16, float32, float64)"),
    ("values-2d", "csr", (3, 4), csr([0, 2, 2, 3], [0, 1, 2]), np.ones((3, 1)),
     "tensor 'A': values must be a 1-D array, got shape (3, 1)"),
    ("nm-padding-nonzero", "nm(2, 4)", (1, 5), nm([0, 1, 0, 1]), np.array([1, 1, 1, 2.0]),
     "tensor 'A': values[3]=2.0 is padding at coordinates (0, 5), outside the shape (1, 5); padding must be 0"),
    ("bsr-padding-nonzero", "bsr(2, 2)", (3, 3), [{}, {"pos": [0, 1, 1], "crd": [1]}, {}, {}], np.array([1, 0, 1, 2.0]),
     "tensor 'A': values[3]=2.0 is padding at coordinates (1, 3), outside the shape (3, 3); padding must be 0"),
    # buffer names, dtypes, shapes
    ("crd-float", "csr", (3, 4), csr([0, 2, 2, 3], [1, 2, 2.0]), ONES3,
     "tensor 'A', level 1 (compressed): crd must have an integer dtype, got float64"),
    ("crd-bool", "csr", (3, 4), csr([0, 2, 2, 3], np.array([1, 0, 1], dtype=bool)), ONES3,
     "tensor 'A', level 1 (compressed): crd must have an integer dtype, got bool"),
    ("pos-2d", "csr", (3, 4), csr([[0, 2, 2, 3]], [0, 1, 2]), ONES3,
     "tensor 'A', level 1 (compressed): pos must be a 1-D array, got shape (1, 4)"),
    ("uint64-too-large", "csr", (3, 4), csr(np.array([0, 0, 0, 2**64 - 1], dtype=np.uint64), [0]), np.ones(1),
     "tensor 'A', level 1 (compressed): pos[3]=18446744073709551615 does not fit in int64"),
    ("missing-buffer", "csr", (3, 4), [{}, {"pos": [0, 0, 0, 0]}], np.ones(0),
     "tensor 'A', level 1 (compressed): expected buffers ['pos', 'crd'], missing ['crd'], unexpected []"),
    ("extra-buffer", "csr", (3, 4), [{"pos": [0, 1]}, {"pos": [0, 0, 0, 0], "crd": []}], np.ones(0),
     "tensor 'A', level 0 (dense): expected buffers [], missing [], unexpected ['pos']"),
    ("level-count", "csr", (3, 4), [{}], ONES3,
     "tensor 'A': format csr has 2 levels, got buffers for 1"),
    ("levels-not-sequence", "csr", (3, 4), {"pos": [0]}, ONES3,
     "tensor 'A': levels must be a sequence with one buffer mapping per level"),
    ("level-not-mapping", "csr", (3, 4), [{}, [0, 1]], ONES3,
     "tensor 'A', level 1 (compressed): expected a mapping of buffers ('pos', 'crd'), got list"),
    ("shape-negative", "csr", (3, -4), csr([0, 0, 0, 0], []), np.ones(0),
     "tensor 'A': shape must be a sequence of non-negative integers, got (3, -4)"),
    ("shape-float", "csr", (3.0, 4), csr([0, 0, 0, 0], []), np.ones(0),
     "tensor 'A': shape must be a sequence of non-negative integers, got (3.0, 4)"),
    ("shape-ndim", "csr", (3, 4, 5), csr([0, 0, 0, 0], []), np.ones(0),
     "tensor 'A': format 'csr' is 2-D, but the tensor has 3 dimensions"),
]


@pytest.mark.parametrize("fmt,shape,levels,values,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_from_buffers_rejects(fmt, shape, levels, values, message):
    with pytest.raises(FormatError, match="^" + re.escape(message) + "$"):
        Tensor.from_buffers(fmt, shape, levels, values, name="A")


def test_unnamed_tensor_is_called_unnamed():
    with pytest.raises(FormatError, match=re.escape("tensor <unnamed>, level 1 (compressed): pos[0]=1, expected 0")):
        Tensor.from_buffers("csr", (3, 4), csr([1, 2, 2, 3], [0, 1, 2]), ONES3)


def test_valid_buffers_are_accepted_and_converted():
    t = Tensor.from_buffers("csr", (3, 4), csr(np.array([0, 2, 2, 3], dtype=np.int16), np.array([0, 3, 1], np.uint8)),
                            [1.0, 2.0, 3.0], name="A")
    assert t.buffer(1, "pos").dtype == np.int32 and t.buffer(1, "crd").dtype == np.int32
    assert t.to_numpy().tolist() == [[1, 0, 0, 2], [0, 0, 0, 0], [0, 3, 0, 0]]
    # arrays of the right dtype are shared (documented, like scipy's constructors), others converted
    pos, crd, vals = np.array([0, 1, 1, 2], np.int32), np.array([3, 0], np.int32), np.array([1.0, 2.0])
    shared = Tensor.from_buffers("csr", (3, 4), csr(pos, crd), vals)
    assert shared.buffer(1, "pos") is pos and shared.buffer(1, "crd") is crd and shared.values is vals
    wide = Tensor.from_buffers("csr[pos64,crd64]", (3, 4), csr(pos, crd), vals)
    assert wide.buffer(1, "pos").dtype == np.int64 and not np.shares_memory(wide.buffer(1, "pos"), pos)
    e = Tensor.from_buffers("csr", (3, 4), csr([0, 0, 0, 0], []), [], name="E")
    assert e.nse == 0 and not e.to_numpy().any()
    # user-built loose_compressed with gaps and shared slots is fine
    ell = Tensor.from_buffers("ell", (2, 4), csr([3, 4, 0, 2], [0, 2, 0, 3]), [5.0, 6.0, 0.0, 7.0])
    assert ell.to_numpy().tolist() == [[0, 0, 0, 7.0], [5.0, 0, 6.0, 0]]
    # segments out of storage order that still cover every slot once
    swapped = Tensor.from_buffers("ell", (4, 4), csr([0, 1, 2, 3, 1, 2, 3, 4], [0, 1, 2, 3]), [1.0, 2.0, 3.0, 4.0])
    assert swapped.to_numpy().tolist() == [[1, 0, 0, 0], [0, 0, 3, 0], [0, 2, 0, 0], [0, 0, 0, 4]]
    assert swapped.to("csr").values.tolist() == [1.0, 3.0, 2.0, 4.0]


def test_nonunique_coo_duplicates_are_summed_on_conversion():
    t = Tensor.from_buffers("coo", (2, 3), [{"pos": [0, 3], "crd": [0, 0, 1]}, {"crd": [2, 2, 0]}], [1.0, 2.0, 4.0])
    assert t.to_numpy().tolist() == [[0, 0, 3.0], [4.0, 0, 0]]
    csr_t = t.to("csr")
    assert csr_t.nse == 2 and csr_t.values.tolist() == [3.0, 4.0]
    unordered = Tensor.from_buffers(COO_UNORDERED, (2, 3), [{"pos": [0, 2], "crd": [1, 0]}, {"crd": [0, 2]}], [4.0, 3.0])
    assert unordered.to("csr").values.tolist() == [3.0, 4.0]


def test_validate_false_skips_content_checks_but_not_lengths():
    bad = csr([0, 2, 2, 3], [2, 1, 0])  # unsorted: only full validation notices
    t = Tensor.from_buffers("csr", (3, 4), bad, ONES3, validate=False)
    with pytest.raises(FormatError, match="not strictly increasing"):
        t.validate()
    with pytest.raises(FormatError, match="values has 4 entries"):
        Tensor.from_buffers("csr", (3, 4), bad, np.ones(4), validate=False)


def test_validate_catches_later_corruption():
    t = Tensor.from_numpy(np.eye(3), "csr", name="A")
    t.validate()
    t.buffer(1, "crd")[1] = 5
    with pytest.raises(FormatError, match=re.escape("tensor 'A', level 1 (compressed): crd[1]=5 is out of range [0, 3)")):
        t.validate()
    u = Tensor.from_numpy(np.eye(3), "csr", name="A")
    u.levels[1]["crd"] = u.levels[1]["crd"].astype(np.int64)
    with pytest.raises(FormatError, match=re.escape("crd has dtype int64, the format says int32")):
        u.validate()
    v = Tensor.from_numpy(np.eye(3), "csr", name="A")
    with pytest.raises(FormatError, match="values has 2 entries, but level 1"):
        v.values = v.values[:2]          # replacing the values checks their length at once
    w = Tensor(v.format, v.shape, v.levels, v.values[:2], name="A")   # the plain constructor trusts
    with pytest.raises(FormatError, match="values has 2 entries, but level 1"):
        w.validate()


def test_assemble_errors_name_tensor_level_and_place():
    with pytest.raises(FormatError, match=re.escape("tensor 'S', level 1 (singleton): row 1 has two coordinates (0 and 3)")):
        Tensor.from_coo(np.array([[1, 1], [0, 3]]), np.ones(2), (2, 4), ROW_SINGLETON, name="S")
    with pytest.raises(FormatError, match=re.escape(
        "tensor 'N', level 2 (structured[1, 2]): row 0, column block 2 (columns 4..5) has 2 nonzeros"
    )):
        Tensor.from_numpy(np.array([[1.0, 0, 0, 1, 1, 1]]), "nm(1, 2)", name="N")


def test_coo_tuples_out_of_order_within_a_row_are_refused():
    """COO's singleton level is ordered: within a row its columns must not decrease (kernels merge COO as
    sorted); duplicates stay accepted (summed), and an unordered COO format takes any order."""
    with pytest.raises(FormatError, match=r"level 1 \(singleton\): entries 0 and 1 share .* 2, 1 here"):
        Tensor.from_buffers("coo", (2, 3), [{"pos": [0, 2], "crd": [0, 0]}, {"crd": [2, 1]}], [1.0, 2.0], name="A")
    t = Tensor.from_buffers("coo", (2, 3), [{"pos": [0, 2], "crd": [0, 0]}, {"crd": [2, 1]}], [1.0, 2.0],
                            validate=False)
    with pytest.raises(FormatError, match="must not decrease"):
        t.validate()
    ok = Tensor.from_buffers("coo", (2, 3), [{"pos": [0, 3], "crd": [0, 0, 1]}, {"crd": [1, 2, 0]}], [1.0, 2.0, 3.0])
    assert ok.to_numpy().tolist() == [[0, 1.0, 2.0], [3.0, 0, 0]]
    assert Tensor.from_buffers(COO_UNORDERED, (2, 3), [{"pos": [0, 2], "crd": [0, 0]}, {"crd": [2, 1]}],
                               [1.0, 2.0]).to_numpy().tolist() == [[0, 2.0, 1.0], [0, 0, 0]]


def test_packed_nm_bytes_given_wide_must_be_bytes():
    """Packed N:M coordinates in a wider integer array: int8 or uint8 values, not taken modulo 256."""
    fmt, lv = "nm(2, 4, packed)", [{}, {}]
    with pytest.raises(FormatError, match=r"crd\[0\]=260 is not a byte"):
        Tensor.from_buffers(fmt, (1, 4), lv + [{"crd": np.array([256 + 0b0100])}], np.ones(2), name="A")
    a = Tensor.from_buffers(fmt, (1, 4), lv + [{"crd": np.array([0b1100], dtype=np.int64)}], np.ones(2))
    b = Tensor.from_buffers(fmt, (1, 4), lv + [{"crd": np.array([0b1100], dtype=np.uint8)}], np.ones(2))
    assert a.to_numpy().tolist() == b.to_numpy().tolist() == [[1.0, 0, 0, 1.0]]
