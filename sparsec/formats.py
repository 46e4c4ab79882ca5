"""Sparse formats: level types, dimension-to-level maps, short names, MLIR encoding text.

A :class:`Format` is an ordered tuple of levels (see :mod:`sparsec.levels`) plus one
:class:`LevelExpr` per level saying which tensor dimension the level stores and how:
the dimension itself, ``dim floordiv b`` (the block coordinate) or ``dim mod b``
(the coordinate inside a block). Three spellings give equal, equally hashed objects::

    Format((Dense(), Compressed()), (LevelExpr(0), LevelExpr(1)), ndim=2)
    parse_format("#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : compressed) }>")
    parse_format("csr")

Short names: ``dense``, ``csr``, ``csc``, ``coo``, ``dcsr``, ``dcsc``, ``csf`` and
``csf(2, 0, 1)`` (any level order), ``bsr(bm, bn)``, ``ell``, ``nm(n, m)`` and
``nm(n, m, packed)`` (in-block coordinates packed at 1-4 bits, see :mod:`sparsec.levels.n_out_of_m`), ``bitmap``,
and ``csr_unsorted`` / ``csc_unsorted`` (the compressed level ``nonordered``: each row's
columns in any order, as scipy's and MKL's sparse products leave them).
``dense``, ``coo`` and ``csf`` take their number of dimensions from ``ndim=`` (or
from the tensor they describe); the others are 2-D.

Index widths (MLIR's ``posWidth`` / ``crdWidth``) are 8, 16, 32 (the default) or 64
bits, signed (an int8 buffer holds 0..127); encoding text spells them ``crdWidth = 8``
(0 means 64, as in MLIR), short names take a suffix: ``nm(2, 4)[pos32,crd8]``.

``str(fmt)`` gives the short name when there is one (with the width suffix unless both
widths are 32), ``fmt.mlir()`` always gives encoding text that :func:`parse_format`
reads back to an equal format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Iterable, Sequence, Union

from lark import Lark, Token, Transformer, UnexpectedInput

from .errors import FormatError, ParseError
from .levels import LEVEL_TYPES, Compressed, Dense, Level, LooseCompressed, NOutOfM, Singleton
from .levels.base import MAX_FACTOR

__all__ = [
    "Format",
    "LevelExpr",
    "Level",
    "Dense",
    "Compressed",
    "Singleton",
    "LooseCompressed",
    "NOutOfM",
    "parse_format",
    "as_format",
    "short_names",
    "FormatLike",
    "WIDTHS",
    "fit_width",
]

#: position / coordinate bit widths (MLIR's ``posWidth`` / ``crdWidth``; 0 there means 64).
#: Buffers are signed (``int8`` holds 0..127, ``int16`` 0..32767), as for 32 and 64.
WIDTHS = (8, 16, 32, 64)


def fit_width(declared: int, largest: int) -> int:
    """The narrowest of :data:`WIDTHS` that is at least ``declared`` and holds ``largest`` (signed)."""
    for w in WIDTHS:
        if w >= declared and largest <= (1 << (w - 1)) - 1:
            return w
    return 64


@dataclass(frozen=True)
class LevelExpr:
    """What one level stores: ``dim``, ``dim floordiv factor`` or ``dim mod factor``."""

    dim: int
    op: str = "id"
    factor: int = 1

    def __post_init__(self) -> None:
        if self.op not in ("id", "floordiv", "mod"):
            raise FormatError(f"level expression op must be id, floordiv or mod, got {self.op!r}")
        if not isinstance(self.factor, int) or self.factor < 1:
            raise FormatError(f"block factor must be a positive integer, got {self.factor!r}")
        if self.factor > MAX_FACTOR:
            raise FormatError(f"block factor {self.factor} is too large (at most {MAX_FACTOR})")
        if self.op == "id" and self.factor != 1:
            raise FormatError("an identity level expression has no factor")

    def size(self, extent: int) -> int:
        """Level size for a dimension of the given extent."""
        if self.op == "floordiv":
            return -(-extent // self.factor)
        if self.op == "mod":
            return self.factor
        return extent

    def text(self, names: Sequence[str]) -> str:
        """Render with dimension names, e.g. ``i floordiv 4``."""
        base = names[self.dim]
        return base if self.op == "id" else f"{base} {self.op} {self.factor}"


@dataclass(frozen=True)
class Format:
    """A storage format: levels, their dimension expressions, and index bit widths.

    ``pos_width`` / ``crd_width`` (8, 16, 32 or 64) give the dtypes of the ``pos`` and
    ``crd`` buffers (``int8`` .. ``int64``); tensors widen them where their entries need it.

    ``name`` is only a display hint (the short name the format was written with)
    and takes no part in equality or hashing.
    """

    levels: tuple[Level, ...]
    exprs: tuple[LevelExpr, ...]
    ndim: int
    pos_width: int = 32
    crd_width: int = 32
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))
        object.__setattr__(self, "exprs", tuple(self.exprs))
        _check_format(self)
        # formats key every kernel cache: hash once
        object.__setattr__(self, "_hash", hash((self.levels, self.exprs, self.ndim, self.pos_width, self.crd_width)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined]

    # -- structure -----------------------------------------------------------
    @property
    def rank(self) -> int:
        """Number of levels (equals ``ndim`` unless dimensions are blocked)."""
        return len(self.levels)

    @property
    def is_dense(self) -> bool:
        """True when every level is dense and there is no blocking (a strided array)."""
        return all(isinstance(l, Dense) for l in self.levels) and all(e.op == "id" for e in self.exprs)

    @property
    def is_sparse(self) -> bool:
        """True when at least one level is not dense."""
        return not all(isinstance(l, Dense) for l in self.levels)

    @property
    def is_blocked(self) -> bool:
        """True when some dimension is split by floordiv/mod."""
        return any(e.op != "id" for e in self.exprs)

    def block_sizes(self) -> tuple[int, ...]:
        """Block factor of each dimension (1 where it is not blocked)."""
        out = [1] * self.ndim
        for e in self.exprs:
            if e.op == "mod":
                out[e.dim] = e.factor
        return tuple(out)

    def dim_order(self) -> tuple[int, ...]:
        """Dimensions in the order their first level appears (CSC: (1, 0))."""
        seen: list[int] = []
        for e in self.exprs:
            if e.dim not in seen:
                seen.append(e.dim)
        return tuple(seen)

    def level_sizes(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Size of each level for a tensor of the given dimension shape."""
        if len(shape) != self.ndim:
            raise FormatError(f"format {self} has {self.ndim} dimensions, shape {tuple(shape)} has {len(shape)}")
        return tuple(e.size(int(shape[e.dim])) for e in self.exprs)

    def padded_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Dimension shape rounded up to whole blocks (equal to ``shape`` when unblocked)."""
        blocks = self.block_sizes()
        return tuple(-(-int(n) // b) * b for n, b in zip(shape, blocks))

    def with_widths(self, pos_width: int | None = None, crd_width: int | None = None) -> "Format":
        """The same format with other position / coordinate bit widths."""
        return replace(
            self,
            pos_width=self.pos_width if pos_width is None else pos_width,
            crd_width=self.crd_width if crd_width is None else crd_width,
        )

    def with_ordered(self) -> "Format":
        """The same format with every level ordered (used before co-iteration)."""
        return replace(self, levels=tuple(_with_props(l, ordered=True) for l in self.levels), name=None)

    # -- text ------------------------------------------------------------------
    def mlir(self) -> str:
        """MLIR ``#sparse_tensor.encoding`` text that parses back to an equal format."""
        names = _dim_names(self.ndim)
        lvls = ", ".join(f"{e.text(names)} : {l.mlir()}" for e, l in zip(self.exprs, self.levels))
        parts = [f"map = ({', '.join(names)}) -> ({lvls})"]
        if self.pos_width != 32:
            parts.append(f"posWidth = {self.pos_width}")
        if self.crd_width != 32:
            parts.append(f"crdWidth = {self.crd_width}")
        return "#sparse_tensor.encoding<{ " + ", ".join(parts) + " }>"

    def short_name(self) -> str | None:
        """The short name that denotes this format, if one does (ignores widths)."""
        key = replace(self, pos_width=32, crd_width=32)
        for name in _candidate_names(self):
            if _build_short(name, self.ndim) == key:
                return name
        return None

    def __str__(self) -> str:
        short = self.short_name()
        if short is None:
            return self.mlir()
        if (self.pos_width, self.crd_width) != (32, 32):
            return f"{short}[pos{self.pos_width},crd{self.crd_width}]"
        return short

    def __repr__(self) -> str:
        return f"Format({str(self)!r})"


