"""Where a sparsec Triton call spends its host time: per-call host microseconds (2000 calls queued, no sync
inside) for three weight formats next to torch.matmul, then a cProfile of the nm(2,4) call's loop.
From the repository root on the GPU machine: python benchmarks/results/h100-host-overhead/host_profile.py
"""
import cProfile
import io
import os
import pstats
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
import sparsec as sc  # noqa: E402
from sparsec.backends.triton.device import bind_operand  # noqa: E402
from sparsec.formats import parse_format  # noqa: E402

OUT = os.environ.get("OUT", ".")
log_f = open(os.path.join(OUT, "host_profile.txt"), "w")


def log(s):
    print(s, flush=True)
    log_f.write(s + "\n")


def per_call(fn, n=2000):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    host = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return host


M = K = 4096
N = 16
torch.manual_seed(0)
W = torch.randn(M, K, device="cuda", dtype=torch.float16)
g = W.reshape(M, K // 4, 4)
idx = g.abs().topk(2, dim=2).indices
W = (g * torch.zeros_like(g, dtype=torch.bool).scatter_(2, idx, True)).reshape(M, K)
X = torch.randn(K, N, device="cuda", dtype=torch.float16)
calls = {}
for fmt in ("nm(2,4)[pos32,crd8]", "bitmap", "csr"):
    k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": fmt},
                   dtype={"W": "float16", "X": "float16", "Y": "float32"}, target="triton")
    Wb = bind_operand(W, "W", parse_format(fmt, 2), "float16", W.device)
    calls[fmt] = (lambda k=k, Wb=Wb: k(W=Wb, X=X))
empty = torch.empty(1, device="cuda")
log(f"host us per call, {M}x{K} fp16 weight, N={N}:")
log(f"  torch.matmul {per_call(lambda: W @ X):.1f}; torch.empty(1) {per_call(lambda: torch.empty(M, N, device='cuda')):.1f}")
for fmt, fn in calls.items():
    log(f"  sparsec {fmt}: {per_call(fn):.1f}")
fn = calls["nm(2,4)[pos32,crd8]"]
pr = cProfile.Profile()
pr.enable()
for _ in range(3000):
    fn()
pr.disable()
torch.cuda.synchronize()
s = io.StringIO()
pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(30)
log(s.getvalue())
s = io.StringIO()
pstats.Stats(pr, stream=s).sort_stats("cumtime").print_stats(30)
log(s.getvalue())
log_f.close()
