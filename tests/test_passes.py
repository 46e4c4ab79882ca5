"""Unit tests of the passes: lattices, loop order, conversions, golden loop-IR dumps.

Golden files live in tests/golden/; regenerate them with SPARSEC_UPDATE_GOLDEN=1
after an intended change, and review the diff.
"""

import os
import pathlib

import numpy as np
import pytest

import sparsec as sc
from sparsec import api
from sparsec.frontend import parse_statement
from sparsec.ir.tensor_ir import Access, Binary, IndexVar, Literal, Unary, Where
from sparsec.passes.lattice import lattice, operand_key, simplify

GOLDEN = pathlib.Path(__file__).parent / "golden"

A = Access("A", (IndexVar("i"),))
B = Access("B", (IndexVar("i"),))
C = Access("C", (IndexVar("i"),))
KA, KB, KC = operand_key(A), operand_key(B), operand_key(C)


def points(expr, its, skip=None):
    return [set(p.iterators) for p in (lattice(expr, its, skip) if skip else lattice(expr, its))]


def test_lattice_intersection_union_universe():
    assert points(Binary("mul", A, B), [KA, KB]) == [{KA, KB}]
    assert points(Binary("add", A, B), [KA, KB]) == [{KA, KB}, {KA}, {KB}]
    # exp(0) = 1: every coordinate must be visited
    assert points(Unary("exp", A), [KA]) == [{KA}, set()]
    # A*B + C: {A, C} reduces to {C} because A*0 vanishes
    assert points(Binary("add", Binary("mul", A, B), C), [KA, KB, KC]) == [{KA, KB, KC}, {KA, KB}, {KC}]
    # under a max an implicit 0 is not skippable: the universe is needed; -inf would be
    never = lambda e: False  # noqa: E731
    assert points(A, [KA], never) == [{KA}, set()]
    minus_inf = lambda e: isinstance(e, Literal) and e.value == float("-inf")  # noqa: E731
    masked = Where(Binary("ne", A, Literal(0)), A, Literal(float("-inf")))
    assert points(masked, [KA], minus_inf) == [{KA}]


def test_simplify_structural_zeros():
    absent = frozenset({KA})
    assert simplify(Binary("mul", A, B), absent) == Literal(0)
    assert simplify(Binary("div", A, B), absent) == Literal(0)
    assert simplify(Binary("div", B, A), absent) != Literal(0)      # x / 0 is not zero
    assert simplify(Unary("exp", A), absent) == Literal(1.0)
    assert simplify(Binary("sub", Literal(0), B), frozenset()) == Unary("neg", B)


def _loops(text, formats, out_format=None):
    k = api.compile(text, formats=formats, target="interp", out_format=out_format)
    return k


def test_loop_order_prefers_contiguous_inner_loops():
    k = _loops("C[i,j] = A[i,k] * B[k,j]", {"A": "csr"})
    assert "loop order: i, k, j" in k.dump("loops")
    k = _loops("C[i,j] = A[i,k] * B[k,j]", {"B": "csr"})
    assert "loop order: i, k, j" in k.dump("loops")
    k = _loops("y[i] = A[i,j] * x[j]", {"A": "csc"})
    assert "loop order: j, i" in k.dump("loops")


def test_conflicting_orders_insert_a_visible_conversion():
    k = _loops("C[i,j] = A[i,j] + B[i,j]", {"A": "csr", "B": "csc", "C": "csr"})
    text = k.dump("loops")
    assert "%B_csr = sparse_tensor.convert %B : csc -> csr" in text
    rng = np.random.default_rng(0)
    a, b = (np.where(rng.random((6, 5)) < 0.4, rng.random((6, 5)), 0) for _ in range(2))
    out = k(A=sc.Tensor.from_numpy(a, "csr"), B=sc.Tensor.from_numpy(b, "csc"))
    np.testing.assert_allclose(out.to_numpy(), a + b)


