"""Long-running / many-call behaviour (probe/longhunt/): leaks, retention, cache eviction, fork. The bugs it found are fixed; their tests assert the right behaviour."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import tracemalloc
import weakref

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))


def _run_script(code: str, tmp_path, timeout: float = 50, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ, SPARSEC_CACHE_DIR=str(tmp_path / "sub"), **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=e, capture_output=True, text=True,
                          timeout=timeout)


def _traced_growth_per_call(f, warm: int = 200, n: int = 1500) -> float:
    for _ in range(warm):
        f()
    gc.collect()
    tracemalloc.start()
    try:
        s0 = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            f()
        gc.collect()
        s1 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (s1 - s0) / n


# ------------------------------------------------------------------------------------------- fork
_FORK = """
    import os, signal, sys
    import numpy as np, scipy.sparse as sp
    import sparsec as sc
    sc.set_num_threads(2)
    kind = {kind!r}
    rows = 2000 if kind == "spgemm" else 20000            # enough work for a parallel call
    A = sp.random(rows, 2000, density=0.01, format="csr", random_state=1)
    B = np.ones((2000, 16))
    if kind == "spgemm":
        k = sc.compile("C[i,j] = A[i,k]*B[k,j]", formats={{"A": "csr", "B": "csr", "C": "csr"}}, dtype="float64")
        work = lambda: np.allclose(k(A=A, B=A).to_numpy(), (A @ A).toarray())
    elif kind == "spmm":
        k = sc.compile("C[i,j] = A[i,k]*B[k,j]", formats={{"A": "csr"}}, dtype="float64")
        work = lambda: np.allclose(k(A=A, B=B), A @ B)
    else:
        k = sc.compile("y[i] = A[i,j]*x[j]", formats={{"A": "csr"}}, dtype="float64")
        x = np.ones(2000)
        work = lambda: np.allclose(k(A=A, x=x), A @ x)
    assert work() and work()               # the parent's thread team is started
    pid = os.fork()
    if pid == 0:
        signal.alarm(5)                    # a deadlocked child dies of SIGALRM
        os._exit(0 if work() and work() else 3)
    _, status = os.waitpid(pid, 0)
    print("child", status)
