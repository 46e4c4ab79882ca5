"""Hostile and odd inputs: each gets the right result or a clear sparsec exception, never a crash.

Covers malformed index buffers (through ``Tensor.from_buffers``, scipy matrices
with corrupted ``indptr``/``indices``, torch sparse tensors built without
invariant checks), out-of-range coordinates, wrong dtypes, NaN/Inf values,
shape mismatches, odd numpy layouts (Fortran order, negative strides, strided
views, read-only arrays -- never written), scipy matrices with unsorted indices
and explicit duplicates, torch layouts and devices, and tensors whose
coordinates need 64-bit indices.

The key safety property: a malformed CSR that would make a kernel read out of
bounds is rejected *before any kernel runs*. :func:`kernel_calls` counts calls
of compiled kernels (CPU and interpreter) to prove it. Cases that could crash
the interpreter if the property failed run in a subprocess.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc
from sparsec import FormatError, ShapeError, Tensor
from sparsec.backends.cpu.kernel import CPUKernel
from sparsec.backends.interp import InterpKernel

REPO = Path(sc.__file__).resolve().parent.parent
SEED = 8675309
TARGETS = ("cpu", "interp")


# ------------------------------------------------------------------------------------ helpers
class _Calls:
    """Number of compiled-kernel calls (CPU JIT and loop-IR interpreter) since the fixture started."""

    def __init__(self) -> None:
        self.n = 0


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Calls]:
    """Count every call of a compiled CPU or interpreter kernel (``kernel_calls.n``)."""
    calls = _Calls()
    for cls in (CPUKernel, InterpKernel):
        original = cls.__call__

        def counting(self: Any, buffers: Any, scalars: Any, _original: Any = original) -> None:
            calls.n += 1
            return _original(self, buffers, scalars)

        monkeypatch.setattr(cls, "__call__", counting)
    # the fast call path runs CPU kernels through their entry point directly
    entry = CPUKernel.entry

    def counting_entry(self: Any) -> Any:
        fn = entry.fget(self)
        if fn is None:
            return None

        def call(*args: Any) -> int:
            rc = fn(*args)
            calls.n += rc == 0      # nonzero: an array was rejected and nothing ran
            return rc
        return call

    monkeypatch.setattr(CPUKernel, "entry", property(counting_entry))
    yield calls


def _csr(m: int = 4, n: int = 5, seed: int = SEED, density: float = 0.5) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    a = np.where(rng.random((m, n)) < density, rng.uniform(-1, 1, (m, n)), 0.0)
    a[0, :] = 0.0
    a[1, 1] = 0.5                       # at least one entry
    return sp.csr_matrix(a)


def _spmv_kernel(fmt: str = "csr", target: str = "cpu") -> sc.Kernel:
    return sc.compile("y[i] = A[i,j] * x[j]", formats={"A": fmt}, target=target)


def _corrupt(m: Any, field: str, how: str) -> Any:
    """A copy of scipy matrix ``m`` with one array corrupted, bypassing scipy's checks."""
    m = m.copy()
    arr = getattr(m, field).copy()
    if how == "past_end":           # indptr[-1] beyond len(indices)
        arr[-1] = len(m.indices) + 7
    elif how == "not_monotone":
        arr[1], arr[2] = arr[2] + 1, arr[1]
    elif how == "too_short":
        arr = arr[:-1]
    elif how == "first_nonzero":
        arr = arr + 1
    elif how == "too_large":        # an index beyond the column count
        arr[-1] = 10**6
    elif how == "negative":
        arr[0] = -3
    elif how == "float":
        arr = arr.astype(np.float64) + 0.5
    else:  # pragma: no cover
        raise AssertionError(how)
    setattr(m, field, arr)
    return m


MALFORMED_SCIPY = [
    ("indptr", "past_end", r"indptr\[-1\]=\d+, but indices has"),
    ("indptr", "not_monotone", r"indptr is not monotone|not monotone"),
    ("indptr", "too_short", r"indptr has 4 entries, expected 5|pos has 4 entries"),
    ("indptr", "first_nonzero", r"indptr\[0\]=1, expected 0|pos\[0\]=1"),
    ("indices", "too_large", r"out of range \[0, 5\)"),
    ("indices", "negative", r"out of range \[0, 5\)"),
]


