"""Triton tile templates (``sparsec.backends.triton.tiles``): bitmap and N:M SpMM on tl.dot.

Run in Triton's interpreter on the CPU (the same source runs compiled on a GPU, with
libdevice's popcount instead of the bit-twiddling one). The oracle is numpy in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import sparsec as sc  # noqa: E402
from sparsec.backends.triton import tiles  # noqa: E402

TEXT = "Y[i,j] = W[i,k] * X[k,j]"
RNG = np.random.default_rng(11)
#: compiled Triton (a GPU run with TRITON_INTERPRET=0) needs the operands on the GPU
DEV = "cuda" if torch.cuda.is_available() and __import__("os").environ.get("TRITON_INTERPRET", "0") in ("", "0") \
    else "cpu"


def _weight(fmt: str, M: int, K: int) -> np.ndarray:
    w = RNG.standard_normal((M, K))
    if fmt == "bitmap":
        w[RNG.random((M, K)) < 0.75] = 0
        w[M // 2] = 0                                   # an empty row
    else:
        n, m = (int(v) for v in fmt[3:fmt.index(")")].split(",")[:2])
        pad = (-K) % m
        g = np.pad(w, ((0, 0), (0, pad))).reshape(M, -1, m)
        order = np.argsort(-np.abs(g), axis=2)
        drop = np.zeros_like(g, dtype=bool)
        np.put_along_axis(drop, order[:, :, n:], True, axis=2)
        g[drop] = 0
        w = g.reshape(M, -1)[:, :K]
    return w


def _tile_of(k):
    return [ck for ck in k._compiled.values()][0].tile


CASES = [(fmt, dt, (70, 100, 16)) for fmt in ("bitmap", "nm(2,4)", "nm(3,5)")
         for dt in (("float16", "float16"), ("float16", "float32"), ("float32", "float32"), ("bfloat16", "float32"))]
CASES += [(fmt, ("float16", "float32"), shape) for fmt in ("bitmap", "nm(1,4)")
          for shape in ((64, 128, 3), (5, 300, 70), (1, 64, 1))]
# 8-bit coordinates; slots split in registers (n = 1, 2, 4) or loaded one by one (n = 3); ragged K and rows
CASES += [(fmt, dt, shape) for fmt in ("nm(2,4)[pos32,crd8]", "nm(4,8)[pos32,crd8]", "nm(1,4)[pos32,crd8]",
                                       "nm(3,8)[pos32,crd16]")
          for dt, shape in ((("float16", "float32"), (70, 100, 16)), (("float32", "float32"), (33, 250, 5)),
                            (("bfloat16", "bfloat16"), (64, 64, 32)))]
# packed coordinates: rows starting on a byte (K = 256: whole steps, K = 40: a partial step) or not (K = 100 for 2:4,
# 50 slots a row; K = 6 for 1:2); slots split in registers (n = 1, 2, 4) or loaded one by one (n = 3)
CASES += [(fmt, ("float16", "float32"), shape) for fmt in ("nm(2,4,packed)", "nm(1,4,packed)", "nm(4,8,packed)",
                                                          "nm(3,8,packed)", "nm(1,2,packed)", "nm(5,16,packed)")
          for shape in ((70, 256, 16), (33, 100, 5), (9, 40, 24), (3, 6, 2))]
CASES += [("nm(2,4,packed)", dt, (64, 128, 32)) for dt in (("float32", "float32"), ("bfloat16", "bfloat16"))]


@pytest.mark.parametrize("fmt,dtypes,shape", CASES, ids=lambda c: str(c).replace(" ", ""))
def test_tile_spmm_matches_numpy(fmt, dtypes, shape):
    M, K, N = shape
    vdt, odt = dtypes
    k = sc.compile(TEXT, formats={"W": fmt}, dtype={"W": vdt, "X": vdt, "Y": odt}, target="triton")
    assert _tile_of(k) is not None, "the template did not match"
    tdt = getattr(torch, vdt)
    W = torch.from_numpy(_weight(fmt, M, K)).to(DEV, tdt)
    X = torch.from_numpy(RNG.standard_normal((K, N))).to(DEV, tdt)
    Y = k(W=W, X=X)
    ref = W.double() @ X.double()
    Y, ref = Y.cpu(), ref.cpu()
    err = float((Y.double() - ref).norm() / ref.norm().clamp_min(1e-30))
    tol = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1e-2}[odt if vdt == "float32" else vdt]
    assert err < tol and Y.dtype == getattr(torch, odt) and Y.shape == (M, N)


def test_split_k_and_fixed_configuration(monkeypatch):
    """Several K splits add atomically into a float32 output; the env override fixes the launch."""
    k = sc.compile(TEXT, formats={"W": "bitmap"}, dtype={"W": "float16", "X": "float16", "Y": "float32"},
                   target="triton")
    W = torch.from_numpy(_weight("bitmap", 40, 450)).to(DEV, torch.float16)
    X = torch.randn(450, 8).to(DEV, torch.float16)
    ref = W.double() @ X.double()
    for cfg in ("16,16,8,4", "32,16,1,4", "16,32,3,2"):
        monkeypatch.setenv("SPARSEC_TRITON_TILE", cfg)
        tk = _tile_of(k)
        tk._base_memo.clear()
        k._compiled[next(iter(k._compiled))]._launch_memo.clear()
        Y = k(W=W, X=X)
        assert float((Y.double() - ref).norm() / ref.norm()) < 1e-5, cfg
    monkeypatch.delenv("SPARSEC_TRITON_TILE")


@pytest.mark.parametrize("fmt", ["nm(2,4)[pos32,crd8]", "nm(2,4,packed)"])
@pytest.mark.parametrize("K", [512, 520])
def test_nm_split_k_whole_and_partial_steps(monkeypatch, fmt, K):
    """N:M with several K splits: K = 512 gives whole 128-column steps in every split (the mask-free EVEN
    loads), K = 520 a partial last step; the float32 output adds the splits atomically."""
    k = sc.compile(TEXT, formats={"W": fmt}, dtype={"W": "float16", "X": "float16", "Y": "float32"},
                   target="triton")
    W = torch.from_numpy(_weight(fmt, 48, K)).to(DEV, torch.float16)
    X = torch.randn(K, 16).to(DEV, torch.float16)
    ref = W.double() @ X.double()
    for cfg in ("16,16,4,4", "32,16,2,4", "64,16,1,4"):
        monkeypatch.setenv("SPARSEC_TRITON_TILE", cfg)
        k._compiled[next(iter(k._compiled))]._launch_memo.clear()
        Y = k(W=W, X=X)
        assert float((Y.double() - ref).norm() / ref.norm()) < 2e-3, cfg
    monkeypatch.delenv("SPARSEC_TRITON_TILE")


def test_other_forms_keep_the_generic_code(monkeypatch):
    both = {"W": "float16", "X": "float16", "Y": "float16"}
    assert _tile_of(sc.compile("Y[i,j] = X[k,j] * W[i,k]", formats={"W": "bitmap"}, dtype=both,
                               target="triton")) is None            # operands in another order
    assert _tile_of(sc.compile("Y[i,j] = W[i,k] * X[k,j] * 2", formats={"W": "bitmap"}, dtype=both,
                               target="triton")) is None            # a scaled product
    assert _tile_of(sc.compile(TEXT, formats={"W": "bitmap"}, dtype="float64", target="triton")) is None
    assert _tile_of(sc.compile(TEXT, formats={"W": "csr"}, dtype=both, target="triton")) is None
    monkeypatch.setenv("SPARSEC_TRITON_TILES", "0")
    assert _tile_of(sc.compile(TEXT, formats={"W": "nm(2,4)"}, dtype=both, target="triton")) is None


def test_transposed_layer_form_matches_and_dumps_the_template():
    k = sc.compile("Yt[o,t] = W[o,k] * Xt[k,t]", formats={"W": "nm(2,4)"},
                   dtype={"W": "bfloat16", "Xt": "bfloat16", "Yt": "float32"}, target="triton")
    assert _tile_of(k) is not None
    text = k.dump("triton")
    assert "tile template: nm(2, 4) SpMM" in text and "tl.dot(a, b)" in text
    assert tiles.match(next(iter(k._compiled.values())).kernel).kind == "nm"


@pytest.mark.parametrize("n,m", [(1, 8), (2, 8), (4, 8), (3, 8), (2, 5)])
def test_nm_template_source_shape(n, m):
    """The template's source: one contiguous load per buffer and tl.split for n a power of two, per-slot loads
    otherwise; one [BM, BG] tile per in-block offset (padded to a power of two), interleaved with tl.join."""
    k = sc.compile(TEXT, formats={"W": f"nm({n},{m})[pos32,crd8]"},
                   dtype={"W": "float16", "X": "float16", "Y": "float32"}, target="triton")
    mt = tiles.match(next(iter(k._compiled.values())).kernel)
    assert mt is not None and (mt.n, mt.m) == (n, m) and not mt.packed
    text = k.dump("triton")
    pow2 = n & (n - 1) == 0
    assert ("tl.split" in text) == (pow2 and n > 1)
    assert text.count("tl.load(W_vals") == (1 if pow2 else n)
    assert text.count("tl.join(") == 7 and "d7 = " in text and "d8 = " not in text
    assert text.count(" = tl.where(") == m and "d7 = zero" in text if m < 8 else text.count(" = tl.where(") == 8
    from sparsec.backends.triton.codegen import ATOMIC_SEM   # the split-K adds follow SPARSEC_TRITON_ATOMIC_SEM
    assert f"tl.atomic_add(out, acc, mask=omask, sem={ATOMIC_SEM!r})" in text and "sem=SEM" not in text


@pytest.mark.parametrize("n,m,bits", [(2, 4, 2), (1, 4, 2), (1, 2, 1), (4, 8, 4), (2, 8, 4), (4, 16, 4)])
def test_packed_nm_template_reads_whole_bytes(n, m, bits):
    """Packed coordinates, rows on a byte: one contiguous load of the step's bytes, each spread into its 8 / bits
    coordinates in registers; other rows read each slot's byte."""
    k = sc.compile(TEXT, formats={"W": f"nm({n},{m},packed)"},
                   dtype={"W": "float16", "X": "float16", "Y": "float32"}, target="triton")
    mt = tiles.match(next(iter(k._compiled.values())).kernel)
    assert mt is not None and (mt.n, mt.m, mt.packed, mt.level.crd_bits) == (n, m, True, bits)
    text = k.dump("triton")
    aligned, other = text.split("        else:\n            sl = ", 1)
    assert "if ALIGNED:" in aligned and aligned.count("tl.load(W_crd2") == 1 and "sb[None, :]" in aligned
    assert f"tl.arange(0, {8 // bits}) * {bits}" in aligned
    assert other.count("tl.load(W_crd2 + at // ") == 1


