"""Format vocabulary: short names, MLIR encoding text, equality, parse and format errors."""

from __future__ import annotations

import pytest

from sparsec import FormatError, ParseError
from sparsec.formats import (
    Compressed, Dense, Format, LevelExpr, LooseCompressed, NOutOfM, Singleton, as_format, parse_format, short_names,
)

# (text, ndim, expected str(fmt), expected number of levels)
SHORT = [
    ("dense", 1, "dense", 1),
    ("dense", 3, "dense", 3),
    ("csr", 2, "csr", 2),
    ("csc", 2, "csc", 2),
    ("coo", 2, "coo", 2),
    ("coo", 3, "coo", 3),
    ("dcsr", 2, "dcsr", 2),
    ("dcsc", 2, "dcsc", 2),
    ("csf", 3, "csf", 3),
    ("csf(2, 0, 1)", None, "csf(2, 0, 1)", 3),
    ("csf(1,0,2,3)", None, "csf(1, 0, 2, 3)", 4),
    ("bsr(4, 4)", 2, "bsr(4, 4)", 4),
    ("bsr(2,3)", 2, "bsr(2, 3)", 4),
    ("ell", 2, "ell", 2),
    ("nm(2, 4)", 2, "nm(2, 4)", 3),
    ("nm(1,8)", 2, "nm(1, 8)", 3),
    ("csr[pos64,crd64]", 2, "csr[pos64,crd64]", 2),
    ("csr[pos16,crd8]", 2, "csr[pos16,crd8]", 2),
    ("nm(2,4)[pos32,crd8]", 2, "nm(2, 4)[pos32,crd8]", 3),
    ("nm(2, 4, packed)", 2, "nm(2, 4, packed)", 3),
    ("nm(1,16,packed)[pos32,crd8]", 2, "nm(1, 16, packed)[pos32,crd8]", 3),
    ("bsr(2, 2)[pos8, crd16]", 2, "bsr(2, 2)[pos8,crd16]", 4),
    ("bitmap", 2, "bitmap", 2),
    ("csr_unsorted", 2, "csr_unsorted", 2),
    ("csc_unsorted[pos64,crd32]", 2, "csc_unsorted[pos64,crd32]", 2),
]


def test_unsorted_names_are_the_nonordered_compressed_level():
    text = "#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : compressed(nonordered)) }>"
    assert parse_format(text) == parse_format("csr_unsorted") != parse_format("csr")
    assert str(parse_format(text)) == "csr_unsorted"
    csc = parse_format("csc_unsorted")
    assert csc.dim_order() == (1, 0) and not csc.levels[1].ordered and csc.levels[1].unique


@pytest.mark.parametrize("text,ndim,printed,rank", SHORT)
def test_short_name_round_trip(text, ndim, printed, rank):
    fmt = parse_format(text, ndim)
    assert str(fmt) == printed
    assert fmt.rank == rank
    again = parse_format(str(fmt), fmt.ndim)
    assert again == fmt and hash(again) == hash(fmt)
    via_mlir = parse_format(fmt.mlir())
    assert via_mlir == fmt and hash(via_mlir) == hash(fmt)
    assert via_mlir.mlir() == fmt.mlir()


def test_every_short_name_is_covered():
    covered = {t.split("(")[0].split("[")[0] for t, *_ in SHORT}
    assert covered == set(short_names())