# ------------------------------------------------------------------------------------ malformed buffers
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("part,how,message", MALFORMED_SCIPY, ids=[f"{p}-{h}" for p, h, _ in MALFORMED_SCIPY])
def test_malformed_scipy_csr_rejected_before_any_kernel_runs(part: str, how: str, message: str, target: str,
                                                             kernel_calls: _Calls) -> None:
    good = _csr()
    x = np.ones(5)
    # the kernel is compiled and known to run on a good matrix first
    np.testing.assert_allclose(sc.einsum("ij,j->i", good, x, target=target), good @ x)
    k = _spmv_kernel(target=target)
    np.testing.assert_allclose(k(A=good, x=x), good @ x)
    assert kernel_calls.n == 2
    bad = _corrupt(good, part, how)
    with pytest.raises(FormatError, match=message) as e1:
        sc.einsum("ij,j->i", bad, x, target=target)
    with pytest.raises(FormatError, match=message) as e2:
        k(A=bad, x=x)
    for e in (e1, e2):
        assert "'A'" in str(e.value), f"the message should name the operand: {e.value}"
    assert kernel_calls.n == 2, "a kernel ran on malformed input"


@pytest.mark.parametrize("kind", ["csc", "coo"])
def test_malformed_scipy_csc_and_coo(kind: str, kernel_calls: _Calls) -> None:
    x = np.ones(5)
    if kind == "csc":
        bad = sp.csc_matrix(_csr().toarray())
        bad.indices = bad.indices.copy()
        bad.indices[0] = 4                       # 4 rows: row 4 is out of range
        message = r"out of range \[0, 4\)"
    else:
        bad = sp.coo_matrix(_csr().toarray())
        bad.col = bad.col.copy()
        bad.col[0] = 99
        message = r"coordinate 99 in dimension 1, out of range \[0, 5\)"
    with pytest.raises(FormatError, match=message):
        sc.einsum("ij,j->i", bad, x)
    with pytest.raises(FormatError, match=message):
        _spmv_kernel()(A=bad, x=x)
    assert kernel_calls.n == 0


@pytest.mark.parametrize("levels,message", [
    ([{}, {"pos": [0, 1, 2, 9, 9], "crd": [0, 1, 2]}], r"pos\[\d\]=9, but crd has 3 entries"),
    ([{}, {"pos": [0, 1, 2, 3, 3], "crd": [0, 1, 5]}], r"crd\[2\]=5 is out of range \[0, 5\)"),
    ([{}, {"pos": [0, 1, 2, 3, 3], "crd": [0, 1, -1]}], r"crd\[2\]=-1 is out of range"),
    ([{}, {"pos": [0, 2, 1, 3, 3], "crd": [0, 1, 2]}], r"pos is not monotone"),
    ([{}, {"pos": [0, 1, 2, 3], "crd": [0, 1, 2]}], r"pos has 4 entries, expected 5"),
], ids=["pos-past-crd", "crd-beyond-columns", "crd-negative", "pos-not-monotone", "pos-short"])
def test_from_buffers_rejects_out_of_bounds_csr_before_any_kernel(levels: list, message: str,
                                                                  kernel_calls: _Calls) -> None:
    k = _spmv_kernel()
    with pytest.raises(FormatError, match=r"^tensor 'A', level 1 \(compressed\): " + message):
        A = Tensor.from_buffers("csr", (4, 5), levels, np.ones(3), name="A")
        k(A=A, x=np.ones(5))
    assert kernel_calls.n == 0


def test_from_buffers_validate_false_checks_values_length_and_validate_catches_the_rest() -> None:
    """validate=False trusts the buffers' contents (documented); the values' length is still checked,
    and ``Tensor.validate()`` finds what was skipped."""
    with pytest.raises(FormatError, match="values has 2 entries"):
        Tensor.from_buffers("csr", (4, 5), [{}, {"pos": [0, 1, 2, 3, 3], "crd": [0, 1, 2]}], np.ones(2),
                            name="A", validate=False)
    t = Tensor.from_buffers("csr", (4, 5), [{}, {"pos": [0, 1, 3], "crd": [0, 1, 2]}], np.ones(3),
                            name="A", validate=False)
    with pytest.raises(FormatError, match="pos has 3 entries, expected 5"):
        t.validate()


