"""SpGEMM one-shot/repeated: old template (f078ba6, spgemm_old) vs this tree, and warps variants of the sort kernels, cuSPARSE."""
import gzip, os, sys, time
import numpy as np, scipy.io, scipy.sparse as sp, torch
import sparsec as sc
from sparsec.backends.triton import program_template, spgemm, spgemm_old
from sparsec.backends.triton.device import bind_operand
from torch.profiler import profile, ProfilerActivity
folder = os.environ["SPARSEC_MATRICES"]
k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32", target="triton")
new = program_template(k)
old = spgemm_old.SpgemmTemplate(new.mt, k)
def wall(fn, reps=30):
    fn(); torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        torch.cuda.synchronize(); t0 = time.perf_counter(); fn(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3
def cold(t, g):
    def f():
        t._plans.clear(); t(g)
    return f
names = sys.argv[1].split(",")
# variants: WIDE_FROM, WIDE_PARTS, ROWS_WARPS, CHUNK_WARPS
variants = [tuple(int(x) for x in v.split("/")) for v in sys.argv[2].split(",")]
prof_names = sys.argv[3].split(",") if len(sys.argv) > 3 else []
base = (spgemm.WIDE_FROM, spgemm.WIDE_PARTS, spgemm.ROWS_WARPS, spgemm.CHUNK_WARPS)
def setv(v):
    spgemm.WIDE_FROM, spgemm.WIDE_PARTS, spgemm.ROWS_WARPS, spgemm.CHUNK_WARPS = v
print(f"{'matrix':<16}{'cusparse':>9}{'old warm':>9}{'new warm':>9}{'old cold':>9}{'new cold':>9}  cu/new-cold  cu/old-cold  cu/new-warm", flush=True)
r_old, r_new, r_warm, vt = [], [], [], {}
for name in names:
    A = sp.csr_matrix(scipy.io.mmread(gzip.open(f"{folder}/{name}.mtx.gz"))).astype(np.float32)
    A.sum_duplicates(); A.sort_indices()
    d = bind_operand(A, "A", sc.formats.parse_format("csr", 2), "float32", torch.device("cuda"))
    At = torch.sparse_csr_tensor(d.levels[1]["pos"], d.levels[1]["crd"], d.values, size=A.shape)
    g = {"A": d, "B": d}
    c0 = old(g)
    for v in variants:
        setv(v)
        for rep in range(2):
            new._plans.clear()
            c1 = new(g)
            assert torch.equal(c1.levels[1]["pos"], c0.levels[1]["pos"]) and torch.equal(c1.levels[1]["crd"], c0.levels[1]["crd"]), (name, v)
            assert float((c1.values - c0.values).abs().max()) <= 1e-5 * float(c0.values.abs().max()), (name, v)
    setv(base)
    ts = {}
    for rep in range(3):
        for lab, f in (("cu", lambda: At @ At), ("ow", lambda: old(g)), ("nw", lambda: new(g)), ("oc", cold(old, g)), ("nc", cold(new, g))):
            ts.setdefault(lab, []).append(wall(f))
    m = {l: min(v) for l, v in ts.items()}
    r_new.append(m["cu"] / m["nc"]); r_old.append(m["cu"] / m["oc"]); r_warm.append(m["cu"] / m["nw"])
    print(f"{name:<16}{m['cu']:>9.3f}{m['ow']:>9.3f}{m['nw']:>9.3f}{m['oc']:>9.3f}{m['nc']:>9.3f}  {r_new[-1]:.2f}  {r_old[-1]:.2f}  {r_warm[-1]:.2f}", flush=True)
    row = []
    for v in variants:
        setv(v)
        row.append(min(wall(cold(new, g)) for _ in range(2)))
    setv(base)
    vt[name] = (m["cu"], row)
    if name in prof_names:
        for lab, t in (("old", old), ("new", new)):
            for _ in range(3): t(g)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    t._plans.clear(); t(g)
                torch.cuda.synchronize()
            print(f"== {name} {lab} cold")
            for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:10]:
                if e.device_time_total > 0:
                    print(f"   {e.device_time_total / 5:9.1f} us x{e.count / 5:.0f}  {e.key[:60]}")
        pl = next(iter(new._plans.values()))
        print("   total", pl.total, "n_large", pl.n_large, "n_big", pl.n_big, "wide", pl.wide, "nnz", pl.nnz, flush=True)
gm = lambda r: float(np.exp(np.mean(np.log(r))))
print(f"geomean cuSPARSE/cold: old {gm(r_old):.2f}x new {gm(r_new):.2f}x; worst old {min(r_old):.2f} new {min(r_new):.2f}; warm new {gm(r_warm):.2f}x worst {min(r_warm):.2f}")
print("cold ms by variant (WIDE_FROM/WIDE_PARTS/ROWS_WARPS/CHUNK_WARPS):", " ".join("/".join(map(str, v)) for v in variants))
for name, (cu, row) in vt.items():
    print(f"{name:<16}" + "".join(f"{t:9.3f}" for t in row))
for j, v in enumerate(variants):
    print("/".join(map(str, v)), f"geomean cu/cold {gm([cu / row[j] for cu, row in vt.values()]):.3f}")
