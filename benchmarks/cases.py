"""What is measured: matrices x kernels x dtypes, declared as data.

A :class:`Case` is one (matrix, kernel, dtype). Matrices come from the shared
folder (through its ``load.py``) or are generated here: uniform random,
power-law (Zipf) row lengths, banded, and pruned DNN weights (unstructured
magnitude pruning, 2:4, 32x32 blocks). :class:`CaseData` builds the operands in
the case's dtype and, lazily, the float64 reference computed from those same
rounded operands, so input rounding never counts as error.

Kernels (``S = A∘(U Vᵀ)`` keeps A's pattern):

=======  ==============================  =================================
spmv     y = A x                          x dense vector
spmmN    C = A X                          X dense, cols x N, row-major
sddmmK   S = A ∘ (U Vᵀ)                   U rows x K, V cols x K, row-major
add      C = A + B                        B = Aᵀ (square) or random, same nnz
spgemm   C = A B                          B = A (square) or Aᵀ (rectangular)
=======  ==============================  =================================
"""

from __future__ import annotations

import importlib.util
import os
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parent.parent
KINDS = ("spmv", "spmm", "sddmm", "add", "spgemm")
SPARSE_OUT = ("sddmm", "add", "spgemm")
#: relative error bound (max |result - ref| / max |ref|) by dtype
TOLERANCE = {"float64": 1e-10, "float32": 1e-4, "float16": 1e-2}
DTYPES = tuple(TOLERANCE)


# ------------------------------------------------------------------------------ declarations
@dataclass(frozen=True)
class KernelSpec:
    kind: str            # spmv | spmm | sddmm | add | spgemm
    n: int | None = None  # N (dense columns) for spmm, K (inner dimension) for sddmm

    @property
    def name(self) -> str:
        return f"{self.kind}{self.n}" if self.n else self.kind

    @property
    def sparse_out(self) -> bool:
        return self.kind in SPARSE_OUT


@dataclass(frozen=True)
class MatrixSpec:
    name: str
    group: str                                       # real | synthetic | pruned | tiny
    build: Callable[[], sp.csr_matrix] = field(compare=False, repr=False)  # float64, sorted, int32
    kinds: tuple[str, ...] = KINDS                   # kernels that are run on it
    sparsity: float | None = None                    # pruned weights: fraction of zeros
    structure: str = "unstructured"                  # unstructured | 2:4 | block32 | band | ...
    description: str = ""


@dataclass(frozen=True)
class Case:
    matrix: MatrixSpec
    kernel: KernelSpec
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.matrix.name}/{self.kernel.name}/{self.dtype}"


def kernel_specs(quick: bool, tiny: bool = False, sddmm_k: int = 32) -> list[KernelSpec]:
    if tiny:
        return [KernelSpec("spmv"), KernelSpec("spmm", 4), KernelSpec("sddmm", 4), KernelSpec("add"),
                KernelSpec("spgemm")]
    ns = (16, 64) if quick else (16, 64, 256)
    return ([KernelSpec("spmv")] + [KernelSpec("spmm", n) for n in ns]
            + [KernelSpec("sddmm", sddmm_k), KernelSpec("add"), KernelSpec("spgemm")])


# ------------------------------------------------------------------------------ real matrices
def matrices_dir() -> Path:
    env = os.environ.get("SPARSEC_MATRICES")
    return Path(env) if env else REPO.parent / "shared" / "matrices"


def _loader(folder: Path):
    spec = importlib.util.spec_from_file_location("sparsec_bench_matrix_load", folder / "load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


QUICK_REAL = ("bcsstk13", "cage11", "dlmc_rn50_mag0.8_proj4")


def real_matrices(quick: bool) -> tuple[list[MatrixSpec], str | None]:
    """The shared folder's matrices (random values for pattern files); a reason if unavailable."""
    folder = matrices_dir()
    if not (folder / "load.py").exists():
        return [], f"no matrices folder with load.py at {folder} (set SPARSEC_MATRICES)"
    try:
        mod = _loader(folder)
        rows = mod.manifest(str(folder))
    except Exception as e:  # noqa: BLE001 - report, never crash
        return [], f"cannot read {folder}: {type(e).__name__}: {e}"
    specs = []
    for row in rows:
        name = row["name"]
        if quick and name not in QUICK_REAL:
            continue

        def build(name=name):
            m = _canonical(mod.load(name, "float64", pattern_values="random", folder=str(folder)))
            big = float(np.abs(m.data).max()) if m.nnz else 0.0
            if big > 0:  # values scaled to max |a| = 1, so float16 does not overflow (FEM matrices reach 1e10)
                m.data /= big
            return m

        specs.append(MatrixSpec(name, "real", build, description=row.get("domain", "")))
    return specs, None


# ------------------------------------------------------------------------------ generators
def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def _canonical(m) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float64)
    m.sum_duplicates()
    m.sort_indices()
    m.eliminate_zeros()
    if max(m.shape) < 2**31 and m.nnz < 2**31:
        m.indices = m.indices.astype(np.int32)
        m.indptr = m.indptr.astype(np.int32)
    return m


