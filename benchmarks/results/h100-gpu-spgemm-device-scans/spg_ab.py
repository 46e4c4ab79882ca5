"""SpGEMM template one-shot (cold) and repeated (warm): before (spgemm_old, fccaaf7) vs after, and cuSPARSE."""
import gzip, os, sys, time
import numpy as np, scipy.io, scipy.sparse as sp, torch
import sparsec as sc
from sparsec.backends.triton import program_template, spgemm, spgemm_old
from sparsec.backends.triton.device import bind_operand
folder = os.environ["SPARSEC_MATRICES"]
k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32", target="triton")
new = program_template(k)
old = spgemm_old.SpgemmTemplate(new.mt, k)
def wall(fn, reps=40):
    fn(); torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        torch.cuda.synchronize(); t0 = time.perf_counter(); fn(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3
names = sys.argv[1].split(",")
variants = [v.split("x") for v in (sys.argv[2].split(",") if len(sys.argv) > 2 else [])]
print(f"{'matrix':<16}{'cusparse':>9}{'old warm':>9}{'new warm':>9}{'old cold':>9}{'new cold':>9}  cu/new-cold  cu/old-cold  cu/new-warm", flush=True)
r_old, r_new, r_warm = [], [], []
vt = {}
def cold(t, g):
    def f():
        t._plans.clear(); t(g)
    return f
for name in names:
    A = sp.csr_matrix(scipy.io.mmread(gzip.open(f"{folder}/{name}.mtx.gz"))).astype(np.float32)
    A.sum_duplicates(); A.sort_indices()
    d = bind_operand(A, "A", sc.formats.parse_format("csr", 2), "float32", torch.device("cuda"))
    At = torch.sparse_csr_tensor(d.levels[1]["pos"], d.levels[1]["crd"], d.values, size=A.shape)
    g = {"A": d, "B": d}
    for rep in range(3):
        new._plans.clear()
        c1, c0 = new(g), old(g)
        assert torch.equal(c1.levels[1]["pos"], c0.levels[1]["pos"]) and torch.equal(c1.levels[1]["crd"], c0.levels[1]["crd"]), name
        assert float((c1.values - c0.values).abs().max()) <= 1e-5 * float(c0.values.abs().max()), name
    ref = (At @ At).to_dense() if A.shape[0] <= 25000 else None
    if ref is not None:
        assert float((c1.to_torch().to_dense() - ref).abs().max()) <= 1e-4 * float(ref.abs().max()), name
    ts = {}
    for rep in range(3):
        for lab, f in (("cu", lambda: At @ At), ("ow", lambda: old(g)), ("nw", lambda: new(g)), ("oc", cold(old, g)), ("nc", cold(new, g))):
            ts.setdefault(lab, []).append(wall(f))
    m = {l: min(v) for l, v in ts.items()}
    r_new.append(m["cu"] / m["nc"]); r_old.append(m["cu"] / m["oc"]); r_warm.append(m["cu"] / m["nw"])
    print(f"{name:<16}{m['cu']:>9.3f}{m['ow']:>9.3f}{m['nw']:>9.3f}{m['oc']:>9.3f}{m['nc']:>9.3f}  {r_new[-1]:.2f}  {r_old[-1]:.2f}  {r_warm[-1]:.2f}", flush=True)
    if variants:
        keep = (spgemm.CHUNK_ENTRIES, spgemm.CHUNK_BLK)
        row = []
        for e, b in variants:
            spgemm.CHUNK_ENTRIES, spgemm.CHUNK_BLK = int(e), int(b)
            new._plans.clear(); c2 = new(g)
            assert torch.equal(c2.levels[1]["crd"], c0.levels[1]["crd"])
            row.append(min(wall(lambda: new(g)) for _ in range(2)))
        spgemm.CHUNK_ENTRIES, spgemm.CHUNK_BLK = keep
        vt[name] = row
gm = lambda r: float(np.exp(np.mean(np.log(r))))
print(f"geomean cuSPARSE/cold: old {gm(r_old):.2f}x new {gm(r_new):.2f}x; worst old {min(r_old):.2f} new {min(r_new):.2f}; warm new {gm(r_warm):.2f}x worst {min(r_warm):.2f}")
if variants:
    print("warm ms by chunk step (ENTRIES x BLK):", " ".join("x".join(v) for v in variants))
    for name, row in vt.items():
        print(f"{name:<16}" + "".join(f"{t:9.3f}" for t in row))