def test_output_conversion_when_only_the_output_conflicts():
    k = _loops("C[j,i] = A[i,j]", {"A": "csr", "C": "csr"})
    text = k.dump("loops")
    assert "sparse_tensor.convert %C" in text
    a = np.array([[0, 1.0, 0], [2.0, 0, 3.0]])
    out = k(A=sc.Tensor.from_numpy(a, "csr"))
    assert out.format == sc.parse_format("csr")
    np.testing.assert_array_equal(out.to_numpy(), a.T)


def test_blocked_and_unblocked_operands_are_reconciled():
    k = _loops("C[i,j] = A[i,j] * B[i,j]", {"A": "bsr(2,2)", "B": "csr"})
    assert "bsr(2, 2) -> csr" in k.dump("loops")
    a = np.arange(1.0, 17).reshape(4, 4) * (np.arange(16).reshape(4, 4) % 3 == 0)
    b = np.eye(4) + 1
    out = k(A=sc.Tensor.from_numpy(a, "bsr(2,2)"), B=sc.Tensor.from_numpy(b, "csr"))
    np.testing.assert_allclose(out, a * b)


def test_output_strategies():
    assert "output strategy: same_pattern" in _loops("S[i,j] = M[i,j] * U[i,k] * V[k,j]", {"M": "csr"},
                                                      "csr").dump("loops")
    assert "output strategy: workspace" in _loops("C[i,j] = A[i,k] * B[k,j]", {"A": "csr", "B": "csr"},
                                                   "csr").dump("loops")
    assert "output strategy: entries" in _loops("C[i,j] = A[i,j] + B[i,j]", {"A": "csr", "B": "csr"},
                                                 "csr").dump("loops")
    # the intersection must not reuse A's pattern (that would store explicit zeros)
    assert "output strategy: entries" in _loops("C[i,j] = A[i,j] * B[i,j]", {"A": "csr", "B": "csr"},
                                                 "csr").dump("loops")


def test_debug_env_prints_every_pass(capsys, monkeypatch):
    monkeypatch.setenv("SPARSEC_DEBUG", "1")
    api.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="interp", name="dbg")
    err = capsys.readouterr().err
    for name in ("normalize-reductions", "level-space + loop-order", "sparsify"):
        assert f"after {name}" in err


GOLDEN_KERNELS = {
    "spmv_csr": ("y[i] = A[i,j] * x[j]", {"A": "csr"}, None),
    "spmv_coo": ("y[i] = A[i,j] * x[j]", {"A": "coo"}, None),
    "spmm_csr": ("C[i,j] = A[i,k] * B[k,j]", {"A": "csr"}, None),
    "spmv_bsr": ("y[i] = A[i,j] * x[j]", {"A": "bsr(2,2)"}, None),
    "sddmm_csr": ("S[i,j] = M[i,j] * U[i,k] * V[k,j]", {"M": "csr"}, "csr"),
    "add_csr": ("C[i,j] = A[i,j] + B[i,j]", {"A": "csr", "B": "csr"}, "csr"),
    "spgemm_csr": ("C[i,j] = A[i,k] * B[k,j]", {"A": "csr", "B": "csr"}, "csr"),
    "exp_dcsr": ("C[i,j] = exp(A[i,j])", {"A": "dcsr"}, None),
    "rowmax_csr": ("y[i] = max[j](A[i,j])", {"A": "csr"}, None),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_KERNELS))
def test_golden_loop_ir(name):
    text, formats, out = GOLDEN_KERNELS[name]
    got = api.compile(text, formats=formats, target="interp", out_format=out, name=name).dump("loops") + "\n"
    path = GOLDEN / f"{name}.loops.txt"
    if os.environ.get("SPARSEC_UPDATE_GOLDEN") == "1" or not path.exists():
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got)
        if os.environ.get("SPARSEC_UPDATE_GOLDEN") != "1":
            pytest.fail(f"golden file {path.name} was missing and has been written; review and commit it")
    assert got == path.read_text(), f"loop IR of {name} changed; review, then SPARSEC_UPDATE_GOLDEN=1"


