"""Exception types raised by sparsec (and its one warning category, :class:`PerformanceWarning`).

Every error a user can trigger derives from :class:`SparsecError`, so callers can
catch them all at once; the more specific types also derive from the builtin type
that fits them (``ValueError``, ``TypeError``) so code written against numpy-style
APIs keeps working.
"""

from __future__ import annotations


class SparsecError(Exception):
    """Base class of every error sparsec raises on purpose."""


class FormatError(SparsecError, ValueError):
    """A format description, or a tensor's buffers, are malformed.

    Messages name the tensor, the level and the first bad position where those
    exist, e.g. ``tensor 'A', level 1 (compressed): pos[3]=7 > pos[4]=5``.
    """


class ParseError(SparsecError, ValueError):
    """Text (index notation, einsum subscripts, an encoding) could not be parsed.

    ``str(err)`` shows the offending line with a caret under the failing column.
    """

    def __init__(self, message: str, text: str = "", line: int = 1, column: int = 1):
        self.text = text
        self.line = line
        self.column = column
        self.bare_message = message
        super().__init__(self._render(message, text, line, column))

    @staticmethod
    def _render(message: str, text: str, line: int, column: int) -> str:
        if not text:
            return message
        lines = text.splitlines() or [""]
        src = lines[min(max(line, 1), len(lines)) - 1]
        # the caret's indent copies the line's tabs, so that it lands under the column however tabs expand
        caret = "".join(c if c == "\t" else " " for c in src[:max(column - 1, 0)]) + "^"
        return f"{message}\n  line {line}, column {column}:\n    {src}\n    {caret}"


class VerificationError(SparsecError, ValueError):
    """A tensor-IR or loop-IR program is ill-formed (shapes, dtypes, index use)."""


class ShapeError(SparsecError, ValueError):
    """Operand shapes do not agree with the expression (names operand and index)."""


class ScheduleError(SparsecError, ValueError):
    """A scheduling command is illegal for the kernel it is applied to."""


class BackendError(SparsecError, RuntimeError):
    """A backend failed to generate, compile or launch a kernel."""


class PerformanceWarning(UserWarning):
    """A call does avoidable work each time (e.g. uploads or converts an operand); the message says how to avoid it."""
