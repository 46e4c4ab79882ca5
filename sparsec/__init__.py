"""sparsec: a sparse tensor compiler embedded in Python.

Public API (stable names): :func:`einsum`, :func:`compile`, :class:`Tensor`,
:mod:`sparsec.formats` (``Format``, ``parse_format``), the exception types and :class:`PerformanceWarning`.
"""

from .errors import (
    BackendError, FormatError, ParseError, PerformanceWarning, ScheduleError, ShapeError, SparsecError,
    VerificationError,
)
from .formats import Format, LevelExpr, parse_format
from .tensor import Tensor
from .io import read_mtx, write_mtx
from .api import Kernel, compile, einsum
from .runtime import get_num_threads, set_num_threads
from .schedule import Schedule
from .autotune import autotune
from .frontend.idioms import masked_attention

__version__ = "0.1.0"

__all__ = [
    "einsum", "compile", "Kernel", "Tensor", "Format", "LevelExpr", "parse_format", "read_mtx", "write_mtx",
    "set_num_threads", "get_num_threads", "Schedule", "autotune", "masked_attention",
    "SparsecError", "FormatError", "ParseError", "VerificationError", "ShapeError", "ScheduleError", "BackendError",
    "PerformanceWarning",
    "__version__",
]
