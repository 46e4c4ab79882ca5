"""Probe: Triton's own dense GEMM on the same work as the BSR item (4096 x 416 @ 416 x 4096, fp16), by tile shape,
against cuBLAS, to see what a plain tl.dot loop of ~7 steps reaches on an H100."""
import itertools, os
import torch, triton, triton.language as tl
from triton.testing import do_bench

OUT = os.environ.get("OUT", ".")
LOG = open(os.path.join(OUT, "dense_kcut.txt"), "w")


def say(*a):
    s = " ".join(str(x) for x in a); print(s, flush=True); LOG.write(s + "\n"); LOG.flush()


@triton.jit
def mm(A, B, C, M, N, K, NROW, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid = tl.program_id(0)
    t = pid // NROW
    r = pid % NROW
    i = r * BM + tl.arange(0, BM)
    j = t * BN + tl.arange(0, BN)
    kk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], tl.float32)
    for k0 in range(0, K, BK):
        k = k0 + kk
        a = tl.load(A + i[:, None] * K + k[None, :], mask=k[None, :] < K, other=0)
        b = tl.load(B + k[:, None] * N + j[None, :], mask=k[:, None] < K, other=0)
        acc += tl.dot(a, b)
    tl.store(C + i[:, None] * N + j[None, :], acc.to(tl.float16))


def main():
    g = torch.Generator(device="cuda").manual_seed(0)
    n, k = 4096, 416
    A = torch.randn(n, k, device="cuda", generator=g).half()
    B = torch.randn(k, n, device="cuda", generator=g).half()
    C = torch.empty(n, n, device="cuda", dtype=torch.float16)
    ref = A.float() @ B.float()
    bench = lambda f: do_bench(f, warmup=10, rep=60, return_mode="median") * 1e3
    say(torch.cuda.get_device_name(), f"cuBLAS same work {bench(lambda: A @ B):.1f} us")
    res = []
    for bm, bn, bk, w, s in itertools.product((64, 128), (128, 256), (32, 64), (4, 8), (3, 4)):
        nrow = n // bm
        grid = (nrow * (n // bn),)
        f = lambda: mm[grid](A, B, C, n, n, k, nrow, BM=bm, BN=bn, BK=bk, num_warps=w, num_stages=s)
        try:
            f(); torch.cuda.synchronize()
        except Exception as e:
            say(f"  {bm} {bn} {bk} w{w} s{s}: {type(e).__name__}"); continue
        err = ((C.float() - ref).norm() / ref.norm()).item(); assert err < 5e-3, err
        t = bench(f); res.append((t, bm, bn, bk, w, s)); say(f"  BM={bm} BN={bn} BK={bk} w={w} s={s}: {t:.1f} us")
    res.sort()
    say("best", res[:6])


main()
