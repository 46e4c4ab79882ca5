"""Per-variant kernel profile and host split of one-shot SpGEMM (WIDE_FROM sweep)."""
import gzip, os, sys, time
import numpy as np, scipy.io, scipy.sparse as sp, torch
import sparsec as sc
from sparsec.backends.triton import program_template, spgemm
from sparsec.backends.triton.device import bind_operand
from torch.profiler import profile, ProfilerActivity
folder = os.environ["SPARSEC_MATRICES"]
k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32", target="triton")
new = program_template(k)
plan_t = []
orig_plan = new._plan
def timed_plan(*a):
    t0 = time.perf_counter(); r = orig_plan(*a); plan_t.append(time.perf_counter() - t0); return r
new._plan = timed_plan
def cold_once(g):
    new._plans.clear(); torch.cuda.synchronize(); t0 = time.perf_counter(); new(g); torch.cuda.synchronize()
    return time.perf_counter() - t0
for name in sys.argv[1].split(","):
    A = sp.csr_matrix(scipy.io.mmread(gzip.open(f"{folder}/{name}.mtx.gz"))).astype(np.float32)
    A.sum_duplicates(); A.sort_indices()
    d = bind_operand(A, "A", sc.formats.parse_format("csr", 2), "float32", torch.device("cuda"))
    At = torch.sparse_csr_tensor(d.levels[1]["pos"], d.levels[1]["crd"], d.values, size=A.shape)
    g = {"A": d, "B": d}
    for _ in range(3): At @ At
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(20): At @ At
    torch.cuda.synchronize(); cu = (time.perf_counter() - t0) / 20 * 1e3
    print(f"=== {name} cuSPARSE {cu:.3f} ms", flush=True)
    for wide in [int(x) for x in sys.argv[2].split(",")]:
        spgemm.WIDE_FROM = wide
        for _ in range(3): cold_once(g)
        plan_t.clear()
        walls = sorted(cold_once(g) for _ in range(25))
        pt = sorted(plan_t)[len(plan_t) // 2]
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                new._plans.clear(); new(g)
            torch.cuda.synchronize()
        ks = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)
        tot = sum(e.device_time_total for e in ks) / 5
        top = " ".join(f"{e.key.replace('spgemm_', '')[:14]}={e.device_time_total / 5:.0f}" for e in ks[:7] if e.device_time_total > 0)
        pl = next(iter(new._plans.values()))
        print(f"  wide {wide:5d} cold {walls[12]*1e3:.3f} ms (plan {pt*1e3:.3f}) gpu {tot:.0f} us n_large {pl.n_large} n_big {pl.n_big} | {top}", flush=True)