@pytest.mark.parametrize("how,message", [
    ("past_end", r"indptr\[-1\]=\d+, but indices has"),
    ("too_large", r"out of range \[0, 5\)"),
    ("not_monotone", r"not monotone"),
])
def test_torch_sparse_csr_without_invariant_checks_is_validated(how: str, message: str,
                                                                kernel_calls: _Calls) -> None:
    torch = pytest.importorskip("torch")
    good = _csr()
    crow = torch.from_numpy(good.indptr.astype(np.int64))
    col = torch.from_numpy(good.indices.astype(np.int64))
    if how == "past_end":
        crow[-1] = len(col) + 4
    elif how == "too_large":
        col[-1] = 10**6
    else:
        crow[1], crow[2] = int(crow[2]) + 1, int(crow[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = torch.sparse_csr_tensor(crow, col, torch.from_numpy(good.data), size=good.shape, check_invariants=False)
    with pytest.raises(FormatError, match=message):
        sc.einsum("ij,j->i", t, np.ones(5))
    assert kernel_calls.n == 0


def test_coordinates_out_of_range_in_from_coo() -> None:
    with pytest.raises(FormatError, match=r"^tensor 'T': entry 1 has coordinate 3 in dimension 1, out of range"):
        Tensor.from_coo([[0, 1], [0, 3]], [1.0, 2.0], (2, 3), name="T")
    with pytest.raises(FormatError, match=r"coordinate -1 in dimension 0"):
        Tensor.from_coo([[-1], [0]], [1.0], (2, 3), format="csr", name="T")
    with pytest.raises(FormatError, match="coords must be integers"):
        Tensor.from_coo([[0.5], [0.0]], [1.0], (2, 3), name="T")


def test_scipy_float_indices_rejected_by_from_scipy() -> None:
    bad = _corrupt(_csr(), "indices", "float")
    with pytest.raises(FormatError, match=r"^tensor 'A': malformed csr: indices must have an integer dtype, got float64"):
        Tensor.from_scipy(bad, name="A")
    with pytest.raises(FormatError, match="indices must have an integer dtype"):
        _spmv_kernel()(A=bad, x=np.ones(5))


def test_scipy_float_indices_through_einsum_name_the_operand() -> None:
    bad = _corrupt(_csr(), "indices", "float")
    try:
        sc.einsum("ij,j->i", bad, np.ones(5))
    except FormatError as e:
        assert "'A'" in str(e)
        return
    except ValueError as e:
        raise AssertionError(f"scipy's error leaked: {e}") from None
    raise AssertionError("no error")


_MUTATE_AFTER_FIRST_CALL = textwrap.dedent("""
    import numpy as np, scipy.sparse as sp, sparsec as sc
    A = sp.random(50, 60, density=0.2, format="csr", random_state=1)
    x = np.ones(60)
    sc.einsum("ij,j->i", A, x)                 # validated and cached as a view
    A.indices[3] = 10**9                       # corrupted in place afterwards
    try:
        sc.einsum("ij,j->i", A, x)
    except sc.FormatError as e:
        print("REJECTED", e)
    else:
        print("RAN ON CORRUPT DATA")
""")


def test_scipy_indices_mutated_in_place_after_first_call_are_rejected() -> None:
    r = subprocess.run([sys.executable, "-c", _MUTATE_AFTER_FIRST_CALL], capture_output=True, text=True,
                       timeout=120, cwd=REPO, env=_env())
    assert r.returncode == 0, f"the interpreter died (returncode {r.returncode}): {r.stderr[-500:]}"
    assert "REJECTED" in r.stdout, r.stdout


_MUTATE_CASES_AFTER_FIRST_CALL = textwrap.dedent("""
    import numpy as np, scipy.sparse as sp, sparsec as sc
    from sparsec import api
    def corrupt(A, how):
        ind, ptr = A.indices, A.indptr
        if how == "index_too_large":
            ind[len(ind) // 2] = A.shape[1 if A.format == "csr" else 0]
        elif how == "index_negative":
            ind[-1] = -1
        elif how == "index_huge":
            ind[0] = 10**9
        elif how == "indptr_past_end":
            ptr[-1] += 5
        elif how == "indptr_decreasing":
            ptr[len(ptr) // 2] = ptr[len(ptr) // 2 + 1] + 3
        elif how == "indptr_negative":
            ptr[1] = -7
    for size in ("small", "large"):        # below / above api._SNAPSHOT_MAX index entries
        m, n = (40, 30) if size == "small" else (600, 400)
        assert (m * n * 0.2 + m + 1 > api._SNAPSHOT_MAX) == (size == "large")
        for fmt in ("csr", "csc"):
            for how in ("index_too_large", "index_negative", "index_huge", "indptr_past_end",
                        "indptr_decreasing", "indptr_negative"):
                A = sp.random(m, n, density=0.2, format=fmt, random_state=1)
                x = np.ones(n)
                sc.einsum("ij,j->i", A, x)                 # validated and cached as a view
                corrupt(A, how)                            # corrupted in place afterwards
                try:
                    sc.einsum("ij,j->i", A, x)
                except sc.FormatError as e:
                    print("REJECTED", size, fmt, how, "'A'" in str(e))
                else:
                    print("RAN ON CORRUPT DATA", size, fmt, how)
            # a valid in-place change (new values, a different in-bounds column) is seen by the next call
            A = sp.random(m, n, density=0.2, format=fmt, random_state=2)
            x = np.arange(n, dtype=float)
            sc.einsum("ij,j->i", A, x)
            A.data *= 3
            if fmt == "csr":
                A.indices[A.indptr[1] - 1] = n - 1         # the last entry of row 0 moves to the last column
            print("VALID", size, fmt, np.allclose(sc.einsum("ij,j->i", A, x), A @ x))
""")


def test_scipy_index_arrays_mutated_in_place_small_and_large() -> None:
    """Every reuse of a cached scipy view re-checks the index arrays (small: byte snapshot; large: bounds)."""
    r = subprocess.run([sys.executable, "-c", _MUTATE_CASES_AFTER_FIRST_CALL], capture_output=True, text=True,
                       timeout=120, cwd=REPO, env=_env())
    assert r.returncode == 0, f"the interpreter died (returncode {r.returncode}): {r.stderr[-2000:]}"
    lines = r.stdout.splitlines()
    assert not [ln for ln in lines if ln.startswith("RAN ON CORRUPT DATA")], r.stdout
    rejected = [ln for ln in lines if ln.startswith("REJECTED")]
    assert len(rejected) == 2 * 2 * 6 and all(ln.endswith("True") for ln in rejected), r.stdout
    valid = [ln for ln in lines if ln.startswith("VALID")]
    assert len(valid) == 4 and all(ln.endswith("True") for ln in valid), r.stdout


@pytest.mark.parametrize("kind", ["coo", "bsr", "lil", "dok", "dia", "unsorted_csr"])
def test_scipy_matrices_converted_per_call_see_changes_in_place(kind: str) -> None:
    """Only canonical CSR/CSC become cached views; other scipy types are converted on every call."""
    base = sp.random(6, 8, density=0.4, format="csr", random_state=3)
    if kind == "unsorted_csr":
        perm = [np.argsort(-base.indices[a:b]) + a for a, b in zip(base.indptr[:-1], base.indptr[1:])]
        order = np.concatenate(perm) if perm else np.arange(0)
        m = sp.csr_matrix((base.data[order], base.indices[order], base.indptr), shape=base.shape)
        m.has_sorted_indices = False
    else:
        m = base.asformat(kind)
    x = np.arange(8.0)
    np.testing.assert_allclose(sc.einsum("ij,j->i", m, x), m @ x)
    if kind in ("lil", "dok"):
        m[0, 0] = 100.0
    else:
        m.data[...] *= 3
    np.testing.assert_allclose(sc.einsum("ij,j->i", m, x), m @ x)


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["SPARSEC_CACHE_DIR"] = ""
    return env


# ------------------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("bad,exc,message", [
    (np.array([[1.0, None]], dtype=object), TypeError, r"operand 'A': cannot use an object array"),
    (np.array([["a", "b"]]), FormatError, r"tensor 'A': values dtype <U1 is not supported"),
    (np.ones((1, 2), dtype=complex), FormatError, r"tensor 'A': values dtype complex128 is not supported"),
    (np.ones((1, 2), dtype=np.uint64), FormatError, r"tensor 'A': values dtype uint64 is not supported"),
    ("abc", FormatError, r"tensor 'A'"),
    (None, TypeError, r"operand 'A'"),
])
def test_wrong_value_dtypes_name_the_operand_in_a_kernel_call(bad: Any, exc: type, message: str) -> None:
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"})
    with pytest.raises(exc, match=message):
        k(A=bad, x=np.ones(2))


