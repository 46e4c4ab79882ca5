"""Frontends that build tensor IR: einsum strings, index-notation text, the embedded Python DSL.

All three build identical :class:`~sparsec.ir.tensor_ir.Assignment` objects for the
same computation; the implicit-reduction rule they share is documented (and
implemented once) in :mod:`sparsec.frontend.implicit`.
"""

from .dsl import (
    DExpr, TensorVar, abs_, exp, index_var, index_vars, log, logical_and, logical_not, logical_or, maximum,
    minimum, program, reduce_max, reduce_min, reduce_sum, sqrt, tensor, where,
)
from .einsum import parse_einsum
from .implicit import apply_implicit_reductions, make_assignment
from .parser import parse_program, parse_statement

__all__ = [
    "parse_einsum", "parse_program", "parse_statement", "make_assignment", "apply_implicit_reductions",
    "index_vars", "index_var", "tensor", "program", "TensorVar", "DExpr",
    "exp", "log", "sqrt", "abs_", "maximum", "minimum", "where", "logical_and", "logical_or", "logical_not",
    "reduce_sum", "reduce_max", "reduce_min",
]