@pytest.mark.parametrize("fmt", ["csr", "bitmap"])
def test_fresh_dense_operands_reuse_the_launch_setup(fmt):
    """A fixed sparse weight times new activation tensors (a layer's forward) re-plans nothing."""
    k = sc.compile(TEXT, formats={"W": fmt}, dtype={"W": "float32", "X": "float32", "Y": "float32"},
                   target="triton")
    tk = next(iter(k._compiled.values()))
    W = torch.from_numpy(_weight("bitmap", 30, 40)).float().to(DEV)
    for step in range(4):
        X = torch.randn(40, 5, device=DEV)
        Y = k(W=W, X=X)
        assert torch.allclose(Y.cpu().double(), (W.double() @ X.double()).cpu(), atol=1e-4), step
    assert len(tk._launch_memo) == 1
    W2 = torch.from_numpy(_weight("bitmap", 30, 40)).float().to(DEV)   # another sparse operand: a new set-up
    X = torch.randn(40, 5, device=DEV)
    assert torch.allclose(k(W=W2, X=X).cpu().double(), (W2.double() @ X.double()).cpu(), atol=1e-4)
    assert len(tk._launch_memo) == 2


# ------------------------------------------------------------------------------------ skip_zeros (activation sparsity)
ACT = "Y[r,i] = X[r,k] * Wt[k,i]"