def test_wrong_value_dtypes_name_the_operand_in_einsum() -> None:
    for bad in (np.array([["a", "b"]]), np.ones((1, 2), dtype=complex)):
        with pytest.raises(sc.SparsecError) as e:
            sc.einsum("ij,j->i", bad, np.ones(2))
        assert "'A'" in str(e.value), str(e.value)


def test_index_buffer_dtypes() -> None:
    pos, crd = [0, 1, 1], [2]
    for good in (np.int8, np.uint16, np.int64, np.uint32):
        t = Tensor.from_buffers("csr", (2, 3), [{}, {"pos": np.array(pos, good), "crd": np.array(crd, good)}],
                                np.ones(1), name="A")
        assert t.levels[1]["crd"].dtype == np.int32
        np.testing.assert_array_equal(t.to_numpy(), [[0, 0, 1], [0, 0, 0]])
    for bad, what in ((np.array(crd, np.float32), "float32"), (np.array(["2"]), "<U1"),
                      (np.array([2], dtype=object), "object")):
        with pytest.raises(FormatError, match=f"crd must have an integer dtype, got {re.escape(what)}"):
            Tensor.from_buffers("csr", (2, 3), [{}, {"pos": pos, "crd": bad}], np.ones(1), name="A")


# ------------------------------------------------------------------------------------ NaN / Inf
@pytest.mark.parametrize("target", TARGETS)
def test_stored_nan_inf_propagate_like_scipy(target: str) -> None:
    a = np.array([[np.nan, 0.0, 1.0], [0.0, 2.0, 0.0], [np.inf, 0.0, -np.inf], [0.0, 0.0, 0.0]])
    A = sp.csr_matrix(a)
    A.data[A.data == 0] = 0.0
    x = np.array([1.0, np.inf, 2.0])        # x[1] = inf only meets a stored 2.0 and absent entries
    want = A @ x                            # scipy: absent * inf contributes nothing
    got = sc.einsum("ij,j->i", A, x, target=target)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[0]) and got[1] == np.inf and np.isnan(got[2]) and got[3] == 0.0
    # elementwise add / multiply of two sparse matrices with NaN and Inf stored
    b = np.array([[1.0, np.nan, 0.0], [0.0, -np.inf, 0.0], [0.0, 0.0, np.inf], [0.0, 0.0, 0.0]])
    B = sp.csr_matrix(b)
    stored_a, stored_b = a != 0, b != 0                    # NaN != 0: NaN and Inf are stored
    with np.errstate(invalid="ignore"):
        # sparsec's product is structural: absent x NaN = 0 (scipy's csr .multiply gives NaN there,
        # since it evaluates the union of both patterns; its A @ x is structural like sparsec)
        product = np.where(stored_a & stored_b, a * b, 0.0)
        for text, ref in (("C[i,j] = A[i,j] + B[i,j]", (A + B).toarray()), ("C[i,j] = A[i,j] * B[i,j]", product)):
            k = sc.compile(text, formats={"A": "csr", "B": "csr"}, out_format="csr", target=target)
            np.testing.assert_array_equal(k(A=A, B=B).to_numpy(), ref)
    # max reduction: a stored NaN wins (numpy semantics), implicit zeros count
    k = sc.compile("y[i] = max[j](A[i,j])", formats={"A": "csr"}, target=target)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(k(A=A), np.max(a, axis=1))


