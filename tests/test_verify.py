"""Tensor-IR verifier and index-extent inference."""

from __future__ import annotations

import pytest

from sparsec.errors import ShapeError, VerificationError
from sparsec.formats import as_format
from sparsec.frontend import parse_program
from sparsec.ir.tensor_ir import Access, Assignment, Binary, IndexVar, Program, Reduce, TensorDecl
from sparsec.ir.verify import expr_kind, infer_extents, verify

i, j, k = IndexVar("i"), IndexVar("j"), IndexVar("k")


def prog(text: str, shapes: dict | None = None, dtypes: dict | None = None, **ndims: int) -> Program:
    """A program from text; ``ndims`` declares each tensor (dense), ``dtypes`` overrides float64."""
    shapes, dtypes = shapes or {}, dtypes or {}
    decls = tuple(
        TensorDecl(n, d, as_format("dense", d), dtypes.get(n, "float64"), shapes.get(n)) for n, d in ndims.items()
    )
    return Program(tuple(parse_program(text)), decls)


def test_valid_programs_pass():
    verify(prog("y[i] = A[i,j]*x[j] + b[i]", A=2, x=1, b=1, y=1))
    verify(prog("t[i,j] = A[i,k]*B[k,j]; s = sum[i,j](t[i,j] > 0)", A=2, B=2, t=2, s=0))
    verify(prog("m[i] = max[j](A[i,j]) + min[j](A[i,j])", A=2, m=1))
    verify(prog("d[i] = A[i,i]", A=2, d=1))
    verify(prog("c[i] = where(A[i] > 0, A[i], 0)", A=1, c=1, dtypes={"A": "int32", "c": "int64"}))
    verify(prog("c[i] = logical_and(A[i], A[i] > 0)", A=1, c=1, dtypes={"A": "bool", "c": "bool"}))
    verify(prog("c[i] = (A[i] > 0) * 2.5", A=1, c=1))  # comparison result in arithmetic is fine


ERRORS = [
    # text, ndims, dtypes, expected message fragment
    ("y[i] = A[i,j]*x[j]", dict(A=2, y=1), {}, "tensor 'x' is not declared"),
    ("y[i] = A[i,j,k]*x[j]", dict(A=2, x=1, y=1), {}, "tensor 'A' is 2-D but accessed with 3 indices: A[i, j, k]"),
    ("y[i,j] = x[i]", dict(x=1, y=1), {}, "tensor 'y' is 1-D but accessed with 2 indices: y[i, j]"),
    ("C[i,j] = A[i,k]", dict(A=2, C=2), {},
     "index j of output 'C' does not appear on the right-hand side, so its extent is unknown"),
    ("y[i] = y[i] + x[i]", dict(x=1, y=1), {}, "output 'y' is also read on its own right-hand side (y[i])"),
    ("y[i] = x[i]; y[i] = 2 * x[i]", dict(x=1, y=1), {},
     "tensor 'y' is written by statement 1 and again by statement 2"),
    ("y[i] = t[i]; t[i] = x[i]", dict(x=1, y=1, t=1), {}, "statement 1 reads tensor 't' before statement 2 writes it"),
    ("c[i] = A[i] * 0.5", dict(A=1, c=1), {"c": "int32"}, "the right-hand side is float but 'c' stores int32"),
    ("c[i] = A[i] + 1", dict(A=1, c=1), {"c": "bool", "A": "int32"}, "the right-hand side is int but 'c' stores bool"),
    ("c[i] = sum[j](B[i,j] > 0)", dict(B=2, c=1), {"c": "bool"}, "the right-hand side is int but 'c' stores bool"),
]


@pytest.mark.parametrize("text,ndims,dtypes,fragment", ERRORS, ids=[e[3][:40] for e in ERRORS])
def test_verifier_errors(text, ndims, dtypes, fragment):
    with pytest.raises(VerificationError) as ei:
        verify(prog(text, dtypes=dtypes, **ndims))
    assert fragment in str(ei.value)


def _decls(**ndims):
    return tuple(TensorDecl(n, d, as_format("dense", d), "float64") for n, d in ndims.items())


