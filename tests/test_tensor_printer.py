"""Tensor-IR printer: golden text, and statement_text parses back to an equal Assignment."""

from __future__ import annotations

import math
import random

import pytest

from sparsec.formats import as_format, parse_format
from sparsec.frontend import index_vars, parse_einsum, parse_program, parse_statement, program, tensor, where
from sparsec.ir.tensor_ir import (
    Access, Assignment, Binary, IndexVar, Literal, Program, Reduce, TensorDecl, Unary, Where, BINARY_OPS, UNARY_OPS,
)
from sparsec.ir.tensor_printer import decl_text, expr_text, program_text, statement_text

i, j, k = index_vars("i j k")

GOLDEN = [
    ("y[i] = A[i,j]*x[j] + b[i]", "y[i] = sum[j](A[i, j] * x[j]) + b[i]"),
    ("C[i,j] = A[i,k]*B[k,j]", "C[i, j] = sum[k](A[i, k] * B[k, j])"),
    ("s[] = x[i]*y[i]", "s = sum[i](x[i] * y[i])"),
    ("C[i] = a - (b + c) * -d[i] / (e - f)", "C[i] = a - (b + c) * -d[i] / (e - f)"),
    ("C[i] = ((a[i] * b) * c) / d / (e / f)", "C[i] = a[i] * b * c / d / (e / f)"),
    ("C[i] = -(3) + -3 - - -2.5e-10", "C[i] = -(3) + -3 - -(-2.5e-10)"),
    ("z = -(-x)", "z = -(-x)"),
    ("y = (a < b) == (c >= d)", "y = (a < b) == (c >= d)"),
    ("C[i] = where(A[i] < 0, exp(-A[i]), max(A[i], 0.5))", "C[i] = where(A[i] < 0, exp(-A[i]), max(A[i], 0.5))"),
    ("m[i] = max[j](A[i,j] + sum[k](B[i,j,k]))", "m[i] = max[j](A[i, j] + sum[k](B[i, j, k]))"),
    ("C[i] = logical_not(logical_and(true, A[i] != 1e999))", "C[i] = logical_not(logical_and(true, A[i] != inf))"),
    ("C[i] = A[i] * -inf + nan", "C[i] = A[i] * -inf + nan"),
    ("C[i] = -A[i,j] * x[j]", "C[i] = sum[j](-A[i, j] * x[j])"),
    ("C[i] = -(A[i,j] * x[j])", "C[i] = -sum[j](A[i, j] * x[j])"),
]


