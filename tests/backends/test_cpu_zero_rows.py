"""CPU fast path: a summed dense output is allocated uninitialized and zeroed by the parallel chunks,
or not zeroed at all where the kernel's register tiles write its whole rows from zero.

conftest sets SPARSEC_POISON_OUTPUTS=1, so an "uninitialized" output is NaN-filled: a row no
chunk zeroed shows up as NaN (or a wrong sum) in these comparisons.
"""

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc
from sparsec import fastcall, runtime
from sparsec.backends.cpu import team as _team
from sparsec.fastcall import FALLBACK


@pytest.fixture(params=[1, 2], ids=["t1", "t2"])
def threads(request, monkeypatch):
    old = runtime.get_num_threads()
    runtime.set_num_threads(request.param)
    yield request.param
    runtime.set_num_threads(old)


@pytest.fixture(params=["tiny", "default"])
def min_work(request, monkeypatch):
    if request.param == "tiny":
        monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 1)
    return request.param


def _csr(m, k, density, seed, empty_rows=False):
    a = sp.random(m, k, density=density, format="csr", random_state=seed, dtype=np.float64)
    if empty_rows and m:
        a = a.tolil()
        a[::3] = 0
        a = a.tocsr()
        a.eliminate_zeros()
    return a


def _fast(k, **ops):
    r = k._fast(ops)
    assert r is not FALLBACK
    return r.to_numpy() if isinstance(r, sc.Tensor) else r


@pytest.mark.parametrize("n", [1, 7, 16, 64])
@pytest.mark.parametrize("shape,density,empty_rows", [((2000, 300), 0.02, False), ((2000, 300), 0.02, True),
                                                     ((500, 40), 0.0, False), ((0, 30), 0.1, False),
                                                     ((1, 30), 0.5, False), ((3000, 50), 0.001, True)])
@pytest.mark.parametrize("split", [False, True], ids=["whole-rows", "split-k"])
def test_spmm_rows_zeroed(threads, min_work, n, shape, density, empty_rows, split):
    """CSR SpMM's register tiles write whole rows from zero: the output is left uninitialized (every
    element, empty rows and the columns past the last whole tile included, must still come out right).
    With ``split(k, 3)`` the tiles run once per block of a row's nonzeros and add into the output:
    the chunks zero their rows first."""
    schedule = sc.Schedule().split("k", 3) if split else None
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, target="cpu", schedule=schedule)
    assert k._fast is not None
    if split:
        assert k._fast.zero_rows == ["n_j"] and not k._fast.writes_all
    else:
        assert k._fast.writes_all and k._fast.zero_rows is None
    a = _csr(*shape, density, 3, empty_rows)
    b = np.random.default_rng(1).uniform(-1, 1, (shape[1], n))
    at = sc.Tensor.from_scipy(a, "csr", name="A")
    for _ in range(2):   # twice: a reused (dirty) allocation must be zeroed too
        c = _fast(k, A=at, B=b)
        assert not np.isnan(c).any()
        np.testing.assert_allclose(c, a @ b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("text,formats,zeroed", [
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, False),       # writes_all: allocated uninitialized already
    ("S[i,j] = M[i,j] * U[i,k] * V[k,j]", {"M": "csr"}, True),
    ("C[i,j] = A[i,j] * B[i,j]", {"A": "csr"}, True),
    ("y[i] = A[i,j] * x[j]", {"A": "csc"}, False),       # parallel over columns (or atomic): not rows of y
    ("C[j,i] = A[i,j] * B[i,j]", {"A": "csr"}, False),   # the output is not row-major over i
    ("y[i] = max[j](A[i,j])", {"A": "csr"}, False),       # max: the fill is not 0
])
def test_other_kernels(threads, min_work, text, formats, zeroed):
    rng = np.random.default_rng(5)
    k = sc.compile(text, formats=formats, target="cpu")
    assert k._fast is not None
    assert (k._fast.zero_rows is not None) == zeroed
    shapes = {"A": (1500, 700), "x": (700,), "M": (900, 300), "U": (900, 17), "V": (17, 300), "B": (1500, 700)}
    names = list(k.inputs)
    ops, dense = {}, {}
    for nm in names:
        v = rng.uniform(-1, 1, shapes[nm])
        if nm in formats:
            v = np.where(rng.random(shapes[nm]) < 0.05, v, 0.0)
            v[::4] = 0.0    # empty rows
            ops[nm] = sc.Tensor.from_numpy(v, formats[nm], name=nm)
        else:
            ops[nm] = v
        dense[nm] = v
    got = _fast(k, **ops)
    want = k.run(**ops)[k.outputs[0]].to_numpy()
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("step_bytes", [1, 100, 1 << 20])
def test_native_chunks_zero_outside_the_range(monkeypatch, step_bytes):
    """Rows outside [lo, hi) are zeroed too (by the first and last chunks), and the team ran zero_then.

    ``step_bytes``: each chunk zeroes and computes its rows in steps (1 row, 2 rows, all at once).
    """
    if _team.team(1) is None:
        pytest.skip("no native team here")
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 1)
    monkeypatch.setattr(fastcall, "ZERO_STEP_BYTES", step_bytes)
    old = runtime.get_num_threads()
    runtime.set_num_threads(2)
    try:
        k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, target="cpu")
        f = k._fast
        a = _csr(400, 50, 0.1, 2, True)
        b = np.random.default_rng(0).uniform(-1, 1, (50, 5))
        at = sc.Tensor.from_numpy(a.toarray(), "csr", name="A")
        pos, crd = at.levels[1]["pos"], at.levels[1]["crd"]
        seen = []
        real = _team.NativeTeam.run

        def spy(self, packed, *args):
            seen.append(packed == self.zero_then)
            return real(self, packed, *args)

        monkeypatch.setattr(_team.NativeTeam, "run", spy)
        for lo, hi in [(0, 400), (37, 291), (100, 101), (5, 400), (0, 3)]:
            out = np.full((400, 5), np.nan)
            svals = [400, 5, 50, lo, hi]
            arrays = (pos, crd, at.values, b, out)
            assert f._parallel_entry(arrays, svals, lo, hi, pos, out, 5) == 0
            want = np.zeros((400, 5))
            want[lo:hi] = (a @ b)[lo:hi]
            np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
        assert seen and all(seen)
    finally:
        runtime.set_num_threads(old)


def test_fast_source_allocates_uninitialized():
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, target="cpu",
                   schedule=sc.Schedule().split("k", 3))
    assert "out.fill(0)" in k._fast._source
    assert fastcall.FastCall is type(k._fast)
    whole = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, target="cpu")
    assert "fill(0)" not in whole._fast._source and whole._fast.writes_all
