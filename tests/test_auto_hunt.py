"""Automatic scheduling hunt (probe/autohunt/): schedule="auto", sc.autotune and the conversion pass.

Its four bugs are fixed (operands given twice or in excess to an AutoKernel; an AutoKernel not seeing a
winner stored after its first call; autotune's candidates dropping the user's own schedule) and their tests
assert the right behaviour. The rest pin behaviours checked correct.
"""
from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from hostarray import host

import sparsec as sc

at = importlib.import_module("sparsec.autotune")

SPMV = "y[i] = A[i,j] * x[j]"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))


@pytest.fixture()
def threads():
    prev = sc.get_num_threads() if hasattr(sc, "get_num_threads") else None
    yield
    if prev is not None:
        sc.set_num_threads(prev)


def _dense(x):
    x = host(x) if not hasattr(x, "to_numpy") else x
    if hasattr(x, "to_host"):
        x = x.to_host()
    if hasattr(x, "to_numpy"):
        x = x.to_numpy()
    return np.asarray(x, dtype=np.float64)


def _mats():
    rng = np.random.default_rng(0)
    return {
        "short": sp.random(30, 20, 0.1, format="csr", random_state=1),
        "long": sp.random(6, 200, 0.5, format="csr", random_state=2),
        "empty": sp.csr_matrix((5, 20)),
        "no_rows": sp.csr_matrix((0, 20)),
        "1x1": sp.csr_matrix(np.array([[3.0]])),
        "denseish": sp.csr_matrix(rng.uniform(size=(8, 20))),
    }


# ------------------------------------------------------------------------------------------ bugs
def test_auto_kernel_extra_positional_operand_raises():
    M = sp.random(12, 10, 0.3, format="csr", random_state=1)
    x = np.random.default_rng(0).uniform(size=10)
    auto = sc.compile(SPMV, formats={"A": "csr"}, schedule="auto")
    with pytest.raises(TypeError):
        auto(M, x, x)


def test_auto_kernel_operand_twice_strict():
    M = sp.random(12, 10, 0.3, format="csr", random_state=1)
    x = np.random.default_rng(0).uniform(size=10)
    auto = sc.compile(SPMV, formats={"A": "csr"}, schedule="auto")
    with pytest.raises(TypeError, match="twice"):
        auto(M, x, x=2 * x)


def test_auto_kernel_sees_a_winner_stored_after_its_first_call():
    M = sp.random(40, 30, 0.1, format="csr", random_state=1)
    T = sc.Tensor.from_scipy(M)
    x = np.random.default_rng(0).uniform(size=30)
    auto = sc.compile(SPMV, formats={"A": "csr"}, schedule="auto")
    assert auto.choose({"A": T, "x": x}).label == "vectorize(j, 1)"       # heuristic: short rows
    k = sc.compile(SPMV, formats={"A": "csr"})
    key = f"{at.kernel_key(k)}|{at.signature({'A': T, 'x': x}, at._device_name(k))}"
    at._save_winner(key, at.Candidate("vectorize(j, 4)", sc.Schedule().vectorize("j", 4)).as_json())
    assert sc.compile(SPMV, formats={"A": "csr"}, schedule="auto").choose({"A": T, "x": x}).label == "vectorize(j, 4)"
    assert auto.choose({"A": T, "x": x}).label == "vectorize(j, 4)"


# ------------------------------------------------------------------------------------------ checked correct
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dcsr"])
def test_auto_kernel_across_very_different_operands(fmt, threads):
    auto = sc.compile(SPMV, formats={"A": fmt}, schedule="auto")
    plain = sc.compile(SPMV, formats={"A": fmt})
    rng = np.random.default_rng(1)
    for th in (1, 2):
        sc.set_num_threads(th)
        for name, M in _mats().items():
            for carrier in ("csr", "csc", "coo", "T"):
                A = sc.Tensor.from_scipy(M.tocsr(), format=fmt) if carrier == "T" else M.asformat(carrier)
                x = rng.uniform(-1, 1, M.shape[1])
                ref = M.toarray() @ x
                np.testing.assert_allclose(_dense(auto(A=A, x=x)), ref, atol=1e-12, err_msg=f"{name} {carrier}")
                np.testing.assert_allclose(_dense(plain(A=A, x=x)), ref, atol=1e-12)
                label = auto.choose({"A": A, "x": x}).label
                v = auto.variant(A=A, x=x)
                if label == "vectorize(j, 1)":
                    assert "vector(1)" in v.dump("loops")