FormatLike = Union[Format, str]


def _with_props(level: Level, ordered: bool) -> Level:
    if isinstance(level, (Compressed, Singleton, LooseCompressed)):
        return replace(level, is_ordered=ordered)
    return level


def _dim_names(ndim: int) -> list[str]:
    letters = "ijklmnopqrstuvwxyz"
    return list(letters[:ndim]) if ndim <= len(letters) else [f"d{k}" for k in range(ndim)]


def _check_format(fmt: Format) -> None:
    if not isinstance(fmt.ndim, int) or fmt.ndim < 0:
        raise FormatError(f"ndim must be a non-negative integer, got {fmt.ndim!r}")
    if len(fmt.levels) != len(fmt.exprs):
        raise FormatError(f"{len(fmt.levels)} level types but {len(fmt.exprs)} level expressions")
    for lvl in fmt.levels:
        if not isinstance(lvl, Level):
            raise FormatError(f"not a level type: {lvl!r}")
    for w, what in ((fmt.pos_width, "posWidth"), (fmt.crd_width, "crdWidth")):
        if w not in WIDTHS:
            raise FormatError(f"{what} must be one of {WIDTHS}, got {w!r}")
    seen: dict[int, list[tuple[int, LevelExpr]]] = {}
    for k, e in enumerate(fmt.exprs):
        if not 0 <= e.dim < fmt.ndim:
            raise FormatError(f"level {k} refers to dimension {e.dim}, but the format has {fmt.ndim} dimensions")
        seen.setdefault(e.dim, []).append((k, e))
    for d in range(fmt.ndim):
        uses = seen.get(d, [])
        ops = [e.op for _, e in uses]
        if ops == ["id"]:
            continue
        if ops == ["floordiv", "mod"] and uses[0][1].factor == uses[1][1].factor:
            continue
        if not uses:
            raise FormatError(f"dimension {d} is not stored by any level")
        raise FormatError(
            f"dimension {d} must map to one level, or to a 'floordiv b' level followed by a 'mod b' "
            f"level with the same b; got {[e.text(_dim_names(fmt.ndim)) for _, e in uses]}"
        )
    if fmt.levels and isinstance(fmt.levels[0], Singleton):
        raise FormatError("a singleton level needs a parent level; it cannot be level 0")
    for k, lvl in enumerate(fmt.levels[:-1]):
        if lvl.kind == "bitmap":
            raise FormatError(f"level {k} (bitmap) must be the innermost level: its set bits index the packed "
                              "values, not a level below it")
    for k, (lvl, e) in enumerate(zip(fmt.levels, fmt.exprs)):
        if isinstance(lvl, NOutOfM) and (e.op != "mod" or e.factor != lvl.m):
            raise FormatError(
                f"level {k} ({lvl.mlir()}) must store 'dim mod {lvl.m}' under a 'dim floordiv {lvl.m}' level"
            )


