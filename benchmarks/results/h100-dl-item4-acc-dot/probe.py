"""Probe (item 4, H100): the masked-attention template's P.V accumulate, output dtype and launch shape.

Variants of sparsec's fused kernel on the random 90 % block mask (bf16 Q/K/V, 128x128 blocks, 16 heads):
  old  -- ``acc = acc * alpha + tl.dot(p, v)`` (the template before this probe)
  new  -- ``acc = tl.dot(p, v, acc * alpha)`` (the rescaled accumulator is the dot's own)
with O float32 or bfloat16 (FlexAttention returns bfloat16), and launch configurations forced through
SPARSEC_TRITON_ATTENTION. Times: triton.testing.do_bench medians (L2 flushed), each output checked
against float64 on 128 sampled rows. FlexAttention (compiled, same block mask) is the baseline.
Run on the GPU from the repository root: python benchmarks/results/h100-dl-item4-acc-dot/probe.py
"""
import math
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples"))
import _dl_common as dl  # noqa: E402
import dl_block_sparse_attention as ex  # noqa: E402

import sparsec as sc  # noqa: E402
from sparsec.backends.triton import attention  # noqa: E402

NEW_SOURCE = attention.source   # the template as shipped
OLD_LINE = "acc = acc * alpha[:, None] + tl.dot(pr.to(v.dtype), v)"
NEW_LINE = "acc = tl.dot(pr.to(v.dtype), v, acc * alpha[:, None])"


def old_source(dtype, interp):
    s = NEW_SOURCE(dtype, interp)
    assert OLD_LINE in s
    return s


#: variants timed (the probe's first run on the H100 also timed "new" (acc * alpha passed to tl.dot) at S=8192,
#: d=64 with O float32: 212 us at the default 64x128/4 warps against 136 us for "old"; dropped)
VARIANTS = (("old", old_source),)


def main():
    env = dl.setup([])
    out_lines = []

    def log(s):
        print(s, flush=True)
        out_lines.append(s)

    gen = torch.Generator(device="cuda").manual_seed(0)
    block, heads = 128, 16
    configs = {64: ["", "128,64,8,3", "128,64,8,4", "128,64,4,3", "128,32,8,3", "64,64,4,3"],
               128: ["", "128,64,8,3", "128,64,8,4", "128,128,8,2", "64,128,4,3", "128,64,4,3", "64,64,4,3"]}
    summary = []
    for seq in (8192, 16384, 32768):
        table = ex.block_table(seq // block, 0.1, gen, "cuda")
        mask = dl.bind(ex.bsr_mask(table, block, torch.bfloat16), f"bsr({block},{block})",
                       ex._env_with(env, torch.bfloat16), name="M")
        flex_fn, bm = ex._flex(table, block, seq)
        for d in (64, 128):
            scale = 1 / math.sqrt(d)
            Q, K, V = (torch.randn(heads, seq, d, device="cuda", generator=gen).to(torch.bfloat16) for _ in range(3))
            sample = torch.randperm(seq, generator=gen, device="cuda")[:128].sort().values
            ref = ex.sampled_reference(Q, K, V, table, block, scale, sample)
            flex = lambda: flex_fn(Q[None], K[None], V[None], block_mask=bm, scale=scale)[0]
            dl.check(flex()[:, sample], ref, torch.bfloat16, "flex")
            t_flex = triton.testing.do_bench(flex, warmup=25, rep=200)
            log(f"S={seq} d={d}: FlexAttention {t_flex * 1e3:.1f} us")
            for odt in ("float32", "bfloat16"):
                for variant, src in VARIANTS:
                    attention.source = src
                    k = sc.compile(sc.masked_attention(scale), formats={"M": f"bsr({block},{block})"},
                                   target="triton", outputs=["O"], name=f"attn_{variant}_{odt}",
                                   dtype={"Q": "bfloat16", "K": "bfloat16", "V": "bfloat16", "M": "bfloat16",
                                          "S": odt, "O": odt})
                    for cfg in configs[d]:
                        os.environ["SPARSEC_TRITON_ATTENTION"] = cfg
                        tmpl = getattr(k, "_triton_program", None)
                        if tmpl:
                            tmpl._fns.clear()
                            tmpl._fits.clear()
                        f = lambda: k(M=mask, Q=Q, K=K, V=V)
                        dl.check(f()[:, sample], ref, torch.bfloat16, "sparsec")
                        t = triton.testing.do_bench(f, warmup=25, rep=200)
                        log(f"  {variant} O={odt:8s} cfg={cfg or 'default':12s} {t * 1e3:7.1f} us  "
                            f"{t_flex / t:5.2f}x flex")
                        summary.append((seq, d, variant, odt, cfg or "default", t * 1e3, t_flex / t))
                    os.environ.pop("SPARSEC_TRITON_ATTENTION", None)
            attention.source = NEW_SOURCE
    log("\n| S | d | variant | O | config | us | vs flex |\n|---|---|---|---|---|---|---|")
    for r in summary:
        log("| %d | %d | %s | %s | %s | %.1f | %.2fx |" % r)
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "probe.txt"), "w") as fh:
        fh.write("\n".join(out_lines) + "\n")


if __name__ == "__main__":
    main()
