"""sparsec's N:M tile template on the GPU: 8-bit vs packed coordinates, heuristic launch vs forced ones."""
import os
import sys
import time

import torch
import triton

sys.path.insert(0, os.getcwd())
import sparsec as sc  # noqa: E402
from sparsec.backends.triton.device import bind_operand  # noqa: E402
from sparsec.formats import parse_format  # noqa: E402

OUT = os.environ.get("OUT", ".")
LOG = open(os.path.join(OUT, "nm_sweep.txt"), "w")


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.write(s + "\n")
    LOG.flush()


def nm_prune(W, n, m):
    M, K = W.shape
    g = W.reshape(M, K // m, m)
    idx = g.abs().topk(n, dim=2).indices
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(2, idx, True)
    return (g * keep).reshape(M, K)


def bench(fn):
    return triton.testing.do_bench(fn, warmup=10, rep=80) * 1e3


def kernel_us(fn, reps=20):
    """Device time of the kernels one call of fn launches (torch profiler), and the host time per call."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(200):
        fn()
    host = (time.perf_counter() - t) / 200 * 1e6
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    dev = sum(e.device_time_total for e in prof.key_averages()) / reps
    return dev, host


def main():
    torch.manual_seed(0)
    t0 = time.time()
    summary = []
    for M, K in [(4096, 4096), (11008, 4096)]:
        W0 = torch.randn(M, K, device="cuda", dtype=torch.float16)
        for n, m in [(2, 4), (4, 8), (1, 4)]:
            W = nm_prune(W0, n, m)
            for fmt in [f"nm({n},{m})[pos32,crd8]", f"nm({n},{m},packed)"]:
                k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": fmt},
                               dtype={"W": "float16", "X": "float16", "Y": "float32"}, target="triton")
                Wb = bind_operand(W, "W", parse_format(fmt, 2), "float16", W.device)
                ck = k._compiled[next(iter(k._compiled))] if k._compiled else None
                for N in [8, 16, 32, 64]:
                    X = torch.randn(K, N, device="cuda", dtype=torch.float16)
                    ref = W.float() @ X.float()
                    cub = bench(lambda: W @ X)
                    os.environ.pop("SPARSEC_TRITON_TILE", None)
                    Y = k(W=Wb, X=X)
                    err = ((Y - ref).abs().max() / ref.abs().max()).item()
                    ck = k._compiled[next(iter(k._compiled))]
                    assert ck.tile is not None
                    t = bench(lambda: k(W=Wb, X=X))
                    dev, host = kernel_us(lambda: k(W=Wb, X=X))
                    cdev, chost = kernel_us(lambda: W @ X)
                    line = (f"{M}x{K} {fmt:22s} N={N:3d}: cuBLAS {cub:6.1f} us  heuristic {t:6.1f} us ({cub/t:.2f}x) "
                            f"err {err:.1e} | kernels {dev:5.1f} us (cuBLAS {cdev:5.1f}), host {host:5.1f} us/call "
                            f"(cuBLAS {chost:4.1f})")
                    forced = []
                    if (n, m) == (2, 4) and N in (16, 64) and "packed" in fmt:
                        bn = max(16, min(64, triton.next_power_of_2(N)))
                        for split in (4, 8, 16, 32):
                            for bm, warps in ((64, 4), (64, 8), (128, 8)):
                                os.environ["SPARSEC_TRITON_TILE"] = f"{bm},{bn},{split},{warps}"
                                ck._launch_memo.clear()
                                Y = k(W=Wb, X=X)
                                e2 = ((Y - ref).abs().max() / ref.abs().max()).item()
                                assert e2 < 1e-2, (split, warps, e2)
                                forced.append((kernel_us(lambda: k(W=Wb, X=X))[0], split, f"{bm}/{warps}"))
                        os.environ.pop("SPARSEC_TRITON_TILE", None)
                        ck._launch_memo.clear()
                        forced.sort()
                        line += "  forced best: " + ", ".join(f"S={s} w={w} {ft:.1f}" for ft, s, w in forced[:3])
                    log(line)
                    summary.append((M, K, fmt, N, cub, t, forced[0][0] if forced else None, dev, cdev))
            log(f"  [{time.time() - t0:.0f} s]")
    log("\n| shape | format | N | cuBLAS us | sparsec us | x cuBLAS | kernels: sparsec / cuBLAS us | best forced (kernels) |"
        "\n|---|---|---|---|---|---|---|---|")
    for M, K, fmt, N, cub, t, f, dev, cdev in summary:
        log(f"| {M}x{K} | {fmt} | {N} | {cub:.1f} | {t:.1f} | {cub/t:.2f} | {dev:.1f} / {cdev:.1f} | "
            f"{'' if f is None else f'{f:.1f}'} |")


if __name__ == "__main__":
    main()
