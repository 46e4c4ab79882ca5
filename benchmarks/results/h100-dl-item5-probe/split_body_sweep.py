"""Item 5: K splits that fill one wave (non-power-of-two), and a register cap, for the fused-threshold GEMV."""
import itertools, torch, triton
import sparsec as sc
from sparsec.backends.triton import tiles
bench = lambda f: triton.testing.do_bench(f, warmup=25, rep=200, return_mode="median") * 1e3
DSL = "Y[r,i] = where(abs(X[r,k]) > t, X[r,k], 0) * Wt[k,i]"
EXTRA = {}
orig_setup = tiles.TileKernel.setup
def setup(self, bufs, scal, precision):
    out = orig_setup(self, bufs, scal, precision)
    if out is not None and EXTRA:
        fn, grid, warps, kwargs, internal = out
        out = (fn, grid, warps, dict(kwargs, **EXTRA), internal)
    return out
tiles.TileKernel.setup = setup
orig_choose = tiles.choose_skip_config
BODY2D = tiles._SKIP_BODY
BODY3D = BODY2D.replace("@SETUP@    for k0", "    part = tl.zeros([BM, BK, BN], dtype=tl.float32)\n@SETUP@    for k0").replace(
    "        acc += tl.sum(a.to(tl.float32)[:, :, None] * b.to(tl.float32)[None, :, :], axis=1)\n",
    "        part += a.to(tl.float32)[:, :, None] * b.to(tl.float32)[None, :, :]\n    acc += tl.sum(part, axis=1)\n")
assert BODY3D != BODY2D and "part +=" in BODY3D
gen = torch.Generator(device="cuda").manual_seed(0)
sms = torch.cuda.get_device_properties(0).multi_processor_count
for M, K in [(4096, 4096), (4096, 11008)]:
    W = torch.randn(M, K, device="cuda", generator=gen).half(); Wt = W.t().contiguous()
    a = torch.randn(K, device="cuda", generator=gen).half()
    thr = float(a.abs().float().quantile(0.5))
    x = torch.where(a.abs() > thr, a, torch.zeros_like(a))
    ref = W.double() @ x.double()
    t = torch.tensor(thr, dtype=torch.half, device="cuda"); arow = a.reshape(1, -1)
    t_mv = bench(lambda: torch.mv(W, x))
    tiles.choose_skip_config = orig_choose; EXTRA.clear(); tiles._SKIP_BODY = BODY2D
    k0 = sc.compile(DSL, dtype={"X": "float16", "Wt": "float16", "Y": "float32", "t": "float16"}, target="triton",
                    schedule=sc.Schedule().skip_zeros("X"), name="skip_default")
    t_def = bench(lambda: k0(X=arow, Wt=Wt, t=t))
    print(f"{M}x{K}: torch.mv {t_mv:.1f} us; heuristic {t_def:.1f} us ({t_mv / t_def:.2f}x)", flush=True)
    res = []
    for body, bn, bk, split, warps in itertools.product(("3d", "2d"), (256, 512), (8, 16, 32), (32, 48, 64), (4, 8)):
        maxnreg = 0
        tiles._SKIP_BODY = BODY3D if body == "3d" else BODY2D
        tiles.choose_skip_config = lambda mt, rows, n, k, sms_, c=(1, bn, split, warps, bk): tiles.SkipConfig(*c)
        EXTRA.clear()
        if maxnreg: EXTRA["maxnreg"] = maxnreg
        k = sc.compile(DSL, dtype={"X": "float16", "Wt": "float16", "Y": "float32", "t": "float16"}, target="triton",
                       schedule=sc.Schedule().skip_zeros("X"), name=f"s{body}_{bn}_{bk}_{split}_{warps}")
        steps = -(-K // bk); per, actual = tiles._steps_per_split(steps, split)
        try:
            y = k(X=arow, Wt=Wt, t=t).reshape(-1)
            err = float((y.double() - ref).norm() / ref.norm())
            tt = bench(lambda: k(X=arow, Wt=Wt, t=t))
        except Exception as e:
            print("fail", bn, bk, split, maxnreg, repr(e)[:150], flush=True); continue
        progs = (M // bn) * actual
        res.append((tt, bn, bk, split, actual, progs, body, err, warps))
    res.sort()
    for r in res[:10] + [r for r in res if r[6] == '2d'][:3]:
        print(f"  BN={r[1]} BK={r[2]} split {r[3]}->{r[4]} programs {r[5]} ({r[5] / sms:.1f}/SM) body={r[6]} warps={r[8]}: {r[0]:.1f} us ({t_mv / r[0]:.2f}x mv) err {r[7]:.1e}", flush=True)
