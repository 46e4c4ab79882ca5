"""Probe: bitmap SpMM decode variants on the GPU (hand-written Triton; sparsec's template for reference)."""
import os, sys, itertools, torch, triton, triton.language as tl
from triton.language.extra.cuda import libdevice
if os.environ.get("TRITON_INTERPRET") == "1":
    class libdevice:
        @staticmethod
        @triton.jit
        def popc(x):
            x = x.to(tl.uint32, bitcast=True)
            x = x - ((x >> 1) & 0x55555555)
            x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
            x = (x + (x >> 4)) & 0x0F0F0F0F
            return ((x * 0x01010101) >> 24).to(tl.int32)

@triton.jit
def bm_kernel(BITS, VALS, BASE, B, C, M, N, K, BM: tl.constexpr, BN: tl.constexpr, KPS: tl.constexpr,
              SPLIT: tl.constexpr, PF: tl.constexpr, GATHER: tl.constexpr, POPC: tl.constexpr, DOT: tl.constexpr):
    pid = tl.program_id(0)
    n_tn = tl.cdiv(N, BN)
    n_tiles = n_tn * tl.cdiv(M, BM)
    ks = pid // n_tiles
    pm = (pid % n_tiles) // n_tn
    pn = pid % n_tn
    rows = pm * BM + tl.arange(0, BM)
    rm = rows < M
    cols = pn * BN + tl.arange(0, BN)
    cm = cols < N
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    k_lo = ks * KPS
    k_hi = tl.minimum(k_lo + KPS, K)
    base = tl.load(BASE + rows.to(tl.int64) * SPLIT + ks, mask=rm, other=0)
    c = tl.arange(0, 32)
    bit = (tl.full([32], 1, tl.uint32) << c.to(tl.uint32))
    below = bit - 1
    wrow = rows.to(tl.int64) * (K // 32)      # K % 64 == 0 here
    vptr = VALS + base
    wl_n = tl.load(BITS + wrow + k_lo // 32, mask=rm, other=0).to(tl.uint32, bitcast=True)
    wh_n = tl.load(BITS + wrow + k_lo // 32 + 1, mask=rm, other=0).to(tl.uint32, bitcast=True)
    for k0 in range(k_lo, k_hi, 64):
        if PF:
            wl = wl_n
            wh = wh_n
            nm_ = rm & ((k0 + 64 + tl.zeros([BM], tl.int32)) < k_hi)
            wl_n = tl.load(BITS + wrow + (k0 + 64) // 32, mask=nm_, other=0).to(tl.uint32, bitcast=True)
            wh_n = tl.load(BITS + wrow + (k0 + 64) // 32 + 1, mask=nm_, other=0).to(tl.uint32, bitcast=True)
        else:
            wl = tl.load(BITS + wrow + k0 // 32, mask=rm, other=0).to(tl.uint32, bitcast=True)
            wh = tl.load(BITS + wrow + k0 // 32 + 1, mask=rm, other=0).to(tl.uint32, bitcast=True)
        pl = (wl[:, None] & bit[None, :]) != 0
        ph = (wh[:, None] & bit[None, :]) != 0
        n_lo = libdevice.popc(wl.to(tl.int32, bitcast=True))
        if POPC:
            rl = libdevice.popc((wl[:, None] & below[None, :]).to(tl.int32, bitcast=True))
            rh = libdevice.popc((wh[:, None] & below[None, :]).to(tl.int32, bitcast=True)) + n_lo[:, None]
        else:
            rl = c[None, :] + tl.zeros([BM, 32], tl.int32)
            rh = c[None, :] + 32 + tl.zeros([BM, 32], tl.int32)
        if GATHER == 3:
            # transposed [32, BM] tiles: with unknown contiguity Triton puts the lanes along dim 0, here the
            # columns of one row (its values are consecutive in memory), so a warp's gather touches 1-2 lines
            plT = (wl[None, :] & bit[:, None]) != 0
            phT = (wh[None, :] & bit[:, None]) != 0
            rlT = libdevice.popc((wl[None, :] & below[:, None]).to(tl.int32, bitcast=True))
            rhT = libdevice.popc((wh[None, :] & below[:, None]).to(tl.int32, bitcast=True)) + n_lo[None, :]
            al = tl.trans(tl.load(vptr[None, :] + rlT, mask=plT, other=0))
            ah = tl.trans(tl.load(vptr[None, :] + rhT, mask=phT, other=0))
        elif GATHER == 2:
            # contiguous window of each row's values (lanes along columns: coalesced), placed by a register gather
            n_hi = libdevice.popc(wh.to(tl.int32, bitcast=True))
            seg_lo = tl.load(vptr[:, None] + c[None, :], mask=c[None, :] < n_lo[:, None], other=0)
            seg_hi = tl.load((vptr + n_lo)[:, None] + c[None, :], mask=c[None, :] < n_hi[:, None], other=0)
            al = tl.where(pl, tl.gather(seg_lo, tl.minimum(rl, 31), 1), 0)
            ah = tl.where(ph, tl.gather(seg_hi, tl.minimum(rh - n_lo[:, None], 31), 1), 0)
        elif GATHER:
            al = tl.load(vptr[:, None] + rl, mask=pl, other=0)
            ah = tl.load(vptr[:, None] + rh, mask=ph, other=0)
        else:
            al = tl.load(vptr[:, None] + c[None, :], mask=rm[:, None], other=0)
            ah = tl.load(vptr[:, None] + 32 + c[None, :], mask=rm[:, None], other=0)
        kl = k0 + c
        bl = tl.load(B + kl[:, None].to(tl.int64) * N + cols[None, :], mask=cm[None, :], other=0)
        bh = tl.load(B + (kl + 32)[:, None].to(tl.int64) * N + cols[None, :], mask=cm[None, :], other=0)
        if DOT:
            acc = tl.dot(al, bl, acc)
            acc = tl.dot(ah, bh, acc)
        else:
            acc += tl.sum(al.to(tl.float32), axis=1)[:, None] + tl.sum(bl.to(tl.float32), axis=0)[None, :]
        vptr += n_lo + libdevice.popc(wh.to(tl.int32, bitcast=True))
    out = C + rows[:, None].to(tl.int64) * N + cols[None, :]
    omask = rm[:, None] & cm[None, :]
    if SPLIT > 1:
        tl.atomic_add(out, acc, mask=omask)
    else:
        tl.store(out, acc, mask=omask)


@triton.jit
def _gather(w_lo, w_hi, vptr, bit, below, live):
    pl = ((w_lo[:, None] & bit[None, :]) != 0) & live[:, None]
    ph = ((w_hi[:, None] & bit[None, :]) != 0) & live[:, None]
    n_lo = libdevice.popc(w_lo.to(tl.int32, bitcast=True))
    rl = libdevice.popc((w_lo[:, None] & below[None, :]).to(tl.int32, bitcast=True))
    rh = libdevice.popc((w_hi[:, None] & below[None, :]).to(tl.int32, bitcast=True)) + n_lo[:, None]
    al = tl.load(vptr[:, None] + rl, mask=pl, other=0)
    ah = tl.load(vptr[:, None] + rh, mask=ph, other=0)
    return al, ah, n_lo + libdevice.popc(w_hi.to(tl.int32, bitcast=True))


@triton.jit
def bm2_kernel(BITS, VALS, BASE, B, C, M, N, K, BM: tl.constexpr, BN: tl.constexpr, KPS: tl.constexpr,
               SPLIT: tl.constexpr):
    # software-pipelined by hand: words two steps ahead, values (the gather) one step ahead of the dot
    pid = tl.program_id(0)
    n_tn = tl.cdiv(N, BN)
    n_tiles = n_tn * tl.cdiv(M, BM)
    ks = pid // n_tiles
    pm = (pid % n_tiles) // n_tn
    pn = pid % n_tn
    rows = pm * BM + tl.arange(0, BM)
    rm = rows < M
    cols = pn * BN + tl.arange(0, BN)
    cm = cols < N
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    k_lo = ks * KPS
    k_hi = tl.minimum(k_lo + KPS, K)
    base = tl.load(BASE + rows.to(tl.int64) * SPLIT + ks, mask=rm, other=0)
    c = tl.arange(0, 32)
    bit = (tl.full([32], 1, tl.uint32) << c.to(tl.uint32))
    below = bit - 1
    wrow = BITS + rows.to(tl.int64) * (K // 32)
    zero = tl.zeros([BM], tl.int32)
    w_lo = tl.load(wrow + k_lo // 32, mask=rm, other=0).to(tl.uint32, bitcast=True)
    w_hi = tl.load(wrow + k_lo // 32 + 1, mask=rm, other=0).to(tl.uint32, bitcast=True)
    live1 = rm & ((k_lo + 64 + zero) < k_hi)
    w_lo1 = tl.load(wrow + k_lo // 32 + 2, mask=live1, other=0).to(tl.uint32, bitcast=True)
    w_hi1 = tl.load(wrow + k_lo // 32 + 3, mask=live1, other=0).to(tl.uint32, bitcast=True)
    vptr = VALS + base
    al, ah, cnt = _gather(w_lo, w_hi, vptr, bit, below, rm)
    vptr += cnt
    for k0 in range(k_lo, k_hi, 64):
        live2 = rm & ((k0 + 128 + zero) < k_hi)
        w_lo2 = tl.load(wrow + k0 // 32 + 4, mask=live2, other=0).to(tl.uint32, bitcast=True)
        w_hi2 = tl.load(wrow + k0 // 32 + 5, mask=live2, other=0).to(tl.uint32, bitcast=True)
        nl, nh, cnt = _gather(w_lo1, w_hi1, vptr, bit, below, rm & ((k0 + 64 + zero) < k_hi))
        vptr += cnt
        kl = k0 + c
        bl = tl.load(B + kl[:, None].to(tl.int64) * N + cols[None, :], mask=cm[None, :], other=0)
        bh = tl.load(B + (kl + 32)[:, None].to(tl.int64) * N + cols[None, :], mask=cm[None, :], other=0)
        acc = tl.dot(al, bl, acc)
        acc = tl.dot(ah, bh, acc)
        al = nl
        ah = nh
        w_lo1 = w_lo2
        w_hi1 = w_hi2
    out = C + rows[:, None].to(tl.int64) * N + cols[None, :]
    omask = rm[:, None] & cm[None, :]
    if SPLIT > 1:
        tl.atomic_add(out, acc, mask=omask)
    else:
        tl.store(out, acc, mask=omask)


def run_bm2(words, vals, base, X, M, K, N, bm, bn, split, warps, stages, kps):
    C = (torch.zeros if split > 1 else torch.empty)(M, N, device=X.device, dtype=torch.float32)
    tiles = triton.cdiv(M, bm) * triton.cdiv(N, bn)
    bm2_kernel[(tiles * split,)](words, vals, base, X, C, M, N, K, BM=bm, BN=bn, KPS=kps, SPLIT=split,
                                 num_warps=warps, num_stages=stages)
    return C


def to_bitmap(W):
    M, K = W.shape
    present = (W != 0)
    vals = W[present].contiguous()
    counts = present.sum(1)
    pos = torch.zeros(M + 1, dtype=torch.int64, device=W.device); pos[1:] = counts.cumsum(0)
    p = present.reshape(M, K // 32, 32).to(torch.int64)
    words = (p << torch.arange(32, device=W.device)).sum(-1)        # [M, K/32] int64 of 32-bit words
    words = words.to(torch.int64).where(words < 2**31, words - 2**32).to(torch.int32)
    return words.contiguous(), vals, pos, present


def split_base(present, pos, kps, split):
    M, K = present.shape
    edges = torch.arange(0, split - 1, device=present.device) * kps + kps
    counts = present.to(torch.int32).cumsum(1)[:, (edges - 1).clamp_max(K - 1)]
    base = torch.cat([torch.zeros(M, 1, dtype=torch.int32, device=present.device), counts], 1)
    return (base + pos[:M].to(torch.int32)[:, None]).contiguous()


def run_bm(words, vals, base, X, M, K, N, bm, bn, split, warps, stages, kps, **flags):
    C = torch.zeros(M, N, device=X.device, dtype=torch.float32)
    tiles = triton.cdiv(M, bm) * triton.cdiv(N, bn)
    bm_kernel[(tiles * split,)](words, vals, base, X, C, M, N, K, BM=bm, BN=bn, KPS=kps, SPLIT=split,
                                num_warps=warps, num_stages=stages, **flags)
    return C


CONFIGS = [(64, 4, 1, 4, 1)] + [(bm, w, 1, ps, 4) for bm in (32, 64, 128) for w in (4, 8) for ps in (4, 8)]
SHAPES = [(4096, 4096), (11008, 4096)]
NS = [8, 64]


def main():
    sys.path.insert(0, os.getcwd())
    bench = lambda f: triton.testing.do_bench(f, warmup=25, rep=100, return_mode="median") * 1e3
    out = []
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    from sparsec.nn import magnitude_prune
    import sparsec as sc
    gen = torch.Generator(device="cuda").manual_seed(0)
    for (M, K), N in itertools.product(SHAPES, NS):
        W = magnitude_prune(torch.randn(M, K, device="cuda", generator=gen).half(), 0.8)
        X = torch.randn(K, N, device="cuda", generator=gen).half()
        ref = W.float() @ X.float()
        t_dense = bench(lambda: W @ X)
        k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": "bitmap"},
                       dtype={"W": "float16", "X": "float16", "Y": "float32"}, target="triton", name="bm_ref")
        from sparsec.backends.triton.device import bind_operand
        from sparsec.formats import parse_format
        Ws = bind_operand(W, "W", parse_format("bitmap", 2), "float16", W.device)
        t_sc = bench(lambda: k(W=Ws, X=X))
        words, vals, pos, present = to_bitmap(W)
        line = f"{M}x{K} N={N}: dense {t_dense:.1f} us, sparsec bitmap {t_sc:.1f} us"
        print(line, flush=True); out.append(line)
        best = None
        for bm, warps, stages, per_sm, pf in CONFIGS:
            bn = max(16, min(64, triton.next_power_of_2(N)))
            tiles = triton.cdiv(M, bm) * triton.cdiv(N, bn)
            steps = K // 64
            split = 1
            while split * 2 <= steps and tiles * split * 2 <= per_sm * sms and split < 64 and per_sm > 0:
                split *= 2
            per = -(-steps // split); kps = per * 64; split = -(-steps // per)
            base = split_base(present, pos, kps, split)
            if pf == 4:
                f = lambda: run_bm(words, vals, base, X, M, K, N, bm, bn, split, warps, stages, kps, PF=1, GATHER=3, POPC=1, DOT=1)
            elif pf == 3:
                f = lambda: run_bm(words, vals, base, X, M, K, N, bm, bn, split, warps, stages, kps, PF=1, GATHER=2, POPC=1, DOT=1)
            elif pf == 2:
                f = lambda: run_bm2(words, vals, base, X, M, K, N, bm, bn, split, warps, stages, kps)
            else:
                f = lambda: run_bm(words, vals, base, X, M, K, N, bm, bn, split, warps, stages, kps, PF=pf, GATHER=1, POPC=1, DOT=1)
            try:
                err = float((f() - ref).norm() / ref.norm())
                t = bench(f)
            except Exception as e:
                print("fail", bm, warps, stages, per_sm, pf, repr(e)[:200]); continue
            line = f"  bm={bm} w={warps} st={stages} per_sm={per_sm} split={split} pf={pf}: {t:.1f} us err={err:.1e}"
            print(line, flush=True); out.append(line)
            if best is None or t < best[0]:
                best = (t, bm, warps, stages, split, kps, pf)
        t, bm, warps, stages, split, kps, pf = best
        base = split_base(present, pos, kps, split)
        bn = max(16, min(64, triton.next_power_of_2(N)))
        for abl in [] and [dict(GATHER=0, POPC=1, DOT=1), dict(GATHER=1, POPC=0, DOT=1), dict(GATHER=0, POPC=0, DOT=1),
                    dict(GATHER=1, POPC=1, DOT=0)]:
            t2 = bench(lambda: run_bm(words, vals, base, X, M, K, N, bm, bn, split, warps, stages, kps, PF=pf, **abl))
            line = f"  ablation {abl} at best config: {t2:.1f} us"
            print(line, flush=True); out.append(line)
        line = f"  BEST {M}x{K} N={N}: {t:.1f} us (dense {t_dense:.1f}, ratio {t_dense / t:.2f}x; sparsec now {t_dense / t_sc:.2f}x)"
        print(line, flush=True); out.append(line)
    os.makedirs(os.environ.get("OUT", "/tmp"), exist_ok=True)
    open(os.path.join(os.environ.get("OUT", "/tmp"), "bitmap_probe.txt"), "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
