"""Scheduling: every schedule computes the unscheduled result, illegal schedules are refused
with a reason, and the dumps show what each command did."""

import numpy as np
import pytest

import sparsec as sc
from sparsec import runtime
from sparsec.errors import ScheduleError

RNG = np.random.default_rng(11)
TARGETS = ["interp", "cpu", "triton"]


def sparse(shape, density=0.35, rng=RNG):
    a = rng.uniform(-1, 1, shape)
    a[rng.random(shape) > density] = 0.0
    if len(shape) == 2 and shape[0] > 2:
        a[1] = 0.0
    return a


def result(x):
    if isinstance(x, sc.Tensor):
        return x.to_numpy()
    if hasattr(x, "to_host"):
        return x.to_host().to_numpy()
    return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)


# (text, formats, out_format, operand shapes, schedules that must all agree with the default)
S = sc.Schedule
KERNELS = {
    "spmv": ("y[i] = A[i,j] * x[j]", {"A": "csr"}, None, {"A": (37, 23), "x": (23,)},
             [S().split("i", 8), S().split("j", 4), S().vectorize("j", 1), S().vectorize("j", 4),
              S().split("i", 8).vectorize("j", 4).unroll("i_i", 2), S().parallelize("i", "none"),
              S().pos("i", "A"), S().pos("i", "A", 16), S().block("j", 16)]),
    "spmm": ("C[i,j] = A[i,k] * B[k,j]", {"A": "csr"}, None, {"A": (29, 17), "B": (17, 11)},
             [S().reorder("i", "j", "k"), S().split("j", 4), S().split("i", 5).split("k", 3),
              S().vectorize("j", 8), S().block("j", 16), S().block("k", 2), S().pos("i", "A", 16)]),
    "sddmm": ("S[i,j] = M[i,j] * U[i,k] * V[k,j]", {"M": "csr"}, "csr", {"M": (19, 21), "U": (19, 6),
                                                                       "V": (6, 21)},
              [S().reorder("i", "k", "j"), S().split("k", 4), S().vectorize("k", 1)]),
    "add": ("C[i,j] = A[i,j] + B[i,j]", {"A": "csr", "B": "csr"}, "csr", {"A": (15, 13), "B": (15, 13)},
            [S().split("i", 4), S().parallelize("i", "none")]),
    "dense_mul": ("C[i,j] = A[i,j] * B[i,j]", {}, None, {"A": (9, 7), "B": (9, 7)},
                  [S().fuse("i", "j"), S().fuse("i", "j", "ij").split("ij", 5), S().vectorize("j", 4)]),
    "ttv": ("B[i,j] = A[i,j,k] * c[k]", {"A": "csf"}, None, {"A": (6, 5, 7), "c": (7,)},
            [S().split("k", 3), S().unroll("k", 4)]),
}


def operands(shapes, formats):
    out = {}
    for name, shape in shapes.items():
        a = sparse(shape) if name in formats else RNG.uniform(-1, 1, shape)
        out[name] = sc.Tensor.from_numpy(a, formats[name], name=name) if name in formats else a
    return out


CASES = [(k, n) for k, spec in KERNELS.items() for n in range(len(spec[4]))]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kernel,n", CASES, ids=[f"{k}-{KERNELS[k][4][n]}" for k, n in CASES])
def test_schedule_matches_default(target, kernel, n):
    text, formats, out, shapes, schedules = KERNELS[kernel]
    ops = operands(shapes, formats)
    base = sc.compile(text, formats=formats, out_format=out, target="interp")
    want = result(base(**ops))
    k = sc.compile(text, formats=formats, out_format=out, target=target, schedule=schedules[n])
    got = result(k(**ops))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert f"// schedule: {schedules[n]}" in k.dump("loops")


def test_split_and_fuse_show_in_the_loop_ir():
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="interp",
                   schedule=S().split("i", 64, "blk", "row").vectorize("j", 4))
    text = k.dump("loops")
    assert "for blk in [sc_lo, sc_hi) parallel" in text and "for row in [0, min(64, n_i - blk * 64))" in text
    assert "vector(4)" in text
    k = sc.compile("C[i,j] = A[i,j] * B[i,j]", target="interp", schedule=S().fuse("i", "j", "ij"))
    assert "for ij in" in k.dump("loops") and "i = ij // n_j" in k.dump("loops")