def test_auto_kernel_triton_across_operands():
    pytest.importorskip("torch")
    auto = sc.compile(SPMV, formats={"A": "csr"}, target="triton", schedule="auto")
    rng = np.random.default_rng(2)
    for name in ("short", "long", "empty", "1x1"):
        M = _mats()[name]
        for A in (M, M.tocsc(), sc.Tensor.from_scipy(M)):
            x = rng.uniform(-1, 1, M.shape[1])
            np.testing.assert_allclose(_dense(auto(A=A, x=x)), M.toarray() @ x, atol=1e-12)


@pytest.mark.parametrize("text,fmts,ops,ref", [
    (SPMV, {"A": "csr"}, lambda M, x: dict(A=M, x=x), lambda D, x: D @ x),
    ("y[i] = max[j](A[i,j] * x[j])", {"A": "csr"}, lambda M, x: dict(A=M, x=x), None),
    ("C[i,j] = A[i,k] * E[k,j]", {"A": "csr", "E": "csr", "C": "csr"}, lambda M, x: dict(A=M, E=M.T.tocsr()),
     lambda D, x: D @ D.T),
    ("T[i,j] = A[i,j] * 2\ny[i] = T[i,j] * x[j]", {"A": "csr"}, lambda M, x: dict(A=M, x=x), lambda D, x: 2 * D @ x),
])
def test_autotuned_kernel_is_correct_on_other_signatures(text, fmts, ops, ref):
    kw = {"outputs": ["y"]} if "\n" in text else {}
    k = sc.compile(text, formats=fmts, **kw)
    M1 = sp.random(40, 30, 0.1, format="csr", random_state=1)
    M2 = sp.random(300, 30, 0.5, format="csr", random_state=2)
    x = np.random.default_rng(0).uniform(-1, 1, 30)
    log = io.StringIO()
    best = sc.autotune(k, ops(M1, x), repeat=1, stream=log)
    assert "best:" in log.getvalue() and "skipped" not in log.getvalue()
    for M in (M1, M2):
        want = ref(M.toarray(), x) if ref is not None else _dense(k(**ops(M, x)))
        np.testing.assert_allclose(_dense(best(**ops(M, x))), want, atol=1e-12)


def test_autotune_quiet_and_without_a_store(monkeypatch, tmp_path):
    M = sp.random(20, 10, 0.3, format="csr", random_state=1)
    x = np.ones(10)
    k = sc.compile(SPMV, formats={"A": "csr"})
    log = io.StringIO()
    best = sc.autotune(k, repeat=1, verbose=False, stream=log, A=M, x=x)
    assert log.getvalue() == "" and (tmp_path / "autotune.json").exists()
    np.testing.assert_allclose(best(A=M, x=x), M @ x)
    monkeypatch.setenv("SPARSEC_CACHE_DIR", "")
    best = sc.autotune(k, repeat=1, verbose=False, A=M, x=x)
    np.testing.assert_allclose(best(A=M, x=x), M @ x)


def test_kernel_key_separates_dtypes_widths_and_formats():
    keys = {at.kernel_key(sc.compile(SPMV, formats={"A": f}, dtype=d)) for f, d in [
        ("csr", "float64"), ("csr", "float32"), ("csr[pos32,crd16]", "float64"), ("csr_unsorted", "float64"),
        ("csr[pos64,crd64]", "float64"), ("csc", "float64")]}
    assert len(keys) == 6
    assert at.kernel_key(sc.compile(SPMV, formats={"A": "csr"})) != \
        at.kernel_key(sc.compile(SPMV, formats={"A": "csr"}, target="triton"))


