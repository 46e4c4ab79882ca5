"""Probe: BSR SpMM Y = W X (fp16, W 4096x4096 with 90 % of b x b blocks zero, N = 4096), the shipped sparsec kernel
against a persistent kernel over a precomputed flat list of (tile, block) steps, so that the software pipeline runs
across tile boundaries. Every variant checked against float32 torch."""
import itertools
import os
import sys
import time

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "examples")]


@triton.jit
def bsr_persistent(VALS, CRD, X, Y, IT_BLK, IT_TILE, IT_LAST, PROG_IT, N, B: tl.constexpr, BN: tl.constexpr,
                   N_TN: tl.constexpr, STAGES: tl.constexpr):
    pid = tl.program_id(0)
    it0 = tl.load(PROG_IT + pid)
    it1 = tl.load(PROG_IT + pid + 1)
    ii = tl.arange(0, B)
    kk = tl.arange(0, B)
    jj = tl.arange(0, BN)
    acc = tl.zeros([B, BN], tl.float32)
    for it in tl.range(it0, it1, num_stages=STAGES):
        blk = tl.load(IT_BLK + it)
        tile = tl.load(IT_TILE + it)
        kmax = tl.where(blk >= 0, B, 0)   # 0: an empty block row's one step loads nothing
        blk0 = tl.maximum(blk, 0)
        kblk = tl.load(CRD + blk0)
        nt = tile % N_TN
        a = tl.load(VALS + blk0.to(tl.int64) * (B * B) + ii[:, None] * B + kk[None, :], mask=kk[None, :] < kmax,
                    other=0)
        x = tl.load(X + (kblk * B + kk)[:, None].to(tl.int64) * N + (nt * BN + jj)[None, :], mask=kk[:, None] < kmax,
                    other=0)
        acc = tl.dot(a, x, acc)
        if tl.load(IT_LAST + it) != 0:
            r = tile // N_TN
            tl.store(Y + (r * B + ii)[:, None].to(tl.int64) * N + (nt * BN + jj)[None, :], acc.to(Y.dtype.element_ty))
            acc = tl.zeros([B, BN], tl.float32)


def plan(pos, n_tn, progs, colmajor, dev):
    """Flat step lists: per step the block (-1: empty block row), the tile (row * n_tn + column tile), whether it
    ends its tile; per program its step range (whole tiles, about equal steps)."""
    nrows = pos.numel() - 1
    nb = (pos[1:] - pos[:-1]).long()
    rows = torch.arange(nrows, device=dev)
    tn = torch.arange(n_tn, device=dev)
    if colmajor:
        t_row = rows.repeat(n_tn)
        t_col = tn.repeat_interleave(nrows)
    else:
        t_row = rows.repeat_interleave(n_tn)
        t_col = tn.repeat(nrows)
    steps = nb[t_row].clamp_min(1)
    tile_id = t_row * n_tn + t_col
    tot = int(steps.sum())
    start = torch.cumsum(steps, 0) - steps
    it_tile = torch.repeat_interleave(tile_id, steps)
    local = torch.arange(tot, device=dev) - torch.repeat_interleave(start, steps)
    row_of = torch.repeat_interleave(t_row, steps)
    blk = pos[:-1].long()[row_of] + local
    blk = torch.where(nb[row_of] > 0, blk, torch.full_like(blk, -1))
    last = torch.zeros(tot, dtype=torch.int32, device=dev)
    last[(start + steps - 1)] = 1
    cuts = torch.searchsorted(start, torch.arange(progs + 1, device=dev) * tot // progs)
    prog_it = torch.cat([start, torch.tensor([tot], device=dev)])[cuts.clamp_max(start.numel())]
    prog_it[-1] = tot
    return (blk.to(torch.int32), it_tile.to(torch.int32), last, prog_it.to(torch.int32))


def main():
    dev = "cuda"
    print(torch.cuda.get_device_name(), "triton", triton.__version__, "torch", torch.__version__, flush=True)
    import _dl_common as dl
    import sparsec as sc
    env = dl.setup()
    M = K = N = 4096
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    out = []
    g = torch.Generator(device=dev).manual_seed(0)
    X = torch.randn(K, N, device=dev, generator=g).half()
    dense_W = torch.randn(M, K, device=dev, generator=g).half()
    tdense = do_bench(lambda: dense_W @ X, return_mode="median") * 1e3
    out.append(("dense", "torch.matmul", tdense))
    for b in (64, 128):
        nb = M // b
        keep = torch.rand(nb, nb, device=dev, generator=g) < 0.1
        W = dense_W * keep.repeat_interleave(b, 0).repeat_interleave(b, 1)
        ref = (W.float() @ X.float())
        Wb = W.to_sparse_bsr((b, b))
        pos = Wb.crow_indices().to(torch.int32)
        crd = Wb.col_indices().to(torch.int32)
        vals = Wb.values().contiguous()

        def check(y, what):
            err = ((y.float() - ref).norm() / ref.norm()).item()
            assert err < 5e-3, (what, err)
        fmt = f"bsr({b},{b})"
        k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": fmt}, dtype="float16", target="triton",
                       name="bsr_spmm")
        Wop = dl.bind(W, fmt, env)
        f = lambda: k(W=Wop, X=X)  # noqa
        check(f(), "sparsec")
        ts = do_bench(f, return_mode="median") * 1e3
        out.append((f"b={b}", "sparsec shipped", ts))
        res = []
        t0 = time.time()
        for bn, warps, stages, colmajor, per_sm in itertools.product((128, 256), (4, 8), (2, 3, 4), (0, 1), (1, 2)):
            smem = stages * (b * b + b * bn) * 2
            if smem > 220 * 1024 or (b == 128 and bn == 256 and warps == 4) or time.time() - t0 > 200:
                continue
            n_tn = N // bn
            progs = sms * per_sm
            lists = plan(pos, n_tn, progs, colmajor, dev)

            def run(bn=bn, warps=warps, stages=stages, colmajor=colmajor, lists=lists, n_tn=n_tn, progs=progs):
                y = torch.empty(M, N, dtype=torch.float16, device=dev)
                bsr_persistent[(progs,)](vals, crd, X, y, *lists, N, B=b, BN=bn, N_TN=n_tn,
                                         STAGES=stages, num_warps=warps)
                return y
            try:
                check(run(), "persistent")
                tm = do_bench(run, return_mode="median") * 1e3
            except Exception as e:  # noqa
                print("fail", b, bn, warps, stages, colmajor, per_sm, repr(e)[:300], flush=True)
                continue
            res.append((tm, bn, warps, stages, colmajor, per_sm))
        res.sort()
        with open(os.path.join(os.environ.get("OUT", "."), f"bsr_b{b}.txt"), "w") as fh:
            for r in res:
                fh.write(" ".join(map(str, r)) + "\n")
        for tm, bn, warps, stages, colmajor, per_sm in res[:8]:
            out.append((f"b={b}", f"persistent BN{bn} w{warps} st{stages} col{colmajor} {per_sm}/SM", tm))
    print(f"{'case':8} {'variant':44} {'us':>8} {'vs dense':>8}")
    for case, v, tm in out:
        print(f"{case:8} {v:44} {tm:8.1f} {tdense / tm:8.2f}")


if __name__ == "__main__":
    main()
