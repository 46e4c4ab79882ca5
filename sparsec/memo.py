"""A small memo of values derived from an array, valid only for that very array.

Several call paths remember what they computed from an operand's buffer (a CPU call's chunk
rows from its pos array, a GPU launch's row statistics and split work list, a mask's block kinds,
a bitmap's per-row offsets) so that calling a kernel again with the same operand costs nothing.
The key names the buffer by something cheap (its address, length, torch's ``_version``), but an
address outlives its array: torch's caching allocator and numpy's allocator hand a freed buffer's
memory to the next array of the same size. So each entry also holds a weak reference to the array
it was computed from, and a hit counts only if that reference still points to the array asked
about. Weak, so that a memo never keeps a large operand alive.
"""

from __future__ import annotations

import weakref
from typing import Any


class OwnedMemo:
    """``key -> value`` entries, each valid only for the array (its *owner*) it was computed from.

    At most ``size`` entries; a full memo is cleared (the values are cheap to compute again, and an
    operand used in turn with a few others keeps its entry). ``owner`` may be None (nothing to
    check: the key says everything).
    """

    __slots__ = ("_entries", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[Any, tuple[Any, Any]] = {}

    def get(self, owner: Any, key: Any, default: Any = None) -> Any:
        """The value stored for ``key`` from this very ``owner``, else ``default`` (pass a sentinel
        where None is a value worth remembering)."""
        hit = self._entries.get(key)
        if hit is None or (owner is not None and (hit[0] is None or hit[0]() is not owner)):
            return default
        return hit[1]

    def put(self, owner: Any, key: Any, value: Any) -> Any:
        """Store ``value`` for ``key``, computed from ``owner``; returns ``value``."""
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key] = (None if owner is None else weakref.ref(owner), value)
        return value

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        """``(key, (weak reference or None, value))`` pairs (for tests and debugging)."""
        return self._entries.items()
