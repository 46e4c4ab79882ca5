"""Memory: compiling many distinct kernels in one process keeps a bounded footprint.

Every in-memory cache of compiled kernels is bounded (:mod:`sparsec.kernel_cache`,
``$SPARSEC_KERNEL_CACHE_SIZE``); evicting drops only the cache's reference, so a
kernel the caller still holds keeps working and the JIT code of the others is
unloaded. The compile path itself must not leak either: llvmlite's
``ModulePassManager.close()`` does not free the O3 pipeline (see
``sparsec.backends.cpu.jit._dispose_pass_manager``), which cost ~100 KiB per kernel.

Measured on the 2-core CI VM (1000 distinct 0-d kernels, cache size 32, RSS over
the second half): ~11 KiB per kernel now -- what llvmlite keeps of each emptied
JIT library, which it cannot remove -- against ~96 KiB with the pipeline leaked
and ~56 KiB with unbounded caches. The bound below sits between.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import numpy as np
import pytest

import sparsec as sc
from sparsec import api
from sparsec.backends.cpu import cache as cpu_cache
from sparsec.kernel_cache import LRUCache, kernel_cache_size

REPO = Path(sc.__file__).resolve().parent.parent
#: kernels compiled by the RSS test (``SPARSEC_MEMORY_TEST_KERNELS`` overrides; long runs take ~25 ms each)
KERNELS = int(os.environ.get("SPARSEC_MEMORY_TEST_KERNELS", "1000"))
CACHE_SIZE = 32
#: allowed RSS growth per compiled kernel over the second half of the compiles
MAX_KIB_PER_KERNEL = 32

_COMPILE_MANY = textwrap.dedent("""
    import gc, json, os, sys
    import numpy as np
    import sparsec as sc
    from sparsec.backends import cpu
    from sparsec.backends.cpu.kernel import Loaded

    def rss_kib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024

    n = int(sys.argv[1])
    x = np.array(3.0)
    held, marks = [], []
    for k in range(n):
        kern = sc.compile(f"y[] = x[] * {k}.5 + 1")          # a distinct constant: distinct IR
        assert float(kern(x=x)) == 3.0 * (k + 0.5) + 1
        if k < 3:
            held.append((k, kern))                            # evicted from every cache long before the end
        if (k + 1) % (n // 10) == 0:
            gc.collect()
            marks.append((k + 1, rss_kib()))
    held_ok = all(float(kern(x=x)) == 3.0 * (k + 0.5) + 1 for k, kern in held)
    gc.collect()
    live = sum(type(o) is Loaded for o in gc.get_objects())
    print(json.dumps({"marks": marks, "held_ok": held_ok, "live": live, "cached": len(cpu._MEMORY),
                      "stats": cpu.stats.snapshot()}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RSS from /proc/self/statm")
def test_compiling_many_distinct_kernels_has_a_bounded_footprint() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["SPARSEC_CACHE_DIR"] = ""                   # no disk cache: every kernel goes through LLVM
    env["SPARSEC_KERNEL_CACHE_SIZE"] = str(CACHE_SIZE)
    env.pop("SPARSEC_CPU_CACHE_SIZE", None)
    r = subprocess.run([sys.executable, "-c", _COMPILE_MANY, str(KERNELS)], capture_output=True, text=True,
                       timeout=600, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["stats"]["compiles"] == KERNELS, out["stats"]
    assert out["cached"] == CACHE_SIZE
    assert out["stats"]["evictions"] == KERNELS - CACHE_SIZE
    assert out["held_ok"], "a kernel the caller holds must keep working after its cache entry is evicted"
    # loaded JIT libraries alive: the cache's, the three held kernels' and at most a few not yet collected
    assert out["live"] <= CACHE_SIZE + 3 + 2, out["live"]
    marks = out["marks"]
    (k0, rss0), (k1, rss1) = marks[len(marks) // 2 - 1], marks[-1]
    per_kernel = (rss1 - rss0) / (k1 - k0)
    assert per_kernel <= MAX_KIB_PER_KERNEL, (
        f"RSS grew {rss1 - rss0} KiB over kernels {k0}..{k1} ({per_kernel:.1f} KiB per kernel, "
        f"bound {MAX_KIB_PER_KERNEL}): {marks}")


def test_einsum_cache_is_bounded_and_releases_evicted_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "_EINSUM_CACHE", LRUCache(capacity=3))
    x = np.arange(4.0)
    A = sc.Tensor.from_numpy(np.eye(4), "csr")
    calls = [("ij,j->i", (A, x)), ("ij->i", (A,)), ("ij->j", (A,)), ("i->", (x,)), ("i,i->", (x, x)),
             ("ij,j->i", (A, x))]
    refs = []
    for sub, ops in calls:
        got = sc.einsum(sub, *ops)
        np.testing.assert_allclose(got, np.einsum(sub, *[o.to_numpy() if isinstance(o, sc.Tensor) else o
                                                       for o in ops]))
        refs.append({id(k): weakref.ref(k) for k in api._EINSUM_CACHE.values()})
    assert len(api._EINSUM_CACHE) == 3 and api._EINSUM_CACHE.evictions == 3
    gc.collect()
    alive = {id(k) for k in api._EINSUM_CACHE.values()}
    seen = {i: r for step in refs for i, r in step.items()}
    dead = [i for i, r in seen.items() if r() is None]
    assert len(seen) == 6 and len(dead) == 3 and not alive & set(dead)


def test_triton_module_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("triton")
    from sparsec.backends.triton import launch

    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(launch, "_MODULES", LRUCache(capacity=2, on_evict=launch._forget))
    fns = [launch.load_kernel("memtest", f"def f():\n    return {k}\n", "f") for k in range(5)]
    assert len(launch._MODULES) == 2
    names = [fn.__module__ for fn in fns]
    assert [n in sys.modules for n in names] == [False, False, False, True, True]
    assert [fn() for fn in fns] == [0, 1, 2, 3, 4]          # held functions keep working
    for n in names[3:]:
        sys.modules.pop(n, None)


def test_cache_size_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARSEC_KERNEL_CACHE_SIZE", raising=False)
    monkeypatch.delenv("SPARSEC_CPU_CACHE_SIZE", raising=False)
    assert kernel_cache_size() == 256 and cpu_cache._capacity() == 256
    for value, want in (("8", 8), ("0", 1), ("-3", 1), ("lots", 256), ("", 256)):
        monkeypatch.setenv("SPARSEC_KERNEL_CACHE_SIZE", value)
        assert kernel_cache_size() == want, value
        assert cpu_cache._capacity() == want
    monkeypatch.setenv("SPARSEC_KERNEL_CACHE_SIZE", "8")
    monkeypatch.setenv("SPARSEC_CPU_CACHE_SIZE", "5")          # the CPU backend's own setting wins there
    assert cpu_cache._capacity() == 5 and kernel_cache_size() == 8


def test_lru_cache_order_and_eviction_callback() -> None:
    evicted = []
    c = LRUCache(capacity=2, on_evict=lambda k, v: evicted.append((k, v)))
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1            # "a" is now the most recent
    c.put("c", 3)
    assert evicted == [("b", 2)] and "a" in c and "c" in c and c.get("b") is None
    c.clear()
    assert len(c) == 0 and sorted(evicted) == [("a", 1), ("b", 2), ("c", 3)]
