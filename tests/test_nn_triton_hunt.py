"""Regressions found by a bug hunt over sparsec.nn and the Triton target (interpreter on CPU tensors)."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import sparsec as sc  # noqa: E402
import sparsec.nn as snn  # noqa: E402

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
                                reason="runs the Triton target in its interpreter (TRITON_INTERPRET=1)")

# inference tensors have no version counter (x._version raises): fixed in 17a203a (memo.tensor_version);
# these cover what tests/test_nn.py does not: weights made in inference mode (tile split_base, pos stats)
# and a plain sc.compile kernel.


def _layer(fmt: str) -> snn.SparseLinear:
    torch.manual_seed(0)
    return snn.SparseLinear.from_dense(torch.nn.Linear(16, 6), sparsity=0.5, format=fmt, target="triton")


def _check(layer: snn.SparseLinear, x: torch.Tensor, y: torch.Tensor) -> None:
    ref = torch.nn.functional.linear(x.double(), layer.dense_weight().double(), layer.bias.double())
    assert torch.allclose(y.double(), ref, atol=1e-4)


@pytest.mark.parametrize("fmt", ["bitmap", "csr"])
def test_inference_mode_activations(fmt):
    layer = _layer(fmt)
    with torch.inference_mode():
        x = torch.randn(3, 16)
        y = layer(x)
    _check(layer, x, y)


@pytest.mark.parametrize("fmt", ["bitmap", "csr"])
def test_layer_built_in_inference_mode(fmt):
    with torch.inference_mode():
        layer = _layer(fmt)
    x = torch.randn(3, 16)
    _check(layer, x, layer(x))


def test_compiled_kernel_with_inference_tensor():
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, dtype="float32", target="triton")
    a = np.eye(5, dtype=np.float32)
    with torch.inference_mode():
        c = k(A=a, B=torch.ones(5, 3))
    assert np.allclose(np.asarray(c), np.ones((5, 3)))


def test_no_grad_path_still_works():
    """The same calls under torch.no_grad() (what the xfails above should match)."""
    layer = _layer("bitmap")
    with torch.no_grad():
        x = torch.randn(3, 16)
        y = layer(x)
    _check(layer, x, y)