def _activations(rows: int, K: int, zero_fraction: float) -> np.ndarray:
    x = RNG.standard_normal((rows, K))
    x[RNG.random((rows, K)) < zero_fraction] = 0
    return x


@pytest.mark.parametrize("dt,out_dt", [("float32", "float32"), ("float16", "float32"), ("float16", "float16")])
@pytest.mark.parametrize("rows", [1, 3, 9])
def test_skip_zeros_template_matches_numpy_and_never_reads_skipped_rows(dt: str, out_dt: str, rows: int) -> None:
    """Rows of Wt under an all-zero column of X hold NaN: the template must not load them."""
    k = sc.compile(ACT, dtype={"X": dt, "Wt": dt, "Y": out_dt}, target="triton",
                   schedule=sc.Schedule().skip_zeros("X"))
    assert tiles.match(k.lowered.statements[0].numeric).kind == "skip"
    assert "skipping the zeros of A" in k.dump("triton")
    for K, M, zf in ((300, 200, 0.6), (64, 17, 0.9), (5, 40, 0.0), (130, 33, 1.0)):
        x = _activations(rows, K, zf)
        wt = RNG.standard_normal((K, M))
        dead = ~(x != 0).any(axis=0)
        want = x.astype(dt).astype(np.float64) @ np.where(dead[:, None], 0, wt.astype(dt).astype(np.float64))
        wt[dead] = np.nan
        got = k(X=torch.tensor(x.astype(dt), device=DEV), Wt=torch.tensor(wt.astype(dt), device=DEV))
        got = got.double().cpu().numpy()
        assert got.shape == (rows, M) and np.isfinite(got).all(), (K, M, zf)
        tol = 1e-5 if (dt, out_dt) == ("float32", "float32") else 2e-2
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()),
                                   err_msg=f"K={K} M={M} zeros={zf}")