def test_cpu_loop_hints_reach_llvm():
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu",
                   schedule=S().vectorize("j", 1).split("i", 16).unroll("i_i", 4))
    llvm = k.dump("llvm")
    assert '"llvm.loop.vectorize.enable", i1 false' in llvm
    assert "vector.body" not in llvm  # the inner reduction stayed scalar


def test_triton_block_hint_sets_the_tile():
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, target="triton",
                   schedule=S().block("j", 8).block("k", 4))
    tk = k._runner.runners[0].numeric
    assert tk.block_hints == {"j": 8, "k": 4}
    A, B = sparse((10, 7)), RNG.uniform(-1, 1, (7, 9))
    np.testing.assert_allclose(result(k(A=sc.Tensor.from_numpy(A, "csr"), B=B)), A @ B, rtol=1e-10)


@pytest.mark.parametrize("reduction", ["private", "atomic"])
def test_parallel_reduction_loop_with_threads(monkeypatch, reduction):
    # CSC SpMV: the outer loop is the reduction; two threads may add into the same y[i]
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 1)
    A, x = sparse((300, 200), 0.1), RNG.uniform(-1, 1, 200)
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csc"}, target="cpu",
                   schedule=S().parallelize("j", "threads", reduction))
    assert "parallel" in k.dump("loops")
    sc.set_num_threads(2)
    try:
        got = k(A=sc.Tensor.from_numpy(A, "csc"), x=x)
    finally:
        sc.set_num_threads(None)
    np.testing.assert_allclose(got, A @ x, rtol=1e-12, atol=1e-12)


def test_private_reduction_is_deterministic(monkeypatch):
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 1)
    A, x = sparse((500, 400), 0.05), RNG.uniform(-1, 1, 400)
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csc"}, target="cpu",
                   schedule=S().parallelize("j", "threads", "private"))
    T = sc.Tensor.from_numpy(A, "csc")
    sc.set_num_threads(2)
    try:
        runs = [k(A=T, x=x) for _ in range(5)]
    finally:
        sc.set_num_threads(None)
    assert all(np.array_equal(runs[0], r) for r in runs)


