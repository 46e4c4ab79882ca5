"""Which decode of packed N:M coordinates is fastest in sparsec's template? (monkeypatched variants)"""
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sparsec as sc  # noqa: E402
from sparsec.backends.triton import tiles as T  # noqa: E402
from sparsec.backends.triton.device import bind_operand  # noqa: E402
from sparsec.formats import parse_format  # noqa: E402
from nm_sweep import kernel_us, nm_prune, bench  # noqa: E402

OUT = os.environ.get("OUT", ".")
LOG = open(os.path.join(OUT, "nm_decode.txt"), "w")
ORIG = T._nm_body


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.write(s + "\n")
    LOG.flush()


def spread_step(n, m):
    """packed bytes loaded contiguously, each byte spread into PER coordinates by broadcast + reshape"""
    lines = T._NM_CONTIGUOUS.splitlines() + T._NM_PACKED_BYTES.splitlines()
    lines.append("c = tl.reshape((w[:, :, None] >> (tl.arange(0, PER) * BITS)[None, None, :]) & (2 ** BITS - 1), "
                 "[BM, BG * N_])")
    vl, vs = T._split("v", n, "BG")
    cl, cs = T._split("c", n, "BG")
    return lines + vl + cl + T._dense_tiles([list(zip(vs, cs))], m, "BG")


def body(variant):
    def f(n, m, packed=False):
        if not packed or variant == "unit":
            return ORIG(n, m, packed)
        step = T._nm_step(n, m, "bits") if variant == "bits" else spread_step(n, m)
        krows = T._NM_KROWS_POW2
        return T._NM_BODY.replace("@TILE@", T._indent(step, 8)).replace("@KROWS@", krows)
    return f


def main():
    torch.manual_seed(0)
    rows = []
    for M, K in [(4096, 4096), (11008, 4096)]:
        W0 = torch.randn(M, K, device="cuda", dtype=torch.float16)
        W = nm_prune(W0, 2, 4)
        for variant, fmt in [("crd8", "nm(2,4)[pos32,crd8]"), ("unit", "nm(2,4,packed)"),
                             ("bits", "nm(2,4,packed)"), ("spread", "nm(2,4,packed)")]:
            T._nm_body = body(variant)
            k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": fmt},
                           dtype={"W": "float16", "X": "float16", "Y": "float32"}, target="triton",
                           name=f"nm_{variant}")
            Wb = bind_operand(W, "W", parse_format(fmt, 2), "float16", W.device)
            for N in (16, 64):
                X = torch.randn(K, N, device="cuda", dtype=torch.float16)
                ref = W.float() @ X.float()
                for cfg in (None, "64,%d,4,8" % max(16, N), "64,%d,8,4" % max(16, N), "128,%d,4,8" % max(16, N)):
                    if cfg:
                        os.environ["SPARSEC_TRITON_TILE"] = cfg
                    else:
                        os.environ.pop("SPARSEC_TRITON_TILE", None)
                    for ck in k._compiled.values():
                        ck._launch_memo.clear()
                    Y = k(W=Wb, X=X)
                    err = ((Y - ref).abs().max() / ref.abs().max()).item()
                    assert err < 1e-2, (variant, cfg, err)
                    t = bench(lambda: k(W=Wb, X=X))
                    dev, _ = kernel_us(lambda: k(W=Wb, X=X))
                    cub = bench(lambda: W @ X)
                    log(f"{M}x{K} N={N:3d} {variant:6s} cfg={cfg or 'heuristic':12s}: do_bench {t:6.1f} us "
                        f"({cub / t:.2f}x cuBLAS {cub:.1f})  kernels(warm L2) {dev:5.1f} us")
                    rows.append((M, N, variant, cfg, t, cub, dev))
            os.environ.pop("SPARSEC_TRITON_TILE", None)
    T._nm_body = ORIG


if __name__ == "__main__":
    main()