def _rows_to_csr(lengths: np.ndarray, ncols: int, rng: np.random.Generator) -> sp.csr_matrix:
    indptr = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    nnz = int(indptr[-1])
    cols = rng.integers(0, ncols, nnz)
    vals = rng.uniform(-1.0, 1.0, nnz)
    return _canonical(sp.csr_matrix((vals, cols, indptr), shape=(lengths.shape[0], ncols)))


def uniform_random(m: int, n: int, per_row: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return _rows_to_csr(np.full(m, per_row, dtype=np.int64), n, rng)


def powerlaw_rows(m: int, n: int, mean: float, seed: int, a: float = 1.8) -> sp.csr_matrix:
    """Row lengths drawn from Zipf(a), clipped to n/8, rescaled to the given mean."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.zipf(a, m), max(1, n // 8)).astype(np.float64)
    lengths = np.clip(np.round(lengths * mean / lengths.mean()), 1, n).astype(np.int64)
    return _rows_to_csr(lengths, n, rng)


def banded(n: int, half_bw: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    offsets = list(range(-half_bw, half_bw + 1))
    diags = [rng.uniform(-1.0, 1.0, n - abs(k)) for k in offsets]
    return _canonical(sp.diags(diags, offsets, shape=(n, n), format="csr"))


def pruned_weights(m: int, n: int, structure: str, sparsity: float, seed: int) -> sp.csr_matrix:
    """Gaussian weights pruned by magnitude: unstructured, 2:4 along rows, or 32x32 blocks."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((m, n), dtype=np.float32)
    mag = np.abs(w)
    if structure == "unstructured":
        k = int(round(sparsity * mag.size))
        thr = np.partition(mag.ravel(), k)[k] if k < mag.size else np.inf
        mask = mag >= thr
    elif structure == "2:4":
        g = mag.reshape(m, n // 4, 4)
        keep = np.argsort(g, axis=2)[:, :, 2:]
        mask = np.zeros_like(g, dtype=bool)
        np.put_along_axis(mask, keep, True, axis=2)
        mask = mask.reshape(m, n)
    elif structure.startswith("block"):
        b = int(structure[5:])
        norms = mag.reshape(m // b, b, n // b, b).sum(axis=(1, 3))
        k = int(round(sparsity * norms.size))
        thr = np.partition(norms.ravel(), k)[k] if k < norms.size else np.inf
        mask = np.repeat(np.repeat(norms >= thr, b, axis=0), b, axis=1)
    else:
        raise ValueError(f"unknown pruning structure {structure!r}")
    w *= mask
    return _canonical(sp.csr_matrix(w))


def synthetic_matrices(quick: bool, tiny: bool = False) -> list[MatrixSpec]:
    S = MatrixSpec
    if tiny:
        return [
            S("tiny_uniform_300x200", "tiny", lambda: uniform_random(300, 200, 4, 1), structure="uniform"),
            S("tiny_powerlaw_256", "tiny", lambda: powerlaw_rows(256, 256, 4, 2), structure="powerlaw"),
            S("tiny_banded_300", "tiny", lambda: banded(300, 2, 3), structure="band"),
            S("tiny_pruned_64x128_2of4", "tiny", lambda: pruned_weights(64, 128, "2:4", 0.5, 4),
              sparsity=0.5, structure="2:4"),
        ]
    if quick:
        synth = [
            S("uniform_20k_d8", "synthetic", lambda: uniform_random(20_000, 20_000, 8, 11), structure="uniform",
              description="uniform random, 8 per row"),
            S("powerlaw_20k_d8", "synthetic", lambda: powerlaw_rows(20_000, 20_000, 8, 12), structure="powerlaw",
              description="Zipf(1.8) row lengths, mean 8"),
            S("banded_50k_b5", "synthetic", lambda: banded(50_000, 5, 13), structure="band",
              description="banded, half-bandwidth 5"),
        ]
        shapes, levels, extra = [(4096, 4096)], (0.9,), ("2:4",)   # quick: 2:4 for spmm only (below)
    else:
        synth = [
            S("uniform_200k_d16", "synthetic", lambda: uniform_random(200_000, 200_000, 16, 11),
              structure="uniform", description="uniform random, 16 per row"),
            S("powerlaw_200k_d16", "synthetic", lambda: powerlaw_rows(200_000, 200_000, 16, 12),
              structure="powerlaw", description="Zipf(1.8) row lengths, mean 16"),
            S("banded_500k_b5", "synthetic", lambda: banded(500_000, 5, 13), structure="band",
              description="banded, half-bandwidth 5"),
        ]
        shapes, levels, extra = [(4096, 4096), (11008, 4096)], (0.5, 0.7, 0.9, 0.95), ("2:4", "block32")
    dnn = ("spmv", "spmm", "sddmm")  # forward (SpMV/SpMM) and weight gradient (SDDMM)
    for (m, n) in shapes:
        for s in levels:
            name = f"pruned_{m}x{n}_u{round(s * 100)}"
            synth.append(S(name, "pruned", lambda m=m, n=n, s=s, name=name: pruned_weights(m, n, "unstructured", s,
                                                                                          _seed(name)),
                           kinds=dnn, sparsity=s, structure="unstructured",
                           description=f"Gaussian weights, magnitude-pruned to {s:.0%} zeros"))
        for st in extra:
            s = 0.5 if st == "2:4" else 0.9
            name = f"pruned_{m}x{n}_" + ("2of4" if st == "2:4" else f"b32s{round(s * 100)}")
            synth.append(S(name, "pruned", lambda m=m, n=n, st=st, s=s, name=name: pruned_weights(m, n, st, s,
                                                                                                 _seed(name)),
                           kinds=("spmm",) if quick else dnn, sparsity=s, structure=st,
                           description=f"Gaussian weights, {st} pruned to {s:.0%} zeros"))
    return synth


# ------------------------------------------------------------------------------ operands
@dataclass
class CSR:
    """CSR arrays in any dtype (scipy has no float16, so this is not a scipy matrix)."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return int(self.data.shape[0])

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.indices.nbytes + self.data.nbytes

    @classmethod
    def from_scipy(cls, m: sp.csr_matrix, dtype: str) -> "CSR":
        return cls(m.indptr, m.indices, m.data.astype(dtype), tuple(m.shape))

    def scipy(self, dtype=None) -> sp.csr_matrix:
        """As a scipy matrix (sharing the index arrays); float16 needs dtype='float32'."""
        data = self.data if dtype is None else self.data.astype(dtype, copy=False)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=self.shape)

    def copy(self) -> "CSR":
        return CSR(self.indptr.copy(), self.indices.copy(), self.data.copy(), self.shape)


@dataclass
class Operands:
    A: CSR
    B: CSR | None = None          # add, spgemm
    X: np.ndarray | None = None   # spmv vector (cols,), spmm matrix (cols, N)
    U: np.ndarray | None = None   # sddmm (rows, K)
    V: np.ndarray | None = None   # sddmm (cols, K): S = A ∘ (U Vᵀ)

    def parts(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.parts().values())

    def copy(self) -> "Operands":
        return Operands(**{k: v.copy() for k, v in self.parts().items()})


@dataclass
class Reference:
    out: np.ndarray | sp.csr_matrix   # float64
    scale: float                      # max |ref| (1 if the result is all zeros)
    nnz_out: int                      # stored entries of a sparse result (structural)


def _sddmm_values(A: sp.csr_matrix, U: np.ndarray, V: np.ndarray, out_dtype, chunk_elems: int = 1 << 23) -> np.ndarray:
    """Values of A ∘ (U Vᵀ) at A's entries, by gathering rows of U and V in chunks."""
    rows = np.repeat(np.arange(A.shape[0], dtype=np.int64), np.diff(A.indptr))
    K = U.shape[1]
    out = np.empty(A.nnz, dtype=out_dtype)
    step = max(1, chunk_elems // max(K, 1))
    for s in range(0, A.nnz, step):
        e = min(A.nnz, s + step)
        out[s:e] = np.einsum("ij,ij->i", U[rows[s:e]], V[A.indices[s:e]])
    out *= A.data
    return out


def sddmm_gather(A: sp.csr_matrix, U: np.ndarray, V: np.ndarray) -> sp.csr_matrix:
    vals = _sddmm_values(A, U, V, np.result_type(A.dtype, U.dtype))
    return sp.csr_matrix((vals, A.indices, A.indptr), shape=A.shape)


def second_operand(A64: sp.csr_matrix, kind: str, seed: int) -> sp.csr_matrix:
    """B of add (Aᵀ if square, else random with A's nnz) and of spgemm (A if square, else Aᵀ)."""
    square = A64.shape[0] == A64.shape[1]
    if kind == "add":
        if square:
            return _canonical(A64.T.tocsr())
        per_row = max(1, round(A64.nnz / A64.shape[0]))
        return uniform_random(A64.shape[0], A64.shape[1], per_row, seed)
    return A64 if square else _canonical(A64.T.tocsr())


def spgemm_flops(A: sp.csr_matrix, B: sp.csr_matrix) -> int:
    """2 x multiply-adds of C = A B: sum over k of nnz(A[:, k]) * nnz(B[k, :])."""
    col = np.bincount(A.indices, minlength=A.shape[1]).astype(np.int64)
    row = np.diff(B.indptr).astype(np.int64)
    return int(2 * np.dot(col, row))


class CaseData:
    """Operands of one case in its dtype, and (lazily) the float64 reference."""

    def __init__(self, case: Case, A64: sp.csr_matrix, B64: sp.csr_matrix | None = None):
        self.case = case
        k = case.kernel
        dt = case.dtype
        rng = np.random.default_rng(_seed(case.id))
        M, Ncols = A64.shape
        ops = Operands(CSR.from_scipy(A64, dt))
        if k.kind == "spmv":
            ops.X = rng.uniform(-1, 1, Ncols).astype(dt)
        elif k.kind == "spmm":
            ops.X = rng.uniform(-1, 1, (Ncols, k.n)).astype(dt)
        elif k.kind == "sddmm":
            ops.U = rng.uniform(-1, 1, (M, k.n)).astype(dt)
            ops.V = rng.uniform(-1, 1, (Ncols, k.n)).astype(dt)
        elif k.kind in ("add", "spgemm"):
            ops.B = CSR.from_scipy(B64, dt)
        self.ops = ops
        self.shape = (M, Ncols)

    @property
    def index_bytes(self) -> int:
        return self.ops.A.indices.dtype.itemsize

    @cached_property
    def ref(self) -> Reference:
        o, kind = self.ops, self.case.kernel.kind
        A = o.A.scipy("float64")
        f64 = lambda a: a.astype(np.float64)  # noqa: E731
        if kind == "spmv":
            out = A @ f64(o.X)
        elif kind == "spmm":
            out = A @ f64(o.X)
        elif kind == "sddmm":
            out = sddmm_gather(A, f64(o.U), f64(o.V))
        elif kind == "add":
            out = (A + o.B.scipy("float64")).tocsr()
        else:
            out = (A @ o.B.scipy("float64")).tocsr()
        if sp.issparse(out):
            out.sum_duplicates()
            scale = float(np.abs(out.data).max()) if out.nnz else 0.0
            nnz = out.nnz
        else:
            out = np.asarray(out)
            scale = float(np.abs(out).max()) if out.size else 0.0
            nnz = out.size
        return Reference(out, scale if scale > 0 else 1.0, nnz)


def rel_error(result, ref: Reference) -> float:
    """max |result - ref| / max |ref|; inf for a wrong shape or non-finite values."""
    if isinstance(ref.out, np.ndarray):
        r = np.asarray(result, dtype=np.float64)
        if r.shape != ref.out.shape:
            if r.size != ref.out.size:
                return float("inf")
            r = r.reshape(ref.out.shape)
        if not r.size:
            return 0.0
        err = float(np.max(np.abs(r - ref.out)))
    elif not sp.issparse(result):
        # a dense result of a sparse-output kernel (dense peers): the pattern's entries must match
        # and everything outside the pattern must be zero
        r = np.asarray(result)
        if r.shape != ref.out.shape:
            return float("inf")
        coo = ref.out.tocoo()
        inside = r[coo.row, coo.col].astype(np.float64)
        err = float(np.max(np.abs(inside - coo.data), initial=0.0))
        outside = r.copy()
        outside[coo.row, coo.col] = 0
        err = max(err, float(np.max(np.abs(outside), initial=0.0)))
    else:
        R = sp.csr_matrix(result, dtype=np.float64)
        if R.shape != ref.out.shape:
            return float("inf")
        if R.nnz and not np.all(np.isfinite(R.data)):
            return float("inf")
        d = (R - ref.out).tocsr()
        err = float(np.abs(d.data).max()) if d.nnz else 0.0
    return err / ref.scale if np.isfinite(err) else float("inf")


# ------------------------------------------------------------------------------ selection
def select_matrices(quick: bool, tiny: bool, only: list[str] | None) -> tuple[list[MatrixSpec], list[str]]:
    """Matrices to run and notes (e.g. a missing shared folder)."""
    notes = []
    if tiny:
        mats = synthetic_matrices(quick, tiny=True)
    else:
        real, why = real_matrices(quick)
        if why:
            notes.append(why)
        mats = real + synthetic_matrices(quick)
    if only:
        mats = [m for m in mats if any(s.lower() in m.name.lower() for s in only)]
    return mats, notes


def cases_for(matrix: MatrixSpec, kernels: list[KernelSpec], dtypes: list[str]) -> list[Case]:
    return [Case(matrix, k, dt) for k in kernels if k.kind in matrix.kinds for dt in dtypes]