MLIR = [
    (
        "#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : compressed) }>",
        Format((Dense(), Compressed()), (LevelExpr(0), LevelExpr(1)), 2),
        "csr",
    ),
    (
        "#sparse_tensor.encoding<{ map = (d0, d1) -> (d1 : dense, d0 : compressed) }>",
        Format((Dense(), Compressed()), (LevelExpr(1), LevelExpr(0)), 2),
        "csc",
    ),
    (
        "#sparse_tensor.encoding<{ map = (i, j) -> (i floordiv 2 : dense, j floordiv 3 : compressed, "
        "i mod 2 : dense, j mod 3 : dense) }>",
        Format(
            (Dense(), Compressed(), Dense(), Dense()),
            (LevelExpr(0, "floordiv", 2), LevelExpr(1, "floordiv", 3), LevelExpr(0, "mod", 2), LevelExpr(1, "mod", 3)),
            2,
        ),
        "bsr(2, 3)",
    ),
    (
        "#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j floordiv 4 : dense, j mod 4 : structured[2, 4]) }>",
        Format((Dense(), Dense(), NOutOfM(2, 4)), (LevelExpr(0), LevelExpr(1, "floordiv", 4), LevelExpr(1, "mod", 4)), 2),
        "nm(2, 4)",
    ),
    (
        "#sparse_tensor.encoding<{ map = (i, j) -> (i : compressed(nonunique), j : singleton) }>",
        Format((Compressed(is_unique=False), Singleton()), (LevelExpr(0), LevelExpr(1)), 2),
        "coo",
    ),
    (
        "#sparse_tensor.encoding<{ map = (i, j) -> (i : compressed(nonunique, nonordered), j : singleton(nonordered)) }>",
        Format(
            (Compressed(is_unique=False, is_ordered=False), Singleton(is_ordered=False)), (LevelExpr(0), LevelExpr(1)), 2
        ),
        None,
    ),
    (
        "#sparse_tensor.encoding<{ map = {l0, l1} (i, j) -> (i : dense, j : loose_compressed(nonordered)) }>",
        Format((Dense(), LooseCompressed(is_ordered=False)), (LevelExpr(0), LevelExpr(1)), 2),
        None,
    ),
    (
        "#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : compressed), posWidth = 64, crdWidth = 64 }>",
        Format((Dense(), Compressed()), (LevelExpr(0), LevelExpr(1)), 2, pos_width=64, crd_width=64),
        "csr",
    ),
    (
        "{ map = (i, j, k) -> (k : dense, i : compressed, j : compressed), crdWidth = 64 }",
        Format((Dense(), Compressed(), Compressed()), (LevelExpr(2), LevelExpr(0), LevelExpr(1)), 3, crd_width=64),
        None,
    ),
    (
        "#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j floordiv 4 : dense, j mod 4 : structured[2, 4]), "
        "crdWidth = 8 }>",
        Format((Dense(), Dense(), NOutOfM(2, 4)), (LevelExpr(0), LevelExpr(1, "floordiv", 4), LevelExpr(1, "mod", 4)),
               2, crd_width=8),
        "nm(2, 4)",
    ),
    (
        "{ map = (i, j) -> (j : compressed(nonunique), i : singleton), posWidth = 16, crdWidth = 8 }",
        Format((Compressed(is_unique=False), Singleton()), (LevelExpr(1), LevelExpr(0)), 2, pos_width=16, crd_width=8),
        None,
    ),
    (
        "(i, j) -> (i : dense, j : n_out_of_m(1, 2))".replace("j : n_out", "j floordiv 2 : dense, j mod 2 : n_out"),
        Format((Dense(), Dense(), NOutOfM(1, 2)), (LevelExpr(0), LevelExpr(1, "floordiv", 2), LevelExpr(1, "mod", 2)), 2),
        "nm(1, 2)",
    ),
]


@pytest.mark.parametrize("text,expected,short", MLIR)
def test_mlir_text(text, expected, short):
    fmt = parse_format(text)
    assert fmt == expected and hash(fmt) == hash(expected)
    assert fmt.short_name() == short
    assert parse_format(fmt.mlir()) == fmt
    assert parse_format(str(fmt), fmt.ndim) == fmt


def test_widths_are_part_of_equality_but_name_is_not():
    a = parse_format("csr")
    b = parse_format("#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : compressed) }>")
    assert a.name == "csr" and b.name is None
    assert a == b and len({a, b, Format((Dense(), Compressed()), (LevelExpr(0), LevelExpr(1)), 2)}) == 1
    wide = a.with_widths(64, 64)
    assert wide != a and wide.mlir().endswith("posWidth = 64, crdWidth = 64 }>")
    assert parse_format("csf(0, 1)", 2) == parse_format("dcsr")


@pytest.mark.parametrize("pos,crd", [(8, 8), (8, 16), (16, 8), (16, 16), (32, 8), (8, 64)])
@pytest.mark.parametrize("name,ndim", [("csr", 2), ("csc", 2), ("coo", 2), ("dcsr", 2), ("bsr(2, 2)", 2),
                                       ("nm(2, 4)", 2), ("csf", 3), ("coo", 3)])
def test_narrow_widths_round_trip(name, ndim, pos, crd):
    fmt = parse_format(name, ndim).with_widths(pos, crd)
    text = fmt.mlir()
    assert (f"posWidth = {pos}" in text) == (pos != 32) and (f"crdWidth = {crd}" in text) == (crd != 32)
    assert parse_format(text) == fmt and hash(parse_format(text)) == hash(fmt)
    assert str(fmt) == f"{parse_format(name, ndim)}[pos{pos},crd{crd}]"
    assert parse_format(str(fmt), ndim) == fmt


def test_properties_print():
    fmt = parse_format("(i, j) -> (i : compressed(nonunique, nonordered), j : singleton(nonunique))")
    assert not fmt.levels[0].unique and not fmt.levels[0].ordered
    assert not fmt.levels[1].unique and fmt.levels[1].ordered
    assert "compressed(nonunique, nonordered)" in fmt.mlir() and "singleton(nonunique)" in fmt.mlir()