# -- short names ---------------------------------------------------------------

_SHORT_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(\s*([-0-9,\s]*?)\s*(,\s*packed)?\s*\)\s*)?$")
_SHORT_NAMES = ("dense", "csr", "csc", "coo", "dcsr", "dcsc", "csf", "bsr", "ell", "nm", "bitmap", "csr_unsorted",
                "csc_unsorted")


def short_names() -> tuple[str, ...]:
    """The short format names :func:`parse_format` accepts."""
    return _SHORT_NAMES


def _candidate_names(fmt: Format) -> Iterable[str]:
    # 2-D names first: "dcsr" reads better than the equal "csf".
    if fmt.ndim == 2:
        yield from ("csr", "csc", "dcsr", "dcsc", "ell", "bitmap", "csr_unsorted", "csc_unsorted")
        blocks = fmt.block_sizes()
        if fmt.is_blocked:
            yield f"bsr({blocks[0]}, {blocks[1]})"
        for lvl in fmt.levels:
            if isinstance(lvl, NOutOfM):
                yield f"nm({lvl.n}, {lvl.m}{', packed' if lvl.packed else ''})"
    yield "dense"
    yield "coo"
    yield "csf"
    if fmt.ndim >= 2:
        yield "csf(" + ", ".join(str(d) for d in fmt.dim_order()) + ")"