# ------------------------------------------------------------------ lowering fixes (fuzz and hostile-input finds)
def _sparse(shape, seed, density=0.4, low=-1.0):
    rng = np.random.default_rng(seed)
    return np.where(rng.random(shape) < density, rng.uniform(low, 1.0, shape), 0.0)


def _run_both(text, formats, arrays, out_format=None):
    """Run ``text`` on cpu and interp; each result as a dense array, checked against the tensor-IR oracle."""
    from sparsec.ir.tensor_eval import evaluate

    ref = evaluate(parse_statement(text), arrays)
    for target in ("cpu", "interp"):
        k = api.compile(text, formats=formats, target=target, out_format=out_format)
        given = {n: sc.Tensor.from_numpy(a, formats[n]) if n in formats else a for n, a in arrays.items()}
        got = k(**given)
        got = got.to_numpy() if isinstance(got, sc.Tensor) else np.asarray(got)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    return k


def test_nested_reduction_below_an_enclosing_sparse_level_is_precomputed():
    # A is CSC: its rows (i, a loop outside the sum) are stored below its columns (j, summed inside it)
    text = "y[i] = A[i,j] * x[j] + 2.5"
    k = _run_both(text, {"A": "csc"}, {"A": _sparse((5, 4), 1), "x": np.arange(4.0)})
    dump = k.dump("loops")
    assert "output tmp" in dump and "loop order: j, i" in dump


@pytest.mark.parametrize("fmt", ["dcsr", "coo", "csc"])
@pytest.mark.parametrize("n_j", [4, 0])
def test_reduction_over_a_lattice_case_without_operands_is_a_closed_form(fmt, n_j):
    # where A's row i is absent the lattice case computes max[j](0): 0, or -inf over an empty range
    text = "y[i] = max[j](A[i,j]) + x[i]"
    a = _sparse((5, n_j), 2, density=0.3)
    a[1:3] = 0.0
    k = _run_both(text, {"A": fmt}, {"A": a, "x": np.arange(5.0)})
    if fmt == "dcsr":
        assert "select(n_j > 0, 0.0, -inf)" in k.dump("loops")


@pytest.mark.parametrize("fmt", ["bsr(1,2)", "bsr(2,1)", "bsr(1,1)", "bsr(3,1)"])
def test_blocks_of_one_row_or_column(fmt):
    a = _sparse((7, 6), 3)
    k = _run_both("y[i] = A[i,j] * x[j]", {"A": fmt}, {"A": a, "x": np.arange(1.0, 7.0)})
    assert "convert" not in k.dump("loops")  # 'dim mod 1' levels are located (coordinate 0), never iterated
    _run_both("C[i,k] = A[i,j] * B[j,k]", {"A": fmt}, {"A": a, "B": _sparse((6, 3), 4, density=1.0)})
    _run_both("C[i,j] = A[i,j] * B[i,j]", {"A": fmt, "B": fmt}, {"A": a, "B": _sparse((7, 6), 5)}, out_format=fmt)


def test_unblocking_one_operand_recomputes_the_other_block_factors():
    # B's rows (j) disagree with the vector's blocks, so B becomes CSR; then nothing wants i split
    k = _run_both("s[] = A[j] * B[j,i]", {"A": "coo", "B": "bsr(2,2)"},
                  {"A": _sparse((5,), 6, density=0.6), "B": _sparse((5, 3), 7)})
    dump = k.dump("loops")
    assert "bsr(2, 2) -> csr" in dump and "i_blk" not in dump


@pytest.mark.parametrize("out_format", ["coo", "csf"])
def test_sparse_vector_of_column_sums(out_format):
    _run_both("y[j] = A[i,j]", {"A": "csr"}, {"A": _sparse((4, 6), 8)}, out_format=out_format)