# ------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("target", TARGETS)
def test_shape_mismatch_names_both_operands_and_the_index(target: str) -> None:
    A = _csr(4, 5)
    for call in (lambda: sc.einsum("ij,j->i", A, np.ones(6), target=target),
                 lambda: sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target=target)(A=A, x=np.ones(6))):
        with pytest.raises(ShapeError) as e:
            call()
        msg = str(e.value)
        assert "index j" in msg and "'A'" in msg and ("'B'" in msg or "'x'" in msg), msg
    with pytest.raises(ShapeError, match=r"index i has extent 4 in 'A'.* but 3 in 'B'"):
        sc.einsum("ij,ij->ij", A, sp.csr_matrix(np.ones((3, 5))), out_format="csr", target=target)


def test_wrong_number_of_dimensions_in_a_kernel_call_names_the_operand() -> None:
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"})
    with pytest.raises(FormatError, match="tensor 'A'"):
        k(A=np.ones((2, 3, 1)), x=np.ones(3))
    with pytest.raises(FormatError, match="tensor 'x'"):
        k(A=np.ones((2, 3)), x=np.ones((3, 1)))


def test_wrong_number_of_dimensions_in_einsum_names_the_operand() -> None:
    with pytest.raises(sc.SparsecError) as e:
        sc.einsum("ij,j->i", np.ones((2, 3, 1)), np.ones(3))
    assert "'A'" in str(e.value) or "operand 0" in str(e.value), str(e.value)