def test_skip_zeros_keeps_nan_of_live_terms_and_is_opt_in() -> None:
    x = _activations(1, 96, 0.5)
    x[0, 7] = np.nan                                     # a NaN input is not zero: its term is computed
    wt = RNG.standard_normal((96, 48))
    X, Wt = torch.tensor(x, dtype=torch.float32, device=DEV), torch.tensor(wt, dtype=torch.float32, device=DEV)
    skip = sc.compile(ACT, dtype="float32", target="triton", schedule=sc.Schedule().skip_zeros("X"))
    assert torch.isnan(skip(X=X, Wt=Wt)).all()
    wt[np.flatnonzero(x[0] == 0)[0]] = np.inf           # 0 * inf: NaN without the schedule, skipped with it
    x[0, 7] = 1.0
    X, Wt = torch.tensor(x, dtype=torch.float32, device=DEV), torch.tensor(wt, dtype=torch.float32, device=DEV)
    plain = sc.compile(ACT, dtype="float32", target="triton")
    assert tiles.match(plain.lowered.statements[0].numeric) is None
    assert torch.isnan(plain(X=X, Wt=Wt)).all()
    assert torch.isfinite(skip(X=X, Wt=Wt)).all()
    cpu = sc.compile(ACT, dtype="float32", target="cpu", schedule=sc.Schedule().skip_zeros("X"))
    assert np.isnan(cpu(X=x.astype(np.float32), Wt=wt.astype(np.float32))).all()   # the CPU computes every term


@pytest.mark.parametrize("text,formats,tensor,msg", [
    (ACT, {}, "Q", "no statement reads that tensor"),
    (ACT, {}, "Y", "no statement reads that tensor"),
    ("Y[r,i] = X[r,i] + Wt[r,i]", {}, "X", "must be a factor of the statement's product"),
    (ACT, {"X": "csr"}, "X", "X is sparse"),
])
def test_skip_zeros_rejects_what_it_cannot_skip(text, formats, tensor, msg) -> None:
    with pytest.raises(sc.ScheduleError, match=msg):
        sc.compile(text, formats=formats, target="triton", schedule=sc.Schedule().skip_zeros(tensor))


# ------------------------------------------------------------------------------------ skip_zeros with a fused threshold
THR = "Y[r,i] = where(abs(X[r,k]) > t, X[r,k], 0) * Wt[k,i]"


def _thresholded(a: np.ndarray, thr: float, dt: str) -> np.ndarray:
    """The oracle's activations: ``a`` (as ``dt``) where ``|a| > thr`` (``thr`` as ``dt``), else 0, in float64."""
    a = a.astype(dt).astype(np.float64)
    return np.where(np.abs(a) > float(np.asarray(thr, dtype=dt)), a, 0.0)


@pytest.mark.parametrize("form", ["tensor", "tensor float64", "number", "literal"])
@pytest.mark.parametrize("dt,out_dt,rows", [("float16", "float32", 1), ("float32", "float32", 3),
                                            ("float16", "float16", 2)])
