"""Probe (hand-written Triton, no sparsec): the N:M tile decode without the interleave.

v4 is ../h100-dl-item2/nm_probe.py's kernel, the decode sparsec's template uses: contiguous loads, tl.split into
slot tiles, one [BM, BG] tile per in-block offset, interleaved with tl.join into one tl.dot operand. v5 keeps the
loads and the per-offset tiles but drops the join: each offset's tile multiplies its own rows of B (rows g * m + t)
in a tl.dot of depth BG, m dots a step. Both swept over BM, BG, warps and split-K depth; Y zeroed in each timed call.
Run on a CUDA machine: python3 nm_offset_dots.py (writes $OUT/nm_v5.txt).
"""
import itertools, sys, time, os
import torch, triton
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "h100-dl-item2"))
from nm_probe import SRC_OFFSET, v3_src, v4_src, _digits, load, bench, nm_pack

def v5_src(n, m):
    body = v3_src(n, m).split("        j = tl.arange")[0]
    body = body[body.index("        sl = g0"):]
    names_v = ["vv" + "".join(x) for x in _digits(n)]
    names_c = ["cc" + "".join(x) for x in _digits(n)]
    body += "        gg = g0 + tl.arange(0, BG)\n        gin = gg < g_hi\n"
    for t in range(m):
        expr = "tl.zeros([BM, BG], dtype=vv.dtype)"
        for v, c in zip(names_v, names_c):
            expr = f"tl.where({c} == {t}, {v}, {expr})"
        body += (f"        kk = gg * {m} + {t}\n"
                 f"        b = tl.load(B + kk[:, None].to(tl.int64) * N + cols[None, :], mask=gin[:, None] & cm[None, :], other=0)\n"
                 f"        acc += tl.dot({expr}, b)\n")
    return SRC_OFFSET.replace("k_off", "k_v5").replace("@LOADS@\n@DOTS@\n", body).replace("@M@", str(m)).replace("@N@", str(n))

def main():
    t0 = time.time()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    out = open(os.path.join(os.environ.get("OUT", "."), "nm_v5.txt"), "w")
    def log(*a):
        s = " ".join(str(x) for x in a); print(s, flush=True); out.write(s + "\n"); out.flush()
    log("device", torch.cuda.get_device_name(0), "triton", triton.__version__)
    summary = []
    for (M, K), (n, m), N in [((4096, 4096), (2, 4), 16), ((4096, 4096), (2, 4), 64), ((11008, 4096), (2, 4), 16),
                              ((11008, 4096), (2, 4), 64), ((4096, 4096), (4, 8), 64), ((4096, 4096), (1, 4), 32)]:
        torch.manual_seed(0)
        W0 = torch.randn(M, K, device="cuda").half()
        Wd, vals, crd = nm_pack(W0, n, m, torch.int8)
        X = torch.randn(K, N, device="cuda").half()
        ref = Wd.float() @ X.float()
        dense_t = min(bench(lambda: Wd @ X) for _ in range(3))
        G = K // m
        best = {}
        for name, src in (("v4", v4_src(n, m)), ("v5", v5_src(n, m))):
            kern = load(src, "k_" + name)
            for BM, BG, warps in itertools.product((64, 128), (16, 32, 64), (4, 8)):
                if time.time() - t0 > 420:
                    break
                BN = max(16, min(64, triton.next_power_of_2(N)))
                tiles = triton.cdiv(M, BM) * triton.cdiv(N, BN)
                for per_sm in (4, 8):
                    split = 1
                    while split * 2 <= G // BG and tiles * split * 2 <= per_sm * sms:
                        split *= 2
                    gps = triton.cdiv(triton.cdiv(G, split), BG) * BG
                    split = triton.cdiv(G, gps)
                    def run():
                        Y = torch.zeros(M, N, device="cuda", dtype=torch.float32)
                        kern[(tiles * split,)](vals, crd, X, Y, N, K, M, gps, BM=BM, BN=BN, BG=BG, SPLIT=split, STAGES=1, num_warps=warps)
                        return Y
                    try:
                        Y = run()
                        err = ((Y - ref).norm() / ref.norm()).item()
                        assert err < 1e-3, err
                        t = bench(run)
                    except Exception as e:
                        log(name, M, K, n, m, N, BM, BG, warps, per_sm, "FAIL", str(e)[:100])
                        continue
                    log(f"{name} {M}x{K} {n}:{m} N={N} BM={BM} BG={BG} w={warps} per_sm={per_sm} split={split}: {t:.1f} us (dense {dense_t:.1f})")
                    if name not in best or t < best[name][0]:
                        best[name] = (t, BM, BG, warps, per_sm)
        summary.append((f"{M}x{K} {n}:{m} N={N}", dense_t, best))
    log("\n== best per variant (us), ratio vs dense cuBLAS (incl. the zero fill of Y)")
    for case, d, best in summary:
        log(case, f"dense {d:.1f}", "  ".join(f"{k}: {v[0]:.1f} ({d / v[0]:.2f}x) cfg {v[1:]}" for k, v in best.items()))

main()
