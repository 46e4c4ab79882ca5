"""Software prefetch of the CSR streams in a hand-written AVX-512 SpMV, beyond the cache (probe).

Build: gcc -O3 -march=native -shared -fPIC masked8.c -o masked8.so; gcc -O3 -march=native -shared -fPIC prefetch.c -o prefetch.so
Run: python prefetch_probe.py (GB/s of least bytes; read1/read2 = numpy max over as many bytes on 1/2 threads)
"""
import ctypes, numpy as np, time
from concurrent.futures import ThreadPoolExecutor
import scipy.sparse as sp
here=__import__('os').path.dirname(__import__('os').path.abspath(__file__))
lib=ctypes.CDLL(here+'/masked8.so'); pf=ctypes.CDLL(here+'/prefetch.so')
pool=ThreadPoolExecutor(2)
P=lambda a: a.ctypes.data_as(ctypes.c_void_p)
def mk(kind):
    nn=2800000
    if kind=="band":
        return sp.diags([np.ones(nn-abs(k),np.float32) for k in range(-8,9)], list(range(-8,9)), format='csr', dtype=np.float32)
    rng=np.random.default_rng(1); n=3000000; per=16
    cols=rng.integers(0,n,size=n*per).astype(np.int32).reshape(n,per); cols.sort(1)
    return sp.csr_matrix((np.ones(n*per,np.float32), cols.ravel(), np.arange(0,n*per+1,per)), shape=(n,n))
for kind in ("band",):
    A=mk(kind); n=A.shape[0]
    x=np.random.default_rng(0).standard_normal(A.shape[1]).astype(np.float32); y=np.empty(n,np.float32)
    nbytes = A.data.nbytes+A.indices.nbytes+A.indptr.nbytes+x.nbytes+y.nbytes
    big = np.ones(nbytes//4, np.float32); halves=np.array_split(big,2)
    def run(fn, d=None, threads=1):
        def part(r0, r1):
            a=(ctypes.c_void_p(A.indptr.ctypes.data+4*r0),P(A.indices),P(A.data),P(x),ctypes.c_void_p(y.ctypes.data+4*r0),ctypes.c_long(r1-r0))
            return fn(*a) if d is None else fn(*a, ctypes.c_long(d))
        if threads==1: return part(0,n)
        list(pool.map(lambda ab: part(*ab), [(0,n//2),(n//2,n)]))
    cands=[("read1",lambda: big.max()),("read2",lambda: list(pool.map(np.max, halves)))]
    for t in (1,2):
        cands.append((f"m8_{t}t",lambda t=t: run(lib.spmv_masked8,threads=t)))
        for h in ("t0","t1","t2"):
          for d in (256,1024,2048,4096):
            cands.append((f"{h}_{d}_{t}t",lambda d=d,t=t,h=h: run(getattr(pf,h),d,threads=t)))
    res={}
    for rep in range(3):
        for lab,fn in cands:
            ts=[]
            for _ in range(3):
                t0=time.perf_counter(); fn(); ts.append(time.perf_counter()-t0)
            res.setdefault(lab,[]).append(np.median(ts))
    y0=A@x; run(pf.t0,2048,threads=2); assert np.allclose(y,y0,rtol=1e-3,atol=1e-3)
    print(kind, " ".join(f"{l} {nbytes/min(v)/1e9:5.1f}" for l,v in res.items()), flush=True)
