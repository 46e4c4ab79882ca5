"""Concurrency at the API level: compiling and running kernels from many threads and processes.

tests/backends/test_cpu.py covers the CPU backend's own pieces (one loop-IR kernel
compiled from 8 threads, atomic disk writes of one entry, a damaged cache file
read through ``CPUBackend.compile``). Here the same properties are checked
through ``sc.compile`` / ``sc.einsum`` / ``Kernel.__call__``:

* 8 threads compile *distinct* kernels at once, and the *same* kernel at once
  (one LLVM compile, every thread gets a working kernel);
* 8 threads call one compiled kernel concurrently on different inputs: the fast
  path (dense output, memoized operand buffers), the general path with sparse
  outputs (symbolic + numeric kernels), and parallel loops (the thread team is
  shared: a caller that finds it busy runs its chunks itself);
* 8 threads run ``sc.einsum`` (its kernel cache and scipy view cache) at once;
* several *processes* compile the same kernels into one ``SPARSEC_CACHE_DIR``;
* a corrupt or truncated cache file, and an unusable cache directory, give a
  ``RuntimeWarning`` and a recompiled, correct kernel.

Every test uses its own cache directory, 8 threads and a barrier so that the
threads really start together.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc
from sparsec import runtime
from sparsec.backends import cpu

REPO = Path(sc.__file__).resolve().parent.parent
THREADS = 8
SEED = 4242


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty private disk cache and an empty in-memory kernel cache."""
    d = tmp_path / "cache"
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(d))
    cpu.clear_memory_cache()
    yield d
    cpu.clear_memory_cache()


def _together(fn: Callable[[int], Any], n: int = THREADS) -> list[Any]:
    """Run ``fn(0..n-1)`` on n threads released by one barrier; re-raise the first error."""
    barrier = threading.Barrier(n)

    def work(k: int) -> Any:
        barrier.wait()
        return fn(k)

    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(work, range(n)))


def _csr(seed: int, m: int = 40, n: int = 30, density: float = 0.2) -> sp.csr_matrix:
    return sp.random(m, n, density=density, format="csr", random_state=seed)


# ------------------------------------------------------------------------------------ compiling
def test_distinct_kernels_compiled_from_eight_threads(cache_dir: Path) -> None:
    before = cpu.stats.snapshot()
    formats = ("csr", "csc", "coo", "dcsr", "dense", "dcsc", "bsr(2,2)", "ell")

    def work(k: int) -> bool:
        kern = sc.compile(f"y[i] = A[i,j] * x[j] * {k + 1}.5", formats={"A": formats[k]}, name=f"distinct{k}")
        A = _csr(k)
        x = np.random.default_rng(k).uniform(-1, 1, 30)
        np.testing.assert_allclose(kern(A=sc.Tensor.from_scipy(A).to(formats[k]), x=x), (A @ x) * (k + 1.5),
                                   rtol=1e-12, atol=1e-12)
        return True

    assert all(_together(work))
    after = cpu.stats.snapshot()
    assert after["compiles"] - before["compiles"] >= THREADS
    assert len(list((cache_dir / "cpu").glob("*.bin"))) >= THREADS
    assert not list((cache_dir / "cpu").glob("*.tmp"))


def test_same_kernel_compiled_from_eight_threads(cache_dir: Path) -> None:
    before = cpu.stats.snapshot()
    text = "C[i,j] = A[i,j] * B[i,j] + A[i,j]"     # a sparse output: symbolic and numeric kernels

    def work(k: int) -> sc.Kernel:
        kern = sc.compile(text, formats={"A": "csr", "B": "csr"}, out_format="csr", name="same_kernel")
        A, B = _csr(2 * k), _csr(2 * k + 1)
        np.testing.assert_allclose(kern(A=A, B=B).to_numpy(), (A.multiply(B) + A).toarray(), rtol=1e-12)
        return kern

    kernels = _together(work)
    n = len(kernels[0]._compiled)            # loop-IR kernels of the statement (symbolic and/or numeric)
    assert n >= 1
    after = cpu.stats.snapshot()
    # one LLVM compile per loop-IR kernel; every other thread hit the memory cache
    assert after["compiles"] - before["compiles"] == n, (before, after)
    assert after["memory_hits"] - before["memory_hits"] == n * (THREADS - 1)