def _build_short(text: str, ndim: int | None) -> Format:
    m = _SHORT_RE.match(text)
    if not m:
        raise FormatError(f"not a format name: {text!r}")
    name, args_text, packed = m.group(1).lower(), m.group(2), m.group(3) is not None
    if packed and name != "nm":
        raise FormatError(f"format {text!r}: only nm(n, m, packed) takes 'packed'")
    try:
        args = [int(a) for a in args_text.split(",") if a.strip()] if args_text else []
    except ValueError:
        raise FormatError(f"format {text!r}: arguments must be integers") from None
    two_d = {"csr", "csc", "dcsr", "dcsc", "bsr", "ell", "nm", "bitmap", "csr_unsorted", "csc_unsorted"}
    if name in two_d:
        if ndim not in (None, 2):
            raise FormatError(f"format {name!r} is 2-D, but the tensor has {ndim} dimensions")
        ndim = 2
    elif name in ("dense", "coo", "csf"):
        if name == "csf" and args:
            if ndim is not None and ndim != len(args):
                raise FormatError(f"format {text!r} orders {len(args)} dimensions, but the tensor has {ndim}")
            ndim = len(args)
        if ndim is None:
            raise FormatError(f"format {name!r} needs the number of dimensions (pass ndim=)")
    else:
        raise FormatError(f"unknown format {text!r}; known names: {', '.join(_SHORT_NAMES)}, or MLIR encoding text")

    ident = [LevelExpr(d) for d in range(ndim)]
    if name == "dense":
        _no_args(name, args)
        return Format(tuple(Dense() for _ in range(ndim)), tuple(ident), ndim, name="dense")
    if name == "coo":
        _no_args(name, args)
        if ndim == 0:
            return Format((), (), 0, name="coo")
        if ndim == 1:
            return Format((Compressed(),), (LevelExpr(0),), 1, name="coo")
        lv: list[Level] = [Compressed(is_unique=False)]
        lv += [Singleton(is_unique=False) for _ in range(ndim - 2)] + [Singleton()]
        return Format(tuple(lv), tuple(ident), ndim, name="coo")
    if name == "csf":
        order = args or list(range(ndim))
        if sorted(order) != list(range(ndim)):
            raise FormatError(f"csf level order must be a permutation of 0..{ndim - 1}, got {order}")
        return Format(tuple(Compressed() for _ in order), tuple(LevelExpr(d) for d in order), ndim, name=text)
    if name == "bitmap":
        _no_args(name, args)
        return Format((Dense(), LEVEL_TYPES["bitmap"]()), (LevelExpr(0), LevelExpr(1)), 2, name="bitmap")
    if name in ("csr", "csc", "dcsr", "dcsc", "ell", "csr_unsorted", "csc_unsorted"):
        _no_args(name, args)
        order = (1, 0) if name in ("csc", "dcsc", "csc_unsorted") else (0, 1)
        first: Level = Compressed() if name.startswith("dc") else Dense()
        second: Level = LooseCompressed() if name == "ell" else Compressed(is_ordered=not name.endswith("_unsorted"))
        return Format((first, second), (LevelExpr(order[0]), LevelExpr(order[1])), 2, name=name)
    if name == "bsr":
        if len(args) != 2 or min(args) < 1:
            raise FormatError(f"bsr takes two positive block sizes, bsr(bm, bn); got {text!r}")
        bm, bn = args
        return Format(
            (Dense(), Compressed(), Dense(), Dense()),
            (LevelExpr(0, "floordiv", bm), LevelExpr(1, "floordiv", bn), LevelExpr(0, "mod", bm), LevelExpr(1, "mod", bn)),
            2,
            name=f"bsr({bm}, {bn})",
        )
    # nm(n, m) or nm(n, m, packed)
    if len(args) != 2:
        raise FormatError(f"nm takes two integers, nm(n, m) or nm(n, m, packed); got {text!r}")
    n, m_ = args
    return Format(
        (Dense(), Dense(), NOutOfM(n, m_, packed)),
        (LevelExpr(0), LevelExpr(1, "floordiv", m_), LevelExpr(1, "mod", m_)),
        2,
        name=f"nm({n}, {m_}{', packed' if packed else ''})",
    )