def test_fused_threshold_matches_numpy_and_never_reads_skipped_rows(form: str, dt: str, out_dt: str,
                                                                     rows: int) -> None:
    """Entries with |x| <= t are skipped: Wt rows under no surviving entry hold NaN and must not be read.

    Some entries equal the threshold exactly (they fail ``>``), so a template testing ``>=`` reads NaN.
    """
    thr = 0.75
    text = THR.replace("> t", f"> {thr!r}") if form == "literal" else THR
    dtypes = {"X": dt, "Wt": dt, "Y": out_dt}
    if form != "literal":
        dtypes["t"] = "float64" if form == "tensor float64" else dt
    k = sc.compile(text, dtype=dtypes, target="triton", schedule=sc.Schedule().skip_zeros("X"))
    mt = tiles.match(k.lowered.statements[0].numeric)
    assert mt is not None and mt.kind == "skip" and mt.threshold
    assert "thresholded (|a| > t) in the kernel" in k.dump("triton")
    for K, M in ((300, 70), (37, 129), (8, 5)):
        a = RNG.standard_normal((rows, K))
        a[RNG.random((rows, K)) < 0.3] = 0
        a[:, ::5] = thr * np.sign(RNG.standard_normal((rows, len(a[0, ::5]))))   # exactly at the threshold
        wt = RNG.standard_normal((K, M))
        x = _thresholded(a, thr, dt)
        dead = ~(x != 0).any(axis=0)
        want = x @ np.where(dead[:, None], 0, wt.astype(dt).astype(np.float64))
        wt[dead] = np.nan
        assert dead.sum() >= K // 5
        t = {"tensor": lambda: torch.tensor(thr, dtype=getattr(torch, dt), device=DEV),
             "tensor float64": lambda: torch.tensor(thr, dtype=torch.float64, device=DEV),
             "number": lambda: thr, "literal": lambda: None}[form]()
        given = {"X": torch.tensor(a.astype(dt), device=DEV), "Wt": torch.tensor(wt.astype(dt), device=DEV)}
        got = k(**given, **({} if t is None else {"t": t})).double().cpu().numpy()
        assert got.shape == (rows, M) and np.isfinite(got).all(), (K, M)
        tol = 1e-5 if (dt, out_dt) == ("float32", "float32") else 2e-2
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()), err_msg=f"K={K}")


def test_fused_threshold_follows_the_threshold_on_every_path(monkeypatch) -> None:
    """Each call's threshold (tensor or number, changed between calls) decides what is skipped: through the
    fast call path, the general device path and the CPU backend alike."""
    dtypes = {"X": "float32", "Wt": "float32", "Y": "float32", "t": "float32"}
    a = RNG.standard_normal((1, 200)).astype(np.float32)
    wt = RNG.standard_normal((200, 33)).astype(np.float32)
    A, Wt = torch.tensor(a, device=DEV), torch.tensor(wt, device=DEV)
    k = sc.compile(THR, dtype=dtypes, target="triton", schedule=sc.Schedule().skip_zeros("X"))
    k(X=A, Wt=Wt, t=torch.tensor(0.0, device=DEV))   # the fast path is set up on the first call
    cpu = sc.compile(THR, dtype=dtypes, target="cpu", schedule=sc.Schedule().skip_zeros("X"))
    monkeypatch.setenv("SPARSEC_NO_FAST_CALL", "1")
    general = sc.compile(THR, dtype=dtypes, target="triton", schedule=sc.Schedule().skip_zeros("X"))
    for thr in (0.1, 1.5, 0.1, -1.0, 10.0):
        want = _thresholded(a, thr, "float32") @ wt.astype(np.float64)
        for t in (thr, torch.tensor(thr, device=DEV)):
            for kernel in (k, general):
                got = kernel(X=A, Wt=Wt, t=t).double().cpu().numpy()
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"t={t!r}")
        np.testing.assert_allclose(cpu(X=a, Wt=wt, t=np.array(thr, np.float32)), want, rtol=1e-5, atol=1e-5)
    assert k._triton_fast is not None and general._triton_fast is None