def test_stored_winner_reused_in_a_new_process(tmp_path):
    M = sp.random(40, 30, 0.1, format="csr", random_state=1)
    T = sc.Tensor.from_scipy(M)
    x = np.random.default_rng(0).uniform(size=30)
    k = sc.compile(SPMV, formats={"A": "csr"})
    key = f"{at.kernel_key(k)}|{at.signature({'A': T, 'x': x}, at._device_name(k))}"
    at._save_winner(key, at.Candidate("vectorize(j, 4)", sc.Schedule().vectorize("j", 4)).as_json())
    assert key in json.loads((tmp_path / "autotune.json").read_text())
    code = ("import sparsec as sc, scipy.sparse as sp, numpy as np\n"
            "M=sp.random(40,30,0.1,format='csr',random_state=1);T=sc.Tensor.from_scipy(M)\n"
            "x=np.random.default_rng(0).uniform(size=30)\n"
            f"a=sc.compile({SPMV!r}, formats={{'A':'csr'}}, schedule='auto')\n"
            "print(a.choose({'A':T,'x':x}).label, np.allclose(a(A=T,x=x), M@x))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "SPARSEC_CACHE_DIR": str(tmp_path)}, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "vectorize(j, 4) True", out.stderr[-2000:]


@pytest.mark.parametrize("sched", [None, "auto"])
@pytest.mark.parametrize("text,fmts,conv,reason", [
    ("C[i,j] = A[i,j] * A[j,i]", {"A": "csr", "C": "csr"}, "%A : csr -> csc", "its level order conflicts"),
    ("C[i,j] = A[i,j] + A[j,i]", {"A": "csr", "C": "csr"}, "%A : csr -> csc", "its level order conflicts"),
    ("C[j,i] = A[i,j] * 3", {"A": "csr", "C": "csr"}, "%C : csc -> csr", "output level order conflicts"),
    ("C[i,j] = A[i,j] * 3", {"A": "csr", "C": "dcsc"}, "%C : dcsr -> dcsc", "output level order conflicts"),
])
def test_conversions_named_in_dump_and_correct(text, fmts, conv, reason, sched):
    D = sp.random(10, 10, 0.3, format="csr", random_state=4).toarray()
    k = sc.compile(text, formats=fmts, schedule=sched)
    loops = k.dump("loops")
    line = next(l for l in loops.splitlines() if "sparse_tensor.convert" in l and conv in l)
    assert reason in line
    want = {"C[i,j] = A[i,j] * A[j,i]": D * D.T, "C[i,j] = A[i,j] + A[j,i]": D + D.T,
            "C[j,i] = A[i,j] * 3": 3 * D.T, "C[i,j] = A[i,j] * 3": 3 * D}[text]
    np.testing.assert_allclose(_dense(k(A=sp.csr_matrix(D))), want, atol=1e-12)


@pytest.mark.parametrize("target", ["cpu", "triton"])
def test_csf_conversion_of_permuted_modes(target):
    if target == "triton":
        pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    X = np.zeros((4, 5, 6))
    m = rng.uniform(size=X.shape) < 0.3
    X[m] = rng.uniform(size=m.sum())
    T = sc.Tensor.from_numpy(X, format="csf")
    U = sc.Tensor.from_numpy(X.transpose(2, 1, 0).copy(), format="csf")
    k = sc.compile("Y[i,j,k] = T[i,j,k] + U[k,j,i]", formats={"T": "csf", "U": "csf", "Y": "csf(2,1,0)"},
                   target=target)
    assert "%U : csf -> csf(2, 1, 0)  // its level order conflicts" in k.dump("loops")
    np.testing.assert_allclose(_dense(k(T=T, U=U)), 2 * X, atol=1e-12)
    v = rng.uniform(size=6)
    k2 = sc.compile("y[i,j] = T[i,j,k] * v[k]", formats={"T": "csf(1,2,0)"}, target=target, schedule="auto")
    np.testing.assert_allclose(_dense(k2(T=sc.Tensor.from_numpy(X, format="csf(1,2,0)"), v=v)), X @ v, atol=1e-12)


def test_autotune_candidates_keep_the_users_schedule():
    s = sc.Schedule().parallelize("i").pos("i", "A")
    k = sc.compile(SPMV, formats={"A": "csr"}, schedule=s)
    assert "pos(i, A)" in k.dump("loops")
    fixed = at.AutoKernel(k, fixed=at.Candidate("vectorize(j, 4)", sc.Schedule().vectorize("j", 4)))
    M = sp.random(20, 10, 0.3, format="csr", random_state=1)
    x = np.ones(10)
    np.testing.assert_allclose(fixed(A=M, x=x), M @ x)
    assert "pos(i, A)" in fixed.variant(A=M, x=x).dump("loops")
