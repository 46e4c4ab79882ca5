"""Frontends: einsum strings, index-notation text and the Python DSL build identical tensor IR."""

from __future__ import annotations

import numpy as np
import pytest

import sparsec as sc
from sparsec.errors import FormatError, ParseError, ShapeError, VerificationError
from sparsec.frontend import (
    abs_, exp, index_vars, log, logical_and, maximum, minimum, parse_einsum, parse_program,
    parse_statement, program, reduce_max, reduce_min, reduce_sum, sqrt, tensor, where,
)
from sparsec.frontend.implicit import additive_terms, free_vars
from sparsec.ir.tensor_eval import evaluate, evaluate_program
from sparsec.ir.tensor_ir import (
    Access, Assignment, Binary, IndexVar, Literal, Program, Reduce, TensorDecl, Unary, Where,
)
from sparsec.formats import as_format

i, j, k, l = index_vars("i j k l")


def acc(name: str, idx: str = "") -> Access:
    return Access(name, tuple(IndexVar(c) for c in idx))


def mul(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = Binary("mul", out, x)
    return out


def red(vars_: str, body, op: str = "sum") -> Reduce:
    return Reduce(op, tuple(IndexVar(c) for c in vars_), body)


# ---------------------------------------------------------------------------------------
# the three frontends agree
# ---------------------------------------------------------------------------------------


def _dsl_spmv():
    A, x, y = tensor("A", 2), tensor("x", 1), tensor("y", 1)
    y[i] = A[i, j] * x[j]
    return y.assignment


def _dsl_spmm():
    A, B, C = tensor("A", 2), tensor("B", 2), tensor("C", 2)
    C[i, j] = A[i, k] * B[k, j]
    return C.assignment


def _dsl_sddmm():
    S, U, V, C = tensor("S", 2), tensor("U", 2), tensor("V", 2), tensor("C", 2)
    C[i, j] = S[i, j] * U[i, k] * V[k, j]
    return C.assignment


def _dsl_ttv():
    B, c, A = tensor("B", 3), tensor("c", 1), tensor("A", 2)
    A[i, j] = B[i, j, k] * c[k]
    return A.assignment


def _dsl_ttm():
    B, U, Y = tensor("B", 3), tensor("U", 2), tensor("Y", 3)
    Y[i, j, l] = B[i, j, k] * U[l, k]
    return Y.assignment


def _dsl_mttkrp():
    B, C, D, A = tensor("B", 3), tensor("C", 2), tensor("D", 2), tensor("A", 2)
    A[i, j] = B[i, k, l] * C[k, j] * D[l, j]
    return A.assignment


def _dsl_inner():
    x, y, s = tensor("x", 1), tensor("y", 1), tensor("s", 0)
    s[()] = x[i] * y[i]
    return s.assignment


def _dsl_rowsum():
    A, y = tensor("A", 2), tensor("y", 1)
    y[i] = A[i, j]
    return y.assignment


def _dsl_transpose():
    A, B = tensor("A", 2), tensor("B", 2)
    B[j, i] = A[i, j]
    return B.assignment


def _dsl_diag():
    A, d = tensor("A", 2), tensor("d", 1)
    d[i] = A[i, i]
    return d.assignment


def _dsl_trace():
    A, t = tensor("A", 2), tensor("t", 0)
    t[()] = A[i, i]
    return t.assignment


def _dsl_axpb():
    A, x, b, y = tensor("A", 2), tensor("x", 1), tensor("b", 1), tensor("y", 1)
    y[i] = A[i, j] * x[j] + b[i]
    return y.assignment


def _dsl_elementwise():
    A, B, C = tensor("A", 2), tensor("B", 2), tensor("C", 2)
    C[i, j] = exp(A[i, j]) * maximum(B[i, j], 0.0) - 2 * A[i, j] / 3
    return C.assignment


def _dsl_maxred():
    A, m = tensor("A", 2), tensor("m", 1)
    m[i] = reduce_max(j, A[i, j] + 1)
    return m.assignment


EQUIVALENT = [
    # name, einsum (subscripts, operands, output) or None, text, dsl builder
    ("spmv", ("ij,j->i", "A x", "y"), "y[i] = A[i,j] * x[j]", _dsl_spmv),
    ("spmm", ("ik,kj->ij", "A B", "C"), "C[i,j] = A[i,k] * B[k,j]", _dsl_spmm),
    ("sddmm", ("ij,ik,kj->ij", "S U V", "C"), "C[i,j] = S[i,j] * U[i,k] * V[k,j]", _dsl_sddmm),
    ("ttv", ("ijk,k->ij", "B c", "A"), "A[i,j] = B[i,j,k] * c[k]", _dsl_ttv),
    ("ttm", ("ijk,lk->ijl", "B U", "Y"), "Y[i,j,l] = B[i,j,k] * U[l,k]", _dsl_ttm),
    ("mttkrp", ("ikl,kj,lj->ij", "B C D", "A"), "A[i,j] = B[i,k,l] * C[k,j] * D[l,j]", _dsl_mttkrp),
    ("inner", ("i,i->", "x y", "s"), "s = x[i] * y[i]", _dsl_inner),
    ("rowsum", ("ij->i", "A", "y"), "y[i] = A[i,j]", _dsl_rowsum),
    ("transpose", ("ij->ji", "A", "B"), "B[j,i] = A[i,j]", _dsl_transpose),
    ("diag", ("ii->i", "A", "d"), "d[i] = A[i,i]", _dsl_diag),
    ("trace", ("ii", "A", "t"), "t[] = A[i,i]", _dsl_trace),
    ("axpb", None, "y[i] = A[i,j]*x[j] + b[i]", _dsl_axpb),
    ("elementwise", None, "C[i,j] = exp(A[i,j]) * max(B[i,j], 0.0) - 2 * A[i,j] / 3", _dsl_elementwise),
    ("maxred", None, "m[i] = max[j](A[i,j] + 1)", _dsl_maxred),
]


@pytest.mark.parametrize("name,einsum,text,dsl", EQUIVALENT, ids=[e[0] for e in EQUIVALENT])
def test_frontends_agree(name, einsum, text, dsl):
    from_text = parse_statement(text)
    assert dsl() == from_text
    if einsum is not None:
        subs, ops, out = einsum
        assert parse_einsum(subs, ops.split(), out) == from_text


def test_expected_ir_shapes():
    assert parse_statement("C[i,j] = A[i,k] * B[k,j]") == Assignment(
        acc("C", "ij"), red("k", mul(acc("A", "ik"), acc("B", "kj"))))
    assert parse_einsum("ij,ik,kj->ij", ["S", "U", "V"], "C").expr == red(
        "k", mul(acc("S", "ij"), acc("U", "ik"), acc("V", "kj")))
    # nothing summed: no Reduce at all
    assert parse_einsum("ij->ji", ["A"], "B") == Assignment(acc("B", "ji"), acc("A", "ij"))
    assert parse_einsum("i,i->", ["x", "y"], "s").output == Access("s", ())
    assert parse_statement("s = x[i]") == parse_statement("s[] = x[i]")


def test_spgemm_program_with_formats():
    A = tensor("A", 2, format="csr")
    B = tensor("B", 2, format="csr")
    C = tensor("C", 2, format="csr", dtype="float32")
    C[i, j] = A[i, k] * B[k, j]
    prog = program(C)
    csr = as_format("csr", 2)
    expected = Program(
        (parse_einsum("ik,kj->ij", ["A", "B"], "C"),),
        (TensorDecl("A", 2, csr, "float64"), TensorDecl("B", 2, csr, "float64"), TensorDecl("C", 2, csr, "float32")),
    )
    assert prog == expected
    assert tuple(parse_program("C[i,j] = A[i,k]*B[k,j]")) == prog.statements


# ---------------------------------------------------------------------------------------
# implicit-reduction rule
# ---------------------------------------------------------------------------------------


def test_implicit_reduction_per_additive_term():
    a = parse_statement("y[i] = A[i,j]*x[j] + b[i]")
    assert a.expr == Binary("add", red("j", mul(acc("A", "ij"), acc("x", "j"))), acc("b", "i"))
    a = parse_statement("y[i] = A[i,j]*x[j] - B[i,k]*z[k] - c[i]")
    assert a.expr == Binary("sub", Binary("sub", red("j", mul(acc("A", "ij"), acc("x", "j"))),
                                          red("k", mul(acc("B", "ik"), acc("z", "k")))), acc("c", "i"))


def test_implicit_reduction_single_term_wraps_whole_rhs():
    assert parse_statement("C[i] = exp(A[i,j])").expr == red("j", Unary("exp", acc("A", "ij")))
    # the top node is '*', so the whole product is one term (the minus is inside it)
    assert parse_statement("C[i] = -A[i,j] * x[j]").expr == red(
        "j", mul(Unary("neg", acc("A", "ij")), acc("x", "j")))
    # unary minus at the top splits
    assert parse_statement("C[i] = -(A[i,j] * x[j])").expr == Unary("neg", red("j", mul(acc("A", "ij"), acc("x", "j"))))


def test_implicit_reduction_variable_order_is_first_appearance():
    assert parse_statement("s = A[j,i] * x[i] * y[j]").expr.vars == (IndexVar("j"), IndexVar("i"))
    assert parse_einsum("kj,ji", ["A", "B"], "C").expr.vars == (IndexVar("j"),)
    assert parse_einsum("lkji->", ["A"], "s").expr.vars == tuple(IndexVar(c) for c in "lkji")


def test_implicit_reduction_respects_explicit_reductions():
    # j is bound by the explicit max, k is free and summed around it
    a = parse_statement("C[i] = max[j](A[i,j]) * x[k]")
    assert a.expr == red("k", mul(red("j", acc("A", "ij"), "max"), acc("x", "k")))
    # reusing a name in a separate term is fine
    a = parse_statement("C[i] = sum[j](A[i,j]) + x[j]")
    assert a.expr == Binary("add", red("j", acc("A", "ij")), red("j", acc("x", "j")))


def test_helpers():
    e = parse_statement("C[i] = sum[j](A[i,j]) * x[k] - -y[i] + z[l]").expr
    # sum[j](...) * x[k] got an implicit sum over k around it
    assert [type(t).__name__ for t in additive_terms(e)] == ["Reduce", "Access", "Reduce"]
    assert additive_terms(e)[0].vars == (IndexVar("k"),)
    assert free_vars(Binary("mul", red("j", acc("A", "ij")), acc("x", "k"))) == [IndexVar("i"), IndexVar("k")]


# ---------------------------------------------------------------------------------------
# einsum: numpy semantics
# ---------------------------------------------------------------------------------------

EINSUM_CASES = [
    ("ij,jk", [(3, 4), (4, 5)]),
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("ba", [(3, 4)]),
    ("ij,ji", [(3, 4), (4, 3)]),
    ("aB,Bc", [(2, 3), (3, 4)]),
    ("Ba,c", [(2, 3), (4,)]),
    ("zA,Ab", [(2, 3), (3, 2)]),
    ("ii->i", [(4, 4)]),
    ("ii", [(4, 4)]),
    ("ii->", [(4, 4)]),
    ("iii->i", [(3, 3, 3)]),
    ("iij->j", [(3, 3, 2)]),
    ("iij", [(3, 3, 2)]),
    ("ij,ij->", [(3, 4), (3, 4)]),
    ("ij,ij->ij", [(3, 4), (3, 4)]),
    ("i,i", [(5,), (5,)]),
    ("i,j", [(2,), (3,)]),
    ("i,j->ji", [(2,), (3,)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("ijk,jil->lk", [(2, 3, 4), (3, 2, 5)]),
    (" i j , j k -> i k ", [(3, 4), (4, 5)]),
    (",i->i", [(), (3,)]),
    ("ij,", [(2, 3), ()]),
    ("ij->", [(0, 3)]),
    ("ik,kj->ij", [(3, 0), (0, 2)]),
]


@pytest.mark.parametrize("subs,shapes", EINSUM_CASES, ids=[c[0].replace(" ", "_") for c in EINSUM_CASES])
def test_einsum_matches_numpy(subs, shapes):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in shapes]
    names = [f"T{n}" for n in range(len(arrays))]
    stmt = parse_einsum(subs, names, "out", ranks=[len(s) for s in shapes])
    got = evaluate(stmt, dict(zip(names, arrays)))
    want = np.einsum(subs.replace(" ", ""), *arrays)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_einsum_implicit_output_order_is_ascii():
    assert [v.name for v in parse_einsum("Ba,c", ["A", "B"]).output.indices] == ["B", "a", "c"]
    assert [v.name for v in parse_einsum("ij,jk", ["A", "B"]).output.indices] == ["i", "k"]
    assert parse_einsum("ii", ["A"]).output.indices == ()


def test_einsum_repeated_operand_name_allowed():
    a = parse_einsum("ij,jk", ["A", "A"], "C")
    assert a.accesses() == [acc("A", "ij"), acc("A", "jk")]


# ---------------------------------------------------------------------------------------
# parse errors: message and caret
# ---------------------------------------------------------------------------------------


def check_error(err: ParseError, fragment: str, line: int, column: int) -> None:
    assert fragment in err.bare_message, err.bare_message
    assert (err.line, err.column) == (line, column), str(err)
    if not err.text:
        return
    rendered = str(err).splitlines()
    assert rendered[-1].index("^") == 4 + column - 1
    assert rendered[-2] == "    " + err.text.splitlines()[line - 1]


EINSUM_ERRORS = [
    ("ij,jk->ik", "A", None, "subscripts name 2 operands but 1 operand names were given (A); operand 1 ('jk') has no name", 4),
    ("ij->ij", "A B", None, "1 operands but 2 operand names were given (A, B); B has no subscripts", 3),
    ("i1,j", "A B", None, "invalid character '1' in einsum subscripts", 2),
    ("ij->k", "A", None, "output subscript 'k' does not appear in the input subscripts", 5),
    ("ij->i i", "A", None, "output subscript 'i' appears more than once", 7),
    ("i...,j", "A B", None, "ellipsis '...' (broadcasting) is not supported", 2),
    ("ij->i->j", "A", None, "'->' only once", 6),
    ("i>j", "A", None, "'>' must be part of an arrow '->'", 2),
    ("ij-", "A", None, "'-' must be part of an arrow '->'", 3),
    ("ij->i,j", "A", None, "',' is not allowed in the output subscripts", 6),
    ("ij,jk", "A B", [2, 3], "operand 1 (B) has 3 dimensions but its subscripts 'jk' name 2", 4),
    ("ij, jk", "A B", [3, 2], "operand 0 (A) has 3 dimensions but its subscripts 'ij' name 2", 1),
    ("ĳ", "A", None, "invalid character", 1),
]


@pytest.mark.parametrize("subs,names,ranks,fragment,col", EINSUM_ERRORS, ids=[e[0] for e in EINSUM_ERRORS])
def test_einsum_errors(subs, names, ranks, fragment, col):
    with pytest.raises(ParseError) as ei:
        parse_einsum(subs, names.split(), "out", ranks=ranks)
    check_error(ei.value, fragment, 1, col)


@pytest.mark.parametrize("name", ["__import__", "tl", "np", "os.system", "A;B", "Ä", "", "if", "sc_x", "a" * 65])
def test_einsum_rejects_bad_names(name):
    with pytest.raises(VerificationError):
        parse_einsum("ij->i", [name], "out")
    with pytest.raises(VerificationError):
        parse_einsum("ij->i", ["A"], name)


TEXT_ERRORS = [
    ("C[i] = ", "unexpected end of input; expected a name, a number, 'true', 'false', '(' or '-'", 1, 8),
    ("C[i] = A[i] +", "unexpected end of input; expected a name, a number", 1, 14),
    ("C[i = 3", "unexpected '='; expected ']' or ','", 1, 5),
    ("C[i] = A[i,", "unexpected end of input; expected a name", 1, 12),
    ("C[i] = A[i] B[i]", "unexpected 'B'", 1, 13),
    ("C[i] = (A[i] + 1", "unexpected end of input; expected ')'", 1, 17),
    ("C[i] A[i]", "unexpected 'A'; expected '='", 1, 6),
    ("C[i] = foo(x)", "unknown function 'foo'; known: exp, log, sqrt, abs, max, min, where", 1, 8),
    ("C[i] = sum(x[i])", "unknown function 'sum'", 1, 8),
    ("C[i] = exp(x, y)", "function 'exp' takes 1 argument, got 2", 1, 8),
    ("C[i] = max(x)", "function 'max' takes 2 arguments, got 1", 1, 8),
    ("C[i] = where(a, b)", "function 'where' takes 3 arguments, got 2", 1, 8),
    ("C[i] = 1 + exp()", "function 'exp' takes 1 argument, got 0", 1, 12),
    ("C[i] = bar[j](A[i,j])", "unknown reduction 'bar'; known: sum, max, min", 1, 8),
    ("C[i] = sum[i](A[i,j])", "reduction variable i also appears on the left-hand side C[i]", 1, 12),
    ("C[i] = sum[j,j](A[i,j])", "reduction sum[...] lists index j twice", 1, 14),
    ("C[i] = sum[j](max[j](A[i,j]))", "reduction variable j is already bound by an enclosing reduction", 1, 19),
    ("C[i] = sum[j](A[i,j]) * x[j]", "index j is bound by sum[j](...) and also used outside it", 1, 12),
    ("C[i,i] = A[i]", "index i appears twice on the left-hand side C[i, i]", 1, 5),
    ("C[i] = A[i] @ 2", "unexpected character '@'", 1, 13),
    ("C[i] = A[i] // 2", "unexpected '/'", 1, 14),
    ("C[i] = a < b < c", "comparisons do not chain", 1, 14),
    ("C[i] = A[i]\n  + 3", "a newline ends a statement", 2, 3),
    ("C[i] = A[i]\nD[i] = E[i] +* 2", "unexpected '*'", 2, 14),
    ("# comment\n\nC[i] = A[i];\n  D[i] = exp(E[i], 2)", "function 'exp' takes 1 argument", 4, 10),
    ("", "expected at least one statement", 1, 1),
    ("# nothing\n", "expected at least one statement", 1, 1),
    ("C[i] = 1.5.2", "unexpected", 1, 11),
]


@pytest.mark.parametrize("text,fragment,line,col", TEXT_ERRORS, ids=[repr(e[0]) for e in TEXT_ERRORS])
def test_text_errors(text, fragment, line, col):
    with pytest.raises(ParseError) as ei:
        parse_program(text)
    check_error(ei.value, fragment, line, col)


def test_parse_statement_wants_one():
    with pytest.raises(ParseError) as ei:
        parse_statement("C = x[i]; D = y[i]")
    check_error(ei.value, "expected one statement, found 2", 1, 11)


INJECTIONS = [
    ("C[i] = A[i,j]; import os", "unexpected 'os'", 1, 23),
    ("C[i] = A[i]\nimport os", "unexpected 'os'", 2, 8),
    ("C[i] = __import__[i]", "tensor name '__import__' is not a valid identifier", 1, 8),
    ("__import__('os').system('ls')", "unexpected '('; expected '[' or '='", 1, 11),
    ("__import__ = A[i]", "tensor name '__import__' is not a valid identifier", 1, 1),
    ("C[i] = A[i]; x = __import__('os')", "unexpected character \"'\"", 1, 29),
    ("C[i] = A[i]; x = __import__(os)", "unknown function '__import__'", 1, 18),
    ("C[i] = tl[i]", "tensor name 'tl' is reserved", 1, 8),
    ("C[i] = np.load(i)", "unexpected character '.'", 1, 10),
    ("C[np] = A[np]", "index variable 'np' is reserved", 1, 3),
    ("C[if] = A[if]", "index variable 'if' is reserved", 1, 3),
    ("C[i] = sc_buf[i]", "tensor name 'sc_buf' is reserved", 1, 8),
    ("C[i] = Ä[i]", "tensor name 'Ä' is not a valid identifier", 1, 8),
    ("C[i] = A[ｉ]", "index variable 'ｉ' is not a valid identifier", 1, 10),
    ("C[i] = A[i]\u202e", "unexpected character", 1, 12),
    ("C[i] = A[i] # ok\n\"; os.system('x')", "unexpected character '\"'", 2, 1),
    ("C[i] = " + "a" * 65 + "[i]", "is not a valid identifier", 1, 8),
    ("C[i] = A[i] + `x`", "unexpected character '`'", 1, 15),
]


@pytest.mark.parametrize("text,fragment,line,col", INJECTIONS, ids=range(len(INJECTIONS)))
def test_injection_attempts_rejected(text, fragment, line, col):
    with pytest.raises(ParseError) as ei:
        parse_program(text)
    check_error(ei.value, fragment, line, col)


def test_injection_through_dsl_names():
    for bad in ["__import__", "tl", "a-b", "os.system", "Ä", "while"]:
        with pytest.raises(VerificationError):
            tensor(bad, 1)
        with pytest.raises(VerificationError):
            index_vars([bad])


# ---------------------------------------------------------------------------------------
# text syntax
# ---------------------------------------------------------------------------------------


def test_precedence_and_literals():
    a = parse_statement("C[i] = a + b[i] * -c / 2 < 3e-2")
    assert a.expr == Binary(
        "lt",
        Binary("add", acc("a"), Binary("div", Binary("mul", acc("b", "i"), Unary("neg", acc("c"))), Literal(2))),
        Literal(0.03),
    )
    assert parse_statement("C[i] = x[i] - -3").expr == Binary("sub", acc("x", "i"), Literal(-3))
    assert parse_statement("C[i] = x[i] * -(3)").expr == Binary("mul", acc("x", "i"), Unary("neg", Literal(3)))
    lits = [parse_statement(f"s = {t}").expr for t in ["1", "1.5", ".5", "2.", "1e3", "1.5E-3", "true", "false"]]
    assert [lit.value for lit in lits] == [1, 1.5, 0.5, 2.0, 1000.0, 0.0015, True, False]
    assert isinstance(lits[0].value, int) and isinstance(lits[4].value, float) and lits[6].value is True


def test_comparisons_functions_reductions():
    ops = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}
    for sym, op in ops.items():
        assert parse_statement(f"C[i] = A[i] {sym} 0").expr == Binary(op, acc("A", "i"), Literal(0))
    a = parse_statement("C[i] = where(A[i] > 0, sqrt(abs(A[i])), log(min(A[i], B[i])))")
    assert isinstance(a.expr, Where)
    a = parse_statement("m = max[i, j](A[i, j]) + min[k](x[k]) - sum[k](x[k])")
    assert a.expr.lhs.lhs == red("ij", acc("A", "ij"), "max")
    a = parse_statement("C[i] = logical_and(A[i] > 0, logical_not(B[i] < 0))")
    assert a.expr == Binary("and", Binary("gt", acc("A", "i"), Literal(0)),
                            Unary("not", Binary("lt", acc("B", "i"), Literal(0))))


def test_program_separators_comments_and_multiline():
    text = """
    # SpMV then scale
    t[i] = A[i, j] * x[j]   # trailing comment
    y[i] = (t[i]
            + b[i]); z = sum[i](y[i])

    """
    stmts = parse_program(text)
    assert [s.output.tensor for s in stmts] == ["t", "y", "z"]
    assert stmts[1] == parse_statement("y[i] = t[i] + b[i]")
    assert parse_program("a = b;;c = d;") == [parse_statement("a = b"), parse_statement("c = d")]
    assert parse_statement("C[i] = A[i,\n j]") == parse_statement("C[i] = A[i, j]")


def test_deep_nesting_is_a_parse_error_not_a_crash():
    with pytest.raises(ParseError, match="nested too deeply"):
        parse_statement("C = " + "(" * 3000 + "x" + ")" * 3000)
    assert parse_statement("C = " + "(" * 100 + "x" + ")" * 100) == parse_statement("C = x")


def test_names_may_contain_keywords_as_prefix():
    # 'trueish' is a name, not the keyword 'true'; function names are only special before '('
    assert parse_statement("C[i] = trueish[i] * maxval").expr == mul(acc("trueish", "i"), Access("maxval", ()))


# ---------------------------------------------------------------------------------------
# DSL
# ---------------------------------------------------------------------------------------


def test_dsl_numbers_on_either_side_and_unary():
    A, C = tensor("A", 1), tensor("C", 1)
    C[i] = 2 * A[i] - 1 + 1 / A[i] - (3 - A[i]) / 4 + -A[i] + (+A[i])
    assert C.assignment == parse_statement("C[i] = 2 * A[i] - 1 + 1 / A[i] - (3 - A[i]) / 4 + -A[i] + A[i]")
    C[i] = -2 * A[i]
    assert C.assignment == parse_statement("C[i] = -2 * A[i]")
    assert len(C.statements) == 2


def test_dsl_comparisons_and_logic():
    A, B, C = tensor("A", 1), tensor("B", 1), tensor("C", 1)
    C[i] = where((A[i] < 0) & ~(B[i] >= 1) | A[i].eq(2), A[i], B[i].ne(0))
    assert C.assignment == parse_statement(
        "C[i] = where(logical_or(logical_and(A[i] < 0, logical_not(B[i] >= 1)), A[i] == 2), A[i], B[i] != 0)")
    C[i] = logical_and(A[i] <= 1, A[i] > 0) * abs(B[i]) + abs_(B[i]) * minimum(A[i], 1) + log(sqrt(A[i]))
    assert C.assignment == parse_statement(
        "C[i] = logical_and(A[i] <= 1, A[i] > 0) * abs(B[i]) + abs(B[i]) * min(A[i], 1) + log(sqrt(A[i]))")
    # a reflected comparison is recorded the way Python evaluates it
    C[i] = 0 < A[i]
    assert C.assignment == parse_statement("C[i] = A[i] > 0")


def test_dsl_equality_is_structural_and_hashable():
    A = tensor("A", 2)
    assert A[i, j] == A[i, j] and A[i, j] != A[j, i]
    assert {A[i, j]: 1}[A[i, j]] == 1
    with pytest.raises(TypeError, match=r"use expr.eq\(value\)"):
        A[i, j] == 0
    with pytest.raises(TypeError, match="no truth value"):
        0 < A[i, j] < 1
    with pytest.raises(TypeError, match="no truth value"):
        if A[i, j] > 0:
            pass
    with pytest.raises(TypeError, match="plain bool"):
        where(True, A[i, j], 0)


def test_dsl_explicit_reductions():
    A, T, m = tensor("A", 2), tensor("T", 3), tensor("m", 1)
    m[i] = reduce_max(j, A[i, j]) + reduce_min((j, k), T[i, j, k]) + reduce_sum([j], A[i, j])
    assert m.assignment == parse_statement("m[i] = max[j](A[i,j]) + min[j, k](T[i,j,k]) + sum[j](A[i,j])")
    with pytest.raises(VerificationError, match="reduction variable i also appears on the left-hand side"):
        m[i] = reduce_sum(i, A[i, j])
    with pytest.raises(TypeError):
        reduce_sum("j", A[i, j])


def test_dsl_wrong_indices():
    A = tensor("A", 2)
    with pytest.raises(ShapeError, match=r"tensor 'A' is 2-D but indexed with 3 indices: A\[i, j, k\]"):
        A[i, j, k]
    with pytest.raises(ShapeError, match="tensor 'A' is 2-D but indexed with 1 indices"):
        A[i] = 1.0
    with pytest.raises(TypeError, match="indices must be index variables"):
        A[0, j]
    with pytest.raises(ShapeError, match="tensor 'A' is 2-D; index it"):
        A * 2


def test_dsl_scalars():
    s, x, y, t = tensor("s", 0), tensor("x", 1), tensor("y", 1), tensor("t", 0)
    y[i] = s * x[i] + 1 - s
    assert y.assignment == parse_statement("y[i] = s * x[i] + 1 - s")
    t[()] = x[i] * x[i]
    assert t.assignment == parse_statement("t = x[i] * x[i]")


def test_dsl_program_collects_statements_and_decls():
    A = tensor("A", 2, format="csr", dtype="float32")
    x, b = tensor("x", 1), tensor("b", 1)
    t, y = tensor("t", 1), tensor("y", 1, shape=(7,))
    t[i] = A[i, j] * x[j]
    y[i] = exp(t[i]) + b[i]
    prog = program(y)
    assert prog.statements == tuple(parse_program("t[i] = A[i,j]*x[j]\ny[i] = exp(t[i]) + b[i]"))
    assert [d.name for d in prog.decls] == ["A", "x", "t", "b", "y"]
    assert prog.decl("A").format == as_format("csr", 2) and prog.decl("A").dtype == "float32"
    assert prog.decl("y").shape == (7,) and prog.decl("x").format.is_dense
    with pytest.raises(VerificationError, match="two different tensors are named 'x'"):
        z = tensor("z", 1)
        z[i] = x[i] + tensor("x", 1, dtype="float32")[i]
        program(z)


def test_dsl_bad_declarations():
    with pytest.raises(VerificationError, match="unsupported dtype"):
        tensor("A", 2, dtype="complex128")
    with pytest.raises(FormatError):
        tensor("A", 3, format="csr")
    with pytest.raises(ShapeError):
        tensor("A", 2, shape=(3,))
    assert tensor("A", shape=(3, 4)).ndim == 2


def test_dsl_program_verifies():
    A, C = tensor("A", 2), tensor("C", 2)
    C[i, j] = A[i, k]
    with pytest.raises(VerificationError, match="index j of output 'C' does not appear"):
        program(C)
    assert program(C, verify=False).statements == (C.assignment,)


# ---------------------------------------------------------------------------------------
# dense reference evaluator
# ---------------------------------------------------------------------------------------


def test_evaluator_semantics():
    rng = np.random.default_rng(1)
    A, B, x = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal(4)
    arrays = {"A": A, "B": B, "x": x}

    def ev(text):
        return evaluate(parse_statement(text), arrays)

    np.testing.assert_allclose(ev("C[i,j] = where(A[i,j] > 0, exp(A[i,j]), max(B[i,j], 0.5))"),
                               np.where(A > 0, np.exp(A), np.maximum(B, 0.5)))
    np.testing.assert_allclose(ev("m[i] = max[j](A[i,j] * x[j])"), (A * x).max(axis=1))
    np.testing.assert_allclose(ev("m[j] = min[i](A[i,j]) - sum[i](B[i,j] > 0)"), A.min(0) - (B > 0).sum(0))
    np.testing.assert_allclose(ev("y[i] = sum[j, k](A[i,j] * x[k])"), A.sum(1) * x.sum())
    np.testing.assert_allclose(ev("C[j,i] = -A[i,j] / 2"), -A.T / 2)
    np.testing.assert_allclose(ev("s = sum[i, j](logical_or(A[i,j] < -1, A[i,j] > 1))"), (np.abs(A) > 1).sum())
    empty = evaluate(parse_statement("m[i] = max[j](A[i,j])"), {"A": np.zeros((2, 0))})
    assert empty.tolist() == [-np.inf, -np.inf]
    assert evaluate(parse_statement("s = sum[j](x[j])"), {"x": np.zeros(0)}) == 0.0


def test_evaluate_program_and_errors():
    prog = Program(tuple(parse_program("t[i] = A[i,j]*x[j]; y[i] = t[i] * 2")))
    A, x = np.arange(6.0).reshape(2, 3), np.ones(3)
    np.testing.assert_allclose(evaluate_program(prog, {"A": A, "x": x})["y"], 2 * A.sum(1))
    with pytest.raises(ShapeError, match="index j has extent 3 in A"):
        evaluate(prog.statements[0], {"A": A, "x": np.ones(4)})
    with pytest.raises(VerificationError, match="no array given for tensor 'x'"):
        evaluate(prog.statements[0], {"A": A})


@pytest.mark.parametrize("text", ["y[i] =\tA[i,j] * x[j] +\t\t?", "\ty[i] = A[i] ?", "y[i] = A[i]\t\t\t?"])
def test_caret_lands_under_the_column_through_tabs(text):
    """The caret line copies the source line's tabs: expanded at any tab width it points at the bad column."""
    with pytest.raises(ParseError) as ei:
        sc.compile(text)
    err = ei.value
    src, caret = str(err).splitlines()[-2:]
    for width in (2, 4, 8):
        assert caret.expandtabs(width).index("^") == src.expandtabs(width).index("?")
