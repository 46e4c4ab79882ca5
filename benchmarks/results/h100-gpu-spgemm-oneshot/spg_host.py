"""Where a cold SpGEMM template call spends its wall time (host timers around its phases, no profiler)."""
import gzip, os, sys, time, collections
import numpy as np, scipy.io, scipy.sparse as sp, torch
import sparsec as sc
from sparsec.backends.triton import program_template, spgemm, launch
from sparsec.backends.triton.device import bind_operand
folder = os.environ["SPARSEC_MATRICES"]
k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32", target="triton")
tp = program_template(k)
acc = collections.defaultdict(float)
def timed(label, f):
    def w(*a, **kw):
        t0 = time.perf_counter(); r = f(*a, **kw); acc[label] += time.perf_counter() - t0; return r
    return w
spgemm.bind_operand = timed("bind_operand", spgemm.bind_operand)
spgemm.csr_result = timed("csr_result", spgemm.csr_result)
tp._plan = timed("_plan (count, sync 1, chunks)", tp._plan)
tp.run = timed("run (incl _plan, kernels, sync 2)", tp.run)
fnlaunch = launch.SpecializedLaunches.__call__
launch.SpecializedLaunches.__call__ = timed("launches (host)", fnlaunch)
orig_item = torch.Tensor.__int__
for name in sys.argv[1].split(","):
    A = sp.csr_matrix(scipy.io.mmread(gzip.open(f"{folder}/{name}.mtx.gz"))).astype(np.float32)
    A.sum_duplicates(); A.sort_indices()
    d = bind_operand(A, "A", sc.formats.parse_format("csr", 2), "float32", torch.device("cuda"))
    g = {"A": d, "B": d}
    for warm in (False, True):
        for _ in range(3):
            tp._plans.clear(); tp(g)
        torch.cuda.synchronize(); acc.clear(); n = 40; tot = 0.0
        for _ in range(n):
            if not warm: tp._plans.clear()
            torch.cuda.synchronize(); t0 = time.perf_counter(); tp(g); t1 = time.perf_counter(); torch.cuda.synchronize(); t2 = time.perf_counter()
            acc["host (call returns)"] += t1 - t0; acc["wall (synchronized)"] += t2 - t0
        direct = sum(len(l._compiled) for l in spgemm._LAUNCHERS.values())
        print(f"{name} {'warm' if warm else 'cold'} (direct kernels cached: {direct})")
        for l, v in acc.items():
            print(f"   {l:<40}{v / n * 1e6:9.1f} us")
print("--- direct launch state")
for key, l in spgemm._LAUNCHERS.items():
    print(key[1], l.ordered is not None, [(d.ok) for d in l._compiled.values()])