@pytest.mark.parametrize("text,golden", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_statement_golden_and_round_trip(text, golden):
    a = parse_statement(text)
    assert statement_text(a) == golden
    assert parse_statement(golden) == a


def test_literals_round_trip():
    values = [0, 7, -7, 10**30, -(10**30), 0.1, -0.1, 1e-300, 1.5e300, 2.0, -0.0, math.inf, -math.inf, True, False,
              1 / 3]
    for v in values:
        a = Assignment(Access("y", (i,)), Binary("mul", Access("x", (i,)), Literal(v)))
        b = parse_statement(statement_text(a))
        got = b.expr.rhs.value
        assert got == v and type(got) is type(v), (v, statement_text(a))
        a = Assignment(Access("y", (i,)), Unary("neg", Binary("add", Literal(v), Access("x", (i,)))))
        assert parse_statement(statement_text(a)) == a
        a = Assignment(Access("y", (i,)), Binary("sub", Access("x", (i,)), Unary("neg", Literal(v))))
        assert parse_statement(statement_text(a)) == a
    assert expr_text(Literal(math.nan)) == "nan"  # documented: does not parse back


def _random_expr(rng: random.Random, depth: int, bound: tuple[IndexVar, ...]):
    """A random expression whose free variables are among i, j and ``bound``."""
    pool = (i, j) + bound
    if depth == 0 or rng.random() < 0.2:
        r = rng.random()
        if r < 0.3:
            return Literal(rng.choice([0, 2, -3, 0.5, -1.25e-7, 1e300, True, False, math.inf]))
        name = rng.choice("ABCD")
        nd = rng.randint(0, 3)
        return Access(name, tuple(rng.choice(pool) for _ in range(nd)))
    kind = rng.random()
    if kind < 0.5:
        return Binary(rng.choice(BINARY_OPS), _random_expr(rng, depth - 1, bound), _random_expr(rng, depth - 1, bound))
    if kind < 0.7:
        return Unary(rng.choice(UNARY_OPS), _random_expr(rng, depth - 1, bound))
    if kind < 0.85:
        return Where(*(_random_expr(rng, depth - 1, bound) for _ in range(3)))
    fresh = [v for v in (IndexVar("k"), IndexVar("l"), IndexVar("m")) if v not in bound]
    if not fresh:
        return _random_expr(rng, depth - 1, bound)
    vars_ = tuple(rng.sample(fresh, rng.randint(1, len(fresh))))
    return Reduce(rng.choice(["sum", "max", "min"]), vars_, _random_expr(rng, depth - 1, bound + vars_))


def test_random_statements_round_trip():
    rng = random.Random(1234)
    for _ in range(400):
        a = Assignment(Access("Out", (i, j)), _random_expr(rng, 5, ()))
        text = statement_text(a)
        assert parse_statement(text) == a, text


def test_decl_text():
    assert decl_text(TensorDecl("A", 2, as_format("csr", 2), "float32")) == "tensor<?x?xf32, csr>"
    assert decl_text(TensorDecl("x", 1, as_format("dense", 1), "float64", (5,))) == "tensor<5xf64>"
    assert decl_text(TensorDecl("s", 0, as_format("dense", 0), "bool")) == "tensor<i1>"
    assert decl_text(TensorDecl("B", 2, as_format("bsr(2, 2)", 2), "float16", (4, None))) == "tensor<4x?xf16, bsr(2, 2)>"


def test_program_text_golden():
    A = tensor("A", 2, format="csr", dtype="float32")
    x, b = tensor("x", 1, dtype="float32"), tensor("b", 1, dtype="float32")
    t, y = tensor("t", 1, dtype="float32"), tensor("y", 1, dtype="float32", shape=(8,))
    t[i] = A[i, j] * x[j]
    y[i] = where(t[i] > 0, t[i], 0.01 * t[i]) + b[i]
    prog = program(y)
    assert program_text(prog) == (
        "// A : tensor<?x?xf32, csr>\n"
        "// x : tensor<?xf32>\n"
        "// t : tensor<?xf32>\n"
        "// b : tensor<?xf32>\n"
        "// y : tensor<8xf32>\n"
        "t[i] = sum[j](A[i, j] * x[j])\n"
        "y[i] = where(t[i] > 0, t[i], 0.01 * t[i]) + b[i]\n"
    )
    assert tuple(parse_program(program_text(prog))) == prog.statements


def test_program_text_mttkrp_and_mlir_format():
    enc = parse_format("#sparse_tensor.encoding<{ map = (i, j, k) -> (i : compressed, k : compressed, j : dense) }>")
    decls = (
        TensorDecl("B", 3, enc, "float64"),
        TensorDecl("C", 2, as_format("dense", 2), "float64"),
        TensorDecl("D", 2, as_format("dense", 2), "float64"),
        TensorDecl("A", 2, as_format("dense", 2), "float64"),
    )
    prog = Program((parse_einsum("ikl,kj,lj->ij", ["B", "C", "D"], "A"),), decls)
    assert program_text(prog) == (
        f"// B : tensor<?x?x?xf64, {enc}>\n"
        "// C : tensor<?x?xf64>\n"
        "// D : tensor<?x?xf64>\n"
        "// A : tensor<?x?xf64>\n"
        "A[i, j] = sum[k, l](B[i, k, l] * C[k, j] * D[l, j])\n"
    )
    assert tuple(parse_program(program_text(prog))) == prog.statements