@pytest.mark.parametrize("text", [
    "Y[r,i] = where(abs(X[r,k]) >= t, X[r,k], 0) * Wt[k,i]",     # another comparison
    "Y[r,i] = where(X[r,k] > t, X[r,k], 0) * Wt[k,i]",           # no abs
    "Y[r,i] = where(abs(X[r,k]) > t, X[r,k], 1) * Wt[k,i]",      # not zero where it fails
])
def test_other_gated_factors_keep_the_generic_code(text: str) -> None:
    """Only the exact thresholded form gets the template; the others still compute the right thing."""
    dtypes = {"X": "float32", "Wt": "float32", "Y": "float32", "t": "float32"}
    if text.endswith("1) * Wt[k,i]"):
        with pytest.raises(sc.ScheduleError, match="must be a factor"):
            sc.compile(text, dtype=dtypes, target="triton", schedule=sc.Schedule().skip_zeros("X"))
        return
    k = sc.compile(text, dtype=dtypes, target="triton", schedule=sc.Schedule().skip_zeros("X"))
    assert tiles.match(k.lowered.statements[0].numeric) is None
    a = RNG.standard_normal((2, 40)).astype(np.float32)
    wt = RNG.standard_normal((40, 9)).astype(np.float32)
    want = sc.compile(text, dtype=dtypes, target="cpu")(X=a, Wt=wt, t=np.array(0.5, np.float32))
    got = k(X=torch.tensor(a, device=DEV), Wt=torch.tensor(wt, device=DEV), t=torch.tensor(0.5, device=DEV))
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ the fast call path's bindings
def test_fresh_tensors_each_call_give_their_own_results_through_one_launch_setup() -> None:
    """A new activation tensor per call (a layer's output) is bound as a view, and reuses the launch set-up."""
    k = sc.compile(THR, dtype={"X": "float16", "Wt": "float16", "Y": "float32", "t": "float16"}, target="triton",
                   schedule=sc.Schedule().skip_zeros("X"))
    wt = RNG.standard_normal((96, 40)).astype(np.float16)
    Wt = torch.tensor(wt, device=DEV)
    t = torch.tensor(0.5, dtype=torch.float16, device=DEV)
    for _ in range(4):
        a = RNG.standard_normal((1, 96)).astype(np.float16)
        got = k(X=torch.tensor(a, device=DEV), Wt=Wt, t=t).double().cpu().numpy()
        np.testing.assert_allclose(got, _thresholded(a, 0.5, "float16") @ wt.astype(np.float64), rtol=2e-3,
                                   atol=2e-3)
    fast = k._triton_fast
    assert type(fast._bound["X"][2]).__name__ == "_Flat"    # no DeviceTensor built for the fresh tensor
    assert len(k._runner.runners[0].numeric._launch_memo) == 1
    wide = torch.tensor(RNG.standard_normal((1, 192)).astype(np.float16), device=DEV)
    got = k(X=wide[:, ::2], Wt=Wt, t=t).double().cpu().numpy()   # not contiguous: bound through a copy
    want = _thresholded(wide[:, ::2].cpu().numpy(), 0.5, "float16") @ wt.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("given_dtype", ["float32", "float16"])   # float16: bound as a view; float32: a cast copy
def test_in_place_edit_of_a_bound_tensor_is_seen(given_dtype: str) -> None:
    k = sc.compile(ACT, dtype={"X": "float16", "Wt": "float16", "Y": "float32"}, target="triton",
                   schedule=sc.Schedule().skip_zeros("X"))
    x = _activations(1, 64, 0.5)
    wt = RNG.standard_normal((64, 24))
    X = torch.tensor(x, dtype=getattr(torch, given_dtype), device=DEV)
    Wt = torch.tensor(wt, dtype=torch.float16, device=DEV)

    def want() -> np.ndarray:
        return X.cpu().numpy().astype(np.float16).astype(np.float64) @ Wt.cpu().numpy().astype(np.float64)

    for edit in (lambda: X.mul_(-2), lambda: X.__setitem__((0, slice(0, 32)), 0.0), lambda: Wt.add_(1.0),
                 lambda: X.fill_(0.25)):
        edit()
        got = k(X=X, Wt=Wt).double().cpu().numpy()
        np.testing.assert_allclose(got, want(), rtol=2e-3, atol=2e-3)


def test_sm_count_off_the_gpu_is_the_default() -> None:
    from sparsec.backends.triton.device import sm_count

    assert sm_count(torch.device("cpu"), 7) == 7
