"""Runtime tensors: storage in any format, conversion, validation, interop.

A :class:`Tensor` is a shape, a :class:`~sparsec.formats.Format`, one dict of index
buffers per level (``{"pos": ..., "crd": ...}``, names from ``level.buffers``) and a
1-D ``values`` array indexed by the last level's positions. It is what compiled
kernels read and write.

Everything here is vectorized numpy. The central mechanism is generic over level
types (the levels are plug-ins, see :mod:`sparsec.levels`):

* **enumerate** stored entries with each level's ``expand`` (level coordinates plus
  the position of each entry's value);
* **map** level coordinates to dimension coordinates (``block * b + offset`` for
  ``floordiv``/``mod`` pairs) and dimension coordinates to another format's level
  coordinates;
* **sort** once into lexicographic level order (one linear key and one argsort when
  the product of level sizes fits in int64, else ``np.lexsort``; skipped when the
  entries are already in order);
* **assemble** each target level with its ``assemble`` hook and scatter the values.

Index widths: pos arrays have dtype ``int{format.pos_width}`` and crd arrays
``int{format.crd_width}`` (int8, int16, int32 or int64: signed, so int8 holds 0..127).
When a level's pos buffer would hold a position count, or its crd buffer a coordinate,
that the declared width cannot, the format is widened automatically to the narrowest
width that can (``fmt.with_widths(...)``; never narrowed). Only levels that own the
buffer count: ``nm(2, 4)[pos32,crd8]`` keeps 8-bit coordinates (0..3) at any shape,
CSR's crd width depends on its columns only.

Measured on the 2-core dev VM (shared with other jobs; numpy 2.4), 200000 x 200000
random matrix with 10M nonzeros: CSR -> CSC 1.4-4.3 s (1.4 s once memory is warm;
the spread is first-touch page faults and load), CSC -> CSR 2.4-3.1 s, CSR -> COO
0.4-0.8 s, COO -> CSR 0.45-0.65 s (already in order: no sort), from_coo of shuffled
entries -> CSR 3.5-4.5 s. Reproduce with ``SPARSEC_BENCH=1 python -m pytest -q -s
tests/test_tensor.py -k ten_million``.
"""

from __future__ import annotations

import itertools
import numbers
import operator
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import FormatError
from .formats import Format, FormatLike, as_format, fit_width, parse_format
from .levels import Level

__all__ = ["Tensor", "VALUE_DTYPES", "with_index_widths"]

_I64 = np.dtype(np.int64)

#: value dtypes a Tensor may hold (bfloat16 is not a numpy dtype: convert in torch first).
VALUE_DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(t) for t in ("bool", "int8", "int16", "int32", "int64", "float16", "float32", "float64")
)


# =====================================================================================
# small helpers: names, dtypes, shapes
# =====================================================================================

def _label(name: str | None) -> str:
    """How error messages name a tensor."""
    return f"tensor {name!r}" if name else "tensor <unnamed>"


def _where(name: str | None, fmt: Format, k: int) -> str:
    return f"{_label(name)}, level {k} ({fmt.levels[k].mlir()})"


_INDEX_DTYPES = {w: np.dtype(f"int{w}") for w in (8, 16, 32, 64)}


def _index_dtype(width: int) -> np.dtype:
    return _INDEX_DTYPES[width]


def _check_dtype(dtype: Any, name: str | None) -> np.dtype:
    """The value dtype as np.dtype, or FormatError when it is not supported."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise FormatError(f"{_label(name)}: {dtype!r} is not a dtype") from None
    if dt.byteorder == ">" or (dt.byteorder == "<" and not np.little_endian):
        dt = dt.newbyteorder("=")  # values are stored in native byte order
    if dt not in VALUE_DTYPES:
        raise FormatError(
            f"{_label(name)}: values dtype {dt} is not supported "
            f"(supported: {', '.join(str(d) for d in VALUE_DTYPES)})"
        )
    return dt


def _check_shape(shape: Any, name: str | None) -> tuple[int, ...]:
    """A tuple of non-negative Python ints with at least one dimension."""
    bad = FormatError(f"{_label(name)}: shape must be a sequence of non-negative integers, got {shape!r}")
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) and not isinstance(shape, np.ndarray):
        raise bad
    out = []
    for n in shape:
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 0:
            raise bad
        out.append(int(n))
    if not out:
        raise FormatError(f"{_label(name)}: 0-dimensional tensors are not supported (shape ())")
    return tuple(out)


def _resolve_format(fmt: FormatLike | None, ndim: int, name: str | None, default: str = "dense") -> Format:
    """as_format, with the tensor's name on dimension mismatches."""
    try:
        return as_format(fmt, ndim, default)
    except FormatError as e:
        raise FormatError(f"{_label(name)}: {e}") from None


def _structure(fmt: Format) -> Format:
    """The format with default widths: compares formats while ignoring index widths."""
    return fmt.with_widths(32, 32)


def _is_named(fmt: Format, short: str) -> bool:
    """Whether ``fmt`` is the short-named format (any widths)."""
    try:
        return _structure(fmt) == parse_format(short, fmt.ndim)
    except FormatError:
        return False


def needed_crd_width(fmt: Format, level_sizes: Sequence[int]) -> int:
    """The narrowest of 8/16/32/64 bits, at least ``fmt.crd_width``, that holds every coordinate below the
    sizes of the levels that store a ``crd`` buffer (``level_sizes``: one per level)."""
    largest = max((int(n) - 1 for lvl, n in zip(fmt.levels, level_sizes) if "crd" in lvl.buffers), default=0)
    return fit_width(fmt.crd_width, largest)


def _needed_format(fmt: Format, level_sizes: Sequence[int], num_positions: Sequence[int]) -> Format:
    """``fmt`` widened where the tensor's sizes need it (never narrowed).

    A level's ``pos`` holds positions up to its position count, its ``crd`` coordinates
    below its level size; each width becomes the narrowest of 8/16/32/64 (at least the
    declared one) that holds the largest over the levels owning such a buffer.
    """
    largest_pos = max((int(c) for lvl, c in zip(fmt.levels, num_positions) if "pos" in lvl.buffers), default=0)
    pos_w = fit_width(fmt.pos_width, largest_pos)
    crd_w = needed_crd_width(fmt, level_sizes)
    if (pos_w, crd_w) == (fmt.pos_width, fmt.crd_width):
        return fmt
    return fmt.with_widths(pos_w, crd_w)


def _cast_levels(levels: Sequence[Mapping[str, np.ndarray]], fmt: Format) -> tuple[dict[str, np.ndarray], ...]:
    """Index buffers cast to the format's widths (no copy when already right)."""
    return tuple({k: np.asarray(v).astype(_index_dtype(lvl.buffer_width(k, fmt.pos_width, fmt.crd_width)),
                                          copy=False) for k, v in bufs.items()}
                 for lvl, bufs in zip(fmt.levels, levels))


def _last_level_fills(fmt: Format) -> bool:
    """Whether the format's entries may include zeros its levels filled in: a filling last level (dense,
    N:M), or singletons under one (a filled position without an entry keeps coordinates 0 and a zero)."""
    k = len(fmt.levels) - 1
    while k > 0 and fmt.levels[k].kind == "singleton":
        k -= 1
    return k >= 0 and _fills(fmt.levels[k])


