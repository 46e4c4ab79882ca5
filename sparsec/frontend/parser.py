"""Index-notation text -> tensor IR.

Grammar (``index_notation.lark``, LALR(1)); precedence from low to high::

    program    := statement ((newline | ';') statement)*      blank lines and '#' comments allowed
    statement  := output '=' expr
    output     := NAME '[' names? ']' | NAME                   's[]' and 's' are both 0-d outputs
    expr       := sum (('<' | '<=' | '>' | '>=' | '==' | '!=') sum)?     non-associative
    sum        := sum ('+' | '-') product | product
    product    := product ('*' | '/') unary | unary
    unary      := '-' unary | primary
    primary    := NUMBER | 'true' | 'false' | NAME '[' names? ']' | NAME | '(' expr ')'
                | FUNC '(' args ')'                            exp log sqrt abs max min where
                                                               logical_and logical_or logical_not
                | RED '[' names ']' '(' expr ')'                sum max min

Newlines inside parentheses or brackets do not end a statement. A ``//`` at the
very start of a line is a comment too (the header :func:`~sparsec.ir.tensor_printer.program_text`
prints), so printed programs parse back.

Operators map to IR ops: ``+ add``, ``- sub``, ``* mul``, ``/ div``, unary ``- neg``,
``< lt``, ``<= le``, ``> gt``, ``>= ge``, ``== eq``, ``!= ne``, ``max(a, b)`` /
``min(a, b)`` to ``Binary max/min``. A minus directly in front of a number literal
is folded into it (``-3`` is ``Literal(-3)``, as in Python; ``-(3)`` is ``neg``).

**Implicit reductions.** Index variables on the right-hand side that are neither on
the left-hand side nor bound by an explicit reduction are summed, per top-level
additive term (split through ``+``, ``-`` and unary minus), over the variables in
first-appearance order: ``y[i] = A[i,j]*x[j] + b[i]`` is
``y[i] = sum[j](A[i,j]*x[j]) + b[i]``; a single-term right-hand side is wrapped whole.
The rule is implemented once, in :mod:`sparsec.frontend.implicit`.

Every tensor and index name goes through :func:`~sparsec.ir.tensor_ir.check_identifier`;
all errors are :class:`~sparsec.errors.ParseError` with line, column and a caret.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Callable, Iterator

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..errors import ParseError, VerificationError
from ..ir.tensor_ir import (
    Access, Assignment, Binary, Expr, IndexVar, Literal, Reduce, Unary, Where, check_identifier,
)
from .implicit import StatementError, make_assignment

__all__ = ["parse_program", "parse_statement", "FUNCTIONS", "REDUCTIONS"]

#: function name -> (arity, IR builder)
FUNCTIONS: dict[str, tuple[int, Callable[..., Expr]]] = {
    "exp": (1, lambda a: Unary("exp", a)),
    "log": (1, lambda a: Unary("log", a)),
    "sqrt": (1, lambda a: Unary("sqrt", a)),
    "abs": (1, lambda a: Unary("abs", a)),
    "max": (2, lambda a, b: Binary("max", a, b)),
    "min": (2, lambda a, b: Binary("min", a, b)),
    "where": (3, lambda c, a, b: Where(c, a, b)),
    "logical_and": (2, lambda a, b: Binary("and", a, b)),
    "logical_or": (2, lambda a, b: Binary("or", a, b)),
    "logical_not": (1, lambda a: Unary("not", a)),
}
REDUCTIONS = ("sum", "max", "min")
_COMPARE = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}
_BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div"}
_TERMINAL_WORDS = {"NAME": "a name", "NUMBER": "a number", "CMP": "a comparison", "_NL": "end of line",
                   "$END": "end of input"}


class _DropBracketedNewlines:
    """Post-lexer: a newline inside ``(...)`` or ``[...]`` is whitespace, not a statement end."""

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        for tok in stream:
            if tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(depth - 1, 0)
            elif tok.type == "_NL" and depth > 0:
                continue
            yield tok


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("sparsec.frontend").joinpath("index_notation.lark").read_text()
    return Lark(grammar, parser="lalr", postlex=_DropBracketedNewlines(), propagate_positions=False)


def parse_program(text: str) -> list[Assignment]:
    """Parse one or more statements separated by newlines or ``;``."""
    return _build(text, _statement_trees(text))


def parse_statement(text: str) -> Assignment:
    """Parse exactly one statement."""
    trees = _statement_trees(text)
    if len(trees) != 1:
        tok = trees[1].children[0].children[0]  # the second statement's output name
        raise ParseError(f"expected one statement, found {len(trees)}", text, tok.line, tok.column)
    return _build(text, trees)[0]


def _statement_trees(text: str) -> list[Tree]:
    if not isinstance(text, str):
        raise ParseError(f"index notation must be a string, got {type(text).__name__}")
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text) from None
    trees = [c for c in tree.children if isinstance(c, Tree)]
    if not trees:
        raise ParseError("expected at least one statement such as C[i, j] = A[i, k] * B[k, j]", text, 1, 1)
    return trees


def _build(text: str, trees: list[Tree]) -> list[Assignment]:
    builder = _Builder(text)
    try:
        return [builder.statement(t) for t in trees]
    except RecursionError:
        raise ParseError("expression is nested too deeply (keep it under about 500 levels of operators "
                         "and parentheses)", text, 1, 1) from None


# -- syntax errors ----------------------------------------------------------------------


def _describe(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    for t in _parser().terminals:
        if t.name == name and t.pattern.type == "str":
            return f"'{t.pattern.value}'"
    return name.lower()


_WORD_ORDER = ("NAME", "NUMBER", "TRUE", "FALSE", "LPAR", "MINUS", "LSQB", "RSQB", "RPAR", "COMMA", "EQUAL")


def _words(names: set[str]) -> str:
    """Plain-words list of terminal names: 'a name, a number or '(''."""
    ranked = sorted(names, key=lambda n: (_WORD_ORDER.index(n) if n in _WORD_ORDER else len(_WORD_ORDER),
                                          _describe(n)))
    items = list(dict.fromkeys(_describe(n) for n in ranked))
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def _end_position(text: str) -> tuple[int, int]:
    lines = text.rstrip("\n").split("\n")
    return len(lines), len(lines[-1]) + 1


def _syntax_error(e: UnexpectedInput, text: str) -> ParseError:
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        return ParseError(f"unexpected character {ch!r}", text, e.line, e.column)
    if isinstance(e, UnexpectedToken):
        tok = e.token
        expected = _words(set(e.accepts or e.expected))
        if tok.type == "$END":
            line, col = _end_position(text)
            return ParseError(f"unexpected end of input; expected {expected}", text, line, col)
        if tok.type == "_NL":
            return ParseError(f"unexpected end of line; expected {expected} (wrap a multi-line expression "
                              "in parentheses)", text, tok.line, tok.column)
        hint = ""
        if tok.type == "CMP":
            hint = " (comparisons do not chain; add parentheses)"
        elif _starts_line(text, tok):
            hint = " (a newline ends a statement; wrap a multi-line expression in parentheses)"
        return ParseError(f"unexpected {tok.value!r}; expected {expected}{hint}", text, tok.line, tok.column)
    if isinstance(e, UnexpectedEOF):
        line, col = _end_position(text)
        return ParseError(f"unexpected end of input; expected {_words(set(e.expected))}", text, line, col)
    return ParseError(str(e), text, getattr(e, "line", 1), getattr(e, "column", 1))


def _starts_line(text: str, tok: Token) -> bool:
    """True when ``tok`` is the first token on a line that is not the first line."""
    before = text[: tok.start_pos or 0].rstrip(" \t\f\r")
    return before.endswith("\n")


# -- tree -> IR ---------------------------------------------------------------------


class _Builder:
    """Builds IR from a parse tree, remembering where each name came from for error carets."""

    def __init__(self, text: str):
        self.text = text
        self.reduce_tokens: dict[int, tuple[Reduce, list[Token]]] = {}

    def error(self, message: str, tok: Token) -> ParseError:
        return ParseError(message, self.text, tok.line, tok.column)

    def name(self, tok: Token, what: str) -> str:
        try:
            return check_identifier(str(tok), what)
        except VerificationError as e:
            raise self.error(str(e), tok) from None

    def var(self, tok: Token) -> IndexVar:
        return IndexVar(self.name(tok, "index variable"))

    def statement(self, tree: Tree) -> Assignment:
        lhs, rhs_tree = tree.children
        name_tok, var_toks = lhs.children[0], list(lhs.children[1:])
        output = Access(self.name(name_tok, "tensor name"), tuple(self.var(t) for t in var_toks))
        rhs = self.expr(rhs_tree)
        try:
            return make_assignment(output, rhs)
        except StatementError as e:
            tok = self._locate(e, var_toks)
            raise self.error(str(e), tok) from None

    def _locate(self, e: StatementError, lhs_toks: list[Token]) -> Token:
        if e.node is not None and id(e.node) in self.reduce_tokens:
            node, toks = self.reduce_tokens[id(e.node)]
            for t in toks:
                if str(t) == e.var.name:
                    return t
        matches = [t for t in lhs_toks if str(t) == e.var.name]
        return matches[-1] if matches else lhs_toks[0]

    def expr(self, t: Tree | Token) -> Expr:
        kind = t.data
        c = t.children
        if kind == "number":
            return Literal(_number(c[0]))
        if kind == "true":
            return Literal(True)
        if kind == "false":
            return Literal(False)
        if kind == "access":
            return Access(self.name(c[0], "tensor name"), tuple(self.var(v) for v in c[1:]))
        if kind == "bare":
            if str(c[0]) in _FLOAT_WORDS:
                return Literal(_FLOAT_WORDS[str(c[0])])
            return Access(self.name(c[0], "tensor name"), ())
        if kind == "paren":
            return self.expr(c[0])
        if kind == "neg":
            if isinstance(c[0], Tree) and c[0].data == "number":
                return Literal(-_number(c[0].children[0]))
            if isinstance(c[0], Tree) and c[0].data == "bare" and str(c[0].children[0]) in _FLOAT_WORDS:
                return Literal(-_FLOAT_WORDS[str(c[0].children[0])])
            return Unary("neg", self.expr(c[0]))
        if kind in _BINARY:
            return Binary(_BINARY[kind], self.expr(c[0]), self.expr(c[1]))
        if kind == "compare":
            return Binary(_COMPARE[str(c[1])], self.expr(c[0]), self.expr(c[2]))
        if kind == "call":
            return self.call(c[0], c[1:])
        if kind == "reduction":
            return self.reduction(c[0], list(c[1:-1]), c[-1])
        raise AssertionError(f"unhandled parse node {kind}")  # grammar and builder out of sync

    def call(self, name_tok: Token, args: list[Tree]) -> Expr:
        fname = str(name_tok)
        if fname not in FUNCTIONS:
            hint = f" ('{fname}' is a reduction: write {fname}[j](expr))" if fname == "sum" else ""
            raise self.error(f"unknown function {fname!r}; known: {', '.join(FUNCTIONS)}{hint}", name_tok)
        arity, build = FUNCTIONS[fname]
        if len(args) != arity:
            plural = "argument" if arity == 1 else "arguments"
            raise self.error(f"function '{fname}' takes {arity} {plural}, got {len(args)}", name_tok)
        return build(*(self.expr(a) for a in args))

    def reduction(self, op_tok: Token, var_toks: list[Token], body: Tree) -> Expr:
        op = str(op_tok)
        if op not in REDUCTIONS:
            raise self.error(f"unknown reduction {op!r}; known: {', '.join(REDUCTIONS)}", op_tok)
        vars_ = [self.var(v) for v in var_toks]
        for k, v in enumerate(vars_):
            if v in vars_[:k]:
                raise self.error(f"reduction {op}[...] lists index {v} twice", var_toks[k])
        node = Reduce(op, tuple(vars_), self.expr(body))
        self.reduce_tokens[id(node)] = (node, var_toks)
        return node


#: words read as float literals (and therefore not usable as tensor names)
_FLOAT_WORDS = {"inf": float("inf"), "nan": float("nan")}


def _number(tok: Token) -> int | float:
    s = str(tok)
    return float(s) if any(ch in s for ch in ".eE") else int(s)
