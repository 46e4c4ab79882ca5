"""einsum subscripts -> tensor IR, with numpy's semantics.

``parse_einsum("ij,jk->ik", ["A", "B"], "C")`` builds
``C[i, k] = sum[j](A[i, j] * B[j, k])``:

* each letter (``a-z``, ``A-Z``) is an index variable of the same name;
* explicit output (``"ij,jk->ik"``) or implicit output (``"ij,jk"``: the letters
  that appear exactly once, in alphabetical = ASCII order, so uppercase first,
  exactly as numpy does);
* a letter repeated within one operand reads a diagonal (``"ii->i"``), and with no
  output (``"ii"``, ``"ii->"``) it is summed (the trace);
* an empty output (``"i,i->"``) gives a 0-d result; spaces are ignored;
* ellipsis (``...``) is not supported.

The right-hand side is the left-associated product of the operand accesses; the
letters not in the output are summed by the implicit-reduction rule of
:mod:`sparsec.frontend.implicit` (for a single product that is one
``Reduce('sum', vars, product)`` with ``vars`` in order of first appearance), so
einsum strings, index-notation text and the Python DSL build identical IR.

Errors in the subscripts raise :class:`~sparsec.errors.ParseError` with a caret
under the offending character.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import ParseError, VerificationError
from ..ir.tensor_ir import Access, Assignment, Binary, Expr, IndexVar, check_identifier
from .implicit import make_assignment

__all__ = ["parse_einsum", "split_subscripts"]


def _is_letter(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def split_subscripts(subscripts: str) -> tuple[list[tuple[str, int]], tuple[str, int] | None]:
    """Split subscripts into ``([(operand_letters, start_column), ...], output_or_None)``.

    Columns are 0-based offsets into ``subscripts`` of each group's first character
    (spaces removed from the letters). The output is ``None`` in implicit mode.
    Raises :class:`ParseError` on characters other than letters, ``,``, ``->`` and spaces.
    """
    if not isinstance(subscripts, str):
        raise ParseError(f"einsum subscripts must be a string, got {type(subscripts).__name__}")
    text = subscripts
    if "." in text:
        raise _err("ellipsis '...' (broadcasting) is not supported in einsum subscripts", text, text.index("."))
    arrow = text.find("->")
    if arrow >= 0 and text.find("->", arrow + 2) >= 0:
        raise _err("einsum subscripts may contain '->' only once", text, text.find("->", arrow + 2))
    inputs_end = arrow if arrow >= 0 else len(text)
    for pos, ch in enumerate(text):
        if pos in (arrow, arrow + 1) and arrow >= 0:
            continue
        if _is_letter(ch) or ch == " " or (ch == "," and pos < inputs_end):
            continue
        if ch == ",":
            raise _err("',' is not allowed in the output subscripts (after '->')", text, pos)
        if ch in "->":
            raise _err(f"'{ch}' must be part of an arrow '->'", text, pos)
        raise _err(f"invalid character {ch!r} in einsum subscripts; use letters a-z, A-Z, ',' and '->'", text, pos)

    groups: list[tuple[str, int]] = []
    start = 0
    for pos in range(inputs_end + 1):
        if pos == inputs_end or text[pos] == ",":
            groups.append((text[start:pos].replace(" ", ""), _first_nonspace(text, start, pos)))
            start = pos + 1
    output = None
    if arrow >= 0:
        output = (text[arrow + 2:].replace(" ", ""), _first_nonspace(text, arrow + 2, len(text)))
    return groups, output


def parse_einsum(
    subscripts: str,
    operand_names: Sequence[str],
    output_name: str = "out",
    ranks: Sequence[int] | None = None,
) -> Assignment:
    """Build the :class:`Assignment` an einsum computes.

    ``operand_names`` name the operands in order (a name may repeat, as in
    ``einsum("ij,jk", A, A)``); ``ranks``, when given, are the operands' numbers of
    dimensions and are checked against the subscripts.
    """
    text = subscripts
    groups, output = split_subscripts(text)
    if isinstance(operand_names, str):
        raise TypeError("operand_names must be a sequence of names, not one string")
    names = [check_identifier(n, "operand name") for n in operand_names]
    check_identifier(output_name, "output name")
    if len(groups) != len(names):
        if len(groups) > len(names):
            extra = groups[len(names)]
            raise _err(
                f"subscripts name {len(groups)} operands but {len(names)} operand names were given "
                f"({', '.join(names) or 'none'}); operand {len(names)} ({extra[0]!r}) has no name",
                text,
                extra[1],
            )
        missing = names[len(groups):]
        raise _err(
            f"subscripts name {len(groups)} operands but {len(names)} operand names were given "
            f"({', '.join(names)}); {', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no subscripts",
            text,
            _inputs_end(text),
        )
    if ranks is not None:
        if len(ranks) != len(names):
            raise VerificationError(f"{len(ranks)} ranks given for {len(names)} operands")
        for k, ((letters, col), rank, name) in enumerate(zip(groups, ranks, names)):
            if len(letters) != rank:
                raise _err(
                    f"operand {k} ({name}) has {rank} dimensions but its subscripts {letters!r} name {len(letters)}",
                    text,
                    col,
                )

    counts: dict[str, int] = {}
    for letters, _ in groups:
        for ch in letters:
            counts[ch] = counts.get(ch, 0) + 1

    if output is None:
        out_letters = "".join(sorted(ch for ch, n in counts.items() if n == 1))
    else:
        out_letters, out_col = output
        for k, ch in enumerate(out_letters):
            pos = _nth_letter_pos(text, out_col, k)
            if ch in out_letters[:k]:
                raise _err(f"output subscript {ch!r} appears more than once", text, pos)
            if ch not in counts:
                raise _err(f"output subscript {ch!r} does not appear in the input subscripts", text, pos)

    accesses = [Access(name, tuple(IndexVar(ch) for ch in letters)) for (letters, _), name in zip(groups, names)]
    rhs: Expr = accesses[0]
    for a in accesses[1:]:
        rhs = Binary("mul", rhs, a)
    return make_assignment(Access(output_name, tuple(IndexVar(ch) for ch in out_letters)), rhs)


def _err(message: str, text: str, pos: int) -> ParseError:
    return ParseError(message, text, 1, pos + 1)


def _first_nonspace(text: str, start: int, end: int) -> int:
    for p in range(start, end):
        if text[p] != " ":
            return p
    return start


def _nth_letter_pos(text: str, start: int, n: int) -> int:
    seen = -1
    for p in range(start, len(text)):
        if text[p] != " ":
            seen += 1
            if seen == n:
                return p
    return start


def _inputs_end(text: str) -> int:
    arrow = text.find("->")
    return arrow if arrow >= 0 else len(text)
