"""Block-sparse attention: SDDMM -> row softmax -> SpMM over a block mask, fused into one kernel.

The program is two statements of index notation (``sc.masked_attention`` writes them)::

    S[h,i,j] = M[i,j] * Q[h,i,d] * K[h,j,d] * 0.125
    O[h,i,e] = softmax over the nonzeros of M[i,:] of S[h,i,:], times V[h,j,e]

    k = sc.compile(sc.masked_attention(0.125), formats={"M": "bsr(128,128)"}, dtype=..., target="triton",
                   outputs=["O"])

With the mask in ``bsr`` the Triton backend runs it as one FlashAttention-style kernel
(online softmax, scores never stored; see ``sparsec/backends/triton/attention.py``).
The mask keeps each block row's diagonal block and a random 10 % of the others (90 %
block sparsity). Checked against float64 masked attention on sampled query rows, and
timed next to torch's FlexAttention with the same block mask (the baseline; full blocks,
no ``mask_mod`` work inside them) and dense SDPA. GPU: 16 heads, sequence 8k-32k, head
dims 64 and 128, bfloat16; each case also with grouped-query attention (4 key/value
heads, each read by 4 query heads: ``sc.masked_attention(scale, kv_groups=True)`` with
``Q.view(4, 4, S, d)``; the torch peers with ``enable_gqa=True``), and with a causal
block mask (random blocks below the diagonal, the diagonal blocks lower-triangular: the
kernel compares key with query position there instead of loading them; FlexAttention's
``mask_mod`` adds ``kv <= q``). ``O`` is in the inputs' dtype (bfloat16 on the GPU), as
FlexAttention and SDPA return it; scores, softmax and sums run in float32 in the kernel.
Without CUDA it runs the CPU backend (the general lowering) at small sizes, in float32.
``--quick``: tiny sizes (CI).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _dl_common as dl  # noqa: E402

import sparsec as sc  # noqa: E402

ITEM = "4 block-sparse attention"


def default_sizes(env: dl.Env) -> dict:
    """Sequence lengths, head dims, heads, mask block and kept fraction for the environment."""
    if env.quick:
        return dict(seqs=[64], head_dims=[16], heads=2, block=16, keep=0.3, groups=[1, 2], masks=MASKS)
    if env.gpu:
        return dict(seqs=[8192, 16384, 32768], head_dims=[64, 128], heads=16, block=128, keep=0.1, groups=[1, 4],
                    masks=MASKS)
    return dict(seqs=[512], head_dims=[32], heads=2, block=32, keep=0.2, groups=[1, 2], masks=MASKS)


#: the masks: "random" keeps the diagonal and a random fraction of the other blocks; "causal" keeps the
#: diagonal and a random fraction of the blocks below it, and inside a diagonal block only key <= query
MASKS = ("random", "causal")


def block_table(n_blocks: int, keep: float, gen: torch.Generator, device, causal: bool = False) -> torch.Tensor:
    """[n_blocks, n_blocks] bool: the diagonal and a random ``keep`` fraction of the other blocks
    (``causal``: of the blocks below the diagonal)."""
    table = torch.rand(n_blocks, n_blocks, generator=gen, device=device) < keep
    if causal:
        table = table.tril()
    table |= torch.eye(n_blocks, dtype=torch.bool, device=device)
    return table


def bsr_mask(table: torch.Tensor, block: int, dtype: torch.dtype, causal: bool = False) -> torch.Tensor:
    """The mask as a torch BSR tensor (one ``block x block`` block per kept table entry): ones, and with
    ``causal`` the diagonal blocks lower-triangular (key <= query)."""
    n = table.shape[0]
    crow = torch.zeros(n + 1, dtype=torch.int32, device=table.device)
    crow[1:] = table.sum(1).cumsum(0)
    where = table.nonzero()
    col = where[:, 1].to(torch.int32)
    vals = torch.ones(int(col.numel()), block, block, dtype=dtype, device=table.device)
    if causal:
        diag = where[:, 0] == where[:, 1]
        vals[diag] = torch.ones(block, block, dtype=dtype, device=table.device).tril()
    return torch.sparse_bsr_tensor(crow, col, vals, size=(n * block, n * block), check_invariants=False)


def sampled_reference(Q, K, V, table, block: int, scale: float, rows: torch.Tensor,
                      causal: bool = False) -> torch.Tensor:
    """float64 masked attention for query ``rows`` of every head: [H, len(rows), E]."""
    allowed = table[rows // block].repeat_interleave(block, dim=1)          # [R, S]
    if causal:
        allowed &= torch.arange(allowed.shape[1], device=rows.device)[None, :] <= rows[:, None]
    s = torch.einsum("hrd,hsd->hrs", Q[:, rows].double(), K.double()) * scale
    s = s.masked_fill(~allowed, -math.inf)
    return torch.softmax(s, dim=-1) @ V.double()


def _flex(table: torch.Tensor, block: int, seq: int, causal: bool = False):
    """FlexAttention (compiled) and its BlockMask for the same block table, or the reason it cannot run."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError as e:  # pragma: no cover - torch without FlexAttention
        return NotImplementedError(f"FlexAttention: {e}")
    if table.device.type != "cuda":
        return NotImplementedError("FlexAttention baseline timed on CUDA only")

    def mask_mod(b, h, q, kv):
        return table[q // block, kv // block] & (kv <= q) if causal else table[q // block, kv // block]

    bm = create_block_mask(mask_mod, None, None, seq, seq, device=table.device, BLOCK_SIZE=block)
    # each mask and shape compiles flex_attention again: past torch's recompile limit (8) it would run
    # uncompiled (scores materialized: hundreds of times slower, out of memory at S=32k)
    torch._dynamo.reset()
    return torch.compile(flex_attention), bm


def run(env: dl.Env, seqs: Sequence[int], head_dims: Sequence[int], heads: int, block: int,
        keep: float, groups: Sequence[int] = (1,), masks: Sequence[str] = ("random",)) -> list[dl.Row]:
    """Every (sequence, head dim, query heads per key/value head): FlexAttention (baseline), dense SDPA,
    sparsec's fused masked attention. ``groups`` > 1: grouped-query attention, ``heads // g`` key/value
    heads, each read by ``g`` query heads (``enable_gqa=True`` for the torch peers). ``masks``: see :data:`MASKS`."""
    dtype = torch.bfloat16 if env.gpu else env.dtype
    dt = str(dtype).replace("torch.", "")
    rows: list[dl.Row] = []
    gen = torch.Generator(device=env.device).manual_seed(0)
    for seq, kind in ((seq, kind) for seq in seqs for kind in masks):
        causal = kind == "causal"
        table = block_table(seq // block, keep, gen, env.device, causal)
        density = float(table.float().mean())
        mask = dl.bind(bsr_mask(table, block, dtype, causal), f"bsr({block},{block})", _env_with(env, dtype),
                       name="M") if env.target == "triton" else \
            sc.Tensor.from_torch(bsr_mask(table, block, torch.float32, causal).to_dense(),
                                 format=f"bsr({block},{block})", name="M")
        flex = _flex(table, block, seq, causal)
        for d, g in ((d, g) for d in head_dims for g in groups):
            scale = 1 / math.sqrt(d)
            kv_heads = heads // g
            Q = torch.randn(heads, seq, d, device=env.device, generator=gen).to(dtype)
            K, V = (torch.randn(kv_heads, seq, d, device=env.device, generator=gen).to(dtype) for _ in range(2))
            sample = torch.randperm(seq, generator=gen, device=env.device)[:128].sort().values
            ref = sampled_reference(Q, K.repeat_interleave(g, 0), V.repeat_interleave(g, 0), table, block, scale,
                                    sample, causal)
            case = f"S={seq} d={d} H={heads}" + (f" KV={kv_heads}" if g > 1 else "") + \
                (" causal" if causal else "") + f" kept={density:.3f}"
            p = dict(seq=seq, head_dim=d, heads=heads, kv_heads=kv_heads, block=block, density=density, dtype=dt,
                     mask=kind)
            gqa = dict(enable_gqa=True) if g > 1 else {}

            def verify(out: Any, what: str) -> float:
                return dl.check(torch.as_tensor(out).reshape(heads, seq, d)[:, sample], ref, dtype, f"{case} {what}")

            def flex_call(Q=Q, K=K, V=V, scale=scale, gqa=gqa):
                if isinstance(flex, Exception):
                    raise flex
                fn, bm = flex
                return fn(Q[None], K[None], V[None], block_mask=bm, scale=scale, **gqa)[0]
            rows.append(_checked_row(flex_call, verify, "FlexAttention (same block mask)", case, env, p,
                                     baseline=True))

            def sdpa(Q=Q, K=K, V=V, scale=scale, gqa=gqa):
                if not env.gpu:
                    raise NotImplementedError("dense SDPA timed on CUDA only")
                return torch.nn.functional.scaled_dot_product_attention(Q[None], K[None], V[None], scale=scale,
                                                                        **gqa)[0]
            rows.append(dl.measure(ITEM, case, "dense SDPA (no mask)", sdpa, None, env, **p))

            k = sc.compile(sc.masked_attention(scale, kv_groups=g > 1), formats={"M": f"bsr({block},{block})"},
                           target=env.target, outputs=["O"], name="block_attention",
                           dtype={"Q": dt, "K": dt, "V": dt, "M": dt, "S": dt, "O": dt})
            Qo, Ko, Vo = (dl.dense(x, env) for x in (Q.view(kv_heads, g, seq, d) if g > 1 else Q, K, V))
            rows.append(_checked_row(lambda k=k, Q=Qo, K=Ko, V=Vo: k(M=mask, Q=Q, K=K, V=V), verify,
                                     f"sparsec masked_attention bsr({block},{block})", case, env, p))
    return rows


def _env_with(env: dl.Env, dtype: torch.dtype) -> dl.Env:
    return dl.Env(env.device, env.target, dtype, env.quick)


def _checked_row(fn, verify, variant: str, case: str, env: dl.Env, params: dict, baseline: bool = False) -> dl.Row:
    """Check ``fn`` on the sampled rows, then time it (a failure or an unsupported peer becomes the row)."""
    try:
        err = verify(fn(), variant)
    except NotImplementedError as e:
        return dl.Row(ITEM, case, variant, status="unsupported", note=str(e)[:160], baseline=baseline, params=params)
    except Exception as e:
        return dl.Row(ITEM, case, variant, status="failed", note=f"{type(e).__name__}: {str(e)[:150]}",
                      baseline=baseline, params=params)
    row = dl.measure(ITEM, case, variant, fn, None, env, baseline=baseline, **params)
    row.err = err
    return row


def main() -> int:
    env = dl.setup()
    rows = run(env, **default_sizes(env))
    dl.print_table("O = softmax(QK^T over a block mask) V (item 4)", rows, env)
    return dl.finish(rows)


if __name__ == "__main__":
    sys.exit(main())