# ------------------------------------------------------------------------------------ calling
def test_one_kernel_called_from_eight_threads_fast_path(cache_dir: Path) -> None:
    kern = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"})
    mats = [sc.Tensor.from_scipy(_csr(k), name="A") for k in range(THREADS)]
    xs = [np.random.default_rng(k).uniform(-1, 1, 30) for k in range(THREADS)]
    want = [m.to_scipy() @ x for m, x in zip(mats, xs)]

    def work(k: int) -> bool:
        for rep in range(200):               # interleave calls with different operands
            j = (k + rep) % THREADS
            np.testing.assert_allclose(kern(A=mats[j], x=xs[j]), want[j], rtol=1e-12)
        return True

    assert kern._fast is not None, "this kernel should use the fast call path"
    assert all(_together(work))


def test_one_kernel_called_from_eight_threads_sparse_output(cache_dir: Path) -> None:
    kern = sc.compile("C[i,k] = A[i,j] * B[j,k]", formats={"A": "csr", "B": "csr"}, out_format="csr")
    pairs = [(_csr(k, 30, 30), _csr(k + 100, 30, 30)) for k in range(THREADS)]

    def work(k: int) -> bool:
        for rep in range(10):
            A, B = pairs[(k + rep) % THREADS]
            C = kern(A=A, B=B)
            C.validate()
            np.testing.assert_allclose(C.to_numpy(), (A @ B).toarray(), rtol=1e-12, atol=1e-14)
        return True

    assert all(_together(work))


