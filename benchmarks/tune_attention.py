"""Sweep the masked-attention template's launch configurations on a GPU, next to FlexAttention.

    python benchmarks/tune_attention.py            # prints one line per (S, d, config); needs CUDA

Each configuration is forced through ``SPARSEC_TRITON_ATTENTION="BLOCK_M,BLOCK_N,WARPS,STAGES"``
(see ``sparsec/backends/triton/attention.py``); the output is checked against FlexAttention's
(``err_vs_flex``) and the lines are also written to ``$OUT/attn_tune.txt`` when ``OUT`` is set.
The defaults of ``choose_config`` come from this sweep on an H100 (16 heads, bf16, 128x128
mask blocks, ~10 % kept).
"""

from __future__ import annotations

import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "examples")]

import torch  # noqa: E402

import dl_block_sparse_attention as ex  # noqa: E402
import sparsec as sc  # noqa: E402

#: configurations tried per head dim ("BLOCK_M,BLOCK_N,WARPS,STAGES")
CONFIGS = {64: ["64,128,4,3", "64,128,4,4", "128,128,8,3", "64,64,4,4", "128,64,8,3", "64,128,8,3", "64,128,4,2"],
           128: ["128,64,8,3", "128,64,8,2", "128,128,8,2", "128,32,8,3", "64,64,4,3", "64,128,4,2", "128,128,8,3",
                 "64,64,4,2"]}


def sweep(seqs=(8192, 16384, 32768), head_dims=(64, 128), heads: int = 16, block: int = 128,
          keep: float = 0.1) -> list[str]:
    """One line per (sequence, head dim, configuration): FlexAttention's time, ours, their ratio, the difference."""
    from triton.testing import do_bench

    from sparsec.backends.triton.device import bind_operand

    dev = torch.device("cuda")
    lines = []
    for seq in seqs:
        gen = torch.Generator(device=dev).manual_seed(0)
        table = ex.block_table(seq // block, keep, gen, dev)
        mask = bind_operand(ex.bsr_mask(table, block, torch.bfloat16), "M", None, "bfloat16", dev)
        flex, block_mask = ex._flex(table, block, seq)
        for d in head_dims:
            scale = 1 / math.sqrt(d)
            Q, K, V = (torch.randn(heads, seq, d, device=dev, generator=gen).bfloat16() for _ in range(3))

            def run_flex():
                return flex(Q[None], K[None], V[None], block_mask=block_mask, scale=scale)
            ref = run_flex()[0].float()
            t_flex = do_bench(run_flex, rep=200) * 1e3
            k = sc.compile(sc.masked_attention(scale), formats={"M": f"bsr({block},{block})"}, target="triton",
                           outputs=["O"], dtype={"Q": "bfloat16", "K": "bfloat16", "V": "bfloat16", "M": "bfloat16",
                                                 "S": "bfloat16", "O": "bfloat16"})
            for cfg in CONFIGS.get(d, CONFIGS[128]):
                os.environ["SPARSEC_TRITON_ATTENTION"] = cfg
                try:
                    o = k(M=mask, Q=Q, K=K, V=V)
                    err = f"{float((o.float() - ref).norm() / ref.norm()):.1e}"
                    t = do_bench(lambda: k(M=mask, Q=Q, K=K, V=V), rep=200) * 1e3
                except Exception as e:   # e.g. out of shared memory for this configuration
                    t, err = math.nan, " ".join(str(e).split())[:80]
                line = (f"S={seq} d={d} flex={t_flex:8.1f}us cfg={cfg:<12} ours={t:8.1f}us "
                        f"ratio={t_flex / t:5.2f} err_vs_flex={err}")
                print(line, flush=True)
                lines.append(line)
            os.environ.pop("SPARSEC_TRITON_ATTENTION", None)
    return lines


if __name__ == "__main__":
    found = sweep()
    if os.environ.get("OUT"):
        os.makedirs(os.environ["OUT"], exist_ok=True)
        with open(os.path.join(os.environ["OUT"], "attn_tune.txt"), "w") as f:
            f.write("\n".join(found))
