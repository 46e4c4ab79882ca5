"""Matrix Market I/O: the benchmark matrices load like the reference loader and round-trip.

The matrices folder is ``$SPARSEC_MATRICES`` (default ``<repo>/../shared/matrices``);
the tests that need it are skipped, with the reason, when it is missing.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
from pathlib import Path

import numpy as np
import pytest

import sparsec as sc
from sparsec import FormatError, Tensor

REPO = Path(__file__).resolve().parents[1]
MATRICES = Path(os.environ.get("SPARSEC_MATRICES", REPO.parent / "shared" / "matrices"))
MATRIX_FILES = sorted(MATRICES.glob("*.mtx.gz")) if MATRICES.is_dir() else []
needs_matrices = pytest.mark.skipif(
    not MATRIX_FILES, reason=f"no *.mtx.gz in {MATRICES} (set SPARSEC_MATRICES to the benchmark matrices folder)"
)


def _reference_loader():
    """The folder's own load.py, imported under a private module name."""
    spec = importlib.util.spec_from_file_location("_sparsec_matrices_load", MATRICES / "load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference():
    return _reference_loader()


@needs_matrices
def test_every_matrix_is_listed_in_the_manifest(reference):
    assert sorted(reference.names(str(MATRICES))) == sorted(p.name[: -len(".mtx.gz")] for p in MATRIX_FILES)


@needs_matrices
@pytest.mark.parametrize("path", MATRIX_FILES, ids=lambda p: p.name[: -len(".mtx.gz")])
def test_benchmark_matrix_loads_and_round_trips(path, reference, tmp_path):
    name = path.name[: -len(".mtx.gz")]
    t = sc.read_mtx(path)
    assert t.name == name and str(t.format) == "csr" and t.dtype == np.float64
    t.validate()
    ref = reference.load(name, folder=str(MATRICES))
    row = next(r for r in reference.manifest(str(MATRICES)) if r["name"] == name)
    assert t.shape == ref.shape == (int(row["rows"]), int(row["cols"]))
    assert t.nse == ref.nnz == int(row["nnz"])
    assert np.array_equal(t.buffer(1, "pos"), ref.indptr) and np.array_equal(t.buffer(1, "crd"), ref.indices)
    assert np.allclose(t.values, ref.data, rtol=1e-15, atol=0)
    if row["field"] == "pattern":
        assert np.all(t.values == 1.0)

    out = tmp_path / f"{name}.mtx"
    sc.write_mtx(out, t, comment=f"round trip of {name}")
    assert f"round trip of {name}" in out.read_text()[:500]
    back = sc.read_mtx(out)
    assert back.shape == t.shape and back.nse == t.nse
    assert all(np.array_equal(back.buffer(1, p), t.buffer(1, p)) for p in ("pos", "crd"))
    assert np.array_equal(back.values, t.values)


@needs_matrices
def test_read_options_on_a_real_file():
    path = min(MATRIX_FILES, key=lambda p: p.stat().st_size)
    t = sc.read_mtx(path, format="csc", dtype="float32", name="M")
    assert str(t.format) == "csc" and t.dtype == np.float32 and t.name == "M"
    with gzip.open(path, "rb") as f:
        from_file = sc.read_mtx(f)  # a file object: no name to take
    assert from_file.name is None
    assert np.array_equal(from_file.to_scipy().toarray(), t.to("csr").to_scipy().toarray().astype(np.float64))


# -- behaviour on small hand-written files (no matrices folder needed) ------------------------

PATTERN_SYMMETRIC = b"""%%MatrixMarket matrix coordinate pattern symmetric
3 3 3
1 1
3 1
3 2
"""

INTEGER_GENERAL = b"""%%MatrixMarket matrix coordinate integer general
% a comment
2 3 4
1 1 5
2 3 -2
1 2 0
1 1 1
"""

REAL_ARRAY = b"""%%MatrixMarket matrix array real general
2 2
1.5
0
0
-2
"""


def test_pattern_symmetric_expands_with_ones(tmp_path):
    path = tmp_path / "p.mtx"
    path.write_bytes(PATTERN_SYMMETRIC)
    t = sc.read_mtx(path)
    assert t.name == "p"
    assert t.to_numpy().tolist() == [[1, 0, 1], [0, 0, 1], [1, 1, 0]]


def test_integer_file_sums_duplicates_and_keeps_explicit_zero():
    t = sc.read_mtx(io.BytesIO(INTEGER_GENERAL), name="I")
    assert t.dtype == np.int64 and t.name == "I"
    assert t.to_numpy().tolist() == [[6, 0, 0], [0, 0, -2]]
    assert t.nse == 3  # (0,0) summed, explicit zero at (0,1), (1,2)


def test_array_file_loads_dense_and_writes_back_as_array(tmp_path):
    path = tmp_path / "a.mtx.gz"
    with gzip.open(path, "wb") as f:
        f.write(REAL_ARRAY)
    t = sc.read_mtx(path)
    assert t.format.is_dense and t.to_numpy().tolist() == [[1.5, 0], [0, -2.0]]
    assert sc.read_mtx(path, format="coo").nse == 2
    out = tmp_path / "out.mtx"
    sc.write_mtx(out, t)
    assert out.read_text().startswith("%%MatrixMarket matrix array real general")
    assert np.array_equal(sc.read_mtx(out).to_numpy(), t.to_numpy())


def test_gz_round_trip_formats_and_dtypes(tmp_path):
    rng = np.random.default_rng(2)
    arr = np.where(rng.random((9, 7)) < 0.3, rng.integers(-5, 5, (9, 7)), 0)
    arr[2, 3] = 0
    for fmt, dtype in (("csc", np.float32), ("bsr(2, 2)", np.float64), ("coo", np.int64), ("ell", np.bool_)):
        t = Tensor.from_numpy(arr.astype(dtype), fmt)
        path = tmp_path / f"m_{fmt[:3]}.mtx.gz"
        sc.write_mtx(path, t)
        with gzip.open(path, "rt") as f:
            assert f.readline().startswith("%%MatrixMarket matrix coordinate")
        back = sc.read_mtx(path, dtype=dtype if dtype != np.bool_ else None)
        assert np.array_equal(back.to_numpy().astype(dtype), arr.astype(dtype)), fmt
    # no ".mtx" is appended to a path that lacks it
    plain = tmp_path / "matrix.txt"
    sc.write_mtx(plain, Tensor.from_numpy(arr.astype(float), "csr"))
    assert plain.exists() and not (tmp_path / "matrix.txt.mtx").exists()


def test_explicit_zeros_survive_a_round_trip(tmp_path):
    t = Tensor.from_coo(np.array([[0, 1], [1, 0]]), np.array([0.0, 2.5]), (2, 2), "csr")
    sc.write_mtx(tmp_path / "z.mtx", t)
    back = sc.read_mtx(tmp_path / "z.mtx")
    assert back.nse == 2 and back.values.tolist() == [0.0, 2.5]


def test_write_errors(tmp_path):
    with pytest.raises(FormatError, match="holds 2-D matrices"):
        sc.write_mtx(tmp_path / "v.mtx", Tensor.from_numpy(np.ones(3), "coo"))
    with pytest.raises(FormatError, match="needs a sparsec.Tensor"):
        sc.write_mtx(tmp_path / "v.mtx", np.ones((2, 2)))


def test_read_mtx_casts_to_float16_after_the_conversion(tmp_path):
    """scipy.sparse holds no float16; read_mtx(dtype=float16) casts the Tensor, not the scipy matrix."""
    t = sc.Tensor.from_numpy(np.array([[1.5, 0], [0, -2.25]], np.float16), "csr")
    path = tmp_path / "h.mtx"
    sc.write_mtx(path, t)
    r = sc.read_mtx(path, dtype=np.float16)
    assert r.dtype == np.float16 and r.format == t.format
    np.testing.assert_array_equal(r.to_numpy(), t.to_numpy())
    with pytest.raises(FormatError):
        sc.read_mtx(path, dtype=np.complex64)


@pytest.mark.parametrize("suffix", [".mtx", ".mtx.gz"])
def test_array_files_without_rows_read_back(tmp_path, suffix):
    """scipy's reader dies with SIGFPE on an array file of 0 rows: read_mtx answers it from the header."""
    for shape in ((0, 3), (0, 0), (3, 0)):
        t = sc.Tensor.from_numpy(np.zeros(shape), "dense")
        path = tmp_path / f"e{shape[0]}x{shape[1]}{suffix}"
        sc.write_mtx(path, t)
        r = sc.read_mtx(path)
        assert r.shape == shape and r.dtype == np.float64
    raw = b"%%MatrixMarket matrix array integer general\n% no rows\n0 4\n"
    r = sc.read_mtx(io.BytesIO(raw))
    assert r.shape == (0, 4) and r.dtype == np.int64