def _fills(level: Level) -> bool:
    """Whether a level creates positions that hold zeros which are not real entries."""
    return bool(getattr(level, "fills", False))


# =====================================================================================
# coordinate maps
# =====================================================================================

def _dims_to_levels(fmt: Format, dim_coords: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Dimension coordinates (one array per dimension) -> one coordinate array per level."""
    out = []
    for e in fmt.exprs:
        c = dim_coords[e.dim]
        if e.op == "floordiv":
            c = c // e.factor
        elif e.op == "mod":
            c = c % e.factor
        out.append(np.ascontiguousarray(c, dtype=_I64))
    return out


def _levels_to_dims(fmt: Format, level_coords: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Level coordinates -> one array per dimension (block * factor + offset; shared when unblocked)."""
    dims: list[np.ndarray | None] = [None] * fmt.ndim
    for e, c in zip(fmt.exprs, level_coords):
        part = c * e.factor if e.op == "floordiv" else c
        dims[e.dim] = part if dims[e.dim] is None else dims[e.dim] + part
    return dims  # type: ignore[return-value]


def _linear_key(level_coords: Sequence[np.ndarray], sizes: Sequence[int]) -> np.ndarray | None:
    """One int64 per entry ordering like the coordinate tuples, or None if it could overflow."""
    total = 1
    for s in sizes:
        total *= max(int(s), 1)
    if total >= 2**63:
        return None
    key = np.zeros(len(level_coords[0]), dtype=_I64)
    for c, s in zip(level_coords, sizes):
        key *= max(int(s), 1)
        key += c
    return key


def _lex_compare(level_coords: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """For neighbouring entries: (descending, equal) masks of the coordinate tuples."""
    n = len(level_coords[0])
    desc = np.zeros(max(n - 1, 0), dtype=bool)
    equal = np.ones(max(n - 1, 0), dtype=bool)
    for c in level_coords:
        desc |= equal & (c[1:] < c[:-1])
        equal &= c[1:] == c[:-1]
    return desc, equal


def _canonicalize(
    level_coords: list[np.ndarray],
    values: np.ndarray,
    sizes: Sequence[int],
    *,
    sum_duplicates: bool,
    presorted: bool = False,
    may_have_duplicates: bool = True,
    name: str | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Sort entries into lexicographic level order; sum (or reject) duplicate tuples.

    ``may_have_duplicates=False`` (entries known to be unique) skips the duplicate scan.
    """
    n = len(values)
    if n < 2 or not level_coords:
        return level_coords, values
    key = _linear_key(level_coords, sizes)
    if not presorted:
        order = _sort_order(level_coords, key)
        if order is not None:
            level_coords = [c[order] for c in level_coords]
            values = values[order]
            key = None if key is None or not may_have_duplicates else key[order]
    if not may_have_duplicates:
        return level_coords, values
    dup = (key[1:] == key[:-1]) if key is not None else _lex_compare(level_coords)[1]
    if not dup.any():
        return level_coords, values
    if not sum_duplicates:
        k = int(np.argmax(dup))
        raise FormatError(
            f"{_label(name)}: duplicate entry at level coordinates {tuple(int(c[k]) for c in level_coords)}"
        )
    starts = np.flatnonzero(np.concatenate(([True], ~dup)))
    summed = np.add.reduceat(values, starts).astype(values.dtype, copy=False)
    return [c[starts] for c in level_coords], summed


def _sort_order(level_coords: Sequence[np.ndarray], key: np.ndarray | None) -> np.ndarray | None:
    """Permutation into lexicographic order, or None when the entries already are in order."""
    if key is not None:
        if not (key[1:] < key[:-1]).any():
            return None
        # introsort: ~2x faster than the stable sort on 10M int64 keys. Duplicates are then
        # summed in a deterministic order that is not their input order.
        return np.argsort(key)
    if not _lex_compare(level_coords)[0].any():
        return None
    return np.lexsort(tuple(level_coords[::-1]))


# =====================================================================================
# the tensor
# =====================================================================================

class Tensor:
    """A tensor of any number of dimensions stored in any :class:`Format`.

    Build one with :meth:`from_numpy`, :meth:`from_scipy`, :meth:`from_torch`,
    :meth:`from_coo`, :meth:`from_buffers` or :meth:`from_level_coords`. The plain
    constructor trusts its arguments (buffers already cast to the format's widths)
    and is meant for sparsec's own code.
    """

    #: ``values`` was found to fill the last level's positions (:meth:`check_values_length`) since
    #: ``values`` and ``levels`` were last assigned; kernels check again only when it is False.
    _length_checked: bool = False
    #: whether two stored entries share their coordinates (:meth:`has_duplicate_entries`); None: not known
    _duplicates: bool | None = None

    def __init__(
        self,
        format: Format,
        shape: Sequence[int],
        levels: Sequence[Mapping[str, np.ndarray]],
        values: np.ndarray,
        name: str | None = None,
    ):
        self.name: str | None = name
        self.shape: tuple[int, ...] = tuple(int(n) for n in shape)
        self.format: Format = format
        self.levels: tuple[dict[str, np.ndarray], ...] = tuple(dict(b) for b in levels)
        self.values: np.ndarray = values

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "values" or key == "levels":
            object.__setattr__(self, "_length_checked", False)
            object.__setattr__(self, "_duplicates", None)
        # values replaced on a built tensor must still fill its positions: kernels read as many as there are
        if key == "values" and "values" in self.__dict__ and self.format.rank and len(value) != len(self.values):
            old = self.__dict__["values"]
            object.__setattr__(self, key, value)
            try:
                self.check_values_length()
            except FormatError:
                object.__setattr__(self, key, old)
                raise
            return
        object.__setattr__(self, key, value)

    # -- basic properties ------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        """The values' dtype."""
        return self.values.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def nse(self) -> int:
        """Number of stored entries (``len(values)``, padding and filler zeros included)."""
        return int(len(self.values))

    @property
    def level_sizes(self) -> tuple[int, ...]:
        """Size of each level (``format.level_sizes(shape)``)."""
        return self.format.level_sizes(self.shape)

    def buffer(self, level: int, part: str) -> np.ndarray:
        """Index buffer ``part`` (``"pos"`` or ``"crd"``) of level ``level``."""
        if not 0 <= level < len(self.levels):
            raise FormatError(f"{_label(self.name)}: no level {level} (format {self.format} has {len(self.levels)})")
        try:
            return self.levels[level][part]
        except KeyError:
            have = ", ".join(self.levels[level]) or "none"
            where = _where(self.name, self.format, level)
            raise FormatError(f"{where} has no buffer {part!r} (buffers: {have})") from None

    def __repr__(self) -> str:
        return (
            f"Tensor(name={self.name!r}, shape={self.shape}, format={self.format}, "
            f"dtype={self.dtype}, nse={self.nse})"
        )

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def from_numpy(cls, arr: Any, format: FormatLike = "dense", name: str | None = None) -> "Tensor":
        """A tensor holding the array ``arr`` (any ndim >= 1) in ``format``.

        Zeros are not stored, except where dense levels store every position.
        """
        if not isinstance(arr, np.ndarray) and (hasattr(arr, "tocsr") or isinstance(arr, (Tensor, Mapping))):
            hint = "; use Tensor.from_scipy" if hasattr(arr, "tocsr") else ""
            raise FormatError(f"{_label(name)}: from_numpy takes an array, got a {type(arr).__name__}{hint}")
        try:
            arr = np.asarray(arr)
        except ValueError as e:      # ragged nested lists
            raise FormatError(f"{_label(name)}: from_numpy needs a rectangular array: {e}") from None
        shape = _check_shape(arr.shape, name)
        dtype = _check_dtype(arr.dtype, name)
        fmt = _resolve_format(format, arr.ndim, name)
        if fmt.is_dense:
            return cls._from_dense_array(arr.astype(dtype, copy=False), fmt, name)
        nz = np.nonzero(arr)
        coords = np.array(nz, dtype=_I64).reshape(arr.ndim, -1)
        return cls._from_dim_coords(fmt, shape, coords, arr[nz].astype(dtype, copy=False), name, sum_duplicates=False)

    @classmethod
    def from_coo(
        cls,
        coords: Any,
        values: Any,
        shape: Sequence[int],
        format: FormatLike = "coo",
        name: str | None = None,
    ) -> "Tensor":
        """A tensor from coordinates and values in any order.

        ``coords`` is an ``(ndim, nnz)`` integer array or a sequence of ``ndim`` 1-D
        arrays. **Duplicate coordinates are summed.** Explicit zeros are kept as
        stored entries (not in N:M formats, whose blocks cannot tell a stored zero from
        their padding). A coordinate outside the shape raises FormatError naming the
        dimension and the entry.
        """
        shape = _check_shape(shape, name)
        fmt = _resolve_format(format, len(shape), name)
        values = np.asarray(values)
        if values.ndim != 1:
            raise FormatError(f"{_label(name)}: values must be 1-D, got shape {values.shape}")
        dtype = _check_dtype(values.dtype, name)
        dim_coords = _coords_array(coords, len(shape), len(values), name)
        for d, n in enumerate(shape):
            bad = (dim_coords[d] < 0) | (dim_coords[d] >= n)
            if bad.any():
                e = int(np.argmax(bad))
                raise FormatError(
                    f"{_label(name)}: entry {e} has coordinate {int(dim_coords[d, e])} in dimension {d}, "
                    f"out of range [0, {n})"
                )
        return cls._from_dim_coords(fmt, shape, dim_coords, values.astype(dtype, copy=False), name, sum_duplicates=True)

    @classmethod
    def from_level_coords(
        cls,
        format: FormatLike,
        shape: Sequence[int],
        level_coords: Sequence[Any],
        values: Any,
        name: str | None = None,
        presorted: bool = False,
    ) -> "Tensor":
        """Fast path for kernel outputs: entries given as level-space coordinates.

        ``level_coords`` has one 1-D integer array per level of ``format`` (for BSR:
        ``[i // bm, j // bn, i % bm, j % bn]``), aligned with ``values``. Entries must
        be unique (a duplicate raises FormatError); with ``presorted=True`` they must
        already be in lexicographic level order (the sort and its check are skipped).
        """
        shape = _check_shape(shape, name)
        fmt = _resolve_format(format, len(shape), name)
        values = np.asarray(values)
        if values.ndim != 1:
            raise FormatError(f"{_label(name)}: values must be 1-D, got shape {values.shape}")
        values = values.astype(_check_dtype(values.dtype, name), copy=False)
        if len(level_coords) != fmt.rank:
            raise FormatError(
                f"{_label(name)}: format {fmt} has {fmt.rank} levels, got {len(level_coords)} coordinate arrays"
            )
        sizes = fmt.level_sizes(shape)
        lc = []
        for k, (c, size) in enumerate(zip(level_coords, sizes)):
            c = np.asarray(c)
            if c.ndim != 1 or len(c) != len(values) or (len(c) and c.dtype.kind not in "iu"):
                raise FormatError(
                    f"{_where(name, fmt, k)}: level coordinates must be a 1-D integer array of {len(values)} entries"
                )
            c = c.astype(_I64, copy=False)
            if len(c) and (c.min() < 0 or c.max() >= size):
                bad = int(np.argmax((c < 0) | (c >= size)))
                raise FormatError(
                    f"{_where(name, fmt, k)}: entry {bad} has level coordinate {int(c[bad])}, out of range [0, {size})"
                )
            lc.append(c)
        out_lc, out_values = _canonicalize(lc, values, sizes, sum_duplicates=False, presorted=presorted, name=name)
        t = cls._assemble(fmt, shape, out_lc, out_values, name, copy_values=out_values is values)
        t._check_padding()      # entries of partial blocks outside the shape must be zero
        return t

    @classmethod
    def from_buffers(
        cls,
        format: FormatLike,
        shape: Sequence[int],
        levels: Sequence[Mapping[str, Any]],
        values: Any,
        name: str | None = None,
        validate: bool = True,
    ) -> "Tensor":
        """A tensor from raw index buffers handed in by a user.

        ``levels`` has one mapping per level with exactly that level's buffer names
        (``{"pos": ..., "crd": ...}``, ``{}`` for dense). Index arrays may have any
        integer dtype; they are converted to the format's widths, widened (to the narrowest
        of 8/16/32/64 bits that holds them) where the tensor needs it. With ``validate=True`` (the default) every buffer is
        checked (see :meth:`validate`); with False only the buffer names and dtypes and
        the length of ``values`` (against ``len(crd)`` of the last level) are: the contents,
        ``pos`` lengths and bounds included, are trusted, and a kernel run on buffers that
        break them may read out of bounds.

        Like scipy's ``csr_matrix((data, indices, indptr))``, arrays that already have
        the right dtype are used without copying: the tensor shares them. This keeps
        re-wrapping a tensor's own buffers (a new name, new values) free.
        """
        shape = _check_shape(shape, name)
        fmt = _resolve_format(format, len(shape), name)
        if isinstance(levels, Mapping) or not isinstance(levels, Sequence):
            raise FormatError(f"{_label(name)}: levels must be a sequence with one buffer mapping per level")
        if len(levels) != fmt.rank:
            raise FormatError(f"{_label(name)}: format {fmt} has {fmt.rank} levels, got buffers for {len(levels)}")
        bufs = tuple(_check_level_buffers(fmt, k, b, name) for k, b in enumerate(levels))
        vals = _check_values(values, name, copy=False)
        t = cls(fmt, shape, bufs, vals, name)
        counts = t._validate_levels() if validate else t._position_counts()
        t._check_values_length(counts[-1])
        if validate:
            t._check_tuple_order()
            t._check_padding()
        t.format = _needed_format(fmt, t.level_sizes, counts)
        t.levels = _cast_levels(bufs, t.format)
        return t

    @classmethod
    def from_scipy(cls, m: Any, format: FormatLike | None = None, name: str | None = None) -> "Tensor":
        """A tensor from any scipy.sparse matrix or array (csr, csc, coo, bsr, dia, lil, dok).

        ``format=None`` picks the natural format: csr, csc, coo, ``bsr(R, C)`` with
        scipy's block size, and csr for the others. Explicit zeros scipy stores are
        kept, unsorted indices are sorted and duplicates are summed.
        """
        import scipy.sparse as sp

        if not sp.issparse(m):
            got = type(m).__name__
            raise FormatError(f"{_label(name)}: from_scipy needs a scipy.sparse matrix or array, got {got}")
        if m.ndim != 2 and m.format != "coo":
            m = m.tocoo()  # 1-D sparse arrays
        kind = m.format
        if format is None:
            format = {"csr": "csr", "csc": "csc", "coo": "coo"}.get(kind, "csr")
            if kind == "bsr":
                format = "bsr({}, {})".format(*m.blocksize)
        shape = tuple(int(n) for n in m.shape)
        fmt = _resolve_format(format, len(shape), name)
        if kind in ("csr", "csc"):
            return cls._from_compressed(m.indptr, m.indices, m.data, shape, kind, fmt, name)
        if kind == "bsr":
            return cls._from_bsr(m.indptr, m.indices, m.data, shape, fmt, name)
        if kind != "coo":
            m = m.tocoo()
        coords = np.array(m.coords if hasattr(m, "coords") else (m.row, m.col), dtype=_I64).reshape(len(shape), -1)
        return cls.from_coo(coords, m.data, shape, fmt, name)

    @classmethod
    def from_torch(cls, t: Any, format: FormatLike | None = None, name: str | None = None) -> "Tensor":
        """A tensor from a torch tensor: strided, sparse_coo, sparse_csr, sparse_csc or sparse_bsr.

        ``format=None`` picks the natural format (dense, coo, csr, csc, ``bsr(R, C)``).
        CUDA tensors are copied to the CPU. bfloat16 is not supported (numpy has no
        bfloat16): convert with ``t.float()`` first.
        """
        torch = _import_torch()
        if not isinstance(t, torch.Tensor):
            raise FormatError(f"{_label(name)}: from_torch needs a torch.Tensor, got {type(t).__name__}")
        t = t.detach()
        if t.device.type == "meta":
            raise FormatError(f"{_label(name)}: a torch tensor on the 'meta' device has no data to read")
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype == torch.bfloat16:
            raise FormatError(f"{_label(name)}: bfloat16 has no numpy dtype; convert with t.float() first")
        shape = tuple(int(n) for n in t.shape)
        layout = t.layout
        if layout == torch.strided:
            return cls.from_numpy(t.numpy(), "dense" if format is None else format, name)
        if t.dense_dim() != 0 or (layout != torch.sparse_coo and t.ndim != 2):
            raise FormatError(
                f"{_label(name)}: hybrid or batched torch sparse tensors are not supported ({layout}, shape {shape})"
            )
        if layout == torch.sparse_coo:
            fmt = "coo" if format is None else format
            return cls.from_coo(t._indices().numpy(), t._values().numpy(), shape, fmt, name)
        if layout in (torch.sparse_csr, torch.sparse_csc):
            kind = "csr" if layout == torch.sparse_csr else "csc"
            ptr, idx = (t.crow_indices(), t.col_indices()) if kind == "csr" else (t.ccol_indices(), t.row_indices())
            fmt = _resolve_format(kind if format is None else format, 2, name)
            return cls._from_compressed(ptr.numpy(), idx.numpy(), t.values().numpy(), shape, kind, fmt, name)
        if layout == torch.sparse_bsr:
            blocks = t.values().numpy()
            fmt = _resolve_format("bsr({}, {})".format(*blocks.shape[1:]) if format is None else format, 2, name)
            return cls._from_bsr(t.crow_indices().numpy(), t.col_indices().numpy(), blocks, shape, fmt, name)
        coo = t.to_sparse_coo() if hasattr(t, "to_sparse_coo") else t.to_sparse()
        return cls.from_torch(coo, format, name)

    # -- internal constructors -----------------------------------------------------------
    @classmethod
    def _from_dense_array(cls, arr: np.ndarray, fmt: Format, name: str | None) -> "Tensor":
        """All-dense unblocked format: values are the array in level order."""
        order = [e.dim for e in fmt.exprs]
        values = np.array(arr.transpose(order), order="C").reshape(-1)
        sizes = fmt.level_sizes(arr.shape)
        counts = list(itertools.accumulate(sizes, operator.mul))
        out_fmt = _needed_format(fmt, sizes, counts)
        return cls(out_fmt, arr.shape, tuple({} for _ in fmt.levels), values, name)

    @classmethod
    def _from_dim_coords(
        cls,
        fmt: Format,
        shape: tuple[int, ...],
        dim_coords: Sequence[np.ndarray],
        values: np.ndarray,
        name: str | None,
        sum_duplicates: bool,
        unique: bool = False,
    ) -> "Tensor":
        """Entries in dimension space (any order) -> tensor in ``fmt``; ``unique``: known duplicate-free."""
        if fmt.is_dense:
            return cls._from_dense_array(_scatter_dense(shape, dim_coords, values, sum_duplicates), fmt, name)
        sizes = fmt.level_sizes(shape)
        lc = _dims_to_levels(fmt, dim_coords)
        out_lc, out_values = _canonicalize(
            lc, values, sizes, sum_duplicates=sum_duplicates, may_have_duplicates=not unique, name=name
        )
        return cls._assemble(fmt, shape, out_lc, out_values, name, copy_values=out_values is values)

    @classmethod
    def _assemble(
        cls,
        fmt: Format,
        shape: tuple[int, ...],
        level_coords: Sequence[np.ndarray],
        values: np.ndarray,
        name: str | None,
        copy_values: bool = True,
    ) -> "Tensor":
        """Sorted, unique level coordinates -> buffers, via each level's ``assemble``.

        ``copy_values=False`` lets the tensor keep ``values`` itself (a fresh array).
        """
        if len(values) and any(lvl.kind == "n_out_of_m" for lvl in fmt.levels):
            # an N:M block cannot tell a stored zero from its padding: zeros are not entries there (a -0.0
            # is kept: padding reads +0.0, so the sign would be lost)
            nz = (values != 0) | np.signbit(values) if values.dtype.kind == "f" else values != 0
            if not nz.all():
                level_coords, values, copy_values = [c[nz] for c in level_coords], values[nz], False
        n = len(values)
        sizes = fmt.level_sizes(shape)
        parent = np.zeros(n, dtype=_I64)
        num_parents = 1
        levels: list[dict[str, np.ndarray]] = []
        counts: list[int] = []
        for k, (lvl, coords, size) in enumerate(zip(fmt.levels, level_coords, sizes)):
            try:
                bufs, child, num_parents = lvl.assemble(parent, coords, num_parents, size, _I64)
            except FormatError as e:
                raise _locate_error(e, fmt, k, parent, level_coords, name) from None
            levels.append(bufs)
            counts.append(num_parents)
            parent = child
        if num_parents == n:
            vals = values.copy() if copy_values else values  # positions are 0..n-1 in order
        else:
            vals = np.zeros(num_parents, dtype=values.dtype)
            vals[parent] = values
        out_fmt = _needed_format(fmt, sizes, counts)
        return cls(out_fmt, shape, _cast_levels(levels, out_fmt), vals, name)

    @classmethod
    def _from_compressed(
        cls, indptr: Any, indices: Any, data: Any, shape: tuple[int, ...], kind: str, fmt: Format, name: str | None
    ) -> "Tensor":
        """CSR/CSC arrays (scipy, torch): buffers directly when canonical, else via from_coo."""
        major, minor = (0, 1) if kind == "csr" else (1, 0)
        indptr, indices, data, nnz = _check_compressed_arrays(indptr, indices, data, shape[major], kind, name)
        indices, data = indices[:nnz], data[:nnz]
        if _is_named(fmt, kind) and _valid_compressed(indptr, indices, shape[major], shape[minor]):
            bufs = [{}, {"pos": indptr.copy(), "crd": indices.copy()}]
            return cls.from_buffers(fmt, shape, bufs, data.copy(), name, validate=False)
        counts = np.diff(indptr.astype(_I64))
        coords = np.empty((2, nnz), dtype=_I64)
        coords[major] = np.repeat(np.arange(shape[major], dtype=_I64), counts)
        coords[minor] = indices
        return cls.from_coo(coords, data, shape, fmt, name)

    @classmethod
    def _from_bsr(
        cls, indptr: Any, indices: Any, blocks: Any, shape: tuple[int, ...], fmt: Format, name: str | None
    ) -> "Tensor":
        """BSR arrays (scipy, torch): buffers directly when canonical, else every block entry via from_coo."""
        blocks = np.asarray(blocks)
        if blocks.ndim != 3:
            raise FormatError(f"{_label(name)}: malformed bsr: blocks must be a 3-D array, got shape {blocks.shape}")
        bm, bn = blocks.shape[1:]
        if bm < 1 or bn < 1:
            raise FormatError(f"{_label(name)}: malformed bsr: empty block size {bm}x{bn}")
        indptr, indices, blocks, nb = _check_compressed_arrays(indptr, indices, blocks, -(-shape[0] // bm), "bsr",
                                                               name)
        indices, blocks = indices[:nb], blocks[:nb]
        exact = shape[0] % bm == 0 and shape[1] % bn == 0
        canonical = exact and _valid_compressed(indptr, indices, shape[0] // bm, shape[1] // bn)
        if canonical and _is_named(fmt, f"bsr({bm}, {bn})"):
            bufs = [{}, {"pos": indptr.copy(), "crd": indices.copy()}, {}, {}]
            return cls.from_buffers(fmt, shape, bufs, blocks.reshape(-1).copy(), name, validate=False)
        brow = np.repeat(np.arange(len(indptr) - 1, dtype=_I64), np.diff(indptr.astype(_I64)))
        rows = brow[:, None, None] * bm + np.arange(bm)[None, :, None]
        cols = indices.astype(_I64)[:, None, None] * bn + np.arange(bn)[None, None, :]
        coords = np.stack([np.broadcast_to(rows, blocks.shape).ravel(), np.broadcast_to(cols, blocks.shape).ravel()])
        return cls.from_coo(coords, blocks.reshape(-1), shape, fmt, name)

    # -- enumeration and export ------------------------------------------------------------
    def _entries(self) -> tuple[list[np.ndarray], np.ndarray]:
        """(level coordinates, value position) of every stored entry, in storage order."""
        parent = np.zeros(1, dtype=_I64)
        coords: list[np.ndarray] = []
        for lvl, bufs, size in zip(self.format.levels, self.levels, self.level_sizes):
            parent_index, c, positions = lvl.expand(bufs, parent, size)
            coords = [x[parent_index] for x in coords] + [c]
            parent = positions
        return coords, parent

    def level_coords(self) -> list[np.ndarray]:
        """Level-space coordinates of every stored entry in storage order, one array per level."""
        return self._entries()[0]

    def _dim_entries(self, drop_fill_zeros: bool) -> tuple[list[np.ndarray], np.ndarray]:
        """Per-dimension coordinates and values of the stored entries (values may be ``self.values``).

        Padding outside the shape is dropped, and so are zeros that dense levels or
        N:M padding fill in when ``drop_fill_zeros``.
        """
        lc, pos = self._entries()
        dims = _levels_to_dims(self.format, lc)
        n = len(pos)
        vals = self.values if _is_identity(pos, len(self.values)) else self.values[pos]
        keep = None
        if self.format.padded_shape(self.shape) != self.shape:
            keep = np.ones(n, dtype=bool)
            for d, extent in zip(dims, self.shape):
                keep &= d < extent
        if drop_fill_zeros and _last_level_fills(self.format):
            nz = vals != 0
            keep = nz if keep is None else keep & nz
        if keep is not None:
            dims, vals = [d[keep] for d in dims], vals[keep]
        return dims, vals

    def to_coo(self) -> tuple[np.ndarray, np.ndarray]:
        """(coords (ndim, n) int64, values) of the stored entries, in dimension space.

        Entries come in storage order. Padding entries of blocked / N:M formats that
        lie outside the shape are dropped; other stored zeros are kept.
        """
        dims, vals = self._dim_entries(drop_fill_zeros=False)
        coords = np.array(dims, dtype=_I64).reshape(self.ndim, len(vals))
        return coords, np.array(vals, copy=True)

    def to_numpy(self) -> np.ndarray:
        """The tensor as a dense numpy array of ``shape`` (a new array)."""
        if self.format.is_dense:
            order = [e.dim for e in self.format.exprs]
            arr = self.values.reshape(self.level_sizes)
            return np.array(arr.transpose(np.argsort(order)), order="C")
        dims, vals = self._dim_entries(drop_fill_zeros=False)
        unique = all(l.unique for l in self.format.levels)
        return _scatter_dense(self.shape, dims, vals, sum_duplicates=not unique)

    def to_scipy(self) -> Any:
        """The tensor as a scipy.sparse matrix (2-D only).

        csr -> csr_matrix and csc -> csc_matrix sharing the index arrays where they are 32 or 64 bits wide
        (scipy widens narrower ones to int32, a copy; also with a
        ``compressed(nonordered)`` level: scipy then finds its indices unsorted), bsr(R, C)
        -> bsr_matrix (when the shape is a multiple of the block), coo ->
        coo_matrix, anything else -> csr_matrix. float16 values become float32
        (scipy.sparse has no float16).
        """
        import scipy.sparse as sp

        if self.ndim != 2:
            raise FormatError(f"{_label(self.name)}: to_scipy needs a 2-D tensor, this one has shape {self.shape}")
        vals = self.values.astype(np.float32) if self.dtype == np.float16 else self.values
        fmt = self.format
        for kind, ctor in (("csr", sp.csr_matrix), ("csc", sp.csc_matrix)):
            if _is_named(fmt.with_ordered(), kind):
                return ctor((vals, self.levels[1]["crd"], self.levels[1]["pos"]), shape=self.shape)
        block = self._whole_bsr_blocks()
        if block is not None:
            blocks = vals.reshape(-1, *block)
            return sp.bsr_matrix((blocks, self.levels[1]["crd"], self.levels[1]["pos"]), shape=self.shape)
        if fmt.is_dense:
            return sp.csr_matrix(self.to_numpy().astype(vals.dtype, copy=False))
        dims, v = self._dim_entries(drop_fill_zeros=True)
        coo = sp.coo_matrix((v.astype(vals.dtype), (dims[0], dims[1])), shape=self.shape)
        return coo if _is_named(fmt, "coo") else coo.tocsr()

    def to_torch(self) -> Any:
        """The tensor as a torch tensor (a copy): strided for dense formats, else a natural sparse layout.

        csr -> sparse_csr, csc -> sparse_csc, bsr(R, C) -> sparse_bsr (when the
        shape is a multiple of the block), anything else -> coalesced sparse_coo.
        """
        torch = _import_torch()
        fmt = self.format
        if fmt.is_dense:
            return torch.from_numpy(self.to_numpy())
        vals = torch.from_numpy(self.values.copy())
        idt = np.int32 if max(fmt.pos_width, fmt.crd_width) <= 32 else np.int64  # torch: int32 or int64 only

        def ix(k: int, part: str) -> Any:
            return torch.from_numpy(self.levels[k][part].astype(idt, copy=True))

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse (CSR|CSC|BSR|BSC) tensor support is in beta")
            compressed = self._torch_compressed(torch, ix, vals)
        if compressed is not None:
            return compressed
        dims, v = self._dim_entries(drop_fill_zeros=True)
        coords = torch.from_numpy(np.array(dims, dtype=_I64).reshape(self.ndim, len(v)))
        coo = torch.sparse_coo_tensor(coords, torch.from_numpy(v.copy()), size=self.shape, check_invariants=False)
        return coo.coalesce()

    def _torch_compressed(self, torch: Any, ix: Any, vals: Any) -> Any:
        """sparse_csr / sparse_csc / sparse_bsr for the formats that have one, else None."""
        fmt = self.format
        if _is_named(fmt, "csr"):
            return torch.sparse_csr_tensor(ix(1, "pos"), ix(1, "crd"), vals, size=self.shape, check_invariants=False)
        if _is_named(fmt, "csc"):
            return torch.sparse_csc_tensor(ix(1, "pos"), ix(1, "crd"), vals, size=self.shape, check_invariants=False)
        block = self._whole_bsr_blocks()
        if block is not None:
            blocks = vals.reshape(-1, *block)
            return torch.sparse_bsr_tensor(ix(1, "pos"), ix(1, "crd"), blocks, size=self.shape, check_invariants=False)
        return None

    def _whole_bsr_blocks(self) -> tuple[int, int] | None:
        """(bm, bn) when the format is bsr(bm, bn) and the shape is a whole number of blocks."""
        fmt = self.format
        if self.ndim != 2 or not fmt.is_blocked:
            return None
        bm, bn = fmt.block_sizes()
        if _is_named(fmt, f"bsr({bm}, {bn})") and self.shape[0] % bm == 0 and self.shape[1] % bn == 0:
            return bm, bn
        return None

    def to_device(self, device: Any = "cuda") -> "Tensor":
        """A copy whose buffers are torch tensors on ``device`` (a ``DeviceTensor``), for ``target="triton"``.

        Store a sparse operand of a GPU kernel once with this and pass the result at every
        call: a host Tensor is copied to the GPU again by each call (for a pruned 4096x4096
        weight that copy takes ~50x longer than the kernel; the call warns with
        :class:`~sparsec.PerformanceWarning`). Convert the format first
        (``t.to("bitmap").to_device("cuda")``); ``DeviceTensor.to_host()`` copies back.
        """
        from .backends.triton.device import from_host

        torch = _import_torch()
        return from_host(self, torch.device(device))

    # -- conversion -----------------------------------------------------------------------
    def to(self, format: FormatLike) -> "Tensor":
        """This tensor in another format (``self`` when the format is already that one).

        When only the index widths differ the result shares the values array. Works
        between any two formats. Explicit zeros stored by sparse levels are
        kept; zeros that dense levels, N:M padding or a singleton under a dense level
        (an empty parent's filler) merely fill in are not carried over. Converting to ``nm(n, m)`` raises FormatError naming the first block
        with more than n nonzeros.
        """
        target = _resolve_format(format, self.ndim, self.name)
        if target == self.format:
            return self
        if _structure(target) == _structure(self.format):
            out_fmt = _needed_format(target, self.level_sizes, self._position_counts())
            return Tensor(out_fmt, self.shape, _cast_levels(self.levels, out_fmt), self.values, self.name)
        if self.format.is_dense:
            return Tensor.from_numpy(self.to_numpy(), target, self.name)
        if target.is_dense:
            return Tensor._from_dense_array(self.to_numpy(), target, self.name)
        dims, vals = self._dim_entries(drop_fill_zeros=True)
        unique = all(l.unique for l in self.format.levels)
        return Tensor._from_dim_coords(
            target, self.shape, dims, vals, self.name, sum_duplicates=not unique, unique=unique
        )

    def astype(self, dtype: Any) -> "Tensor":
        """The same tensor with values cast to ``dtype`` (index buffers are shared)."""
        dt = _check_dtype(dtype, self.name)
        return Tensor(self.format, self.shape, self.levels, self.values.astype(dt), self.name)

    def copy(self) -> "Tensor":
        """A deep copy (new index and value arrays)."""
        levels = tuple({k: v.copy() for k, v in b.items()} for b in self.levels)
        return Tensor(self.format, self.shape, levels, self.values.copy(), self.name)

    # -- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        """Check every buffer (O(nse), vectorized); raise FormatError at the first problem.

        Checks buffer names and dtypes against the format, each level's structure
        (monotone pos, coordinates in range, sorted / unique where the level says so,
        lengths consistent with the parent's positions), the values' length and dtype,
        and that padding outside the shape (partial blocks) holds zeros.
        """
        _check_shape(self.shape, self.name)
        if self.format.ndim != self.ndim or len(self.levels) != self.format.rank:
            raise FormatError(
                f"{_label(self.name)}: format {self.format} does not match shape {self.shape} "
                f"and {len(self.levels)} level buffer sets"
            )
        fmt = self.format
        for k, bufs in enumerate(self.levels):
            _check_level_buffers(fmt, k, bufs, self.name)
            for part, arr in bufs.items():
                want = _index_dtype(fmt.levels[k].buffer_width(part, fmt.pos_width, fmt.crd_width))
                if arr.dtype != want:
                    where = _where(self.name, fmt, k)
                    raise FormatError(f"{where}: {part} has dtype {arr.dtype}, the format says {want}")
        _check_values(self.values, self.name, copy=False)
        counts = self._validate_levels()
        self._check_values_length(counts[-1])
        self._check_tuple_order()
        self._check_padding()

    def _check_tuple_order(self) -> None:
        """Singleton levels (COO's trailing levels) that say ordered: within each run of entries with equal
        coordinates in the levels above, their coordinates do not decrease. (Equal ones, duplicate
        entries, are accepted and summed by conversions, as COO input is everywhere.)

        A level's own hook cannot see its parents' coordinates, so this runs on the entries, after
        the levels validated. Only trailing singleton levels are checked: there entries and positions
        are one to one.
        """
        levels = self.format.levels
        checked = [k for k, lvl in enumerate(levels) if lvl.kind == "singleton" and lvl.ordered
                   and all(x.kind == "singleton" for x in levels[k + 1:])]
        if not checked:
            return
        coords = self.level_coords()
        if len(coords[0]) < 2:
            return
        same = np.ones(len(coords[0]) - 1, dtype=bool)
        for k, c in enumerate(coords):
            if k in checked:
                bad = same & (c[1:] < c[:-1])
                if bad.any():
                    e = int(np.argmax(bad))
                    raise FormatError(
                        f"{_where(self.name, self.format, k)}: entries {e} and {e + 1} share their coordinates in "
                        f"the levels above but have coordinates {int(c[e])}, {int(c[e + 1])} here: the level is "
                        "ordered, so they must not decrease")
            same &= c[1:] == c[:-1]

    def _validate_levels(self) -> list[int]:
        """Run each level's validate hook; return the position count per level."""
        counts, num_parents = [], 1
        for k, (lvl, bufs, size) in enumerate(zip(self.format.levels, self.levels, self.level_sizes)):
            num_parents = lvl.validate(bufs, num_parents, size, _where(self.name, self.format, k))
            counts.append(num_parents)
        return counts

    def _position_counts(self) -> list[int]:
        """Position count per level without validating (each level's ``num_positions``)."""
        counts, num_parents = [], 1
        for lvl, bufs, size in zip(self.format.levels, self.levels, self.level_sizes):
            num_parents = lvl.num_positions(bufs, num_parents, size)
            counts.append(num_parents)
        return counts

    def check_values_length(self, name: str | None = None) -> None:
        """FormatError (naming ``name``, else the tensor's name) when ``values`` is not as long as the last
        level's positions.

        The cheap part of :meth:`validate` (it reads the ends of the pos arrays), which kernels run on
        the operands they bind: a ``values`` array that does not fill the positions would be read past its end.
        """
        if self.format.rank == 0:
            return
        try:
            n = self._position_counts()[-1]
        except Exception:   # malformed level buffers: the full check says where
            self.validate()
            raise
        self._check_values_length(n, name)
        object.__setattr__(self, "_length_checked", True)

    def has_duplicate_entries(self) -> bool:
        """Whether two stored entries share their coordinates.

        Only a format with a non-unique level can hold such entries (buffers handed in with
        :meth:`from_buffers`); conversions and kernels sum them. Found once (a pass over the entries,
        a sort when a level is unordered) and remembered until ``values`` or ``levels`` are replaced.
        """
        if self._duplicates is None:
            dup = False
            if any(not lvl.unique for lvl in self.format.levels) and self.nse > 1:
                coords, _ = self.to_coo()
                if not all(lvl.ordered for lvl in self.format.levels):
                    coords = coords[:, np.lexsort(coords[::-1])]
                dup = bool((coords[:, 1:] == coords[:, :-1]).all(axis=0).any())
            object.__setattr__(self, "_duplicates", dup)
        return self._duplicates

    def summed(self) -> "Tensor":
        """This tensor with entries that share their coordinates summed into one (itself if none do)."""
        if not self.has_duplicate_entries():
            return self
        coords, vals = self.to_coo()
        return Tensor.from_coo(coords, vals, self.shape, self.format, self.name)

    def _check_values_length(self, num_positions: int, name: str | None = None) -> None:
        if len(self.values) != num_positions:
            k = self.format.rank - 1
            raise FormatError(
                f"{_label(name or self.name)}: values has {len(self.values)} entries, but level {k} "
                f"({self.format.levels[k].mlir()}) has {num_positions} positions"
            )

    def _check_padding(self) -> None:
        """Values stored outside the shape (partial blocks) must be zero."""
        if self.format.padded_shape(self.shape) == self.shape:
            return
        lc, pos = self._entries()
        outside = np.zeros(len(pos), dtype=bool)
        dims = _levels_to_dims(self.format, lc)
        for d, extent in zip(dims, self.shape):
            outside |= d >= extent
        bad = outside & (self.values[pos] != 0)
        if bad.any():
            e = int(np.argmax(bad))
            raise FormatError(
                f"{_label(self.name)}: values[{int(pos[e])}]={self.values[pos[e]].item()!r} is padding at "
                f"coordinates {tuple(int(d[e]) for d in dims)}, outside the shape {self.shape}; padding must be 0"
            )


def with_index_widths(t: "Tensor", fmt: Format, operand: str) -> "Tensor":
    """``t`` (same structure as ``fmt``) with index buffers cast to exactly ``fmt``'s widths.

    A compiled kernel reads its operands' ``pos``/``crd`` arrays with the widths it
    was compiled for. Widening always works; narrowing works when the tensor's level
    sizes and position counts fit (the rule of :func:`_needed_format`), else this
    raises FormatError naming ``operand`` and the format it needs.
    """
    check_index_widths(t, fmt, operand)
    return Tensor(fmt, t.shape, _cast_levels(t.levels, fmt), t.values, t.name)


def check_index_widths(t: "Tensor", fmt: Format, operand: str) -> None:
    """FormatError unless ``t`` has ``fmt``'s structure and its buffers' contents fit ``fmt``'s widths.

    Also used by the device runtime, whose tensors hold torch buffers.
    """
    if _structure(t.format) != _structure(fmt):
        raise FormatError(f"operand {operand!r}: format {t.format} is not {fmt}")
    needed = _needed_format(fmt, t.level_sizes, t._position_counts())
    if needed != fmt:
        raise FormatError(
            f"operand {operand!r} (shape {t.shape}, format {t.format}) needs {needed.pos_width}-bit positions and "
            f"{needed.crd_width}-bit coordinates, but the kernel was compiled for {fmt} "
            f"(pos{fmt.pos_width}, crd{fmt.crd_width}); compile it with formats={{{operand!r}: {needed.mlir()!r}}}"
        )


# =====================================================================================
# helpers used by the constructors
# =====================================================================================

def _import_torch() -> Any:
    try:
        import torch
    except ImportError:  # torch is optional
        raise ImportError("this needs PyTorch (pip install torch)") from None
    return torch


def _coords_array(coords: Any, ndim: int, nnz: int, name: str | None) -> np.ndarray:
    """(ndim, nnz) int64 coordinates from an array or a sequence of 1-D arrays."""
    if isinstance(coords, np.ndarray) or not isinstance(coords, (list, tuple)):
        arr = np.asarray(coords)
    else:
        parts = [np.asarray(c) for c in coords]
        if any(p.ndim != 1 for p in parts):
            raise FormatError(f"{_label(name)}: coordinate arrays must be 1-D")
        arr = np.stack(parts) if parts else np.zeros((0, nnz), dtype=_I64)
    if arr.size == 0 and nnz == 0:
        arr = arr.reshape(ndim, 0)
    if arr.ndim != 2 or arr.shape != (ndim, nnz):
        raise FormatError(f"{_label(name)}: coords must have shape ({ndim}, {nnz}) (ndim, nnz), got {arr.shape}")
    if arr.size and (arr.dtype.kind not in "iu"):
        raise FormatError(f"{_label(name)}: coords must be integers, got dtype {arr.dtype}")
    if arr.size and arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and int(arr.max()) > np.iinfo(_I64).max:
        big = int(arr.max())   # the cast to int64 would wrap it to a negative coordinate in the message
        d = int(np.argmax(arr.max(axis=1)))
        raise FormatError(f"{_label(name)}: coordinate {big} of dimension {d} is out of range")
    return arr.astype(_I64, copy=False)


def _check_compressed_arrays(
    indptr: Any, indices: Any, data: Any, num_major: int, kind: str, name: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The (indptr, indices, data) of a CSR/CSC/BSR matrix from scipy or torch, checked enough to be read safely.

    Checks what every later step relies on before anything indexes with these
    arrays: integer 1-D index arrays, ``len(indptr) == num_major + 1``, ``indptr[0] == 0``,
    non-decreasing ``indptr`` and ``indptr[-1]`` within both ``indices`` and ``data``.
    Coordinate ranges, order and duplicates are checked (or fixed) by the callers.
    Returns the arrays and the number of stored entries (``indptr[-1]``).
    """
    what = f"{_label(name)}: malformed {kind}"
    indptr, indices, data = np.asarray(indptr), np.asarray(indices), np.asarray(data)
    for label, arr in (("indptr", indptr), ("indices", indices)):
        if arr.ndim != 1:
            raise FormatError(f"{what}: {label} must be a 1-D array, got shape {arr.shape}")
        if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
            raise FormatError(f"{what}: {label} must have an integer dtype, got {arr.dtype}")
    if data.ndim < 1:
        raise FormatError(f"{what}: data must be an array, got shape {data.shape}")
    if len(indptr) != num_major + 1:
        raise FormatError(f"{what}: indptr has {len(indptr)} entries, expected {num_major + 1} (one per "
                          f"{'row' if kind != 'csc' else 'column'}{' block' if kind == 'bsr' else ''} + 1)")
    ptr = indptr.astype(_I64)
    if ptr[0] != 0:
        raise FormatError(f"{what}: indptr[0]={int(ptr[0])}, expected 0")
    down = ptr[1:] < ptr[:-1]
    if down.any():
        k = int(np.argmax(down))
        raise FormatError(f"{what}: indptr is not monotone: indptr[{k}]={int(ptr[k])} > "
                          f"indptr[{k + 1}]={int(ptr[k + 1])}")
    nnz = int(ptr[-1])
    if nnz > len(indices) or nnz > len(data):
        raise FormatError(f"{what}: indptr[-1]={nnz}, but indices has {len(indices)} and data "
                          f"{len(data)} entries")
    return indptr, indices, data, nnz


def _is_identity(positions: np.ndarray, n: int) -> bool:
    """Whether ``positions`` is exactly 0, 1, ..., n-1 (then values need no gather)."""
    if len(positions) != n:
        return False
    if n == 0:
        return True
    return positions[0] == 0 and positions[-1] == n - 1 and (n < 2 or bool((positions[1:] > positions[:-1]).all()))


def _scatter_dense(
    shape: tuple[int, ...], dims: Sequence[np.ndarray], values: np.ndarray, sum_duplicates: bool
) -> np.ndarray:
    """A dense array with ``values`` at ``dims``; duplicates summed when asked."""
    out = np.zeros(shape, dtype=values.dtype)
    if sum_duplicates:
        if out.dtype.kind in "fc":
            out[tuple(dims)] = -0.0      # the sum's identity that keeps a stored -0.0 (0.0 + -0.0 is 0.0)
        np.add.at(out, tuple(dims), values)
    else:
        out[tuple(dims)] = values
    return out


def _valid_compressed(indptr: np.ndarray, indices: np.ndarray, num_major: int, num_minor: int) -> bool:
    """Whether CSR/CSC-style arrays are canonical (valid, sorted, no duplicates)."""
    from .levels import Compressed

    if indptr.ndim != 1 or indices.ndim != 1 or indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        return False
    try:
        Compressed().validate({"pos": indptr, "crd": indices}, num_major, num_minor, "")
    except (FormatError, IndexError):
        return False
    return True


def _check_level_buffers(fmt: Format, k: int, bufs: Any, name: str | None) -> dict[str, np.ndarray]:
    """Names and dtypes of one level's buffers; returns them as integer arrays (not copied)."""
    where = _where(name, fmt, k)
    if not isinstance(bufs, Mapping):
        raise FormatError(f"{where}: expected a mapping of buffers {fmt.levels[k].buffers}, got {type(bufs).__name__}")
    want = tuple(fmt.levels[k].buffers)
    if set(bufs) != set(want):
        missing = [b for b in want if b not in bufs]
        extra = [b for b in bufs if b not in want]
        raise FormatError(f"{where}: expected buffers {list(want)}, missing {missing}, unexpected {extra}")
    return {part: _index_array(bufs[part], f"{where}: {part}", bit_words=part == "bits") for part in want}


def _index_array(arr: Any, what: str, bit_words: bool = False) -> np.ndarray:
    """A 1-D integer index array, not copied (FormatError for floats, bools, other shapes).

    ``bit_words``: a bitmap's words, bit patterns: uint64 words are taken as the int64 words with the
    same bits (bit 63 included) instead of being refused past 2**63 - 1.
    """
    arr = np.asarray(arr)
    if arr.ndim != 1:
        raise FormatError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):  # [] is float64
        raise FormatError(f"{what} must have an integer dtype, got {arr.dtype}")
    if bit_words and arr.dtype == np.uint64:
        return arr.astype(_I64)   # the same 64 bits (numpy's unsigned-to-signed cast keeps them)
    if arr.dtype == np.uint64 and len(arr) and int(arr.max()) > 2**63 - 1:
        k = int(np.argmax(arr > 2**63 - 1))
        raise FormatError(f"{what}[{k}]={int(arr[k])} does not fit in int64")
    if arr.dtype.kind == "f" or arr.dtype == np.uint64:
        return arr.astype(_I64)  # the empty-list case, and uint64 that fits
    return arr


def _check_values(values: Any, name: str | None, copy: bool = True) -> np.ndarray:
    """The values array (a copy unless ``copy=False``): 1-D with a supported dtype."""
    vals = np.array(values) if copy else np.asarray(values)
    if vals.ndim != 1:
        raise FormatError(f"{_label(name)}: values must be a 1-D array, got shape {vals.shape}")
    return vals.astype(_check_dtype(vals.dtype, name), copy=False)


def _locate_error(
    err: FormatError, fmt: Format, k: int, parent: np.ndarray, level_coords: Sequence[np.ndarray], name: str | None
) -> FormatError:
    """Prefix a level's assemble error with the tensor and level, and name the parent by coordinates."""
    where = _where(name, fmt, k)
    p = getattr(err, "parent_position", None)
    if p is None:
        return FormatError(f"{where}: {err}")
    e = int(np.searchsorted(parent, p))
    place = _describe_parent(fmt, k, [int(c[e]) for c in level_coords[:k]])
    return FormatError(f"{where}: {place} {err.detail}")  # type: ignore[attr-defined]


def _describe_parent(fmt: Format, k: int, coords: Sequence[int]) -> str:
    """Words for the coordinates of levels 0..k-1, e.g. ``row 3, column block 1 (columns 4..7)``."""
    two_d = fmt.ndim == 2
    parts = []
    for e, c in zip(fmt.exprs[:k], coords):
        span = f"{c * e.factor}..{c * e.factor + e.factor - 1}"
        if two_d:
            dim = ("row", "column")[e.dim]
            words = {"id": f"{dim} {c}", "floordiv": f"{dim} block {c} ({dim}s {span})", "mod": f"{dim} offset {c}"}
        else:
            words = {"id": f"index {c} of dimension {e.dim}", "mod": f"offset {c} in dimension {e.dim}",
                     "floordiv": f"block {c} of dimension {e.dim} (indices {span})"}
        parts.append(words[e.op])
    return ", ".join(parts) if parts else "the tensor"
