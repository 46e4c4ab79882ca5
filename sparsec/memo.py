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
    check: the key says everything), or a tuple of arrays when a value comes from several (each
    held weakly, all of them checked).
    """

    __slots__ = ("_entries", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[Any, tuple[Any, Any]] = {}

    def get(self, owner: Any, key: Any, default: Any = None) -> Any:
        """The value stored for ``key`` from this very ``owner``, else ``default`` (pass a sentinel
        where None is a value worth remembering)."""
        hit = self._entries.get(key)
        if hit is None or (owner is not None and not _same(hit[0], owner)):
            return default
        return hit[1]

    def put(self, owner: Any, key: Any, value: Any) -> Any:
        """Store ``value`` for ``key``, computed from ``owner``; returns ``value``."""
        if len(self._entries) >= self.size:
            self._entries.clear()
        refs = None if owner is None else tuple(map(weakref.ref, owner)) if type(owner) is tuple else weakref.ref(owner)
        self._entries[key] = (refs, value)
        return value

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        """``(key, (weak reference(s) or None, value))`` pairs (for tests and debugging)."""
        return self._entries.items()

    def values(self) -> list:
        """The stored values (for tests and debugging)."""
        return [value for _, value in self._entries.values()]


def _same(refs: Any, owner: Any) -> bool:
    """Whether the weak reference(s) ``refs`` of a stored entry point to ``owner`` (an array or a tuple)."""
    if type(owner) is not tuple:
        return type(refs) is weakref.ref and refs() is owner
    return type(refs) is tuple and len(refs) == len(owner) and all(r() is o for r, o in zip(refs, owner))


def tensor_version(t: Any) -> Any:
    """torch's in-place write counter of ``t`` (0 for an object without one).

    An inference tensor (made under ``torch.inference_mode()``) keeps no counter: it gets a new object at
    every call, so a memo key holding it never matches and nothing memoized for it is reused.
    """
    try:
        return t._version
    except AttributeError:
        return 0
    except RuntimeError:
        return object()
