"""schedule="auto" and sc.autotune: same results, winners stored and reused, heuristics by matrix shape."""

import io
import json

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc
import importlib

at = importlib.import_module("sparsec.autotune")


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    return tmp_path / "autotune.json"


def matrix(rows, cols, per_row, seed):
    rng = np.random.default_rng(seed)
    A = sp.random(rows, cols, per_row / cols, format="csr", random_state=seed)
    return sc.Tensor.from_scipy(A), rng.uniform(-1, 1, cols), A


def test_autotune_times_candidates_stores_and_reuses_the_winner(store):
    T, x, A = matrix(400, 300, 5, 1)
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu")
    log = io.StringIO()
    best = sc.autotune(k, repeat=3, stream=log, A=T, x=x)
    text = log.getvalue()
    assert "[autotune 1/" in text and "best:" in text
    np.testing.assert_allclose(best(A=T, x=x), A @ x, rtol=1e-12)
    stored = json.loads(store.read_text())
    (key, winner), = stored.items()
    assert key.startswith(at.kernel_key(k)) and "rows8" in key and winner["ms"] > 0
    auto = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu", schedule="auto")
    assert auto.choose({"A": T, "x": x}).label == winner["label"]
    np.testing.assert_allclose(auto(A=T, x=x), A @ x, rtol=1e-12)


def test_auto_heuristic_uses_a_scalar_inner_loop_for_short_rows(store):
    auto = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu", schedule="auto")
    short, xs, As = matrix(500, 400, 3, 2)
    long_, xl, Al = matrix(60, 400, 60, 3)
    assert auto.choose({"A": short, "x": xs}).label == "vectorize(j, 1)"
    assert auto.choose({"A": long_, "x": xl}).label == "default"
    np.testing.assert_allclose(auto(A=short, x=xs), As @ xs, rtol=1e-12)
    np.testing.assert_allclose(auto(A=long_, x=xl), Al @ xl, rtol=1e-12)
    assert "vector(1)" in auto.variant(A=short, x=xs).dump("loops")


def test_autotune_on_triton_options(store):
    pytest.importorskip("torch")
    T, x, A = matrix(40, 30, 4, 4)
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, target="triton")
    B = np.random.default_rng(4).uniform(-1, 1, (30, 8))
    best = sc.autotune(k, repeat=1, stream=io.StringIO(), A=T, B=B)
    out = best(A=T, B=B)
    np.testing.assert_allclose(out.cpu().numpy() if hasattr(out, "cpu") else out, A @ B, rtol=1e-10)


def test_corrupt_store_warns_and_starts_afresh(store):
    store.write_text("{not json")
    auto = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu", schedule="auto")
    T, x, A = matrix(50, 40, 3, 5)
    with pytest.warns(RuntimeWarning, match="unreadable autotune store"):
        auto.choose({"A": T, "x": x})


def test_signature_buckets():
    T, x, _ = matrix(1000, 1000, 8, 6)
    sig = at.signature({"A": T, "x": x}, "cpu-test")
    assert sig.startswith("cpu-test:rows9:nnz12:avg") and ":max" in sig
    assert at.signature({"x": x}, "d") == "d:dense"
