"""Cold SpGEMM: fused count+scan (SPLIT=False) vs count then scan (SPLIT=True), cuSPARSE beside; per-kernel times."""
import gzip, os, sys, time
import numpy as np, scipy.io, scipy.sparse as sp, torch
import sparsec as sc
from sparsec.backends.triton import program_template, spgemm
from sparsec.backends.triton.device import bind_operand
from torch.profiler import profile, ProfilerActivity
folder = os.environ["SPARSEC_MATRICES"]
k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr", "B": "csr", "C": "csr"}, dtype="float32", target="triton")
new = program_template(k)
def wall(fn, reps=40):
    fn(); torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        torch.cuda.synchronize(); t0 = time.perf_counter(); fn(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3
def cold(split, g):
    def f():
        spgemm.SPLIT = split; new._plans.clear(); new(g)
    return f
rf, rt = [], []
print(f"{'matrix':<16}{'cusparse':>9}{'fused':>9}{'split':>9}  cu/fused cu/split  | count kernels fused / split (us)")
for name in sys.argv[1].split(","):
    A = sp.csr_matrix(scipy.io.mmread(gzip.open(f"{folder}/{name}.mtx.gz"))).astype(np.float32)
    A.sum_duplicates(); A.sort_indices()
    d = bind_operand(A, "A", sc.formats.parse_format("csr", 2), "float32", torch.device("cuda"))
    At = torch.sparse_csr_tensor(d.levels[1]["pos"], d.levels[1]["crd"], d.values, size=A.shape)
    g = {"A": d, "B": d}
    outs = []
    for split in (False, True):
        cold(split, g)(); c = new(g); outs.append(c)
    assert torch.equal(outs[0].levels[1]["pos"], outs[1].levels[1]["pos"]) and torch.equal(outs[0].levels[1]["crd"], outs[1].levels[1]["crd"])
    ts = {}
    for rep in range(3):
        for lab, f in (("cu", lambda: At @ At), ("f", cold(False, g)), ("s", cold(True, g))):
            ts.setdefault(lab, []).append(wall(f))
    m = {l: min(v) for l, v in ts.items()}
    kt = []
    for split in (False, True):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5): cold(split, g)()
            torch.cuda.synchronize()
        kt.append(" ".join(f"{e.key[7:]}={e.device_time_total / 5:.1f}" for e in prof.key_averages()
                           if e.key in ("spgemm_count", "spgemm_count_only", "spgemm_offsets", "spgemm_starts", "spgemm_pos")))
    rf.append(m["cu"] / m["f"]); rt.append(m["cu"] / m["s"])
    print(f"{name:<16}{m['cu']:>9.3f}{m['f']:>9.3f}{m['s']:>9.3f}  {rf[-1]:.2f}     {rt[-1]:.2f}      | {kt[0]} / {kt[1]}", flush=True)
gm = lambda r: float(np.exp(np.mean(np.log(r))))
print(f"geomean cuSPARSE/cold: fused {gm(rf):.2f}x split {gm(rt):.2f}x; worst fused {min(rf):.2f} split {min(rt):.2f}")
