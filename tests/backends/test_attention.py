"""The masked-attention program template (``sparsec.backends.triton.attention``).

Run in Triton's interpreter on the CPU at small sizes (the same source runs compiled on
a GPU: ``TRITON_INTERPRET=0`` with CUDA puts the operands there). The oracle is numpy in
float64, written from the statements' meaning: scores ``M * q.k * scale`` where
``M != 0``, a row softmax over those, times ``V``; rows without entries are zero.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import sparsec as sc  # noqa: E402
from sparsec.backends.triton import attention, program_template  # noqa: E402
from sparsec.backends.triton.options import options  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0") else "cpu"
TOL = {"float32": 1e-5, "float16": 3e-3, "bfloat16": 2e-2}


def oracle(M, Q, K, V, scale, stored=None):
    """float64 masked attention: softmax over the nonzeros of each row of M.

    A row with no stored entry (``stored``: the blocks' pattern, default M != 0) sums
    nothing and is 0; a row whose stored entries are all zero is 0/0, NaN."""
    M, Q, K, V = (np.asarray(x, dtype=np.float64) for x in (M, Q, K, V))
    s = np.where(M != 0, np.einsum("...id,...jd->...ij", Q, K) * M * scale, -np.inf)
    top = s.max(-1, keepdims=True)
    p = np.exp(s - np.where(np.isfinite(top), top, 0))
    total = p.sum(-1, keepdims=True)
    out = (p @ V) / np.where(total == 0, 1, total)
    if stored is not None:
        out[..., stored.any(1) & ~(M != 0).any(1), :] = np.nan
    return out


def block_mask(rng, n_i, n_j, bm, bn, keep=0.5, partial=True):
    """A bsr-shaped mask: whole blocks of ones, one empty block row, and (``partial``) one block of mixed values."""
    rows, cols = -(-n_i // bm), -(-n_j // bn)
    present = rng.random((rows, cols)) < keep
    present[0, 0] = True
    if rows > 1:
        present[rows // 2] = False                     # a block row with no blocks: zero output rows
    M = np.kron(present, np.ones((bm, bn)))[:n_i, :n_j]
    stored = M != 0
    if partial:
        M[:bm, :bn] *= rng.choice([0.0, 0.5, 1.0, 2.0], size=M[:bm, :bn].shape)
        M[0, :] = 0                                    # a row whose stored entries are all zero
    return M, stored


def compile_attention(bm, bn, dtype, heads=True, scale=0.25, out="float32", text=None, extra=None, **kw):
    return sc.compile(text or sc.masked_attention(scale, heads), formats={"M": f"bsr({bm},{bn})"}, target="triton",
                      outputs=["O"], dtype={"Q": dtype, "K": dtype, "V": dtype, "M": "float32", "S": "float32",
                                            "O": out, **(extra or {})}, **kw)


def operands(rng, heads, n_i, n_j, d, e, dtype, H=2):
    lead = (H,) if heads else ()
    tdt = getattr(torch, dtype)
    return [torch.from_numpy(rng.standard_normal(lead + shape)).to(DEV, tdt)
            for shape in ((n_i, d), (n_j, d), (n_j, e))]


def as_f64(t):
    return t.detach().double().cpu().numpy()


CASES = [  # heads, n_i, n_j, d, e, bm, bn, dtype
    (True, 64, 64, 16, 16, 16, 16, "float32"),
    (False, 40, 56, 24, 8, 16, 32, "float16"),        # ragged edges, head dims not powers of two
    (True, 48, 80, 32, 32, 32, 16, "bfloat16"),
    (False, 32, 32, 64, 16, 32, 32, "float16"),
    (True, 17, 33, 5, 3, 16, 16, "float32"),          # one-row overhang on both sides
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_template_matches_numpy(case):
    heads, n_i, n_j, d, e, bm, bn, dtype = case
    rng = np.random.default_rng(n_i * n_j + d)
    k = compile_attention(bm, bn, dtype, heads)
    assert "program template: masked attention" in k.dump("triton")
    M, stored = block_mask(rng, n_i, n_j, bm, bn)
    Q, K, V = operands(rng, heads, n_i, n_j, d, e, dtype)
    O = k(M=sc.Tensor.from_numpy(M, f"bsr({bm},{bn})"), Q=Q, K=K, V=V)
    assert O.shape == ((2,) if heads else ()) + (n_i, e) and O.dtype == torch.float32
    ref = oracle(M, as_f64(Q), as_f64(K), as_f64(V), 0.25, stored)
    np.testing.assert_allclose(as_f64(O), ref, rtol=TOL[dtype], atol=TOL[dtype] * np.nanmax(np.abs(ref)))
    assert np.isnan(as_f64(O)[..., 0, :]).all()        # row 0: stored entries, all zero: 0/0
    empty = ~stored.any(1)
    assert empty.any() == (n_i > bm) and not as_f64(O)[..., empty, :].any()   # rows without stored entries: 0



@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_template_writes_an_output_in_the_inputs_dtype(dtype):
    # O (and the never-stored S) in the half dtype, as FlexAttention and SDPA return it: the kernel still
    # sums in float32 and rounds once on the store
    rng = np.random.default_rng(11)
    k = compile_attention(16, 32, dtype, out=dtype, extra={"S": dtype})
    assert "program template: masked attention" in k.dump("triton")
    M, stored = block_mask(rng, 48, 64, 16, 32)
    Q, K, V = operands(rng, True, 48, 64, 32, 16, dtype)
    O = k(M=sc.Tensor.from_numpy(M, "bsr(16,32)"), Q=Q, K=K, V=V)
    assert O.dtype == getattr(torch, dtype) and O.shape == (2, 48, 16)
    ref = oracle(M, as_f64(Q), as_f64(K), as_f64(V), 0.25, stored)
    np.testing.assert_allclose(as_f64(O), ref, rtol=TOL[dtype], atol=TOL[dtype] * np.nanmax(np.abs(ref)))
    wide = compile_attention(16, 32, dtype)(M=sc.Tensor.from_numpy(M, "bsr(16,32)"), Q=Q, K=K, V=V)
    # the same float32 sums, rounded once on the store: within one unit in the last place of the half dtype
    # (the interpreter's bfloat16 conversion truncates where the GPU's rounds to nearest)
    ulp = torch.finfo(getattr(torch, dtype)).eps
    np.testing.assert_allclose(as_f64(O), as_f64(wide), rtol=ulp, atol=ulp * 2.0**-14)

def test_template_agrees_with_the_general_lowering(monkeypatch):
    rng = np.random.default_rng(5)
    M, _ = block_mask(rng, 32, 48, 16, 16)
    Q, K, V = operands(rng, True, 32, 48, 16, 16, "float32")
    Mt = sc.Tensor.from_numpy(M, "bsr(16,16)")
    fused = compile_attention(16, 16, "float32")(M=Mt, Q=Q, K=K, V=V)
    monkeypatch.setenv("SPARSEC_TRITON_TILES", "0")
    general = compile_attention(16, 16, "float32")
    assert "program template" not in general.dump("triton")
    # equal NaN rows included (row 0 stores only zeros)
    np.testing.assert_allclose(as_f64(fused), as_f64(general(M=Mt, Q=Q, K=K, V=V)), rtol=1e-5, atol=1e-6)
    assert np.isnan(as_f64(fused)[:, 0]).all()


def test_absent_blocks_are_never_read():
    # NaN keys and values in the columns no block covers: the fused kernel must not touch them
    rng = np.random.default_rng(6)
    M = np.zeros((32, 64))
    M[:, :16] = 1
    M[16:, 32:48] = 1
    Q, K, V = operands(rng, False, 32, 64, 16, 16, "float16")
    for t in (K, V):
        t[16:32] = float("nan")
        t[48:] = float("nan")
    O = compile_attention(16, 16, "float16", heads=False)(M=sc.Tensor.from_numpy(M, "bsr(16,16)"), Q=Q, K=K, V=V)
    keep = M.any(0)
    ref = oracle(M[:, keep], as_f64(Q), as_f64(K)[keep], as_f64(V)[keep], 0.25)
    np.testing.assert_allclose(as_f64(O), ref, rtol=3e-3, atol=3e-3)


def test_scale_and_names_are_taken_from_the_program():
    text = ("P[b,r,c] = Mask[r,c] * Qs[b,r,x] * Ks[b,c,x]\n"
            "Out[b,r,y] = where(Mask[r,c] != 0, exp(P[b,r,c] - max[t](where(Mask[r,t] != 0, P[b,r,t], -inf))), 0)"
            " * Vs[b,c,y] / sum[t](where(Mask[r,t] != 0, exp(P[b,r,t] - max[u](where(Mask[r,u] != 0, P[b,r,u], -inf)))"
            ", 0))")
    k = sc.compile(text, formats={"Mask": "bsr(16,16)"}, target="triton", outputs=["Out"],
                   dtype={"Qs": "float32", "Ks": "float32", "Vs": "float32", "Mask": "float32", "P": "float32",
                          "Out": "float32"})
    mt = attention.match(k)
    assert mt is not None and mt.scale == 1.0 and mt.name("Q") == "Qs" and mt.name("O") == "Out"
    rng = np.random.default_rng(7)
    M, _ = block_mask(rng, 32, 32, 16, 16, partial=False)
    Q, K, V = operands(rng, True, 32, 32, 16, 16, "float32")
    got = k(Mask=sc.Tensor.from_numpy(M, "bsr(16,16)"), Qs=Q, Ks=K, Vs=V)
    np.testing.assert_allclose(as_f64(got), oracle(M, as_f64(Q), as_f64(K), as_f64(V), 1.0), rtol=1e-5, atol=1e-6)
    assert attention.match(compile_attention(16, 16, "float32", scale=0.125)).scale == 0.125


@pytest.mark.parametrize("change", [
    lambda t: t.replace("max[", "min["),                                   # another reduction
    lambda t: t.replace("* K[h,j,d]", "* K[h,d,j]"),                       # K transposed
    lambda t: t.replace(" / sum[k]", " * sum[k]"),                         # not a softmax
    lambda t: t + "\nZ[h,i,e] = O[h,i,e] * 2",                             # a third statement
])
def test_other_programs_keep_the_general_lowering(change):
    text = change(sc.masked_attention(0.25))
    k = compile_attention(16, 16, "float32", text=text, extra={"Z": "float32"} if "Z" in text else None)
    assert attention.match(k) is None and "program template" not in k.dump("triton")


@pytest.mark.parametrize("why,kw", [
    ("mask in csr", dict(formats={"M": "csr"})),
    ("mask blocks not powers of two", dict(formats={"M": "bsr(12,16)"})),
    ("scores requested too", dict(outputs=["S", "O"])),
    ("float64 operands", dict(dtype="float64")),
])
def test_conditions_of_the_match(why, kw):
    args = dict(formats={"M": "bsr(16,16)"}, target="triton", outputs=["O"],
                dtype={"Q": "float16", "K": "float16", "V": "float16", "M": "float16", "S": "float32", "O": "float32"})
    args.update(kw)
    assert attention.match(sc.compile(sc.masked_attention(0.5), **args)) is None, why


def test_operands_the_template_does_not_take_run_the_general_path():
    # a head dimension over 256 is refused at call time; the statements still give the answer
    rng = np.random.default_rng(8)
    M, _ = block_mask(rng, 16, 32, 16, 16, partial=False)
    Q, K, V = operands(rng, False, 16, 32, 300, 4, "float32")
    k = compile_attention(16, 16, "float32", heads=False)
    got = k(M=sc.Tensor.from_numpy(M, "bsr(16,16)"), Q=Q, K=K, V=V)
    np.testing.assert_allclose(as_f64(got), oracle(M, as_f64(Q), as_f64(K), as_f64(V), 0.25), rtol=1e-5, atol=1e-6)


def test_mask_edits_are_seen_and_shapes_checked():
    rng = np.random.default_rng(9)
    M, _ = block_mask(rng, 32, 32, 16, 16, partial=False)
    Q, K, V = operands(rng, True, 32, 32, 16, 16, "float32")
    k = compile_attention(16, 16, "float32")
    Md = sc.backends.triton.device.bind_operand(sc.Tensor.from_numpy(M, "bsr(16,16)"), "M", None, "float32",
                                                torch.device(DEV))
    first = as_f64(k(M=Md, Q=Q, K=K, V=V))
    Md.values[:256] = 0.5                       # block 0 no longer all ones: the memoized flags must follow
    M2 = Md.to_torch().to_dense().double().cpu().numpy()
    np.testing.assert_allclose(as_f64(k(M=Md, Q=Q, K=K, V=V)), oracle(M2, as_f64(Q), as_f64(K), as_f64(V), 0.25),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(first, oracle(M2, as_f64(Q), as_f64(K), as_f64(V), 0.25))
    with pytest.raises(sc.SparsecError):
        k(M=Md, Q=Q[:, :16], K=K, V=V)          # Q has 16 rows, the mask 32


def test_empty_mask_gives_zeros():
    Q, K, V = operands(np.random.default_rng(10), True, 32, 32, 16, 16, "float32")
    O = compile_attention(16, 16, "float32")(M=sc.Tensor.from_numpy(np.zeros((32, 32)), "bsr(16,16)"), Q=Q, K=K, V=V)
    assert O.shape == (2, 32, 16) and not as_f64(O).any()


def test_launch_configurations_shrink_to_a_floor():
    mt = attention.match(compile_attention(128, 128, "float16"))
    cfg = attention.choose_config(mt, 128, partial=True)
    seen = [cfg]
    while (cfg := attention._smaller(cfg)) is not None:
        assert (cfg.block_m, cfg.block_n, cfg.stages) != (seen[-1].block_m, seen[-1].block_n, seen[-1].stages)
        seen.append(cfg)
    assert len(seen) < 20 and (seen[-1].block_m, seen[-1].block_n) == (16, 16)
    small = attention.match(compile_attention(16, 32, "float16"))
    assert attention.choose_config(small, 64, partial=False).block_m == 16


@pytest.mark.parametrize("target", ["cpu", "interp"])
def test_the_idiom_means_the_same_on_every_target(target):
    # the general lowering of sc.masked_attention (no template) against the same oracle
    rng = np.random.default_rng(12)
    M, stored = block_mask(rng, 32, 48, 16, 16)
    Q, K, V = (rng.standard_normal((2, n, 8)) for n in (32, 48, 48))
    k = sc.compile(sc.masked_attention(0.25), formats={"M": "bsr(16,16)"}, target=target, outputs=["O"])
    got = k(M=sc.Tensor.from_numpy(M, "bsr(16,16)"), Q=Q, K=K, V=V)
    np.testing.assert_allclose(got, oracle(M, Q, K, V, 0.25, stored), rtol=1e-10, atol=1e-12)


def test_masked_attention_text_checks_its_scale():
    assert "0.125" in sc.masked_attention(0.125) and "h," not in sc.masked_attention(heads=False)
    with pytest.raises(ValueError, match="scale"):
        sc.masked_attention(float("nan"))


def test_a_forced_configuration_is_used_on_every_call(monkeypatch):
    rng = np.random.default_rng(13)
    M, _ = block_mask(rng, 32, 32, 32, 32, partial=False)
    Q, K, V = operands(rng, True, 32, 32, 16, 16, "float32")
    k = compile_attention(32, 32, "float32")
    template = sc.backends.triton.program_template(k)
    Mt = sc.Tensor.from_numpy(M, "bsr(32,32)")
    ref = oracle(M, as_f64(Q), as_f64(K), as_f64(V), 0.25)
    for cfg in ("16,16,4,1", "32,16,4,1", "16,32,4,1"):
        monkeypatch.setenv("SPARSEC_TRITON_ATTENTION", cfg)
        np.testing.assert_allclose(as_f64(k(M=Mt, Q=Q, K=K, V=V)), ref, rtol=1e-5, atol=1e-6)
    launched = {(c.block_m, c.block_n) for c in template._fits.values()}
    assert launched == {(16, 16), (32, 16), (16, 32)}


@pytest.mark.parametrize("dtype,n_i,n_j,d,bm", [("float32", 48, 64, 16, 16), ("float16", 40, 56, 24, 32)])
def test_grouped_query_heads_read_their_groups_key_value_head(dtype, n_i, n_j, d, bm):
    """kv_groups: query head (g, r) attends with K[g], V[g]; the template matches the oracle and the general lowering."""
    rng = np.random.default_rng(n_i + d)
    G, R = 2, 3
    text = sc.masked_attention(0.25, kv_groups=True)
    k = compile_attention(bm, 16, dtype, text=text)
    assert "program template: masked attention" in k.dump("triton")
    M, stored = block_mask(rng, n_i, n_j, bm, 16)
    tdt = getattr(torch, dtype)
    Q = torch.from_numpy(rng.standard_normal((G, R, n_i, d))).to(DEV, tdt)
    K, V = (torch.from_numpy(rng.standard_normal((G, n_j, w))).to(DEV, tdt) for w in (d, 8))
    Mt = sc.Tensor.from_numpy(M, f"bsr({bm},16)")
    O = k(M=Mt, Q=Q, K=K, V=V)
    assert O.shape == (G, R, n_i, 8)
    ref = oracle(M, as_f64(Q), as_f64(K)[:, None], as_f64(V)[:, None], 0.25, stored)   # K, V shared by the R heads
    np.testing.assert_allclose(as_f64(O), ref, rtol=TOL[dtype], atol=TOL[dtype] * np.nanmax(np.abs(ref)))
    # the same as ungrouped attention over K and V repeated per query head
    flat = compile_attention(bm, 16, dtype)(M=Mt, Q=Q.reshape(G * R, n_i, d), K=K.repeat_interleave(R, 0),
                                            V=V.repeat_interleave(R, 0))
    np.testing.assert_allclose(as_f64(O).reshape(G * R, n_i, 8), as_f64(flat), rtol=1e-6, atol=1e-6)
    # a K with another head count than Q's groups takes the general path, which reports the mismatch
    with pytest.raises(sc.ShapeError):
        k(M=Mt, Q=Q, K=K[:1], V=V[:1])


def test_grouped_query_idiom_needs_heads_and_means_the_same_on_the_cpu():
    with pytest.raises(ValueError, match="kv_groups=True needs heads=True"):
        sc.masked_attention(0.5, heads=False, kv_groups=True)
    rng = np.random.default_rng(3)
    M, stored = block_mask(rng, 32, 32, 16, 16, partial=False)
    Q, K, V = rng.standard_normal((2, 2, 32, 8)), rng.standard_normal((2, 32, 8)), rng.standard_normal((2, 32, 4))
    k = sc.compile(sc.masked_attention(0.5, kv_groups=True), formats={"M": "bsr(16,16)"}, outputs=["O"], target="cpu")
    O = k(M=sc.Tensor.from_numpy(M, "bsr(16,16)"), Q=Q, K=K, V=V)
    np.testing.assert_allclose(O, oracle(M, Q, K[:, None], V[:, None], 0.5, stored), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bm,block_n", [(16, None), (32, 16)])
def test_causal_diagonal_blocks_compare_instead_of_loading(bm, block_n, monkeypatch):
    """Blocks that are 1 at and below their diagonal (a causal mask) are kind 2: masked by a comparison."""
    if block_n:   # columns in two steps per block: a step can be all masked for a row
        monkeypatch.setenv("SPARSEC_TRITON_ATTENTION", f"16,{block_n},4,1")
    rng = np.random.default_rng(bm)
    n = 4 * bm
    table = np.tril(rng.random((4, 4)) < 0.6) | np.eye(4, dtype=bool)
    M = np.kron(table, np.ones((bm, bm))) * np.tril(np.ones((n, n)))   # causal: key <= query
    M[bm:2 * bm, :bm] *= 2.0 if table[1, 0] else 1.0                    # values other than 1: loaded
    k = compile_attention(bm, bm, "float32")
    Mt = sc.Tensor.from_numpy(M, f"bsr({bm},{bm})")
    Q, K, V = operands(rng, True, n, n, 16, 8, "float32")
    O = k(M=Mt, Q=Q, K=K, V=V)
    template = sc.backends.triton.program_template(k)
    from sparsec.backends.triton.device import bind_operand

    bound = bind_operand(Mt, "M", Mt.format, "float32", torch.device(DEV))
    kinds, partial, tri = template.block_full(bound.values, int(bound.levels[1]["crd"].numel()))
    kinds = kinds.cpu().numpy().tolist()
    assert tri and kinds.count(2) == 4 and partial == bool(table[1, 0])
    ref = oracle(M, as_f64(Q), as_f64(K), as_f64(V), 0.25)
    np.testing.assert_allclose(as_f64(O), ref, rtol=1e-5, atol=1e-5)


def _repeat_setup(rng, dtype="float16"):
    k = compile_attention(16, 16, dtype, heads=True)
    M, stored = block_mask(rng, 32, 48, 16, 16, partial=False)
    Md = sc.Tensor.from_numpy(M, "bsr(16,16)").to_device(DEV)
    Q, K, V = operands(rng, True, 32, 48, 16, 16, dtype)
    return k, M, stored, Md, Q, K, V


def _template(k):
    return program_template(k)


def test_a_repeated_call_skips_binding_and_set_up(monkeypatch):
    rng = np.random.default_rng(21)
    k, M, stored, Md, Q, K, V = _repeat_setup(rng)
    first = k(M=Md, Q=Q, K=K, V=V)
    tmpl = _template(k)
    assert tmpl._last is not None
    assert (tmpl._last.direct is not None) == (DEV == "cuda")     # compiled kernels launch directly on a GPU
    monkeypatch.setattr(tmpl, "block_full", lambda *a: pytest.fail("the repeated call set up again"))
    for Qn in (Q, Q.clone()):                          # the same tensors, and fresh ones of the same shape
        again = k(M=Md, Q=Qn, K=K, V=V)
        assert again.data_ptr() != first.data_ptr()    # a fresh output each call
        np.testing.assert_array_equal(as_f64(again), as_f64(first))
    ref = oracle(M, as_f64(Q), as_f64(K), as_f64(V), 0.25, stored)
    np.testing.assert_allclose(as_f64(first), ref, rtol=TOL["float16"], atol=TOL["float16"] * np.nanmax(np.abs(ref)))


@pytest.mark.parametrize("change", ["mask values in place", "mask arrays replaced", "other shapes",
                                    "transposed view", "unaligned view", "another mask", "precision option"])
def test_a_changed_call_sets_up_again(change):
    rng = np.random.default_rng(22)
    k, M, stored, Md, Q, K, V = _repeat_setup(rng, "float32")
    k(M=Md, Q=Q, K=K, V=V)
    tmpl = _template(k)
    before = tmpl._last
    assert before is not None
    if change == "mask values in place":               # the first block's upper half becomes zeros: read now
        Md.values.view(-1)[: 16 * 8] = 0
        M = Md.to_host().to_numpy()
    elif change == "mask arrays replaced":
        Md.values = Md.values * 2                      # every score doubles
        M = M * 2
    elif change == "other shapes":
        M, stored = block_mask(rng, 48, 48, 16, 16, partial=False)
        Md = sc.Tensor.from_numpy(M, "bsr(16,16)").to_device(DEV)
        Q, K, V = operands(rng, True, 48, 48, 16, 16, "float32")
    elif change == "transposed view":
        Q = Q.transpose(1, 2).contiguous().transpose(1, 2)
    elif change == "unaligned view":
        Q = torch.cat([torch.zeros(1, dtype=Q.dtype, device=Q.device), Q.reshape(-1)])[1:].view(Q.shape)
    elif change == "another mask":
        M, stored = block_mask(rng, 32, 48, 16, 16, partial=False)
        Md = sc.Tensor.from_numpy(M, "bsr(16,16)").to_device(DEV)
    if change == "precision option":
        with options(precision="tf32"):
            got = k(M=Md, Q=Q, K=K, V=V)
    else:
        got = k(M=Md, Q=Q, K=K, V=V)
    assert tmpl._last is not before
    ref = oracle(M, as_f64(Q), as_f64(K), as_f64(V), 0.25, stored)
    tol = 3e-3 if change == "precision option" else 1e-4
    np.testing.assert_allclose(as_f64(got), ref, rtol=tol, atol=tol * np.nanmax(np.abs(ref)))


def test_a_freed_mask_is_not_reused():
    import gc
    import weakref

    rng = np.random.default_rng(23)
    k, M, stored, Md, Q, K, V = _repeat_setup(rng)
    k(M=Md, Q=Q, K=K, V=V)
    tmpl = _template(k)
    assert tmpl._last is not None
    values = weakref.ref(Md.values)
    del Md
    gc.collect()
    assert tmpl._last is None and values() is None     # the template keeps no mask (or its arrays) alive
    M2, stored2 = block_mask(rng, 32, 48, 16, 16, partial=False)
    got = k(M=sc.Tensor.from_numpy(M2, "bsr(16,16)").to_device(DEV), Q=Q, K=K, V=V)
    ref = oracle(M2, as_f64(Q), as_f64(K), as_f64(V), 0.25, stored2)
    np.testing.assert_allclose(as_f64(got), ref, rtol=TOL["float16"], atol=TOL["float16"] * np.nanmax(np.abs(ref)))
