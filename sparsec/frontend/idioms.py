"""Index-notation text of common multi-statement computations.

These are plain DSL programs (nothing here is special to the compiler); they exist so
that users write the form a backend recognizes. The Triton backend runs
:func:`masked_attention` with the mask in ``bsr(bm, bn)`` as one fused kernel (see
``sparsec/backends/triton/attention.py``); every other target, format or spelling
runs through the general lowering with the same result.
"""

from __future__ import annotations

import math


def masked_attention(scale: float | None = None, heads: bool = True, kv_groups: bool = False) -> str:
    """Softmax attention restricted to the nonzeros of a mask ``M``, as two statements.

    ``S = M * (Q K^T) * scale`` (SDDMM: scores only where ``M`` is stored), then
    ``O = softmax_rows(S over M != 0) V`` (row softmax over the nonzeros, then SpMM).
    With ``heads`` every dense operand has a leading head index ``h``
    (``Q[h,i,d]``, ``K[h,j,d]``, ``V[h,j,e]``, ``O[h,i,e]``) and the mask is shared by
    all heads. Rows of ``M`` without nonzeros give zero output rows. Compile it with
    ``outputs=["O"]`` so the scores are never stored::

        k = sc.compile(sc.masked_attention(scale=0.125), formats={"M": "bsr(128, 128)"},
                       dtype={"Q": "bfloat16", "K": "bfloat16", "V": "bfloat16", "M": "bfloat16",
                              "S": "float32", "O": "float32"}, target="triton", outputs=["O"])

    ``kv_groups``: grouped-query attention. ``G`` key/value heads each serve ``R`` query
    heads: ``Q[g,r,i,d]``, ``K[g,j,d]``, ``V[g,j,e]``, ``O[g,r,i,e]``. With the usual
    ``[H, S, D]`` query layout where query head ``h`` reads key/value head ``h // R``
    (torch's ``scaled_dot_product_attention(..., enable_gqa=True)``), pass
    ``Q.view(G, R, S, D)``; ``K`` and ``V`` are not repeated.
    """
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"masked_attention: scale must be a finite number, got {scale!r}")
    if kv_groups and not heads:
        raise ValueError("masked_attention: kv_groups=True needs heads=True (groups are of heads)")
    h = ("g,r," if kv_groups else "h,") if heads else ""      # query-side head indices
    kv = ("g," if kv_groups else "h,") if heads else ""       # key/value-side
    factor = f" * {float(scale)!r}" if scale is not None else ""
    mx = f"max[{{k}}](where(M[i,{{k}}] != 0, S[{h}i,{{k}}], -inf))"
    return (f"S[{h}i,j] = M[i,j] * Q[{h}i,d] * K[{kv}j,d]{factor}\n"
            f"O[{h}i,e] = where(M[i,j] != 0, exp(S[{h}i,j] - {mx.format(k='k')}), 0) * V[{kv}j,e]"
            f" / sum[k](where(M[i,k] != 0, exp(S[{h}i,k] - {mx.format(k='l')}), 0))")
