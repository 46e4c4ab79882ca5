"""The native team's run as a Python builtin (``codegen.emit_builtin``) and its ctypes fallback."""

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc
from sparsec import runtime
from sparsec.backends.cpu import team as _team


@pytest.fixture
def native(monkeypatch):
    tm = _team.team(1)
    if tm is None or tm._run_builtin is None:
        pytest.skip("no native team with a builtin here")
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 1)
    old = runtime.get_num_threads()
    runtime.set_num_threads(2)
    yield tm
    runtime.set_num_threads(old)


def test_builtin_and_ctypes_paths_agree(native, monkeypatch):
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu")
    a = sp.random(3000, 700, density=0.02, format="csr", random_state=3)
    x = np.random.default_rng(4).uniform(-1, 1, 700)
    calls = []
    real = native._run_builtin

    def counting(*args):
        calls.append(len(args))
        return real(*args)

    monkeypatch.setattr(native, "_run_builtin", counting)
    via_builtin = k(A=a, x=x)
    assert calls == [9]
    monkeypatch.setattr(native, "_run_builtin", None)
    via_ctypes = k(A=a, x=x)
    np.testing.assert_array_equal(via_builtin, via_ctypes)
    np.testing.assert_allclose(via_builtin, a @ x, rtol=1e-12, atol=1e-14)


def test_builtin_argument_checks(native):
    run = native._run_builtin
    assert run(1, 2, 3) == -1                       # a wrong argument count runs nothing
    with pytest.raises(TypeError):
        run(native._addr, "not an int", (), 0, 0, 0, 1, 0, 0)
