"""Sweep the zero-skipping template's launch (BN, BK, split, warps, stages) for the fused-threshold GEMV."""
import itertools, os, torch, triton
import sparsec as sc
from sparsec.backends.triton import tiles
bench = lambda f: triton.testing.do_bench(f, warmup=25, rep=200, return_mode="median") * 1e3
DSL = "Y[r,i] = where(abs(X[r,k]) > t, X[r,k], 0) * Wt[k,i]"
STAGES = [None]
orig_setup = tiles.TileKernel.setup
def setup(self, bufs, scal, precision):
    out = orig_setup(self, bufs, scal, precision)
    if out is not None and STAGES[0]:
        fn, grid, warps, kwargs, internal = out
        kwargs = dict(kwargs, num_stages=STAGES[0])
        out = (fn, grid, warps, kwargs, internal)
    return out
tiles.TileKernel.setup = setup
orig_choose = tiles.choose_skip_config
gen = torch.Generator(device="cuda").manual_seed(0)
lines = []
for M, K in [(4096, 4096), (4096, 11008)]:
    W = torch.randn(M, K, device="cuda", generator=gen).half(); Wt = W.t().contiguous()
    a = torch.randn(K, device="cuda", generator=gen).half()
    thr = float(a.abs().float().quantile(0.5))
    x = torch.where(a.abs() > thr, a, torch.zeros_like(a))
    ref = W.double() @ x.double()
    t = torch.tensor(thr, dtype=torch.half, device="cuda"); arow = a.reshape(1, -1)
    t_mv = bench(lambda: torch.mv(W, x))
    tiles.choose_skip_config = orig_choose
    k0 = sc.compile(DSL, dtype={"X": "float16", "Wt": "float16", "Y": "float32", "t": "float16"}, target="triton",
                    schedule=sc.Schedule().skip_zeros("X"), name="skip_default")
    t_def = bench(lambda: k0(X=arow, Wt=Wt, t=t))
    class _M:
        c_dtype = "float32"
    line = f"{M}x{K}: torch.mv alone {t_mv:.1f} us; sparsec fused, heuristic {orig_choose(_M(), 1, M, K, 132)}: {t_def:.1f} us -> {t_mv / t_def:.2f}x"
    print(line, flush=True); lines.append(line)
    res = []
    for bn, bk, split, warps, stages in itertools.product((256, 512, 1024), (16, 32, 64), (16, 32, 64), (4, 8),
                                                          (2, 4)):
        if bn * bk > 32768:
            continue
        tiles.choose_skip_config = lambda mt, rows, n, k, sms, c=(1, bn, split, warps, bk): tiles.SkipConfig(*c)
        STAGES[0] = stages
        k = sc.compile(DSL, dtype={"X": "float16", "Wt": "float16", "Y": "float32", "t": "float16"}, target="triton",
                       schedule=sc.Schedule().skip_zeros("X"), name=f"s{bn}_{bk}_{split}_{warps}_{stages}")
        try:
            y = k(X=arow, Wt=Wt, t=t).reshape(-1)
            err = float((y.double() - ref).norm() / ref.norm())
            tt = bench(lambda: k(X=arow, Wt=Wt, t=t))
        except Exception as e:
            print("fail", bn, bk, split, warps, stages, repr(e)[:120]); continue
        res.append((tt, bn, bk, split, warps, stages, err))
    STAGES[0] = None
    res.sort()
    for r in res[:8]:
        line = f"  {M}x{K} BN={r[1]} BK={r[2]} split={r[3]} warps={r[4]} stages={r[5]}: {r[0]:.1f} us ({t_mv / r[0]:.2f}x mv) err {r[6]:.1e}"
        print(line, flush=True); lines.append(line)
open(os.path.join(os.environ.get("OUT", "/tmp"), "skip_sweep.txt"), "w").write("\n".join(lines) + "\n")
