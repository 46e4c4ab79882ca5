"""CSC SpMV with parallelize('j', 'grid', 'private') compiled on the GPU: the tree given by sys.argv[1]."""
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, scipy.sparse as sp, torch
import sparsec as sc
print("sparsec from", sc.__file__)
rng = np.random.default_rng(0)
A = sp.random(4000, 20000, density=0.01, format="csc", random_state=1, dtype=np.float32)
A.data[:] = 1.0
x = np.ones(20000, np.float32)
k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csc"}, target="triton", dtype="float32",
               schedule=sc.Schedule().parallelize("j", "grid", "private"))
T = sc.Tensor.from_scipy(A, format="csc").to_device("cuda")
xd = torch.from_numpy(x).cuda()
ref = A @ x
for rep in range(3):
    y = k(A=T, x=xd).cpu().numpy()
    print("max abs error", float(np.abs(y - ref).max()), "entries wrong", int((np.abs(y - ref) > 1e-3).sum()), "of", y.size)