def _no_args(name: str, args: list[int]) -> None:
    if args:
        raise FormatError(f"format {name!r} takes no arguments")


# -- MLIR encoding parser ----------------------------------------------------------

_GRAMMAR = r"""
start: "#sparse_tensor.encoding" "<" "{" entry ("," entry)* "}" ">"   -> encoding
     | "{" entry ("," entry)* "}"                                     -> encoding
     | map                                                           -> bare_map

entry: "map" "=" map                 -> map_entry
     | "posWidth" "=" INT            -> pos_width
     | "crdWidth" "=" INT            -> crd_width

map: level_vars? "(" [NAME ("," NAME)*] ")" "->" "(" [level ("," level)*] ")"
level_vars: "{" NAME ("," NAME)* "}"
level: level_expr ":" level_type
level_expr: NAME                    -> expr_id
          | NAME "floordiv" INT     -> expr_floordiv
          | NAME "mod" INT          -> expr_mod
level_type: NAME ("(" NAME ("," NAME)* ")")?      -> named_level
          | "structured" "[" INT "," INT ["," NAME] "]"      -> structured_level
          | "n_out_of_m" "(" INT "," INT ["," NAME] ")"      -> structured_level

NAME: /(?!floordiv\b|mod\b)[A-Za-z_][A-Za-z0-9_]*/
%import common.INT
%import common.WS
%ignore WS
"""


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(_GRAMMAR, parser="lalr", maybe_placeholders=True)


class _Build(Transformer):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def _err(self, msg: str, tok: Token | None) -> ParseError:
        line = getattr(tok, "line", 1) or 1
        col = getattr(tok, "column", 1) or 1
        return ParseError(msg, self.text, line, col)

    def expr_id(self, c):
        return (c[0], "id", 1)

    def expr_floordiv(self, c):
        return (c[0], "floordiv", int(c[1]))

    def expr_mod(self, c):
        return (c[0], "mod", int(c[1]))

    def named_level(self, c):
        name_tok, props = c[0], [str(p) for p in c[1:] if p is not None]
        name = str(name_tok)
        plain = sorted(k for k in LEVEL_TYPES if k != "n_out_of_m")
        if name not in LEVEL_TYPES or name == "n_out_of_m":
            raise self._err(f"unknown level type {name!r} ({', '.join(plain)}, structured[n, m])", name_tok)
        for p in props:
            if p not in ("nonunique", "nonordered", "unique", "ordered"):
                raise self._err(f"unknown level property {p!r} (nonunique, nonordered)", name_tok)
        unique, ordered = "nonunique" not in props, "nonordered" not in props
        cls = LEVEL_TYPES[name]
        if "is_unique" not in getattr(cls, "__dataclass_fields__", {}):
            if props:
                raise self._err(f"a {name} level takes no properties", name_tok)
            return cls()
        return cls(is_unique=unique, is_ordered=ordered)

    def structured_level(self, c):
        if c[2] is not None and str(c[2]) != "packed":
            raise self._err(f"unknown structured level option {str(c[2])!r} (packed)", c[2])
        try:
            return NOutOfM(int(c[0]), int(c[1]), c[2] is not None)
        except FormatError as e:
            raise self._err(str(e), c[0]) from None

    def level(self, c):
        return (c[0], c[1])

    def level_vars(self, c):
        return None

    def map(self, c):
        items = [x for x in c if x is not None]
        dims = [str(x) for x in items if isinstance(x, Token)]
        levels = [x for x in items if isinstance(x, tuple)]
        if len(set(dims)) != len(dims):
            raise self._err(f"repeated dimension name in {dims}", None)
        exprs, lvls = [], []
        for (name_tok, op, factor), lvl in levels:
            if str(name_tok) not in dims:
                raise self._err(f"level expression uses {str(name_tok)!r}, which is not a dimension in {dims}", name_tok)
            exprs.append(LevelExpr(dims.index(str(name_tok)), op, factor))
            lvls.append(lvl)
        return ("map", len(dims), tuple(lvls), tuple(exprs))

    def map_entry(self, c):
        return c[0]

    def pos_width(self, c):
        return ("posWidth", int(c[0]))

    def crd_width(self, c):
        return ("crdWidth", int(c[0]))

    def encoding(self, c):
        found: dict[str, object] = {}
        for item in c:
            if item[0] in found:
                raise ParseError(f"{item[0]} given twice", self.text)
            found[item[0]] = item
        if "map" not in found:
            raise ParseError("encoding has no 'map = (...) -> (...)'", self.text)
        _, ndim, lvls, exprs = found["map"]
        pw = found.get("posWidth", (None, 32))[1]
        cw = found.get("crdWidth", (None, 32))[1]
        pw = 64 if pw == 0 else pw
        cw = 64 if cw == 0 else cw
        return Format(lvls, exprs, ndim, pos_width=pw, crd_width=cw)

    def bare_map(self, c):
        _, ndim, lvls, exprs = c[0]
        return Format(lvls, exprs, ndim)