# ------------------------------------------------------------------------------------ numpy layouts
def _layouts(a: np.ndarray) -> dict[str, np.ndarray]:
    big = np.zeros((a.shape[0] * 2, a.shape[1] * 3))
    strided = big[::2, ::3]
    strided[...] = a
    ro = a.copy()
    ro.flags.writeable = False
    return {
        "fortran": np.asfortranarray(a),
        "negative_strides": a[::-1, ::-1].copy()[::-1, ::-1],
        "strided_view": strided,
        "read_only": ro,
        "transposed_view": np.ascontiguousarray(a.T).T,
    }


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("layout", ["fortran", "negative_strides", "strided_view", "read_only", "transposed_view"])
def test_odd_numpy_layouts_as_inputs(layout: str, target: str) -> None:
    rng = np.random.default_rng(SEED)
    a = rng.uniform(-1, 1, (5, 4))
    x = rng.uniform(-1, 1, 4)
    B = _layouts(a)[layout]
    xs = _layouts(x[:, None])[layout][:, 0]
    before = (B.copy(), xs.copy())
    writeable = (B.flags.writeable, xs.flags.writeable)
    A = sc.Tensor.from_numpy(a, "csr")
    np.testing.assert_allclose(sc.einsum("ij,j->i", B, xs, target=target), a @ x, rtol=1e-12)
    np.testing.assert_allclose(sc.einsum("ij,j->i", A, xs, target=target), a @ x, rtol=1e-12)
    k = sc.compile("C[i,j] = A[i,j] * B[i,j] + B[i,j]", formats={"A": "csr"}, target=target)
    np.testing.assert_allclose(k(A=A, B=B), a * a + a, rtol=1e-12)
    np.testing.assert_array_equal(B, before[0])
    np.testing.assert_array_equal(xs, before[1])
    assert (B.flags.writeable, xs.flags.writeable) == writeable


@pytest.mark.parametrize("target", TARGETS)
def test_read_only_and_strided_index_buffers_are_never_written(target: str) -> None:
    pos = np.array([0, 2, 2, 3], dtype=np.int32)
    crd_big = np.array([0, -1, 3, -1, 1, -1], dtype=np.int32)
    vals = np.array([1.0, 2.0, 3.0])
    for arr in (pos, crd_big, vals):
        arr.flags.writeable = False
    A = Tensor.from_buffers("csr", (3, 4), [{}, {"pos": pos, "crd": crd_big[::2]}], vals, name="A")
    x = np.arange(4.0)
    x.flags.writeable = False
    want = A.to_numpy() @ x
    np.testing.assert_array_equal(sc.einsum("ij,j->i", A, x, target=target), want)
    k = sc.compile("C[i,j] = A[i,j] * 2", formats={"A": "csr"}, out_format="csr", target=target)
    out = k(A=A)
    np.testing.assert_array_equal(out.to_numpy(), 2 * A.to_numpy())
    out.values[:] = -1.0                 # the result's values are its own; the input's stay read-only
    np.testing.assert_array_equal(vals, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(crd_big, [0, -1, 3, -1, 1, -1])


def test_rebinding_a_tensors_values_is_seen_by_the_fast_path() -> None:
    """The fast call path memoizes an operand's buffers; a rebound ``values`` must not be served stale."""
    A = Tensor.from_numpy(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]), "csr", name="A")
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"})
    x = np.ones(3)
    np.testing.assert_array_equal(k(A=A, x=x), [3.0, 3.0])
    A.values = A.values * 10
    np.testing.assert_array_equal(k(A=A, x=x), [30.0, 30.0])
    A.values[:] = 1.0                    # in place: the same array object
    np.testing.assert_array_equal(k(A=A, x=x), [2.0, 1.0])


# ------------------------------------------------------------------------------------ scipy oddities
def _unsorted_with_duplicates() -> sp.csr_matrix:
    data = np.array([1.0, 2.0, 3.0, 4.0, -4.0, 5.0])
    indices = np.array([3, 0, 3, 1, 1, 2], dtype=np.int32)       # row 0: 3, 0, 3 (dup) ; row 1: 1, 1 (dup to 0)
    indptr = np.array([0, 3, 5, 5, 6], dtype=np.int32)
    m = sp.csr_matrix((data, indices, indptr), shape=(4, 4))
    assert not m.has_canonical_format
    return m


@pytest.mark.parametrize("target", TARGETS)
def test_scipy_unsorted_indices_and_duplicates_match_scipy(target: str) -> None:
    m = _unsorted_with_duplicates()
    x = np.array([1.0, 10.0, 100.0, 1000.0])
    np.testing.assert_allclose(sc.einsum("ij,j->i", m, x, target=target), m @ x)
    np.testing.assert_allclose(sc.einsum("ij->j", m, target=target), np.asarray(m.sum(axis=0)).ravel())
    k = sc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr"}, out_format="csr", target=target)
    np.testing.assert_allclose(k(A=m, B=m.T.tocsr()).to_numpy(), (m + m.T).toarray())
    C = sc.einsum("ik,kj->ij", m, m, out_format="csr", target=target)
    np.testing.assert_allclose(C.to_numpy(), (m @ m).toarray())
    # scipy keeps the explicit zero that the duplicates summed to; so does sparsec
    t = Tensor.from_scipy(m, name="A")
    t.validate()
    assert (1, 1) in {tuple(c) for c in t.to_coo()[0].T.tolist()}
    # the input was not sorted in place
    assert not m.has_canonical_format and m.indices.tolist() == [3, 0, 3, 1, 1, 2]


