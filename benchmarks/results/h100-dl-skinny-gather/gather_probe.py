"""Probe: "gather" SpMM on CUDA cores for skinny X (Y = W X, N = 8..64), CSR and N:M weights.

Each program takes R rows of W; a step loads BK stored entries of each row (values and column
coordinates), gathers the matching rows of X as an [R, BK, BN] tile, multiplies on CUDA cores and
accumulates in float32; one reduction at the end. No tensor cores: at N <= 16 the kernel is a
stream over W's stored entries (X stays in L1/L2), so its memory traffic is the format's bytes.
Compared with dense cuBLAS and sparsec's shipped templates (bitmap, nm) on the same weights.
Run on the GPU from the repository root: python benchmarks/results/h100-dl-skinny-gather/gather_probe.py
"""
import os

import torch
import triton
import triton.language as tl

OUT = os.environ.get("OUT", "/tmp")
INTERP = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def csr_gather(POS, CRD, VALS, X, Y, M, N: tl.constexpr, R: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * R + tl.arange(0, R)
    rm = rows < M
    lo = tl.load(POS + rows, mask=rm, other=0)
    hi = tl.load(POS + rows + 1, mask=rm, other=0)
    longest = tl.max(hi - lo, 0)
    cols = tl.arange(0, BN)
    acc = tl.zeros([R, BK, BN], dtype=tl.float32)
    kk = tl.arange(0, BK)
    for k0 in range(0, longest, BK):
        p = lo[:, None] + k0 + kk[None, :]
        pm = p < hi[:, None]
        c = tl.load(CRD + p, mask=pm, other=0).to(tl.int32)
        v = tl.load(VALS + p, mask=pm, other=0)
        x = tl.load(X + c[:, :, None] * N + cols[None, None, :], mask=pm[:, :, None], other=0)
        acc += v.to(tl.float32)[:, :, None] * x.to(tl.float32)
    y = tl.sum(acc, 1)
    tl.store(Y + rows[:, None] * N + cols[None, :], y, mask=rm[:, None])


@triton.jit
def nm_gather(CRD, VALS, X, Y, M, K, N: tl.constexpr, NN: tl.constexpr, MM: tl.constexpr, R: tl.constexpr,
              BK: tl.constexpr, BN: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * R + tl.arange(0, R)
    rm = rows < M
    L = (K // MM) * NN
    cols = tl.arange(0, BN)
    acc = tl.zeros([R, BK, BN], dtype=tl.float32)
    kk = tl.arange(0, BK)
    for k0 in range(0, L, BK):
        s = k0 + kk
        sm = rm[:, None] & (s < L)[None, :]
        p = rows[:, None].to(tl.int64) * L + s[None, :]
        c = tl.load(CRD + p, mask=sm, other=0).to(tl.int32) + (s // NN * MM)[None, :]
        v = tl.load(VALS + p, mask=sm, other=0)
        x = tl.load(X + c[:, :, None] * N + cols[None, None, :], mask=sm[:, :, None], other=0)
        acc += v.to(tl.float32)[:, :, None] * x.to(tl.float32)
    y = tl.sum(acc, 1)
    tl.store(Y + rows[:, None] * N + cols[None, :], y, mask=rm[:, None])


def magnitude(W, s):
    k = int(W.numel() * s)
    thr = W.abs().flatten().kthvalue(k).values
    return torch.where(W.abs() > thr, W, torch.zeros_like(W))


def nm_prune(W, n, m):
    M, K = W.shape
    g = W.reshape(M, K // m, m)
    idx = g.abs().topk(n, dim=2).indices.sort(dim=2).values          # in-block coordinates, ascending
    vals = torch.gather(g, 2, idx)
    dense = torch.zeros_like(g).scatter_(2, idx, vals).reshape(M, K)
    return dense, vals.reshape(M, -1).contiguous(), idx.to(torch.int8).reshape(M, -1).contiguous()


def bench(fn):
    if INTERP:
        fn()
        return float("nan")
    return triton.testing.do_bench(fn, warmup=25, rep=200)


def main():
    dev = "cpu" if INTERP else "cuda"
    shapes = [(64, 128)] if INTERP else [(4096, 4096), (11008, 4096)]
    ns = [8, 16] if INTERP else [8, 16, 32, 64]
    configs = [(1, 64, 4), (1, 128, 4), (1, 256, 4), (2, 128, 4), (4, 64, 4), (1, 256, 8), (2, 256, 8), (4, 128, 8)]
    if INTERP:
        configs = configs[:2]
    lines = []
    summary = []
    gen = torch.Generator(device=dev).manual_seed(0)

    def log(s):
        print(s, flush=True)
        lines.append(s)

    for (M, K) in shapes:
        W0 = torch.randn(M, K, device=dev, generator=gen, dtype=torch.float32).to(torch.float16)
        weights = []
        W = magnitude(W0.float(), 0.8).to(torch.float16)
        Wc = W.to_sparse_csr()
        weights.append(("csr 80% crd32", W, ("csr", Wc.crow_indices().to(torch.int32), Wc.col_indices().to(torch.int32),
                                            Wc.values())))
        weights.append(("csr 80% crd16", W, ("csr", Wc.crow_indices().to(torch.int32), Wc.col_indices().to(torch.int16),
                                            Wc.values())))
        for n, m in [(2, 4), (4, 8)]:
            D, v, c = nm_prune(W0.float(), n, m)
            weights.append((f"nm{n}:{m} crd8", D.to(torch.float16), ("nm", n, m, c, v.to(torch.float16))))
        for N in ns:
            X = torch.randn(K, N, device=dev, generator=gen).to(torch.float16)
            for name, Wd, st in weights:
                ref = Wd.double() @ X.double()
                dense_t = bench(lambda: Wd @ X)
                best = None
                for R, BK, warps in configs:
                    Y = torch.empty(M, N, device=dev, dtype=torch.float32)
                    grid = (triton.cdiv(M, R),)
                    if st[0] == "csr":
                        _, pos, crd, vals = st
                        f = lambda: csr_gather[grid](pos, crd, vals, X, Y, M, N, R, BK, N, num_warps=warps)
                    else:
                        _, n, m, crd, vals = st
                        f = lambda: nm_gather[grid](crd, vals, X, Y, M, K, N, n, m, R, BK, N, num_warps=warps)
                    f()
                    err = ((Y.double() - ref).abs().max() / ref.abs().max()).item()
                    if not err < 1e-3:
                        log(f"WRONG {M}x{K} {name} N={N} R={R} BK={BK} w={warps}: rel err {err:.2e}")
                        continue
                    t = bench(f)
                    log(f"{M}x{K} {name:14s} N={N:3d} R={R} BK={BK:3d} w={warps}: {t * 1e3:7.1f} us "
                        f"(dense {dense_t * 1e3:6.1f} us, {dense_t / t:4.2f}x)")
                    if best is None or t < best[0]:
                        best = (t, R, BK, warps)
                if best is not None:
                    summary.append(f"| {M}x{K} | {name} | {N} | {dense_t * 1e3:.1f} | {best[0] * 1e3:.1f} | "
                                   f"{dense_t / best[0]:.2f}x | R={best[1]} BK={best[2]} warps={best[3]} |")
    log("\n| shape | weight | N | dense cuBLAS us | best gather us | vs dense | config |\n|---|---|---|---|---|---|---|")
    for s in summary:
        log(s)
    with open(os.path.join(OUT, "gather_probe.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
