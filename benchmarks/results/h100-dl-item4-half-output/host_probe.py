"""Probe: host time of one sparsec masked-attention call against its GPU time (S=8192, d=64, causal, H100).

do_bench records its start event right after enqueuing the L2 flush; if a call's host work takes longer than
the flush runs on the GPU, the gap lands in the measured time. Prints, for sparsec and FlexAttention: five
do_bench medians, the host microseconds per call (100 calls, no sync), and sparsec's top host functions.
"""
import cProfile
import math
import os
import pstats
import sys
import time

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples"))
import _dl_common as dl  # noqa: E402
import dl_block_sparse_attention as ex  # noqa: E402

import sparsec as sc  # noqa: E402


def host_us(fn, n=100):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    host = (time.perf_counter() - t) / n
    torch.cuda.synchronize()
    total = (time.perf_counter() - t) / n
    return host * 1e6, total * 1e6


def main():
    env = dl.setup([])
    gen = torch.Generator(device="cuda").manual_seed(0)
    seq, d, block, heads = 8192, 64, 128, 16
    for causal in (False, True):
        table = ex.block_table(seq // block, 0.1, gen, "cuda", causal)
        mask = dl.bind(ex.bsr_mask(table, block, torch.bfloat16, causal), f"bsr({block},{block})",
                       ex._env_with(env, torch.bfloat16), name="M")
        flex_fn, bm = ex._flex(table, block, seq, causal)
        scale = 1 / math.sqrt(d)
        Q, K, V = (torch.randn(heads, seq, d, device="cuda", generator=gen).to(torch.bfloat16) for _ in range(3))
        for odt in ("float32", "bfloat16"):
            k = sc.compile(sc.masked_attention(scale), formats={"M": f"bsr({block},{block})"}, target="triton",
                           outputs=["O"], name="attn", dtype={"Q": "bfloat16", "K": "bfloat16", "V": "bfloat16",
                                                              "M": "bfloat16", "S": odt, "O": odt})
            f = lambda: k(M=mask, Q=Q, K=K, V=V)
            fl = lambda: flex_fn(Q[None], K[None], V[None], block_mask=bm, scale=scale)[0]
            for name, fn in (("sparsec O=" + odt, f), ("flex", fl)):
                ts = [triton.testing.do_bench(fn, warmup=25, rep=200) * 1e3 for _ in range(5)]
                h, tot = host_us(fn)
                print(f"causal={causal} {name:18s} do_bench {' '.join(f'{t:6.1f}' for t in ts)} us; "
                      f"host {h:6.1f} us/call, back-to-back {tot:6.1f} us/call", flush=True)
            if causal and odt == "bfloat16":
                pr = cProfile.Profile()
                pr.enable()
                for _ in range(200):
                    f()
                pr.disable()
                torch.cuda.synchronize()
                pstats.Stats(pr).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    main()
