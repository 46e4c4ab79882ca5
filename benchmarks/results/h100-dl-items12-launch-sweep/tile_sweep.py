"""Sweep the bitmap and N:M templates' launch (BM, BN, split, warps); clears launch memos per config."""
import gc, itertools, os, sys, torch, triton
import sparsec as sc
from sparsec.backends.triton import TritonKernel
from sparsec.backends.triton.device import bind_operand
from sparsec.formats import parse_format
bench = lambda f: triton.testing.do_bench(f, warmup=25, rep=100, return_mode="median") * 1e3
gen = torch.Generator(device="cuda").manual_seed(0)
def clear():
    for o in gc.get_objects():
        if isinstance(o, TritonKernel):
            o._launch_memo.clear()
def nm_prune(W, n, m):
    g = W.reshape(W.shape[0], -1, m); idx = g.abs().topk(n, dim=-1).indices
    return (g * torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True)).reshape(W.shape)
def rand_prune(W, s):
    return W * (torch.rand(W.shape, device="cuda", generator=gen) >= s)
lines = []
cases = [("bitmap", None)] + [(f"nm({n},{m})[pos32,crd8]", (n, m)) for n, m in ((2, 4), (4, 8))]
which = sys.argv[1:] or ["bitmap", "nm"]
for (M, K), (fmt, nm) in itertools.product([(4096, 4096), (11008, 4096)], cases):
    if not any(fmt.startswith(w) for w in which):  # argv: bitmap and/or nm
        continue
    W0 = torch.randn(M, K, device="cuda", generator=gen).half()
    W = nm_prune(W0, *nm) if nm else rand_prune(W0, 0.8)
    k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": fmt},
                   dtype={"W": "float16", "X": "float16", "Y": "float32"}, target="triton", name="sweep")
    Wb = bind_operand(W, "W", parse_format(fmt, 2), "float16", W.device)
    for N in (8, 16, 64):
        X = torch.randn(K, N, device="cuda", generator=gen).half()
        ref = W.double() @ X.double()
        t_dense = bench(lambda: W @ X)
        os.environ.pop("SPARSEC_TRITON_TILE", None); clear()
        t_h = bench(lambda: k(W=Wb, X=X))
        res = []
        for bm, bn, split, warps in itertools.product((32, 64, 128), (max(16, min(64, N)),),
                                                      (2, 4, 8, 16, 32), (4, 8)):
            os.environ["SPARSEC_TRITON_TILE"] = f"{bm},{bn},{split},{warps}"; clear()
            try:
                y = k(W=Wb, X=X)
                err = float((y.double() - ref).norm() / ref.norm())
                assert err < 1e-2, err
                t = bench(lambda: k(W=Wb, X=X))
            except Exception as e:
                print("fail", fmt, bm, bn, split, warps, repr(e)[:100]); continue
            res.append((t, bm, bn, split, warps))
        os.environ.pop("SPARSEC_TRITON_TILE", None); clear()
        res.sort()
        line = f"{M}x{K} {fmt} N={N}: dense {t_dense:.1f} us, heuristic {t_h:.1f} us ({t_dense / t_h:.2f}x); best " + \
            "; ".join(f"BM={r[1]} BN={r[2]} S={r[3]} W={r[4]} {r[0]:.1f} us ({t_dense / r[0]:.2f}x)" for r in res[:4])
        print(line, flush=True); lines.append(line)
        with open(os.path.join(os.environ.get("OUT", "/tmp"), f"sweep_{fmt.split('[')[0].translate(str.maketrans('(,', '__', ')'))}_{M}_{N}.txt"), "w") as f:
            f.write("\n".join(f"{r[0]:.2f} BM={r[1]} BN={r[2]} S={r[3]} W={r[4]}" for r in res) + "\n")
open(os.path.join(os.environ.get("OUT", "/tmp"), "tile_sweep.txt"), "w").write("\n".join(lines) + "\n")
