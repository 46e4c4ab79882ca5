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