@pytest.mark.parametrize("op", ["max", "min"])
def test_max_over_a_middle_level_into_a_sparse_output_counts_implicit_zeros(op):
    # (i, j) with every k stored keeps its own extreme; with some k absent, an implicit 0 joins
    b = _sparse((3, 4, 5), 9, density=0.5)
    b[0, :, 1] = -0.5 + 0.1 * np.arange(4)   # all present, all negative: max is -0.2, not 0 and not a sum
    b[1, :, 2] = 0.0
    b[1, 1, 2] = -0.5                        # one present, negative: max is 0
    text = f"out[i,j] = {op}[k](B[i,k,j])"
    k = _run_both(text, {"B": "csf"}, {"B": b}, out_format="csr")
    dump = k.dump("loops")
    assert "output strategy: workspace" in dump and "out_ws_count" in dump


def test_sparse_output_counts_are_sized_by_stored_positions_not_extents():
    n = 2**40
    fmt = sc.parse_format("dcsr", 2).with_widths(32, 64)
    a = sc.Tensor.from_coo(np.array([[3, n - 1], [1, 2]]), np.array([1.0, 2.0]), (n, 4), format=fmt, name="A")
    out_fmt = sc.parse_format("coo", 2).with_widths(64, 64)
    k = api.compile("C[i,j] = A[i,j] * 3", formats={"A": fmt}, out_format=out_fmt)
    assert "C_cnt[pA0" in k.dump("loops")  # counted per stored row of A
    coords, vals = k(A=a).to_coo()
    assert coords.tolist() == [[3, n - 1], [1, 2]] and vals.tolist() == [3.0, 6.0]
    vec = sc.parse_format("coo", 1).with_widths(32, 64)
    x = sc.Tensor.from_coo(np.array([[3, n - 1]]), np.array([1.0, 2.0]), (n,), format=vec, name="x")
    y = sc.Tensor.from_coo(np.array([[5, n - 1]]), np.array([1.0, 2.0]), (n,), format=vec, name="y")
    k = api.compile("z[i] = x[i] + y[i]", formats={"x": vec, "y": vec}, out_format=sc.parse_format("coo", 1)
                    .with_widths(64, 64))
    coords, vals = k(x=x, y=y).to_coo()   # co-iteration: one run of entries, one count
    assert coords.tolist() == [[3, 5, n - 1]] and vals.tolist() == [1.0, 1.0, 4.0]


def test_max_over_a_diagonal_of_a_sparse_operand():
    b = _sparse((5, 5), 10)
    b[2, 2] = 0.0
    _run_both("s[] = max[i](B[i,i])", {"B": "dcsr"}, {"B": -np.abs(b)})
    _run_both("y[j] = min[i](B[i,i] * E[i,j])", {"B": "csr"}, {"B": b, "E": _sparse((5, 3), 11, density=1.0)})
    # the duplicate of an output index joins the max (not a sum around it): right over an empty range too
    for n_j in (3, 0):
        _run_both("y[i] = max[j](B[i,i] * A[i,j])", {"B": "dcsr"}, {"B": b, "A": _sparse((5, n_j), 12, density=1.0)})


def test_loop_ir_rewrite_replaces_nodes_by_identity_and_substitute_by_name():
    from sparsec.ir import loop_ir as L

    i = L.Var("i", L.INDEX)
    load = L.Load("A_vals", L.binop("add", i, 1), "float32")
    same = L.Load("A_vals", L.binop("add", i, 1), "float32")           # equal, but another node
    e = L.Select(L.BinOp("gt", load, same, "bool"), L.UnOp("neg", load, "float32"), L.Cast(same, "float32"),
                 "float32")
    other = L.Load("B_vals", i, "float32")
    got = L.rewrite(e, lambda x: other if x is load else None)
    loads = [x.buffer for x in got.walk() if isinstance(x, L.Load)]
    assert sorted(loads) == ["A_vals", "A_vals", "B_vals", "B_vals"]   # both uses of `load`, neither of `same`
    assert L.rewrite(e, lambda x: None) == e
    j = L.Var("j", "int32")
    sub = L.substitute(L.binop("add", i, 1), {"i": j}, cast=True)
    assert isinstance(sub, L.BinOp) and isinstance(sub.a, L.Cast) and sub.a.a is j and sub.a.dtype == L.INDEX
    with pytest.raises(TypeError, match="not a loop-IR expression"):
        L.rewrite(object(), lambda x: None)
