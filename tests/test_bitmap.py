"""The bitmap level plug-in: storage round trips, validation, and kernels on every target."""

import numpy as np
import pytest

import sparsec as sc
from sparsec.levels.bitmap import _pack, _unpack

RNG = np.random.default_rng(21)


def sparse(shape, density=0.4):
    a = RNG.uniform(-1, 1, shape)
    a[RNG.random(shape) > density] = 0.0
    return a


@pytest.mark.parametrize("shape", [(0, 0), (1, 65), (7, 70), (64, 1), (5, 128)])
def test_round_trips_and_conversions(shape):
    A = sparse(shape)
    T = sc.Tensor.from_numpy(A, "bitmap")
    T.validate()
    assert T.levels[1]["bits"].dtype == np.int64 and T.nse == np.count_nonzero(A)
    np.testing.assert_array_equal(T.to_numpy(), A)
    np.testing.assert_array_equal(T.to("csr").to_numpy(), A)
    np.testing.assert_array_equal(sc.Tensor.from_numpy(A, "coo").to("bitmap").to_numpy(), A)
    # one bit per coordinate: 64 coordinates per int64 word
    assert T.levels[1]["bits"].shape == (-(-shape[0] * shape[1] // 64),)


def test_encoding_text_and_short_name_agree():
    f = sc.parse_format("#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : bitmap) }>")
    assert f == sc.parse_format("bitmap") and str(f) == "bitmap"


def test_bits_pack_little_endian():
    mask = np.zeros(130, bool)
    mask[[0, 63, 64, 129]] = True
    words = _pack(mask)
    assert words.shape == (3,) and words[0] == np.int64(1) | np.int64(-2**63) and words[2] == 2
    np.testing.assert_array_equal(_unpack(words, 130), mask)


def test_validation_names_the_problem():
    A = sparse((3, 10))
    T = sc.Tensor.from_numpy(A, "bitmap")
    bits, pos = T.levels[1]["bits"].copy(), T.levels[1]["pos"].copy()
    bad = bits.copy()
    bad[0] ^= np.int64(1 << 40)  # an extra bit beyond 30 coordinates
    with pytest.raises(sc.FormatError, match="bits set beyond the last coordinate"):
        sc.Tensor.from_buffers("bitmap", (3, 10), [{}, {"pos": pos, "bits": bad}], T.values)
    pos2 = pos.copy()
    pos2[1] += 1
    pos2[2] += 1
    with pytest.raises(sc.FormatError, match="bits set but pos says"):
        sc.Tensor.from_buffers("bitmap", (3, 10), [{}, {"pos": pos2, "bits": bits}], np.zeros(pos2[-1]))


@pytest.mark.parametrize("target", ["interp", "cpu", "triton"])
def test_kernels_on_bitmaps(target):
    A, B = sparse((9, 70)), sparse((9, 70), 0.3)
    x, X = RNG.uniform(-1, 1, 70), RNG.uniform(-1, 1, (70, 5))
    TA = sc.Tensor.from_numpy(A, "bitmap")

    def dense(r):
        r = r.to_host() if hasattr(r, "to_host") else r
        r = r.to_numpy() if hasattr(r, "to_numpy") else r
        return r.cpu().numpy() if hasattr(r, "cpu") else np.asarray(r)

    spmv = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "bitmap"}, target=target)
    np.testing.assert_allclose(dense(spmv(A=TA, x=x)), A @ x, rtol=1e-12, atol=1e-12)
    spmm = sc.compile("C[i,k] = A[i,j] * X[j,k]", formats={"A": "bitmap"}, target=target)
    np.testing.assert_allclose(dense(spmm(A=TA, X=X)), A @ X, rtol=1e-12, atol=1e-12)
    add = sc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "bitmap", "B": "csr"}, out_format="csr", target=target)
    np.testing.assert_allclose(dense(add(A=TA, B=sc.Tensor.from_numpy(B, "csr"))), A + B, rtol=1e-12)
    assert "bitmap level 1 of A" in spmv.dump("loops")


def test_bitmap_words_may_come_as_uint64():
    """Bitmap words are bit patterns: a uint64 word with bit 63 set is that int64 word, not an overflow."""
    bits = np.array([(1 << 63) | 1], dtype=np.uint64)
    t = sc.Tensor.from_buffers("bitmap", (1, 64), [{}, {"pos": [0, 2], "bits": bits}], [1.0, 2.0], name="A")
    dense = t.to_numpy()
    assert dense[0, 0] == 1.0 and dense[0, 63] == 2.0 and dense.sum() == 3.0
    assert t.levels[1]["bits"].dtype == np.int64 and t.levels[1]["bits"][0] == np.int64(-(2**63) + 1)
