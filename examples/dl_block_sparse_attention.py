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
dims 64 and 128, bfloat16. Without CUDA it runs the CPU backend (the general lowering)
at small sizes. ``--quick``: tiny sizes (CI).
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
        return dict(seqs=[64], head_dims=[16], heads=2, block=16, keep=0.3)
    if env.gpu:
        return dict(seqs=[8192, 16384, 32768], head_dims=[64, 128], heads=16, block=128, keep=0.1)
    return dict(seqs=[512], head_dims=[32], heads=2, block=32, keep=0.2)


def block_table(n_blocks: int, keep: float, gen: torch.Generator, device) -> torch.Tensor:
    """[n_blocks, n_blocks] bool: the diagonal and a random ``keep`` fraction of the other blocks."""
    table = torch.rand(n_blocks, n_blocks, generator=gen, device=device) < keep
    table |= torch.eye(n_blocks, dtype=torch.bool, device=device)
    return table


def bsr_mask(table: torch.Tensor, block: int, dtype: torch.dtype) -> torch.Tensor:
    """The mask as a torch BSR tensor of ones (one ``block x block`` block per kept table entry)."""
    n = table.shape[0]
    crow = torch.zeros(n + 1, dtype=torch.int32, device=table.device)
    crow[1:] = table.sum(1).cumsum(0)
    col = table.nonzero()[:, 1].to(torch.int32)
    vals = torch.ones(int(col.numel()), block, block, dtype=dtype, device=table.device)
    return torch.sparse_bsr_tensor(crow, col, vals, size=(n * block, n * block), check_invariants=False)


def sampled_reference(Q, K, V, table, block: int, scale: float, rows: torch.Tensor) -> torch.Tensor:
    """float64 masked attention for query ``rows`` of every head: [H, len(rows), E]."""
    allowed = table[rows // block].repeat_interleave(block, dim=1)          # [R, S]
    s = torch.einsum("hrd,hsd->hrs", Q[:, rows].double(), K.double()) * scale
    s = s.masked_fill(~allowed, -math.inf)
    return torch.softmax(s, dim=-1) @ V.double()


def _flex(table: torch.Tensor, block: int, seq: int):
    """FlexAttention (compiled) and its BlockMask for the same block table, or the reason it cannot run."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError as e:  # pragma: no cover - torch without FlexAttention
        return NotImplementedError(f"FlexAttention: {e}")
    if table.device.type != "cuda":
        return NotImplementedError("FlexAttention baseline timed on CUDA only")

    def mask_mod(b, h, q, kv):
        return table[q // block, kv // block]

    bm = create_block_mask(mask_mod, None, None, seq, seq, device=table.device, BLOCK_SIZE=block)
    return torch.compile(flex_attention), bm


def run(env: dl.Env, seqs: Sequence[int], head_dims: Sequence[int], heads: int, block: int,
        keep: float) -> list[dl.Row]:
    """Every (sequence, head dim): FlexAttention (baseline), dense SDPA, sparsec's fused masked attention."""
    dtype = torch.bfloat16 if env.gpu else env.dtype
    dt = str(dtype).replace("torch.", "")
    rows: list[dl.Row] = []
    gen = torch.Generator(device=env.device).manual_seed(0)
    for seq in seqs:
        table = block_table(seq // block, keep, gen, env.device)
        density = float(table.float().mean())
        mask = dl.bind(bsr_mask(table, block, dtype), f"bsr({block},{block})", _env_with(env, dtype), name="M") \
            if env.target == "triton" else sc.Tensor.from_torch(bsr_mask(table, block, torch.float32).to_dense(),
                                                                format=f"bsr({block},{block})", name="M")
        flex = _flex(table, block, seq)
        for d in head_dims:
            scale = 1 / math.sqrt(d)
            Q, K, V = (torch.randn(heads, seq, d, device=env.device, generator=gen).to(dtype) for _ in range(3))
            sample = torch.randperm(seq, generator=gen, device=env.device)[:128].sort().values
            ref = sampled_reference(Q, K, V, table, block, scale, sample)
            case = f"S={seq} d={d} H={heads} kept={density:.3f}"
            p = dict(seq=seq, head_dim=d, heads=heads, block=block, density=density, dtype=dt)

            def verify(out: Any, what: str) -> float:
                return dl.check(torch.as_tensor(out).reshape(heads, seq, d)[:, sample], ref, dtype, f"{case} {what}")

            def flex_call(Q=Q, K=K, V=V, scale=scale):
                if isinstance(flex, Exception):
                    raise flex
                fn, bm = flex
                return fn(Q[None], K[None], V[None], block_mask=bm, scale=scale)[0]
            rows.append(_checked_row(flex_call, verify, "FlexAttention (same block mask)", case, env, p,
                                     baseline=True))

            def sdpa(Q=Q, K=K, V=V, scale=scale):
                if not env.gpu:
                    raise NotImplementedError("dense SDPA timed on CUDA only")
                return torch.nn.functional.scaled_dot_product_attention(Q[None], K[None], V[None], scale=scale)[0]
            rows.append(dl.measure(ITEM, case, "dense SDPA (no mask)", sdpa, None, env, **p))

            k = sc.compile(sc.masked_attention(scale), formats={"M": f"bsr({block},{block})"}, target=env.target,
                           outputs=["O"], name="block_attention",
                           dtype={"Q": dt, "K": dt, "V": dt, "M": dt, "S": "float32", "O": "float32"})
            Qo, Ko, Vo = (dl.dense(x, env) for x in (Q, K, V))
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
