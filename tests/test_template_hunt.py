"""Hunt of the Triton backend's hand-matched templates (tiles, attention, SpGEMM, SparseLinear).

Probes: probe/tplhunt/. One bug: bfloat16 block products of the general lowering (bsr(16,16) and up, and
SparseLinear on them) went to tl.dot in bfloat16, which Triton's interpreter computes wrongly (errors ~1e9);
they cast to float32 there now. The other tests pin behaviours checked correct
that the existing template tests do not cover (odd shapes with N = 1 and K < one tile, blocks all absent,
unsorted SpGEMM inputs, -0.0 and NaN / Inf thresholds under skip_zeros, SparseLinear with bias and odd sizes,
masked attention with negative mask values and causal masks of ragged length). Oracle: numpy / torch float64.
"""
from __future__ import annotations


import os

import numpy as np
import pytest
import scipy.sparse as sp

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import sparsec as sc  # noqa: E402
from sparsec.backends.triton import program_template, spgemm, tiles  # noqa: E402

from hostarray import host  # noqa: E402

#: compiled kernels on a GPU (TRITON_INTERPRET=0 with CUDA), else the interpreter on the CPU
DEV = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0") else "cpu"

TOL = {"float32": 1e-5, "float16": 3e-3, "bfloat16": 1e-2}


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))


def _tile(k):
    return next(iter(k._compiled.values())).tile


def _nm(rng, M, K, n, m):
    w = rng.standard_normal((M, K))
    g = np.pad(w, ((0, 0), (0, (-K) % m))).reshape(M, -1, m)
    drop = np.zeros_like(g, dtype=bool)
    np.put_along_axis(drop, np.argsort(-np.abs(g), axis=2)[:, :, n:], True, axis=2)
    g[drop] = 0
    return g.reshape(M, -1)[:, :K]


def _rel(Y, ref):
    Y, ref = Y.double().cpu(), ref.double().cpu()
    return float((Y - ref).norm() / ref.norm().clamp_min(1e-30))


@pytest.mark.parametrize("fmt", ["bitmap", "nm(2,4)", "nm(2,4,packed)"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 1), (17, 7, 3), (33, 130, 1)])
@pytest.mark.parametrize("dt", [("float16", "float16"), ("float32", "float32"), ("bfloat16", "float32")])
def test_tile_template_tiny_and_ragged_shapes(fmt, shape, dt):
    """K smaller than one tile, N = 1, a single row: the template matches and agrees with float64."""
    rng = np.random.default_rng(5)
    M, K, N = shape
    k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": fmt}, dtype={"W": dt[0], "X": dt[0], "Y": dt[1]},
                   target="triton")
    assert _tile(k) is not None
    if fmt == "bitmap":
        w = rng.standard_normal((M, K))
        w[rng.random((M, K)) < 0.6] = 0
    else:
        w = _nm(rng, M, K, 2, 4)
    tdt = getattr(torch, dt[0])
    W, X = torch.from_numpy(w).to(DEV, tdt), torch.from_numpy(rng.standard_normal((K, N))).to(DEV, tdt)
    Y = k(W=W, X=X)
    assert Y.shape == (M, N) and Y.dtype == getattr(torch, dt[1])
    assert _rel(Y, W.double() @ X.double()) < TOL[dt[0]]


@pytest.mark.parametrize("fmt", ["bitmap", "nm(2,4)"])
def test_tile_template_all_zero_weight(fmt):
    k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": fmt}, dtype={"W": "float16", "X": "float16",
                                                                          "Y": "float32"}, target="triton")
    Y = k(W=torch.zeros(9, 70, dtype=torch.float16, device=DEV), X=torch.randn(70, 3, device=DEV).half())
    assert Y.shape == (9, 3) and torch.count_nonzero(Y) == 0