"""


def test_fork_child_spgemm_does_not_deadlock(tmp_path):
    r = _run_script(_FORK.format(kind="spgemm"), tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "child 0" in r.stdout, r.stdout      # 14 = killed by SIGALRM (deadlock)


def test_fork_child_python_team_spmm_does_not_deadlock(tmp_path):
    r = _run_script(_FORK.format(kind="spmm"), tmp_path, SPARSEC_NO_NATIVE_TEAM="1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "child 0" in r.stdout, r.stdout


@pytest.mark.parametrize("kind", ["spmv", "spmm"])
def test_fork_child_native_team_dense_output_works(tmp_path, kind):
    r = _run_script(_FORK.format(kind=kind), tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "child 0" in r.stdout, r.stdout


# ------------------------------------------------------------------------------------------- retention
def _alive_after(make, call) -> bool:
    obj = make()
    ref = weakref.ref(obj)
    call(obj)
    call(obj)
    del obj
    gc.collect()
    return ref() is not None


A0 = sp.random(300, 300, density=0.05, format="csr", random_state=1)


@pytest.mark.parametrize("form", ["scipy", "tensor", "numpy_x"])
def test_cpu_kernel_does_not_keep_dead_operands_alive(form):
    k = sc.compile("y[i] = A[i,j]*x[j]", formats={"A": "csr"}, dtype="float64")
    x = np.ones(300)
    if form == "scipy":
        assert not _alive_after(lambda: A0.copy(), lambda a: k(A=a, x=x))
        assert not _alive_after(lambda: A0.copy(), lambda a: sc.einsum("ij,j->i", a, x))
    elif form == "tensor":
        assert not _alive_after(lambda: sc.Tensor.from_scipy(A0, format="csr"), lambda a: k(A=a, x=x))
    else:
        assert not _alive_after(lambda: np.ones(300), lambda v: k(A=A0, x=v))
    kg = sc.compile("C[i,j] = A[i,k]*B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float64")
    assert not _alive_after(lambda: A0.copy(), lambda a: kg(A=a, B=A0))


def test_interp_kernel_does_not_keep_dead_tensor_alive():
    k = sc.compile("y[i] = A[i,j]*x[j]", formats={"A": "csr"}, dtype="float64", target="interp")
    x = np.ones(300)
    assert not _alive_after(lambda: sc.Tensor.from_scipy(A0, format="csr"), lambda a: k(A=a, x=x))


# ------------------------------------------------------------------------------------------- leaks
# Bound: 512 traced bytes per call over 1500 calls (fewer for sparse outputs) after 200 warm-up calls. The operands are ~2000 nonzeros
# (~24 KB for a CSR matrix), so retaining one operand or result per call would exceed it 40x.
LEAK_BOUND = 512


def test_no_growth_spmv_fresh_operands():
    A = sp.random(200, 200, density=0.05, format="csr", random_state=1)
    x = np.random.default_rng(0).random(200)
    k = sc.compile("y[i] = A[i,j]*x[j]", formats={"A": "csr"}, dtype="float64")
    assert _traced_growth_per_call(lambda: k(A=A.copy(), x=x.copy())) < LEAK_BOUND
    assert _traced_growth_per_call(lambda: k(A=sc.Tensor.from_scipy(A, format="csr"), x=x)) < LEAK_BOUND
    assert _traced_growth_per_call(lambda: sc.einsum("ij,j->i", A.copy(), x.copy())) < LEAK_BOUND


def test_no_growth_sparse_outputs():
    A = sp.random(200, 200, density=0.05, format="csr", random_state=1)
    kg = sc.compile("C[i,j] = A[i,k]*B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float64")
    assert _traced_growth_per_call(lambda: kg(A=A.copy(), B=A.copy()), n=1000) < LEAK_BOUND
    U, V = np.ones((200, 4)), np.ones((4, 200))
    assert _traced_growth_per_call(lambda: sc.einsum("ij,ik,kj->ij", A, U, V, out_format="csr"), n=1000) < LEAK_BOUND
    assert _traced_growth_per_call(lambda: kg(A=A.tocsc(), B=A), n=500) < LEAK_BOUND   # converted every call


# ------------------------------------------------------------------------------------------- bounded caches
def test_small_kernel_cache_stays_correct_and_held_kernel_survives(tmp_path):
    code = """
        import gc, numpy as np, scipy.sparse as sp
        import sparsec as sc
        from sparsec import api
        A = sp.random(30, 30, density=0.2, format="csr", random_state=1)
        B = sp.random(30, 30, density=0.2, format="csr", random_state=2)
        x = np.random.default_rng(0).random(30); D = np.random.default_rng(1).random((30, 30))
        held = sc.compile("y[i] = A[i,j]*x[j]", formats={"A": "csr"}, dtype="float64")
        specs = [("ij,j->i", (A, x)), ("ij,jk->ik", (A, D)), ("ij,ij->ij", (A, B)), ("ij,kj->ik", (A, D)),
                 ("ij->i", (A,)), ("ij->j", (A,)), ("ij->", (A,)), ("ij,j->ij", (A, x)), ("ji,j->i", (A, x)),
                 ("ij,ik->jk", (A, D)), ("ij,jk->ik", (A, B)), ("ij,ij->", (A, B))]
        for cycle in range(3):
            for s, ops in specs:
                for kw in ({}, {"out_format": "csr"}) if s.endswith("ij") or s.endswith("ik") else ({},):
                    got = sc.einsum(s, *ops, **kw)
                    got = got.to_numpy() if hasattr(got, "to_numpy") else np.asarray(got)
                    ref = np.einsum(s, *[o.toarray() if sp.issparse(o) else o for o in ops])
                    assert np.allclose(got, ref), (cycle, s, kw)
            assert np.allclose(held(A=A, x=x), A @ x)
        assert api._EINSUM_CACHE.capacity == 4 and len(api._EINSUM_CACHE._d) <= 4
        assert api._EINSUM_CACHE.evictions > 0
        print("ok")
    """
    r = _run_script(code, tmp_path, SPARSEC_KERNEL_CACHE_SIZE="4")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


# ------------------------------------------------------------------------------------------- one kernel, many calls
def test_one_kernel_changing_shapes_formats_threads():
    import torch
    k = sc.compile("y[i] = A[i,j]*x[j]", formats={"A": "csr"}, dtype="float64")
    kd = sc.compile("C[i,j] = A[i,k]*B[k,j]", formats={"A": "csr"}, dtype="float64")
    rng = np.random.default_rng(0)
    old = sc.runtime._NUM_THREADS if hasattr(sc, "runtime") else None
    try:
        for it, (m, n) in enumerate([(5, 7), (1500, 50), (0, 0), (1, 1), (0, 5), (5, 0), (800, 300), (10, 3),
                                     (1500, 50), (7, 7)]):
            sc.set_num_threads([1, 2][it % 2])
            A = sp.random(m, n, density=0.05, format="csr", random_state=it)
            if it % 3 == 1:
                A.indptr, A.indices = A.indptr.astype(np.int64), A.indices.astype(np.int64)
            x, B = rng.random(n), rng.random((n, 4))
            for a in (A, A.tocsc(), A.tocoo(), sc.Tensor.from_scipy(A, format="csr"),
                      sc.Tensor.from_scipy(A, format="csc"),
                      torch.sparse_csr_tensor(torch.from_numpy(A.indptr.astype(np.int64)),
                                              torch.from_numpy(A.indices.astype(np.int64)),
                                              torch.from_numpy(A.data), size=A.shape)):
                y = k(A=a, x=x)
                y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
                assert y.shape == (m,) and np.allclose(y, A @ x), (m, n, type(a))
                C = kd(A=a, B=B)
                C = C.numpy() if hasattr(C, "numpy") else np.asarray(C)
                assert C.shape == (m, 4) and np.allclose(C, A @ B), (m, n, type(a))
    finally:
        sc.set_num_threads(old)


def test_unwritable_cache_dir_keeps_working(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(blocker))
    A = sp.random(40, 40, density=0.1, format="csr", random_state=3)
    x = np.ones(40)
    with pytest.warns(RuntimeWarning, match="cannot write the kernel cache"):
        k = sc.compile("y[i] = 3*A[i,j]*x[j] + x[i]", formats={"A": "csr"}, dtype="float64")
        for _ in range(3):
            assert np.allclose(k(A=A, x=x), 3 * (A @ x) + x)

