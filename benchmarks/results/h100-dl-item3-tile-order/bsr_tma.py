"""Probe: BSR SpMM Y = W X (fp16, 4096^3, 90 % of b x b blocks zero) with TMA descriptors (host-side
TensorDescriptor) for the W blocks, the X tiles and the Y tile, against the shipped sparsec kernel and cuBLAS on the
same work (K cut to 416). Every variant checked against float32 torch."""
import itertools
import os
import sys
import time

import torch
import triton
import triton.language as tl
from triton.testing import do_bench
from triton.tools.tensor_descriptor import TensorDescriptor

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "examples"), os.path.dirname(os.path.abspath(__file__))]
from bsr_probe import plan  # noqa: E402


@triton.jit
def bsr_tma(w_desc, x_desc, y_desc, POS, CRD, N_ROWS, B: tl.constexpr, BN: tl.constexpr, N_TN: tl.constexpr,
            TILE_MAJOR: tl.constexpr, STAGES: tl.constexpr):
    pid = tl.program_id(0)
    if TILE_MAJOR:
        tn = pid // N_ROWS
        r = pid % N_ROWS
    else:
        r = pid // N_TN
        tn = pid % N_TN
    acc = tl.zeros([B, BN], tl.float32)
    for p in tl.range(tl.load(POS + r), tl.load(POS + r + 1), num_stages=STAGES):
        kb = tl.load(CRD + p)
        a = w_desc.load([p * B, 0])
        x = x_desc.load([kb * B, tn * BN])
        acc = tl.dot(a, x, acc)
    y_desc.store([r * B, tn * BN], acc.to(tl.float16))


@triton.jit
def bsr_tma_persistent(w_desc, x_desc, y_desc, CRD, IT_BLK, IT_TILE, IT_LAST, PROG_IT, B: tl.constexpr,
                       BN: tl.constexpr, N_TN: tl.constexpr, STAGES: tl.constexpr):
    pid = tl.program_id(0)
    it0 = tl.load(PROG_IT + pid)
    it1 = tl.load(PROG_IT + pid + 1)
    acc = tl.zeros([B, BN], tl.float32)
    for it in tl.range(it0, it1, num_stages=STAGES):
        blk = tl.load(IT_BLK + it)
        tile = tl.load(IT_TILE + it)
        blk0 = tl.maximum(blk, 0)
        kb = tl.load(CRD + blk0)
        tn = tile % N_TN
        a = w_desc.load([blk0 * B, 0])
        a = tl.where(blk >= 0, a, tl.zeros_like(a))
        x = x_desc.load([kb * B, tn * BN])
        acc = tl.dot(a, x, acc)
        if tl.load(IT_LAST + it) != 0:
            y_desc.store([(tile // N_TN) * B, tn * BN], acc.to(tl.float16))
            acc = tl.zeros([B, BN], tl.float32)


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
    Wc, Xc = dense_W[:, :416].contiguous(), X[:416].contiguous()
    out.append(("dense", "torch.matmul K=416 (same work)", do_bench(lambda: Wc @ Xc, return_mode="median") * 1e3))
    for b in (64, 128, 32):
        nb = M // b
        keep = torch.rand(nb, nb, device=dev, generator=g) < 0.1
        W = dense_W * keep.repeat_interleave(b, 0).repeat_interleave(b, 1)
        ref = (W.float() @ X.float())
        Wb = W.to_sparse_bsr((b, b))
        pos = Wb.crow_indices().to(torch.int32)
        crd = Wb.col_indices().to(torch.int32)
        vals = Wb.values().contiguous().reshape(-1, b)

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
        for kind, bn, warps, stages, order in itertools.product(("grid", "persist1", "persist2"), (128, 256), (4, 8),
                                                               (2, 3, 4), (0, 1)):
            smem = stages * (b * b + b * bn) * 2 + b * bn * 2
            if smem > 220 * 1024 or (warps == 4) != (b * bn < 16384) or time.time() - t0 > 140:
                continue
            if kind != "grid" and order == 1:
                continue
            n_tn = N // bn
            w_desc = TensorDescriptor.from_tensor(vals, [b, b])
            x_desc = TensorDescriptor.from_tensor(X, [b, bn])
            if kind == "grid":
                def run(bn=bn, warps=warps, stages=stages, order=order, n_tn=n_tn, w_desc=w_desc, x_desc=x_desc):
                    y = torch.empty(M, N, dtype=torch.float16, device=dev)
                    y_desc = TensorDescriptor.from_tensor(y, [b, bn])
                    bsr_tma[(nb * n_tn,)](w_desc, x_desc, y_desc, pos, crd, nb, B=b, BN=bn, N_TN=n_tn,
                                          TILE_MAJOR=order, STAGES=stages, num_warps=warps)
                    return y
            else:
                progs = sms * (1 if kind == "persist1" else 2)
                lists = plan(pos, n_tn, progs, 1, dev)

                def run(bn=bn, warps=warps, stages=stages, n_tn=n_tn, w_desc=w_desc, x_desc=x_desc, lists=lists,
                        progs=progs):
                    y = torch.empty(M, N, dtype=torch.float16, device=dev)
                    y_desc = TensorDescriptor.from_tensor(y, [b, bn])
                    bsr_tma_persistent[(progs,)](w_desc, x_desc, y_desc, crd, *lists, B=b, BN=bn, N_TN=n_tn,
                                                 STAGES=stages, num_warps=warps)
                    return y
            try:
                check(run(), kind)
                tm = do_bench(run, return_mode="median") * 1e3
            except Exception as e:  # noqa
                print("fail", b, kind, bn, warps, stages, order, repr(e)[:300], flush=True)
                continue
            res.append((tm, kind, bn, warps, stages, order))
        res.sort()
        with open(os.path.join(os.environ.get("OUT", "."), f"tma_b{b}.txt"), "w") as fh:
            for r in res:
                fh.write(" ".join(map(str, r)) + "\n")
        for kind in ("grid", "persist1", "persist2"):
            for tm, kd, bn, warps, stages, order in [r for r in res if r[1] == kind][:3]:
                out.append((f"b={b}", f"tma {kd} BN{bn} w{warps} st{stages} tilemajor{order}", tm))
    print(f"{'case':8} {'variant':44} {'us':>8} {'vs dense':>8}")
    for case, v, tm in out:
        print(f"{case:8} {v:44} {tm:8.1f} {tdense / tm:8.2f}")


if __name__ == "__main__":
    main()