def test_parallel_loops_from_eight_threads_share_the_team(cache_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call splits its loop into chunks (threshold 0): callers that find the team busy run serially."""
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 0)
    sc.set_num_threads(4)
    try:
        kern = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"})
        kern_general = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, out_format="coo")
        A = _csr(7, 400, 300, 0.05)
        x = np.random.default_rng(7).uniform(-1, 1, 300)
        want = A @ x

        def work(k: int) -> bool:
            for _ in range(30):
                np.testing.assert_allclose(kern(A=A, x=x * (k + 1)), want * (k + 1), rtol=1e-12)
                np.testing.assert_allclose(kern_general(A=A, x=x).to_numpy(), want, rtol=1e-12)
            return True

        assert all(_together(work))
    finally:
        sc.set_num_threads(None)


def test_einsum_from_eight_threads(cache_dir: Path) -> None:
    """sc.einsum's kernel cache and scipy-view cache under concurrent first use and reuse."""
    mats = [_csr(k) for k in range(4)]
    x = np.random.default_rng(1).uniform(-1, 1, 30)
    B = np.random.default_rng(2).uniform(-1, 1, (30, 5))

    def work(k: int) -> bool:
        for rep in range(40):
            m = mats[(k + rep) % len(mats)]
            np.testing.assert_allclose(sc.einsum("ij,j->i", m, x), m @ x, rtol=1e-12)
            np.testing.assert_allclose(sc.einsum("ij,jk->ik", m, B), m @ B, rtol=1e-12)
            S = sc.einsum("ij,ij->ij", m, m, out_format="csr")
            np.testing.assert_allclose(S.to_numpy(), m.multiply(m).toarray(), rtol=1e-12)
        return True

    assert all(_together(work))


def test_interp_target_from_eight_threads(cache_dir: Path) -> None:
    kern = sc.compile("y[i] = max[j](A[i,j]) + x[i]", formats={"A": "csr"}, target="interp")

    def work(k: int) -> bool:
        A = _csr(k, 8, 6, 0.4)
        x = np.arange(8.0) * k
        np.testing.assert_allclose(kern(A=A, x=x), A.toarray().max(axis=1) + x, rtol=1e-12)
        return True

    assert all(_together(work))


# ------------------------------------------------------------------------------------ processes
_WRITER = textwrap.dedent("""
    import json, sys
    import numpy as np, scipy.sparse as sp
    import sparsec as sc
    from sparsec.backends import cpu
    A = sp.random(40, 30, density=0.2, format="csr", random_state=int(sys.argv[1]))
    x = np.ones(30)
    out = []
    for c in range(4):   # the same four kernels in every process
        k = sc.compile(f"y[i] = A[i,j] * x[j] + {c}", formats={"A": "csr"}, name="proc")
        out.append(float(np.abs(k(A=A, x=x) - (A @ x + c)).max()))
    print(json.dumps({"err": max(out), "stats": cpu.stats.snapshot()}))
""")


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["SPARSEC_CACHE_DIR"] = str(cache)
    return env


def test_processes_writing_one_cache_dir(cache_dir: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(k)], env=_env(cache_dir), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in range(3)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["err"] < 1e-12 for r in results), results
    files = list((cache_dir / "cpu").glob("*.bin"))
    assert len(files) == 4, files
    assert not [p for p in (cache_dir / "cpu").iterdir() if p.suffix == ".tmp"]
    # every entry is valid: a fresh process loads all four from disk without compiling
    p = subprocess.run([sys.executable, "-c", _WRITER, "9"], env=_env(cache_dir), capture_output=True, text=True,
                       timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert last["stats"]["compiles"] == 0 and last["stats"]["disk_hits"] == 4, last
    assert "RuntimeWarning" not in p.stderr


# ------------------------------------------------------------------------------------ damaged caches
@pytest.mark.parametrize("damage", ["truncate", "zero_bytes", "flip_payload", "wrong_key"])
def test_damaged_cache_file_through_the_api(cache_dir: Path, damage: str) -> None:
    text = f"y[i] = A[i,j] * x[j] * 3 + 1  # {damage}"
    A = _csr(3)
    x = np.linspace(-1, 1, 30)
    k = sc.compile(text, formats={"A": "csr"})
    want = A @ x * 3 + 1
    np.testing.assert_allclose(k(A=A, x=x), want, rtol=1e-12)
    files = sorted((cache_dir / "cpu").glob("*.bin"))
    assert len(files) == 1
    data = bytearray(files[0].read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "zero_bytes":
        data = bytearray()
    elif damage == "flip_payload":
        data[-50] ^= 0xFF
    else:  # a valid file of another kernel under this kernel's name
        other = sc.compile("y[i] = A[i,j] * x[j] * 5", formats={"A": "csr"})
        other_file = [p for p in (cache_dir / "cpu").glob("*.bin") if p != files[0]][0]
        data = bytearray(other_file.read_bytes())
        del other
    files[0].write_bytes(bytes(data))
    cpu.clear_memory_cache()
    with pytest.warns(RuntimeWarning, match=files[0].name):
        k2 = sc.compile(text, formats={"A": "csr"})
    np.testing.assert_allclose(k2(A=A, x=x), want, rtol=1e-12)
    # the entry was rewritten: next time it is a clean disk hit
    cpu.clear_memory_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        k3 = sc.compile(text, formats={"A": "csr"})
    np.testing.assert_allclose(k3(A=A, x=x), want, rtol=1e-12)


def test_damaged_file_read_by_eight_threads(cache_dir: Path) -> None:
    """Threads that all find the same corrupt entry: one recompiles, none crashes, all are right."""
    text = "y[i] = A[i,j] * x[j] - 7"
    A = _csr(5)
    x = np.ones(30)
    sc.compile(text, formats={"A": "csr"})
    (path,) = (cache_dir / "cpu").glob("*.bin")
    path.write_bytes(path.read_bytes()[:200])
    cpu.clear_memory_cache()
    before = cpu.stats.snapshot()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = _together(lambda k: sc.compile(text, formats={"A": "csr"})(A=A, x=x))
    for r in results:
        np.testing.assert_allclose(r, A @ x - 7, rtol=1e-12)
    after = cpu.stats.snapshot()
    assert after["compiles"] - before["compiles"] == 1
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)], "the corrupt file should warn"


def test_unusable_cache_directory_warns_and_still_compiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(blocker / "cache"))   # mkdir fails: a file is in the way
    monkeypatch.setattr(cpu.cache, "_WRITE_WARNED", False)
    cpu.clear_memory_cache()
    with pytest.warns(RuntimeWarning, match="cannot write the kernel cache"):
        k = sc.compile("y[i] = A[i,j] * x[j] + 0.25", formats={"A": "csr"})
    A = _csr(11)
    np.testing.assert_allclose(k(A=A, x=np.ones(30)), A @ np.ones(30) + 0.25, rtol=1e-12)
    cpu.clear_memory_cache()