@pytest.mark.parametrize("kind", ["csc", "coo", "bsr", "lil", "dok", "dia"])
def test_every_scipy_kind_with_duplicates_or_disorder(kind: str) -> None:
    m = _unsorted_with_duplicates()
    if kind == "coo":
        c = m.tocoo()
        conv = sp.coo_matrix((np.r_[c.data, 7.0], (np.r_[c.row, 0], np.r_[c.col, 3])), shape=m.shape)  # a duplicate
    elif kind == "csc":
        conv = sp.csc_matrix((m.data, m.indices, m.indptr), shape=m.shape)   # the transpose, unsorted
    elif kind == "bsr":
        conv = m.tobsr(blocksize=(2, 2))      # scipy's default here, (1, 1): see the degenerate blocks
    else:
        conv = getattr(m, f"to{kind}")()
    x = np.array([1.0, -2.0, 3.0, 0.5])
    np.testing.assert_allclose(sc.einsum("ij,j->i", conv, x), conv @ x)


def test_empty_and_degenerate_scipy_matrices() -> None:
    for shape in ((0, 0), (0, 3), (3, 0), (1, 1)):
        m = sp.csr_matrix(shape)
        x = np.ones(shape[1])
        np.testing.assert_array_equal(sc.einsum("ij,j->i", m, x), np.zeros(shape[0]))
        C = sc.einsum("ij,ij->ij", m, m, out_format="csr")
        assert C.shape == shape and C.nse == 0


