"""Index-notation text of common multi-statement computations.

These are plain DSL programs (nothing here is special to the compiler); they exist so
that users write the form a backend recognizes. The Triton backend runs
:func:`masked_attention` with the mask in ``bsr(bm, bn)`` as one fused kernel (see
``sparsec/backends/triton/attention.py``); every other target, format or spelling
runs through the general lowering with the same result.
"""

from __future__ import annotations

import math


def masked_attention(scale: float | None = None, heads: bool = True) -> str:
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
    """
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"masked_attention: scale must be a finite number, got {scale!r}")
    h = "h," if heads else ""
    factor = f" * {float(scale)!r}" if scale is not None else ""
    mx = f"max[{{k}}](where(M[i,{{k}}] != 0, S[{h}i,{{k}}], -inf))"
    return (f"S[{h}i,j] = M[i,j] * Q[{h}i,d] * K[{h}j,d]{factor}\n"
            f"O[{h}i,e] = where(M[i,j] != 0, exp(S[{h}i,j] - {mx.format(k='k')}), 0) * V[{h}j,e]"
            f" / sum[k](where(M[i,k] != 0, exp(S[{h}i,k] - {mx.format(k='l')}), 0))")