PARSE_ERRORS = [
    ("#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : compresed) }>", "unknown level type 'compresed'", 59),
    ("#sparse_tensor.encoding<{ map = (i, j) -> (i : dense j : compressed) }>", "unexpected input", 54),
    ("(i, j) -> (i : dense, k : compressed)", "not a dimension", 23),
    ("(i, j) -> (i : dense, j : compressed(nonuniq))", "unknown level property 'nonuniq'", 27),
    ("(i, j) -> (i : dense, j : dense(nonunique))", "dense level takes no properties", 27),
    ("(i, j) -> (i : dense, j floordiv 4 : dense, j mod 4 : structured[5, 4])", "0 < n <= m", None),
    ("(i, j) -> (i : dense, j floordiv 4 : dense, j mod 4 : structured[2, 4, dense])",
     "unknown structured level option 'dense' (packed)", 72),
    ("#sparse_tensor.encoding<{ posWidth = 32 }>", "has no 'map", 1),
    ("(i, j) -> (i : dense, j : compressed", "unexpected input", None),
    ("#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : compressed), posWidth = 32, posWidth = 64 }>",
     "posWidth given twice", None),
]


@pytest.mark.parametrize("text,message,column", PARSE_ERRORS)
def test_parse_errors_have_a_caret(text, message, column):
    with pytest.raises(ParseError) as info:
        parse_format(text)
    err = info.value
    assert message in str(err)
    assert text in str(err) and str(err).rstrip().endswith("^")
    if column is not None:
        assert err.column == column
        caret_line = str(err).splitlines()[-1]
        src_line = str(err).splitlines()[-2]
        # the caret sits under the reported column of the echoed source line
        assert caret_line.index("^") - src_line.index(text[0]) == column - 1


FORMAT_ERRORS = [
    ("foo", 2, "unknown format 'foo'"),
    ("bsr(0, 2)", 2, "positive block sizes"),
    ("bsr(2)", 2, "bsr takes two"),
    ("nm(3, 2)", 2, "0 < n <= m"),
    ("nm(2, 32, packed)", 2, "needs m <= 16"),
    ("csf(0, 0)", 2, "permutation"),
    ("csr(1)", 2, "takes no arguments"),
    ("csr", 3, "is 2-D"),
    ("dense", None, "needs the number of dimensions"),
    ("csf(1, 0)", 3, "orders 2 dimensions"),
    ("(i, j) -> (i : dense)", None, "dimension 1 is not stored"),
    ("(i, j) -> (i : singleton, j : dense)", None, "cannot be level 0"),
    ("(i, j) -> (i floordiv 0 : dense, j : dense, i mod 0 : dense)", None, "positive integer"),
    ("(i, j) -> (i : dense, j floordiv 4 : dense, j mod 2 : structured[2, 2])", None, "same b"),
    ("(i, j) -> (i : dense, j : structured[2, 4])", None, "must store 'dim mod 4'"),
    ("{ map = (i, j) -> (i : dense, j : compressed), posWidth = 12 }", None, "posWidth must be one of"),
    ("{ map = (i, j) -> (i : dense, j : compressed), crdWidth = 128 }", None, "crdWidth must be one of"),
    ("(i, j) -> (i : dense, j : compressed)", 3, "encoding has 2 dimensions"),
]


@pytest.mark.parametrize("text,ndim,message", FORMAT_ERRORS)
def test_bad_formats_raise_format_error(text, ndim, message):
    with pytest.raises(FormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_format(text, ndim)


def test_bad_constructor_arguments():
    with pytest.raises(FormatError, match="op must be"):
        LevelExpr(0, "div", 2)
    with pytest.raises(FormatError, match="2 level types but 1"):
        Format((Dense(), Compressed()), (LevelExpr(0),), 2)
    with pytest.raises(FormatError, match="not a level type"):
        Format(("dense",), (LevelExpr(0),), 1)
    with pytest.raises(FormatError, match="a Format or a string"):
        parse_format(42)


def test_parse_format_is_cached_and_still_raises_each_time() -> None:
    """Binding parses format names per call: the result is cached (Formats are frozen), errors are not."""
    assert parse_format("csr", 2) is parse_format("csr", 2)
    assert parse_format("dense", 3) == as_format("dense", 3) and parse_format("dense", 3) != parse_format("dense", 2)
    for _ in range(2):
        with pytest.raises(FormatError, match="unknown format"):
            parse_format("nope", 2)
        with pytest.raises(FormatError, match="is 2-D"):
            parse_format("csr", 3)
        with pytest.raises(FormatError, match="a format is a Format or a string"):
            parse_format(["csr"], 2)  # type: ignore[arg-type]


def test_bitmap_must_be_the_innermost_level():
    """A bitmap's set bits index the packed values: a level under it was stored wrongly, so it is refused."""
    with pytest.raises(FormatError, match=r"level 0 \(bitmap\) must be the innermost level"):
        parse_format("(i, j) -> (i : bitmap, j : compressed)")
    assert parse_format("(i, j, k) -> (i : compressed, j : dense, k : bitmap)").levels[-1].kind == "bitmap"