# ------------------------------------------------------------------------------------ torch
def test_torch_sparse_with_numpy_and_unsupported_layouts_and_devices() -> None:
    torch = pytest.importorskip("torch")
    a = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])
    x = np.array([1.0, 2.0, 3.0])
    for t in (torch.from_numpy(a).to_sparse_csr(), torch.from_numpy(a).to_sparse(),
              torch.from_numpy(a).to_sparse_csc()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = sc.einsum("ij,j->i", t, x)
        np.testing.assert_allclose(np.asarray(got), a @ x)
    with pytest.raises(FormatError, match=r"tensor 'A': hybrid or batched torch sparse tensors are not supported"):
        sc.einsum("ij,j->i", torch.ones(2, 3, 2).to_sparse(2), x)
    with pytest.raises(FormatError, match=r"tensor 'A': a torch tensor on the 'meta' device has no data"):
        sc.einsum("ij,j->i", torch.ones(2, 3, device="meta"), x)
    with pytest.raises(FormatError, match=r"tensor 'A': bfloat16 has no numpy dtype"):
        sc.einsum("ij,j->i", torch.ones(2, 3, dtype=torch.bfloat16).to_sparse(), x)
    with pytest.raises(FormatError, match=r"complex64 is not supported"):
        sc.compile("y[i] = A[i,j] * x[j]")(A=torch.ones(2, 3, dtype=torch.complex64), x=x)
    # a transposed (non-contiguous) strided torch tensor
    np.testing.assert_allclose(np.asarray(sc.einsum("ij,j->i", torch.from_numpy(a.T.copy()).T, x)), a @ x)


# ------------------------------------------------------------------------------------ 64-bit indices
HUGE = 2**33 + 7   # coordinates past 2**32: 32-bit indices would wrap


def _huge_vectors() -> tuple[Tensor, Tensor]:
    a = Tensor.from_coo(np.array([[5, 2**31 + 3, HUGE - 1]]), np.array([1.0, 2.0, 3.0]), (HUGE,), format="coo",
                        name="A")
    b = Tensor.from_coo(np.array([[2**31 + 3, 2**32 + 5, HUGE - 1]]), np.array([10.0, 7.0, 100.0]), (HUGE,),
                        format="coo", name="B")
    return a, b


@pytest.mark.parametrize("target", TARGETS)
def test_coordinates_past_int32_widen_and_compile_for_int64(target: str) -> None:
    a, b = _huge_vectors()
    assert a.format.crd_width == 64 and a.levels[0]["crd"].dtype == np.int64
    assert a.format.pos_width == 32                    # three entries: 32-bit positions suffice
    k = sc.compile("s[] = A[i] * B[i]", formats={"A": a.format, "B": b.format}, target=target)
    params = {p.name: p.dtype for p in k.lowered.statements[0].numeric.params}
    assert params["A_crd0"] == "int64" and params["B_crd0"] == "int64", params
    assert float(k(A=a, B=b)) == 2.0 * 10.0 + 3.0 * 100.0
    assert float(sc.einsum("i,i->", a, b, target=target)) == 320.0
    if target == "cpu":
        assert re.search(r"load i64", k.dump("llvm")), "the CPU kernel should read 64-bit coordinates"
    # a 2-row CSR with column coordinates past 2**32, intersected with itself into a sparse result
    A = _huge_csr()
    assert A.format.crd_width == 64
    np.testing.assert_array_equal(sc.einsum("ij->i", A, target=target), [1.0, 5.0])
    wide_csr = sc.parse_format("csr", 2).with_widths(32, 64)
    C = sc.einsum("ij,ij->ij", A, A, out_format=wide_csr, target=target)
    coords, vals = C.to_coo()
    assert C.format.crd_width == 64
    assert coords.tolist() == [[0, 1, 1], [2**32 + 1, 3, 2**33]] and vals.tolist() == [1.0, 4.0, 9.0]
    # a 32-bit sparse output would wrap the coordinates: refused before the kernel runs (sc.einsum widens
    # its out_format to the operands' widths, see below; a compiled kernel keeps the declared widths)
    k32 = sc.compile("C[i,j] = A[i,j] * B[i,j]", formats={"A": A.format, "B": A.format}, out_format="csr",
                     target=target)
    with pytest.raises(FormatError, match=r"output 'C' of shape \(2, 8589934599\) needs 64-bit coordinates"):
        k32(A=A, B=A)


def _huge_csr() -> Tensor:
    return Tensor.from_coo(np.array([[0, 1, 1], [2**32 + 1, 3, 2**33]]), np.array([1.0, 2.0, 3.0]), (2, HUGE),
                           format="csr", name="A")


def test_einsum_sparse_output_widens_with_its_operands() -> None:
    A = _huge_csr()
    C = sc.einsum("ij,ij->ij", A, A, out_format="csr")
    assert C.to_coo()[0].tolist() == [[0, 1, 1], [2**32 + 1, 3, 2**33]]


def test_a_32bit_kernel_given_a_64bit_tensor_says_what_to_do() -> None:
    a, b = _huge_vectors()
    k = sc.compile("s[] = A[i] * B[i]", formats={"A": "coo", "B": "coo"})
    with pytest.raises(FormatError, match=r"operand 'A' .* needs 32-bit positions and 64-bit coordinates, but the "
                                          r"kernel was compiled for coo \(pos32, crd32\); compile it with formats="):
        k(A=a, B=b)


def test_a_64bit_kernel_accepts_32bit_tensors_and_small_64bit_tensors_narrow() -> None:
    fmt64 = sc.parse_format("csr", 2).with_widths(64, 64)
    a = np.array([[0.0, 1.0], [2.0, 0.0]])
    k64 = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": fmt64})
    np.testing.assert_array_equal(k64(A=Tensor.from_numpy(a, "csr"), x=np.ones(2)), [1.0, 2.0])
    k32 = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"})
    t64 = Tensor.from_numpy(a, "csr").to(fmt64)
    assert t64.levels[1]["crd"].dtype == np.int64
    np.testing.assert_array_equal(k32(A=t64, x=np.ones(2)), [1.0, 2.0])


def test_sparse_output_of_a_huge_sparse_vector() -> None:
    n = 2**40
    a = Tensor.from_coo(np.array([[3, n - 1]]), np.array([1.0, 2.0]), (n,), format="coo", name="A")
    # (an output in the operand's own format, coo[pos32,crd64] -- what out_format="coo" becomes once einsum
    # widens it -- is a copy of the pattern and never reaches the counts array: ask for 64-bit positions)
    out = sc.einsum("i->i", a, out_format=sc.parse_format("coo", 1).with_widths(64, 64))
    assert out.to_coo()[0].tolist() == [[3, n - 1]]


# ------------------------------------------------------------------------------------ degenerate blocks
def test_spmv_bsr_block_height_one() -> None:
    a = np.arange(8.0).reshape(4, 2)
    sc.einsum("ij,j->i", Tensor.from_numpy(a, "bsr(1,2)"), np.ones(2))


@pytest.mark.parametrize("target", TARGETS)
def test_spmv_bsr_block_width_one(target: str) -> None:
    a = np.zeros((4, 2))
    a[0, 1], a[3, 0], a[2, 1] = 1.0, 2.0, 3.0
    got = sc.einsum("ij,j->i", Tensor.from_numpy(a, "bsr(2,1)"), np.array([1.0, 10.0]), target=target)
    np.testing.assert_array_equal(got, a @ [1.0, 10.0])