def _parse_mlir(text: str) -> Format:
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        raise ParseError("cannot parse sparse tensor encoding: unexpected input", text, e.line, e.column) from None
    try:
        return _Build(text).transform(tree)
    except Exception as e:  # lark wraps errors raised in callbacks
        inner = getattr(e, "orig_exc", e)
        if isinstance(inner, (ParseError, FormatError)):
            raise inner from None
        raise


def parse_format(text: str, ndim: int | None = None) -> Format:
    """Parse a short name (``"csr"``, ``"bsr(4, 4)"``) or MLIR encoding text into a Format.

    ``ndim`` is needed for dimension-generic names (``dense``, ``coo``, ``csf``) and
    is checked against the format otherwise. Results are cached (a Format is frozen):
    binding an operand parses its format name on every call.
    """
    if not isinstance(text, str):
        raise FormatError(f"a format is a Format or a string, got {type(text).__name__}")
    if len(text) <= _CACHED_TEXT and (ndim is None or type(ndim) is int):
        return _parse_cached(text, ndim)
    return _parse_text(text, ndim)


#: strings up to this length are cached (short names and most encodings)
_CACHED_TEXT = 256


@lru_cache(maxsize=512)
def _parse_cached(text: str, ndim: int | None) -> Format:
    return _parse_text(text, ndim)   # errors are not cached: they are raised again on each call


def _parse_text(text: str, ndim: int | None) -> Format:
    stripped = text.strip()
    if not stripped:
        raise FormatError(f"not a format name: {text!r}")
    if stripped.startswith("#") or stripped.startswith("{") or "->" in stripped:
        fmt = _parse_mlir(stripped)
        if ndim is not None and fmt.ndim != ndim:
            raise FormatError(f"encoding has {fmt.ndim} dimensions, but the tensor has {ndim}")
        return fmt
    # bit-width suffix printed by Format.__str__, e.g. "csr[pos64,crd64]", "nm(2, 4)[pos32,crd8]"
    wm = re.match(r"^(.*?)\[\s*pos(\d+)\s*,\s*crd(\d+)\s*\]$", stripped)
    if wm:
        return _build_short(wm.group(1), ndim).with_widths(int(wm.group(2)), int(wm.group(3)))
    return _build_short(stripped, ndim)


def as_format(spec: FormatLike | None, ndim: int, default: str = "dense") -> Format:
    """Turn a Format, a format string or None (meaning ``default``) into a Format of ``ndim`` dims."""
    if spec is None:
        spec = default
    if isinstance(spec, Format):
        if spec.ndim != ndim:
            raise FormatError(f"format {spec} has {spec.ndim} dimensions, but the tensor has {ndim}")
        return spec
    return parse_format(spec, ndim)
