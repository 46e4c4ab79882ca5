"""The level protocol: what every level type (a storage plug-in) must answer.

A *level* stores one coordinate of a tensor's nonzeros in level space. A format is
an ordered list of levels plus a map from tensor dimensions to levels (see
:mod:`sparsec.formats`). The compiler and the runtime never branch on a level's
name; they ask the level object:

* static properties: which buffers it owns (``pos``, ``crd``), whether it can
  *locate* a coordinate in O(1) (dense can, compressed cannot), whether it covers
  every coordinate of its range (``is_full``), and ``unique``/``ordered``;
* runtime hooks (numpy, vectorized): :meth:`Level.assemble` builds its buffers from
  sorted coordinates, :meth:`Level.expand` enumerates stored entries, and
  :meth:`Level.validate` checks buffers a user handed in;
* compiler hooks (loop IR): how to iterate its positions under a parent position,
  how to locate a coordinate.

A new level type is a new file in this package that subclasses :class:`Level` and
registers itself in :data:`LEVEL_TYPES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Mapping, Protocol

import numpy as np

if TYPE_CHECKING:  # the compiler hooks build loop IR
    from ..ir.loop_ir import LExpr


class LevelCodegen(Protocol):
    """What the sparsifier gives a level when asking it for loop IR."""

    def buffer(self, part: str) -> str:
        """Kernel buffer name of this level's ``part`` (``pos``, ``crd``, ...)."""

    def load_index(self, buffer: str, index: "LExpr") -> "LExpr":
        """An ``index``-typed load of ``buffer[index]``."""

    def size(self) -> "LExpr":
        """The level's size (number of coordinates under one parent)."""

#: level-type keyword -> class; filled by each level module on import.
#: the largest block factor a format (``floordiv`` / ``mod``, N:M's ``m``) or a schedule (``split``, ``pos``'s
#: segment) takes: Triton kernels compute loop indices in int32
MAX_FACTOR = 2**31 - 1

LEVEL_TYPES: dict[str, type["Level"]] = {}


def register(cls: type["Level"]) -> type["Level"]:
    """Class decorator adding a level type to :data:`LEVEL_TYPES`."""
    LEVEL_TYPES[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class Level:
    """Base of all level types. Instances are immutable, hashable values."""

    kind: ClassVar[str] = "abstract"
    #: names of the index buffers this level owns, in a fixed order.
    buffers: ClassVar[tuple[str, ...]] = ()
    #: True when every coordinate of the level's range is stored (dense).
    is_full: ClassVar[bool] = False
    #: True when a coordinate can be found in O(1) without searching.
    can_locate: ClassVar[bool] = False
    #: True when every parent position has exactly one child (no loop is needed).
    single_child: ClassVar[bool] = False
    #: buffer part holding prefix sums of children per parent (splits work evenly by nonzeros), if any.
    balance_part: ClassVar[str | None] = None
    #: False when a position's coordinate is not stored (bitmaps): loops then visit every
    #: coordinate and ask :meth:`present`.
    positions_iterable: ClassVar[bool] = True

    def num_positions(self, buffers: Mapping[str, np.ndarray], num_parents: int, size: int) -> int:
        """Positions the level holds (without validating): ``len(crd)``, or parents x size if it has none."""
        return len(buffers["crd"]) if "crd" in buffers else num_parents * size

    def buffer_width(self, part: str, pos_width: int, crd_width: int) -> int:
        """Bit width of buffer ``part``: ``pos`` and ``crd`` follow the format's widths."""
        return pos_width if part == "pos" else crd_width if part == "crd" else 64

    @property
    def unique(self) -> bool:
        """Whether each coordinate appears at most once under one parent position."""
        return True

    @property
    def ordered(self) -> bool:
        """Whether coordinates under one parent position are stored sorted."""
        return True

    def mlir(self) -> str:
        """The level type as MLIR sparse_tensor encoding text (``compressed(nonunique)``)."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.mlir()

    # -- compiler hooks (loop IR) -----------------------------------------------
    def position_range(self, cg: LevelCodegen, parent: "LExpr",
                       parent_segment_end: "LExpr | None") -> tuple["LExpr", "LExpr"]:
        """Loop IR for the positions ``[lo, hi)`` of the children of parent position ``parent``.

        ``parent_segment_end`` is set when the parent level is non-unique: then the
        parent "position" is the first of a run ``[parent, parent_segment_end)`` of
        equal coordinates, which a singleton child iterates.
        """
        raise NotImplementedError(f"level type {self.mlir()} cannot be iterated")

    def coordinate(self, cg: LevelCodegen, position: "LExpr") -> "LExpr":
        """Loop IR for the coordinate stored at ``position`` (default: ``crd[position]``)."""
        return cg.load_index(cg.buffer("crd"), position)

    # -- runtime hooks (numpy) -------------------------------------------------
    def assemble(
        self,
        parent_pos: np.ndarray,
        coords: np.ndarray,
        num_parents: int,
        size: int,
        index_dtype: np.dtype,
    ) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        """Build this level's buffers for entries given in level-lexicographic order.

        ``parent_pos[e]`` is entry e's position in the parent level (0 for the first
        level, where ``num_parents`` is 1) and ``coords[e]`` its coordinate in this
        level, ``0 <= coords[e] < size``. Entries are sorted by (parent_pos, coords)
        and the full coordinate tuples are unique.

        Returns ``(buffers, child_pos, num_positions)``: the level's buffers by name,
        each entry's position in this level, and how many positions the level has
        (the length the next level, or the values array, indexes into).
        """
        raise NotImplementedError

    def expand(
        self,
        buffers: Mapping[str, np.ndarray],
        parent_pos: np.ndarray,
        size: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Enumerate the stored entries under each parent position.

        Returns ``(parent_index, coords, positions)``: for each stored child entry,
        the index into ``parent_pos`` of its parent, its coordinate, and its position
        in this level. Children of ``parent_pos[0]`` come first, in stored order.
        """
        raise NotImplementedError

    def validate(
        self,
        buffers: Mapping[str, np.ndarray],
        num_parents: int,
        size: int,
        where: str,
    ) -> int:
        """Check buffers handed in by a user; return the number of positions.

        ``where`` names the tensor and level for error messages (``"tensor 'A',
        level 1 (compressed)"``). Raises :class:`sparsec.FormatError` naming the
        first bad position.
        """
        raise NotImplementedError


def property_suffix(unique: bool, ordered: bool) -> str:
    """MLIR property list for a level, e.g. ``(nonunique, nonordered)`` or ``""``."""
    props = [p for p, on in (("nonunique", not unique), ("nonordered", not ordered)) if on]
    return f"({', '.join(props)})" if props else ""
