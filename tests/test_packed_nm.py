"""``nm(n, m, packed)``: in-block coordinates packed at 1, 2 or 4 bits, several to a byte.

The layout is checked byte by byte on a small example; every bit width round-trips and
multiplies like numpy (float64 oracle) on the CPU backend and, in Triton's interpreter,
on the generic Triton lowering (float64 keeps the tile template out).
"""

from __future__ import annotations

import numpy as np
import pytest

import sparsec as sc
from sparsec import FormatError, Tensor

RNG = np.random.default_rng(7)


def nm_dense(rows: int, cols: int, n: int, m: int, rng: np.random.Generator = RNG) -> np.ndarray:
    """A random rows x cols matrix with at most n nonzeros in each block of m columns (a ragged last block)."""
    g = -(-cols // m)
    a = rng.standard_normal((rows, g * m))
    blk = a.reshape(rows, g, m)
    order = np.argsort(-np.abs(blk), axis=2)
    keep = np.zeros(blk.shape, dtype=bool)
    np.put_along_axis(keep, order[:, :, :n], True, axis=2)
    keep &= rng.random(blk.shape) < 0.9          # some blocks short of n: padding slots
    return (blk * keep).reshape(rows, g * m)[:, :cols]


def test_two_bit_layout_byte_by_byte():
    """2:4, one row of 8 columns: blocks hold columns {1, 2} and {4, 7}; slot p sits at bits 2p..2p+1."""
    a = np.zeros((1, 8))
    a[0, [1, 2, 4, 7]] = [1.0, 2.0, 3.0, 4.0]
    t = Tensor.from_numpy(a, "nm(2, 4, packed)")
    crd = t.levels[2]["crd"]
    assert crd.dtype == np.int8 and crd.view(np.uint8).tolist() == [1 | 2 << 2 | 0 << 4 | 3 << 6]
    assert t.values.tolist() == [1.0, 2.0, 3.0, 4.0]
    back = Tensor.from_buffers("nm(2, 4, packed)", (1, 8), [{}, {}, {"crd": crd.view(np.uint8)}], t.values)
    assert np.array_equal(back.to_numpy(), a)


@pytest.mark.parametrize("n,m,bits", [(1, 2, 1), (2, 4, 2), (1, 3, 2), (3, 8, 4), (5, 16, 4), (4, 4, 2)])
@pytest.mark.parametrize("shape", [(7, 13), (1, 1), (0, 9), (5, 0), (3, 64)])
def test_round_trip_and_size(n, m, bits, shape):
    a = nm_dense(*shape, n, m)
    t = Tensor.from_numpy(a, f"nm({n},{m},packed)")
    slots = shape[0] * -(-shape[1] // m) * n
    assert len(t.levels[2]["crd"]) == -(-slots // (8 // bits))
    assert np.array_equal(t.to_numpy(), a)
    assert np.array_equal(t.to("nm(%d,%d)" % (n, m)).to_numpy(), a)           # unpacked and back
    assert np.array_equal(Tensor.from_numpy(a, f"nm({n},{m})").to(f"nm({n},{m},packed)").to_numpy(), a)


def test_more_than_n_per_block_is_rejected():
    with pytest.raises(FormatError, match="stores at most 1 per block of 2"):
        Tensor.from_numpy(np.ones((2, 4)), "nm(1, 2, packed)")


def _host(result) -> np.ndarray:
    """A kernel's dense result as numpy (the Triton backend returns torch tensors)."""
    return np.asarray(result.cpu() if hasattr(result, "cpu") else result)


@pytest.mark.parametrize("target", ["cpu", "triton"])
@pytest.mark.parametrize("n,m", [(1, 2), (2, 4), (3, 8), (5, 16)])
def test_spmv_and_spmm_match_numpy(target, n, m):
    if target == "triton":
        pytest.importorskip("triton")
    fmt = f"nm({n},{m},packed)"
    a = nm_dense(11, 37, n, m)
    x = RNG.standard_normal(37)
    b = RNG.standard_normal((37, 6))
    spmv = sc.compile("y[i] = A[i,k] * x[k]", formats={"A": fmt}, dtype="float64", target=target)
    spmm = sc.compile("Y[i,j] = A[i,k] * B[k,j]", formats={"A": fmt}, dtype="float64", target=target)
    t = Tensor.from_numpy(a, fmt)
    y, Y = _host(spmv(A=t, x=x)), _host(spmm(A=t, B=b))
    np.testing.assert_allclose(y, a @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Y, a @ b, rtol=1e-12, atol=1e-12)