@pytest.mark.parametrize("text,formats,schedule,message", [
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, S().reorder("j", "i"), "j cannot come before i (A is csr: its level order)"),
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, S().reorder("i", "k"), "no statement has that loop; the loops are i, j"),
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, S().parallelize("j"), "only the outermost loop"),
    ("y[i] = A[i,j] * x[j]", {"A": "csc"}, S().parallelize("j"), "pass reduction='atomic' or 'private'"),
    ("C[i,j] = A[i,j] + B[i,j]", {"A": "csr", "B": "csr"}, S().split("j", 4), "co-iterates"),
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, S().split("q", 4), "no statement has that loop"),
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, S().vectorize("i", 4), "parallel outer loop"),
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, S().fuse("i", "j"), "perfect nesting"),
    ("C[i,j] = A[i,j] * 2", {"A": "csr"}, S().fuse("i", "j"), "depend on 'i'"),
    ("C[i,j] = A[i,k] * B[k,j]", {"A": "csr"}, S().fuse("i", "j"), "only statement"),
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, S().pos("i", "x"), "no compressed level"),
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, S().reorder("i"), "names every loop of its statement"),
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, S().parallelize("i").parallelize("i", "none"),
     "already has parallelize(i, threads); give one parallelize per statement"),
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, S().reorder("i", "j").reorder("i", "j"), "give one reorder"),
])
def test_illegal_schedules_are_refused_with_a_reason(text, formats, schedule, message):
    with pytest.raises(ScheduleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sc.compile(text, formats=formats, target="interp", schedule=schedule)


def test_schedule_builder_validates_its_arguments():
    with pytest.raises(ScheduleError, match="positive integer"):
        S().split("i", 0)
    with pytest.raises(ScheduleError, match="power of two"):
        S().block("j", 12)
    with pytest.raises(ScheduleError, match="not a valid identifier"):
        S().split("i; import os", 4)
    with pytest.raises(ScheduleError, match="unit"):
        S().parallelize("i", "gpu")
    assert str(S().split("i", 4).vectorize("i_i", 8)) == "split(i, 4, i_o, i_i).vectorize(i_i, 8)"
    with pytest.raises(ScheduleError, match="must be a sparsec.Schedule"):
        sc.compile("y[i] = A[i,j] * x[j]", schedule="fast")


def _two_chunks(monkeypatch):
    """Every parallel loop of this test runs in two chunks on two threads (reset after the test)."""
    monkeypatch.setattr(runtime, "MIN_PARALLEL_WORK", 1)
    monkeypatch.setattr(runtime, "_NUM_THREADS", 2)   # sc.set_num_threads(2), undone after the test


def test_private_max_reduction_combines_by_max(monkeypatch):
    """A private max over a parallel reduction loop: copies start at the output's fill and combine by max."""
    _two_chunks(monkeypatch)
    A = np.array([[-1.0, -2.0, 3.0, 4.0], [-5.0, -6.0, -7.0, -8.0], [0.0, 0.0, 0.0, 0.0]])
    k = sc.compile("y[i] = max[j](A[i,j])", formats={"A": "csc"}, target="cpu",
                   schedule=S().parallelize("j", "threads", "private"))
    assert "parallel balance=A_pos1 private" in k.dump("loops")
    np.testing.assert_array_equal(k(A=sc.Tensor.from_numpy(A, "csc")), [4.0, -5.0, 0.0])


def test_private_copies_of_an_uninitialized_output(monkeypatch):
    """Private copies with an output the runtime allocates uninitialized (poisoned here): every call right."""
    _two_chunks(monkeypatch)
    monkeypatch.setattr(runtime, "POISON", True)
    A, x = sparse((41, 30), 0.2), RNG.uniform(-1, 1, 30)
    T = sc.Tensor.from_numpy(A, "csc")
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csc"}, target="cpu",
                   schedule=S().parallelize("j", "threads", "private"))
    for _ in range(3):
        np.testing.assert_allclose(k(A=T, x=x), A @ x, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(k.run(A=T, x=x)["y"].to_numpy(), A @ x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("text,formats,out", [
    ("C[i,j] = A[i,k] * B[k,j]", {"A": "csr", "B": "csr"}, "csr"),   # a sparse output
    ("y[i] = A[i,j] * x[j]", {"A": "csr"}, None),                    # rows: disjoint entries
])
def test_private_on_a_loop_over_output_rows_takes_no_copies(monkeypatch, text, formats, out):
    """``private`` on a loop whose iterations write disjoint entries needs no copies and takes none."""
    _two_chunks(monkeypatch)
    monkeypatch.setattr(runtime, "POISON", True)
    k = sc.compile(text, formats=formats, out_format=out, target="cpu",
                   schedule=S().parallelize("i", "threads", "private"))
    assert not any(line.lstrip().startswith("for") and line.rstrip().endswith("private {")
               for line in k.dump("loops").splitlines())
    assert "parallel" in k.dump("loops")
    A = sparse((13, 13), 0.3)
    if "B" in formats:
        got, ref = result(k(A=sc.Tensor.from_numpy(A, "csr"), B=sc.Tensor.from_numpy(A.T.copy(), "csr"))), A @ A.T
    else:
        x = RNG.uniform(-1, 1, 13)
        got, ref = k(A=sc.Tensor.from_numpy(A, "csr"), x=x), A @ x
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", ["private", "atomic"])
@pytest.mark.parametrize("split", [S().split("j", 3), S().split("j", 3).split("j_o", 2)])
def test_splitting_a_parallel_reduction_loop_keeps_its_reduction(monkeypatch, reduction, split):
    """The parallel loop over blocks that a split of a parallel reduction loop makes keeps its atomics or copies."""
    _two_chunks(monkeypatch)
    schedule = S(S().parallelize("j", "threads", reduction).commands + split.commands)
    A, x = sparse((60, 50), 0.2), RNG.uniform(-1, 1, 50)
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csc"}, target="cpu", schedule=schedule)
    assert f"parallel {reduction}" in k.dump("loops")
    np.testing.assert_allclose(k(A=sc.Tensor.from_numpy(A, "csc"), x=x), A @ x, rtol=1e-12, atol=1e-12)


def test_triton_private_reduction_combines_with_atomics():
    """GPU programs have no private copies: a private parallel reduction adds into the output atomically
    (plain load-add-store from several programs would race; Triton's interpreter would not show it)."""
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csc"}, target="triton",
                   schedule=S().parallelize("j", "grid", "private"))
    src = k.dump("triton")
    assert "tl.atomic_add(" in src and "tl.store(y_vals" not in src
    A, x = sparse((20, 15), 0.3), RNG.uniform(-1, 1, 15)
    np.testing.assert_allclose(result(k(A=sc.Tensor.from_numpy(A, "csc"), x=x)), A @ x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule,name", [
    (S().split("j", 2, "i"), "i"),          # the row loop
    (S().split("j", 2, None, "i"), "i"),    # the same, as the inner loop
    (S().split("i", 2, "n_i"), "n_i"),      # an extent parameter
    (S().split("i", 2, "pA1"), "pA1"),      # the position loop over A's columns
    (S().fuse("i", "j", "x_vals"), "x_vals"),
    (S().split("i", 2, "A_vals"), "A_vals"),  # a buffer (Triton: the loop shadowed the pointer)
])
def test_new_loop_names_must_be_fresh(schedule, name):
    """A split or fuse whose new loop would shadow a name of the kernel is refused (it read the wrong value)."""
    with pytest.raises(ScheduleError, match=f"new loop name '{name}' is already used"):
        sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="cpu", schedule=schedule)


