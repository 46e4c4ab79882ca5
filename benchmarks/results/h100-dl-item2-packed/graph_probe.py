"""Host time per sparsec call after the reshape change, and whether a call can be captured in a CUDA graph."""
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
log_f = open(os.path.join(OUT, "graph_probe.txt"), "w")


def log(s):
    print(s, flush=True)
    log_f.write(s + "\n")


def per_call(fn, n=2000):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    host = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return host


M = K = 4096
torch.manual_seed(0)
W = torch.randn(M, K, device="cuda", dtype=torch.float16)
g = W.reshape(M, K // 4, 4)
idx = g.abs().topk(2, dim=2).indices
W = (g * torch.zeros_like(g, dtype=torch.bool).scatter_(2, idx, True)).reshape(M, K)
for N in (16, 64):
    X = torch.randn(K, N, device="cuda", dtype=torch.float16)
    fmt = "nm(2,4)[pos32,crd8]"
    k = sc.compile("Y[i,j] = W[i,k] * X[k,j]", formats={"W": fmt},
                   dtype={"W": "float16", "X": "float16", "Y": "float32"}, target="triton")
    Wb = bind_operand(W, "W", parse_format(fmt, 2), "float16", W.device)
    ref = W.float() @ X.float()
    log(f"N={N}: host us per call: sparsec {per_call(lambda: k(W=Wb, X=X)):.1f}, torch.matmul {per_call(lambda: W @ X):.1f}")
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                k(W=Wb, X=X)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            Yg = k(W=Wb, X=X)
        graph.replay()
        torch.cuda.synchronize()
        err = ((Yg - ref).abs().max() / ref.abs().max()).item()
        gd = torch.cuda.CUDAGraph()
        with torch.cuda.graph(gd):
            Yd = W @ X
        t_graph = triton.testing.do_bench(graph.replay, warmup=10, rep=100) * 1e3
        t_dense = triton.testing.do_bench(gd.replay, warmup=10, rep=100) * 1e3
        t_call = triton.testing.do_bench(lambda: k(W=Wb, X=X), warmup=10, rep=100) * 1e3
        t_mm = triton.testing.do_bench(lambda: W @ X, warmup=10, rep=100) * 1e3
        log(f"  CUDA graph: err {err:.1e}; replay (L2 flushed) sparsec {t_graph:.1f} us vs cuBLAS graph {t_dense:.1f} us "
            f"({t_dense / t_graph:.2f}x); plain calls {t_call:.1f} vs {t_mm:.1f} us; host per replay "
            f"{per_call(graph.replay):.1f} us")
    except Exception as e:
        log(f"  CUDA graph capture failed: {type(e).__name__}: {str(e)[:300]}")
log_f.close()
