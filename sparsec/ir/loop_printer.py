"""Text form of loop IR, stable enough to diff in golden tests.

Example (SpMV over CSR)::

    kernel spmv(A_pos1: *i32, A_crd1: *i32, A_vals: *f64, x_vals: *f64, y_vals: *f64 [out], n_i: index, n_j: index) {
      for i in [0, n_i) parallel {  // i: dense level 0 of A
        acc = 0.0 : f64
        for pA1 in [A_pos1[i], A_pos1[i + 1]) {  // j: compressed level 1 of A
          j = index(A_crd1[pA1])
          acc = acc + A_vals[pA1] * x_vals[j]
        }
        y_vals[i] = acc
      }
    }
"""

from __future__ import annotations

from .loop_ir import (
    Assign, BinOp, Block, BufferParam, Cast, Comment, Const, For, If, Kernel, LExpr, Load, Select, Stmt,
    Store, UnOp, Var, While,
)

_SHORT = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64", "int8": "i8", "int16": "i16",
          "int32": "i32", "int64": "i64", "bool": "i1", "index": "index"}
_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%", "lt": "<", "le": "<=",
          "gt": ">", "ge": ">=", "eq": "==", "ne": "!=", "and": "&&", "or": "||", "shr": ">>", "bitand": "&"}
_PREC = {"or": 1, "and": 2, "bitand": 2.5, "lt": 3, "le": 3, "gt": 3, "ge": 3, "eq": 3, "ne": 3, "shr": 3.5,
         "add": 4, "sub": 4, "mul": 5, "div": 5, "floordiv": 5, "mod": 5}


def short_dtype(dtype: str) -> str:
    """``float32`` -> ``f32`` and so on."""
    return _SHORT.get(dtype, dtype)


def expr_text(e: LExpr, prec: int = 0) -> str:
    """Render an expression with minimal parentheses."""
    if isinstance(e, Const):
        if e.dtype == "bool":
            return "true" if e.value else "false"
        return repr(e.value) if isinstance(e.value, float) else str(e.value)
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Load):
        return f"{e.buffer}[{expr_text(e.index)}]"
    if isinstance(e, BinOp):
        if e.op in _INFIX:
            p = _PREC[e.op]
            s = f"{expr_text(e.a, p)} {_INFIX[e.op]} {expr_text(e.b, p + 1)}"
            return f"({s})" if p < prec else s
        return f"{e.op}({expr_text(e.a)}, {expr_text(e.b)})"
    if isinstance(e, UnOp):
        if e.op == "neg":
            return f"-{expr_text(e.a, 9)}"
        if e.op == "not":
            return f"!{expr_text(e.a, 9)}"
        return f"{e.op}({expr_text(e.a)})"
    if isinstance(e, Select):
        return f"select({expr_text(e.cond)}, {expr_text(e.a)}, {expr_text(e.b)})"
    if isinstance(e, Cast):
        return f"{short_dtype(e.dtype)}({expr_text(e.a)})"
    raise TypeError(f"not a loop-IR expression: {e!r}")


def _stmt_lines(s: Stmt, depth: int, out: list[str]) -> None:
    pad = "  " * depth
    if isinstance(s, Block):
        for c in s.stmts:
            _stmt_lines(c, depth, out)
    elif isinstance(s, Assign):
        out.append(f"{pad}{s.var.name} = {expr_text(s.value)} : {short_dtype(s.var.dtype)}")
    elif isinstance(s, Store):
        op = {None: "=", "add": "+=", "max": "max=", "min": "min="}[s.reduce]
        out.append(f"{pad}{s.buffer}[{expr_text(s.index)}] {op} {expr_text(s.value)}")
    elif isinstance(s, For):
        kind = f" {s.kind}" if str(s.kind) else ""
        note = f"  // {s.comment}" if s.comment else ""
        out.append(f"{pad}for {s.var.name} in [{expr_text(s.lo)}, {expr_text(s.hi)}){kind} {{{note}")
        _stmt_lines(s.body, depth + 1, out)
        out.append(f"{pad}}}")
    elif isinstance(s, While):
        note = f"  // {s.comment}" if s.comment else ""
        out.append(f"{pad}while {expr_text(s.cond)} {{{note}")
        _stmt_lines(s.body, depth + 1, out)
        out.append(f"{pad}}}")
    elif isinstance(s, If):
        out.append(f"{pad}if {expr_text(s.cond)} {{")
        _stmt_lines(s.then, depth + 1, out)
        if s.orelse.stmts:
            if len(s.orelse.stmts) == 1 and isinstance(s.orelse.stmts[0], If):
                inner: list[str] = []
                _stmt_lines(s.orelse.stmts[0], depth, inner)
                out.append(f"{pad}}} else {inner[0].lstrip()}")
                out.extend(inner[1:])
                return
            out.append(f"{pad}}} else {{")
            _stmt_lines(s.orelse, depth + 1, out)
        out.append(f"{pad}}}")
    elif isinstance(s, Comment):
        out.append(f"{pad}// {s.text}")
    else:
        raise TypeError(f"not a loop-IR statement: {s!r}")


def kernel_text(k: Kernel) -> str:
    """Render a whole kernel."""
    params = []
    for p in k.params:
        if isinstance(p, BufferParam):
            role = "" if p.role == "in" else f" [{p.role}]"
            params.append(f"{p.name}: *{short_dtype(p.dtype)}{role}")
        else:
            params.append(f"{p.name}: {short_dtype(p.dtype)}")
    lines = []
    if k.doc:
        lines += [f"// {line}" for line in k.doc.splitlines()]
    lines.append(f"kernel {k.name}({', '.join(params)}) {{")
    _stmt_lines(k.body, 1, lines)
    lines.append("}")
    return "\n".join(lines)