@pytest.mark.parametrize("fmt", [None, "csf(2,0,1)"])
def test_triton_split_reduction_under_atomic_programs(fmt):
    """Triton runs an outer reduction loop over programs with atomic adds; a split inner reduction loop's
    register tile is then a scalar sum (it was a vector of copies of the sum, which Triton refused to add)."""
    rng = np.random.default_rng(5)
    A, b, c = sparse((5, 7, 3), 0.5, rng), rng.uniform(-1, 1, 7), rng.uniform(-1, 1, 3)
    text = "Y[i] = A[i,j,k] * b[j] * c[k]"
    k = sc.compile(text, formats={"A": fmt} if fmt else {}, target="triton",
                   schedule=S().reorder("k", "i", "j").split("j", 2))
    got = result(k(A=sc.Tensor.from_numpy(A, fmt) if fmt else A, b=b, c=c))
    np.testing.assert_allclose(got, np.einsum("ijk,j,k->i", A, b, c), rtol=1e-12, atol=1e-12)


def test_fusing_a_reduction_loop_into_the_parallel_loop(monkeypatch):
    """fuse(i, j) with j summed over: the fused parallel loop's chunks would update the same output rows.
    Refused without a parallel reduction; with atomic updates it runs (threads, and Triton programs)."""
    text = "Y[i,l] = A[i,j] * B[j,l]"
    rng = np.random.default_rng(9)
    A, B = rng.uniform(-1, 1, (7, 13)), rng.uniform(-1, 1, (13, 5))
    with pytest.raises(ScheduleError, match="loop 'j' is not over an output coordinate"):
        sc.compile(text, target="cpu", schedule=S().reorder("i", "j", "l").fuse("i", "j"))
    _two_chunks(monkeypatch)
    atomic = S().reorder("i", "j", "l").parallelize("i", "threads", "atomic").fuse("i", "j")
    for target in ("cpu", "triton"):
        k = sc.compile(text, target=target, schedule=atomic)
        assert "parallel atomic" in k.dump("loops")
        np.testing.assert_allclose(result(k(A=A, B=B)), A @ B, rtol=1e-12, atol=1e-12)
    k = sc.compile("C[i,j] = A[i,j] * 2", target="cpu", schedule=S().fuse("i", "j"))   # both output loops
    assert "parallel" in k.dump("loops")
    np.testing.assert_array_equal(k(A=A), A * 2)
