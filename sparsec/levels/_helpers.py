"""Vectorized numpy helpers shared by the sparse level types (assembly and validation)."""

from __future__ import annotations

import numpy as np

from ..errors import FormatError

_I64 = np.dtype(np.int64)


def located_error(detail: str, parent_position: int) -> FormatError:
    """A FormatError about the children of one parent position.

    The tensor layer turns ``parent_position`` into coordinates (``row 3, column
    block 1``) and prefixes the tensor and level; ``detail`` is the rest of the sentence.
    """
    err = FormatError(f"parent position {parent_position} {detail}")
    err.parent_position = int(parent_position)  # type: ignore[attr-defined]
    err.detail = detail  # type: ignore[attr-defined]
    return err


def run_starts(parent_pos: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Mask of entries whose (parent, coordinate) pair differs from the previous entry's."""
    new = np.ones(len(coords), dtype=bool)
    if len(coords) > 1:
        np.not_equal(coords[1:], coords[:-1], out=new[1:])
        new[1:] |= parent_pos[1:] != parent_pos[:-1]
    return new


def distinct_children(
    parent_pos: np.ndarray, coords: np.ndarray, unique: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collapse sorted entries sharing (parent, coordinate) when the level is unique.

    Returns ``(child_index, seg_parent, seg_coords)``: each entry's index into the
    distinct children, and the parent and coordinate of every distinct child. On a
    unique level, entries that share a prefix (BSR's block coordinates, shared by
    every entry of a block) are one stored child; on a non-unique level (COO) every
    entry is its own child.
    """
    n = len(coords)
    if unique and n > 1:
        new = run_starts(parent_pos, coords)
        if not new.all():
            return np.cumsum(new) - 1, parent_pos[new], coords[new]
    return np.arange(n, dtype=_I64), parent_pos, coords


def segment_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expand segments [lo[k], hi[k]) into ``(segment_index, position)`` per element."""
    lo = lo.astype(_I64, copy=False)
    counts = hi.astype(_I64, copy=False) - lo
    total = int(counts.sum())
    seg = np.repeat(np.arange(len(lo), dtype=_I64), counts)
    if len(lo) and (len(lo) == 1 or np.array_equal(lo[1:], hi[:-1])):
        return seg, np.arange(lo[0], lo[0] + total, dtype=_I64)  # contiguous: one range
    starts = np.cumsum(counts) - counts
    return seg, np.arange(total, dtype=_I64) + np.repeat(lo - starts, counts)


def check_coords_in_range(crd: np.ndarray, size: int, where: str, positions: np.ndarray | None = None) -> None:
    """Raise naming the first stored coordinate outside [0, size)."""
    vals = crd if positions is None else crd[positions]
    bad = (vals < 0) | (vals >= size)
    if bad.any():
        k = int(np.argmax(bad))
        p = k if positions is None else int(positions[k])
        raise FormatError(f"{where}: crd[{p}]={int(crd[p])} is out of range [0, {size})")


def check_segment_order(
    crd: np.ndarray, positions: np.ndarray, same_segment: np.ndarray, unique: bool, ordered: bool, where: str
) -> None:
    """Check ordering / uniqueness of ``crd[positions]`` where consecutive elements share a segment.

    ``same_segment[k]`` says whether element k+1 is in the same segment as element k.
    """
    if len(positions) < 2 or not (unique or ordered):
        return
    vals = crd[positions]
    if ordered:
        step_bad = (vals[1:] <= vals[:-1]) if unique else (vals[1:] < vals[:-1])
        bad = step_bad & same_segment
        if bad.any():
            k = int(np.argmax(bad))
            a, b = int(positions[k]), int(positions[k + 1])
            what = "strictly increasing" if unique else "nondecreasing"
            raise FormatError(
                f"{where}: crd is not {what} within a segment: crd[{a}]={int(crd[a])}, crd[{b}]={int(crd[b])}"
            )
        return
    # unique but unordered: sort (segment, coordinate) pairs and look for equal neighbours
    seg = np.concatenate(([0], np.cumsum(~same_segment)))
    order = np.lexsort((vals, seg))
    dup = (vals[order][1:] == vals[order][:-1]) & (seg[order][1:] == seg[order][:-1])
    if dup.any():
        k = int(np.argmax(dup))
        a, b = sorted((int(positions[order[k]]), int(positions[order[k + 1]])))
        raise FormatError(f"{where}: duplicate coordinate in a segment: crd[{a}]=crd[{b}]={int(crd[a])}")


def check_pos_array(pos: np.ndarray, expected_len: int, where: str) -> None:
    """Length, pos[0] == 0 and monotonicity of a compressed level's ``pos``."""
    if len(pos) != expected_len:
        raise FormatError(
            f"{where}: pos has {len(pos)} entries, expected {expected_len} (number of parent positions + 1)"
        )
    if pos[0] != 0:
        raise FormatError(f"{where}: pos[0]={int(pos[0])}, expected 0")
    dec = pos[1:] < pos[:-1]
    if dec.any():
        k = int(np.argmax(dec))
        raise FormatError(f"{where}: pos is not monotone: pos[{k}]={int(pos[k])} > pos[{k + 1}]={int(pos[k + 1])}")


# -- the level -----------------------------------------------------------------------
