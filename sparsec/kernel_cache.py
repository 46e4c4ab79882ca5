"""Bounded in-memory caches of compiled kernels.

Every process-wide cache that keeps compiled kernels alive is bounded, so a
program that compiles thousands of distinct kernels (einsum over generated
subscripts, a sweep over constants or schedules) keeps a bounded footprint:

* ``sc.einsum``'s kernel cache (per subscripts, operand formats, dtype, target);
* the Triton backend's einsum cache and its imported source modules;
* the CPU backend's loaded object code (:class:`sparsec.backends.cpu.cache.LRU`).

``$SPARSEC_KERNEL_CACHE_SIZE`` (default 256) is the number of entries each of
them keeps; ``$SPARSEC_CPU_CACHE_SIZE``, when set, overrides it for the CPU
backend's cache. The least recently used entry is evicted first. Evicting only
drops the cache's reference: a kernel that user code (or another cache) still
holds keeps working, and its JIT code is unloaded once nothing refers to it.
An evicted kernel that is asked for again is recompiled (or read from the disk
cache).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

DEFAULT_SIZE = 256


def kernel_cache_size(env: str = "SPARSEC_KERNEL_CACHE_SIZE") -> int:
    """Entries an in-memory kernel cache keeps: ``$env`` as an integer (at least 1), else 256."""
    try:
        return max(1, int(os.environ.get(env, "") or DEFAULT_SIZE))
    except ValueError:
        return DEFAULT_SIZE


class LRUCache:
    """A thread-safe mapping of at most ``capacity`` entries, least recently used evicted first.

    ``capacity=None`` reads :func:`kernel_cache_size` at construction. ``on_evict``
    is called with each evicted (key, value), outside the lock.
    """

    def __init__(self, capacity: int | None = None, on_evict: Callable[[Hashable, Any], None] | None = None):
        self.capacity = capacity if capacity is not None else kernel_cache_size()
        self._d: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._on_evict = on_evict
        self.evictions = 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            try:
                self._d.move_to_end(key)
            except KeyError:
                return default
            return self._d[key]

    def put(self, key: Hashable, value: Any) -> None:
        evicted = []
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.capacity:
                evicted.append(self._d.popitem(last=False))
            self.evictions += len(evicted)
        if self._on_evict is not None:
            for k, v in evicted:
                self._on_evict(k, v)
        # the last references to evicted values go here, outside the lock

    def clear(self) -> None:
        with self._lock:
            items = list(self._d.items())
            self._d.clear()
        if self._on_evict is not None:
            for k, v in items:
                self._on_evict(k, v)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._d

    def __len__(self) -> int:
        return len(self._d)

    def values(self) -> list[Any]:
        with self._lock:
            return list(self._d.values())