def test_hand_built_ir_errors():
    """IR the frontends never produce, but passes might."""
    A_ij, x_j = Access("A", (i, j)), Access("x", (j,))
    cases = [
        # implicit sum left implicit
        (Assignment(Access("y", (i,)), Binary("mul", A_ij, x_j)),
         "index j in A[i, j] is neither an index of the output y[i] nor bound by a reduction"),
        # a reduction variable used outside its reduction
        (Assignment(Access("y", (i,)), Binary("mul", Reduce("sum", (j,), A_ij), x_j)),
         "index j is bound by sum[j](...) but also used outside it, in x[j]"),
        # reducing an output index
        (Assignment(Access("y", (i,)), Reduce("sum", (i, j), Binary("mul", A_ij, x_j))),
         "index i of output 'y' is reduced by sum[i](...)"),
        # nested rebinding
        (Assignment(Access("y", (i,)), Reduce("sum", (j,), Reduce("max", (j,), Binary("mul", A_ij, x_j)))),
         "reduction over j is nested in another reduction over j"),
        # repeated output index
        (Assignment(Access("A", (i, i)), Access("x", (i,))), "index i appears twice in the output A[i, i]"),
    ]
    for stmt, fragment in cases:
        with pytest.raises(VerificationError) as ei:
            verify(Program((stmt,), _decls(A=2, x=1, y=1)))
        assert fragment in str(ei.value), str(ei.value)
        assert "statement 1 (" in str(ei.value)


def test_duplicate_declaration():
    with pytest.raises(VerificationError, match="tensor 'x' is declared twice"):
        verify(Program(tuple(parse_program("y[i] = x[i]")), _decls(x=1, y=1) + _decls(x=1)))


def test_expr_kind():
    p = prog("c[i] = A[i]", A=1, c=1, dtypes={"A": "int8"})
    stmt = parse_program("c[i] = sum[j](A[i] > B[j]) + max(A[i], true) - exp(A[i]) * 0 + (A[i] / 2)")[0]
    assert expr_kind(stmt.expr.lhs.lhs.lhs, Program((), p.decls + _decls(B=1))) == "int"
    assert expr_kind(parse_program("c[i] = A[i] / A[i]")[0].expr, p) == "float"
    assert expr_kind(parse_program("c[i] = max(A[i], A[i])")[0].expr, p) == "int"


# ---------------------------------------------------------------------------------------
# extents
# ---------------------------------------------------------------------------------------


def test_infer_extents():
    p = prog("C[i,j] = A[i,k]*B[k,j]", A=2, B=2, C=2)
    assert infer_extents(p, {"A": (3, 5), "B": (5, 4)}) == {"i": 3, "k": 5, "j": 4}
    # outputs with a known shape are checked too
    with pytest.raises(ShapeError, match=r"index j has extent 4 in B \(dimension 1\) but 7 in C \(dimension 1\)"):
        infer_extents(p, {"A": (3, 5), "B": (5, 4), "C": (3, 7)})


def test_infer_extents_mismatch_names_both_operands():
    p = prog("C[i,j] = A[i,k]*B[k,j]", A=2, B=2, C=2)
    with pytest.raises(ShapeError) as ei:
        infer_extents(p, {"A": (3, 5), "B": (6, 4)})
    assert str(ei.value) == "index k has extent 5 in A (dimension 1) but 6 in B (dimension 0)"
    d = prog("d[i] = A[i,i]", A=2, d=1)
    with pytest.raises(ShapeError, match=r"index i has extent 3 in A \(dimension 0\) but 4 in A \(dimension 1\)"):
        infer_extents(d, {"A": (3, 4)})


def test_infer_extents_across_statements_and_declared_shapes():
    p = prog("t[i] = A[i,j]*x[j]; y[k] = B[k,i]*t[i]", A=2, x=1, t=1, B=2, y=1, shapes={"x": (4,)})
    assert infer_extents(p, {"A": (3, None), "B": (2, 3)}) == {"i": 3, "j": 4, "k": 2}
    with pytest.raises(ShapeError, match=r"index i has extent 3 in A \(dimension 0\) but 5 in B \(dimension 1\)"):
        infer_extents(p, {"A": (3, 4), "B": (2, 5)})
    with pytest.raises(ShapeError, match="declared with extent 4 in dimension 0 but given 9"):
        infer_extents(p, {"A": (3, 4), "x": (9,), "B": (2, 3)})


def test_infer_extents_rank_and_missing():
    p = prog("y[i] = A[i,j]*x[j]", A=2, x=1, y=1)
    with pytest.raises(ShapeError, match=r"tensor 'A' has shape \(3,\) \(1-D\) but is accessed with 2 indices"):
        infer_extents(p, {"A": (3,), "x": (3,)})
    with pytest.raises(ShapeError, match="index j has no extent"):
        infer_extents(p, {"A": (3, None)})