def test_skip_zeros_treats_negative_zero_as_zero():
    """-0.0 == 0: its term is skipped, so an Inf in the matching weight row is not read."""
    for dt in (torch.float32, torch.float16):
        k = sc.compile("Y[r,i] = X[r,k] * Wt[k,i]", dtype=str(dt)[6:], target="triton",
                       schedule=sc.Schedule().skip_zeros("X"))
        assert tiles.match(k.lowered.statements[0].numeric).kind == "skip"
        X = torch.tensor([[1.0, -0.0, 2.0]], dtype=dt, device=DEV)
        W = torch.tensor([[1.0], [float("inf")], [1.0]], dtype=dt, device=DEV)
        assert float(k(X=X, Wt=W)[0, 0]) == 3.0


@pytest.mark.parametrize("t", [float("nan"), float("inf"), 0.0])
def test_skip_threshold_nan_inf_and_zero(t):
    """abs(x) > nan and abs(x) > inf are False everywhere (result 0); t = 0 keeps every nonzero."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 37)).astype(np.float32)
    a[:, ::3] = 0
    wt = rng.standard_normal((37, 5)).astype(np.float32)
    k = sc.compile("Y[r,i] = where(abs(X[r,k]) > t, X[r,k], 0) * Wt[k,i]",
                   dtype={"X": "float32", "Wt": "float32", "Y": "float32", "t": "float32"}, target="triton",
                   schedule=sc.Schedule().skip_zeros("X"))
    got = host(k(X=torch.tensor(a, device=DEV), Wt=torch.tensor(wt, device=DEV), t=t))
    want = np.where(np.abs(a) > t, a, 0).astype(np.float64) @ wt
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_skip_threshold_int_tensor():
    rng = np.random.default_rng(3)
    a = (3 * rng.standard_normal((2, 37))).astype(np.float32)
    a[0, :5] = 1.0                                           # equal to the threshold: fails '>'
    wt = rng.standard_normal((37, 5)).astype(np.float32)
    k = sc.compile("Y[r,i] = where(abs(X[r,k]) > t, X[r,k], 0) * Wt[k,i]",
                   dtype={"X": "float32", "Wt": "float32", "Y": "float32", "t": "int32"}, target="triton",
                   schedule=sc.Schedule().skip_zeros("X"))
    assert tiles.match(k.lowered.statements[0].numeric).threshold == "T"
    got = host(k(X=torch.tensor(a, device=DEV), Wt=torch.tensor(wt, device=DEV), t=torch.tensor(1, dtype=torch.int32)))
    np.testing.assert_allclose(got, np.where(np.abs(a) > 1, a, 0).astype(np.float64) @ wt, rtol=1e-5, atol=1e-5)


def _unsort(M, rng):
    M = M.copy()
    for r in range(M.shape[0]):
        s, e = M.indptr[r], M.indptr[r + 1]
        p = rng.permutation(e - s)
        M.indices[s:e], M.data[s:e] = M.indices[s:e][p], M.data[s:e][p]
    M.has_sorted_indices = False
    return M


@pytest.mark.parametrize("which", ["A", "B", "both"])
def test_spgemm_template_unsorted_duplicate_free_inputs(which):
    rng = np.random.default_rng(4)
    A = sp.random(20, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    B = sp.random(30, 25, density=0.2, format="csr", random_state=2, dtype=np.float32)
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32",
                   target="triton")
    assert isinstance(program_template(k), spgemm.SpgemmTemplate)
    a = _unsort(A, rng) if which in ("A", "both") else A
    b = _unsort(B, rng) if which in ("B", "both") else B
    got = k(A=a, B=b).to_numpy()
    np.testing.assert_allclose(got, A.toarray().astype(np.float64) @ B.toarray(), rtol=0, atol=1e-5)


def test_spgemm_template_zero_inner_dimension():
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32",
                   target="triton")
    got = k(A=sp.csr_matrix((4, 0), dtype=np.float32), B=sp.csr_matrix((0, 3), dtype=np.float32))
    assert got.to_numpy().shape == (4, 3) and not got.to_numpy().any()


@pytest.mark.parametrize("fmt", ["bitmap", "nm(2,4)", "nm(2,4,packed)", "bsr(16,16)"])
@pytest.mark.parametrize("sizes", [(20, 7, 1), (33, 17, 3)])
def test_sparse_linear_bias_and_odd_sizes(fmt, sizes):
    import sparsec.nn as snn
    torch.manual_seed(0)
    inf, outf, bs = sizes
    if fmt.startswith("nm"):
        w = torch.zeros(outf, inf)
        w[:, ::4] = torch.randn(outf, len(range(0, inf, 4)))
    else:
        w = torch.randn(outf, inf)
        w[torch.rand(outf, inf) < 0.5] = 0
    b = torch.randn(outf)
    lin = snn.SparseLinear(w.to(DEV), b.to(DEV), format=fmt, target="triton")
    x = torch.randn(bs, inf)
    y = lin(x.to(DEV)).cpu()
    assert y.shape == (bs, outf)
    assert float((y.double() - (x.double() @ w.double().T + b.double())).abs().max()) < 1e-4


def _attn_oracle(M, Q, K, V, scale):
    M, Q, K, V = (np.asarray(x, dtype=np.float64) for x in (M, Q, K, V))
    s = np.where(M != 0, np.einsum("...id,...jd->...ij", Q, K) * M * scale, -np.inf)
    top = s.max(-1, keepdims=True)
    p = np.exp(s - np.where(np.isfinite(top), top, 0))
    total = p.sum(-1, keepdims=True)
    return (p @ V) / np.where(total == 0, 1, total)


@pytest.mark.parametrize("n", [17, 40])
def test_attention_causal_ragged_and_negative_mask_values(n):
    """A causal mask whose length is not a multiple of the block, with a block of negative values."""
    rng = np.random.default_rng(6)
    k = sc.compile(sc.masked_attention(0.5), formats={"M": "bsr(16,16)"}, target="triton", outputs=["O"],
                   dtype={"Q": "float32", "K": "float32", "V": "float32", "M": "float32", "S": "float32",
                          "O": "float32"})
    assert program_template(k) is not None
    M = np.tril(np.ones((n, n)))
    M[:16, :16] *= np.tril(rng.choice([-1.0, 0.5, 2.0], size=(16, 16)))
    Q, K, V = (torch.from_numpy(rng.standard_normal((2, n, 8))).float() for _ in range(3))
    mask = sc.Tensor.from_numpy(M.astype(np.float32), format="bsr(16,16)")
    if DEV != "cpu":
        mask = mask.to_device(DEV)
    got = k(M=mask, Q=Q.to(DEV), K=K.to(DEV), V=V.to(DEV))
    np.testing.assert_allclose(host(got.double()), _attn_oracle(M, Q, K, V, 0.5), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ the bug (fixed)
@pytest.mark.parametrize("fmt", ["bsr(16,16)", "bsr(32,32)"])
def test_bf16_bsr_spmm_in_the_interpreter(fmt):
    torch.manual_seed(0)
    W, X = torch.randn(18, 36).bfloat16(), torch.randn(36, 3).bfloat16()
    k = sc.compile("Y[o,t] = W[o,k] * X[k,t]", formats={"W": fmt}, dtype="bfloat16", target="triton")
    Y = k(W=W.to(DEV), X=X.to(DEV)).cpu()
    ref = W.double() @ X.double()
    assert float((Y.double() - ref).abs().max() / ref.abs().max()) < 2e-2


def test_sparse_linear_bf16_bsr_batch():
    import sparsec.nn as snn
    torch.manual_seed(1)
    w = torch.zeros(18, 36)
    w[:16, :16] = torch.randn(16, 16)
    w, b = w.bfloat16(), torch.randn(18).bfloat16()
    lin = snn.SparseLinear(w.to(DEV), b.to(DEV), format="bsr(16,16)", target="triton")
    x = torch.randn(3, 36).bfloat16()
    ref = x.double() @ w.double().T + b.double()
    assert float((lin(x.to(DEV)).cpu().double() - ref).abs().max() / ref.abs().max()) < 2e-2
