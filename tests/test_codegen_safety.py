"""Generated-code safety: nothing a user types reaches LLVM IR or Triton source unchecked.

Every user-supplied string that could end up in generated code -- tensor and
index names in index notation, kernel names (``sc.compile(name=...)``), format
strings (short names and MLIR encoding text), einsum subscripts, dtype strings,
``out_format``, ``outputs=`` entries, ``formats=`` keys, DSL tensor and index
names, and tensor IR built by hand -- is tried with injection payloads (code,
newlines, quotes, comment starters, LLVM sigils, NUL, unicode lookalikes,
zero-width characters, very long names, reserved words). Each must be rejected
with ParseError / VerificationError / FormatError (or TypeError for a non-string)
*before any code generation*: the :func:`guard` fixture counts calls of every
backend's ``compile``, of LLVM compilation and of Triton source loading, and
checks that the private ``SPARSEC_CACHE_DIR`` stays empty.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

import sparsec as sc
from sparsec import FormatError, ParseError, VerificationError
from sparsec.backends.cpu import CPUBackend, jit
from sparsec.backends.interp import InterpBackend
from sparsec.frontend import dsl
from sparsec.ir.tensor_ir import VALUE_DTYPES, Access, Assignment, IndexVar, check_identifier

REJECT = (ParseError, VerificationError, FormatError)

#: payloads aimed at a name position (tensor, index, kernel, output names)
NAME_PAYLOADS: list[tuple[str, str]] = [
    ("python-import", "__import__('os').system('echo pwned')"),
    ("statement", "A; import os"),
    ("newline-code", "A\nimport os"),
    ("crlf", "A\r\nimport os"),
    ("single-quote", "A'"),
    ("double-quote", 'A"'),
    ("backslash", "A\\"),
    ("comment-hash", "A#"),
    ("comment-slash", "A//x"),
    ("c-comment", "A/*x*/"),
    ("llvm-global", "@A"),
    ("llvm-local", "%A"),
    ("format-spec", "A{0}"),
    ("percent", "A%s"),
    ("nul", "A\x00"),
    ("space", "A B"),
    ("dot", "os.system"),
    ("call", "A()"),
    ("bracket", "A]"),
    ("fullwidth-A", "\uff21"),
    ("cyrillic-A", "\u0410"),
    ("roman-numeral-i", "\u2170"),
    ("zero-width-space", "A\u200b"),
    ("rtl-override", "A\u202e"),
    ("accented", "\u00c9t\u00e9"),
    ("leading-digit", "1A"),
    ("leading-underscore", "_A"),
    ("dunder", "__class__"),
    ("empty", ""),
    ("too-long", "A" * 65),
    ("very-long", "A" * 100_000),
    ("keyword", "lambda"),
    ("reserved-tl", "tl"),
    ("reserved-prefix", "sc_lo"),
    ("reserved-torch", "torch"),
]

#: a trailing newline is accepted by check_identifier's ``$`` (re.match): see the xfail below.
TRAILING_NEWLINE = ("trailing-newline", "A\n")

FORMAT_PAYLOADS: list[tuple[str, str]] = [
    ("python", "csr'); __import__('os').system('echo pwned'); ('"),
    ("newline", "csr\nimport os"),
    ("short-args", "bsr(2, 2); import os"),
    ("short-args-code", "bsr(__import__('os'), 2)"),
    ("nm-args", "nm(2, 4)\nimport os"),
    ("mlir-extra", "#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : compressed) }>; import os"),
    ("mlir-dim-name", "#sparse_tensor.encoding<{ map = (i'), j) -> (i : dense, j : compressed) }>"),
    ("mlir-level", "#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : os) }>"),
    ("mlir-width", "#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : compressed), posWidth = 32; x }>"),
    ("mlir-width-value", "#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : compressed), posWidth = 7 }>"),
    ("fullwidth", "\uff43sr"),
    ("very-long", "csr" * 50_000),
]

DTYPE_PAYLOADS: list[tuple[str, Any]] = [
    ("code", "float64; import os"),
    ("newline", "float64\nimport os"),
    ("module-path", "np.float64"),
    ("call", "__import__('os')"),
    ("object", "object"),
    ("string", "str"),
    ("complex", "complex128"),
    ("fullwidth", "\uff46loat64"),
    ("very-long", "f" * 100_000),
]

SUBSCRIPT_PAYLOADS: list[tuple[str, str]] = [
    ("statement", "i->i; import os"),
    ("newline", "i\n->i"),
    ("quote", "i'->i"),
    ("call", "__import__('os')"),
    ("roman-numeral", "\u2170->\u2170"),
    ("fullwidth", "\uff49->\uff49"),
    ("ellipsis", "...i->i"),
    ("digits", "i1->i"),
    ("two-arrows", "i->i->i"),
    ("very-long", "i" * 100_000 + "->i"),
]


# ------------------------------------------------------------------------------------ the guard
class Guard:
    """Counts code generation; ``clean()`` asserts nothing was generated, compiled or written."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.calls: dict[str, int] = {}

    def hit(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1

    def clean(self) -> None:
        assert not self.calls, f"code generation ran: {self.calls}"
        files = [p for p in self.cache.rglob("*") if p.is_file()] if self.cache.exists() else []
        assert not files, f"files written to the cache: {files}"


@pytest.fixture
def guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Guard]:
    """A private SPARSEC_CACHE_DIR and counters on every path into a backend or a compiler."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(cache))
    g = Guard(cache)

    def counting(what: str, fn: Callable) -> Callable:
        def wrapper(*a: Any, **k: Any) -> Any:
            g.hit(what)
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(CPUBackend, "compile", counting("cpu.compile", CPUBackend.compile))
    monkeypatch.setattr(InterpBackend, "compile", counting("interp.compile", InterpBackend.compile))
    monkeypatch.setattr(jit, "compile_ir", counting("llvm", jit.compile_ir))
    try:
        from sparsec.backends import triton as tr
        from sparsec.backends.triton import launch

        monkeypatch.setattr(tr.TritonBackend, "compile", counting("triton.compile", tr.TritonBackend.compile))
        monkeypatch.setattr(launch, "load_kernel", counting("triton.load", launch.load_kernel))
    except ImportError:  # pragma: no cover - triton not installed
        pass
    yield g


TARGETS = ("cpu", "triton", "interp")


def _rejected(fn: Callable[[], Any], guard: Guard, also: tuple[type, ...] = ()) -> BaseException:
    with pytest.raises(REJECT + also) as e:
        fn()
    guard.clean()
    return e.value


def _ids(payloads: list[tuple[str, Any]]) -> list[str]:
    return [p[0] for p in payloads]


def _values(payloads: list[tuple[str, Any]]) -> list[Any]:
    return [p[1] for p in payloads]


# ------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("payload", _values(NAME_PAYLOADS), ids=_ids(NAME_PAYLOADS))
@pytest.mark.parametrize("target", TARGETS)
def test_tensor_and_index_names_in_index_notation(payload: str, target: str, guard: Guard) -> None:
    texts = [f"y[i] = {payload}[i]", f"{payload}[i] = A[i]", f"y[i] = A[i] * {payload}"]
    if payload:  # (with no name these two are a valid 0-d statement and a parse error of another kind)
        texts += [f"y[{payload}] = A[{payload}]", f"y[i] = sum[{payload}](A[i, {payload}])"]
    for text in texts:
        _rejected(lambda: sc.compile(text, target=target), guard)


@pytest.mark.parametrize("payload", _values(NAME_PAYLOADS), ids=_ids(NAME_PAYLOADS))
@pytest.mark.parametrize("target", TARGETS)
def test_kernel_names(payload: str, target: str, guard: Guard) -> None:
    _rejected(lambda: sc.compile("y[i] = A[i]", name=payload, target=target), guard)


@pytest.mark.parametrize("payload", _values(NAME_PAYLOADS), ids=_ids(NAME_PAYLOADS))
def test_outputs_and_format_keys(payload: str, guard: Guard) -> None:
    text = "t[i] = A[i] * 2\ny[i] = t[i] + 1"
    _rejected(lambda: sc.compile(text, outputs=[payload]), guard)
    _rejected(lambda: sc.compile(text, outputs=["y", payload]), guard)
    _rejected(lambda: sc.compile("y[i] = A[i]", formats={payload: "coo"}), guard)


def test_unknown_dtype_keys_are_rejected(guard: Guard) -> None:
    _rejected(lambda: sc.compile("y[i] = A[i]", dtype={"A": "float64", "a": "float32"}), guard)


@pytest.mark.parametrize("payload", _values(NAME_PAYLOADS), ids=_ids(NAME_PAYLOADS))
def test_dsl_tensor_and_index_names(payload: str, guard: Guard) -> None:
    _rejected(lambda: dsl.tensor(payload, 1), guard)
    _rejected(lambda: dsl.index_var(payload), guard)
    if payload.strip() and " " not in payload and "\n" not in payload and "\r" not in payload:
        _rejected(lambda: dsl.index_vars(payload), guard)   # (whitespace separates names there)
    A = dsl.tensor("A", 1)
    _rejected(lambda: A[payload], guard, also=(TypeError,))


@pytest.mark.parametrize("payload", _values(NAME_PAYLOADS), ids=_ids(NAME_PAYLOADS))
def test_hand_built_tensor_ir(payload: str, guard: Guard) -> None:
    i = IndexVar("i")

    def build() -> None:
        stmt = Assignment(Access("y", (i,)), Access(payload, (i,)))
        sc.compile(stmt)

    _rejected(build, guard)
    _rejected(lambda: sc.compile(Assignment(Access(payload, (i,)), Access("A", (i,)))), guard)
    _rejected(lambda: IndexVar(payload), guard)


def test_non_string_names_are_rejected(guard: Guard) -> None:
    for bad in (None, 3, b"A", ["A"], object()):
        with pytest.raises((VerificationError, TypeError)):
            check_identifier(bad, "name")  # type: ignore[arg-type]
        with pytest.raises((VerificationError, TypeError)):
            sc.compile("y[i] = A[i]", name=bad)  # type: ignore[arg-type]
    guard.clean()


# A trailing newline used to slip through check_identifier (`^...$` with re.match accepts "A\n":
# $ matches before a final newline); "kern\n" then reached LLVM and the Triton backend, which wrote
# "<cache>/triton/kern\n_<hash>.py". check_identifier now uses re.fullmatch.
@pytest.mark.parametrize("target", TARGETS)
def test_trailing_newline_in_a_kernel_name(target: str, guard: Guard) -> None:
    _rejected(lambda: sc.compile("y[i] = A[i]", name=TRAILING_NEWLINE[1], target=target), guard,
              also=(sc.BackendError, SyntaxError))
    # (BackendError / SyntaxError from the backends are code generation too: guard.clean() fails)


def test_trailing_newline_in_names_everywhere(guard: Guard) -> None:
    payload = TRAILING_NEWLINE[1]
    i = IndexVar("i")
    with pytest.raises(REJECT):
        check_identifier(payload, "name")
    _rejected(lambda: sc.compile(Assignment(Access("y", (i,)), Access(payload, (i,)))), guard)
    _rejected(lambda: dsl.tensor(payload, 1), guard)


# ------------------------------------------------------------------------------------ formats
@pytest.mark.parametrize("payload", _values(FORMAT_PAYLOADS), ids=_ids(FORMAT_PAYLOADS))
@pytest.mark.parametrize("target", TARGETS)
def test_format_strings_and_out_format(payload: str, target: str, guard: Guard) -> None:
    _rejected(lambda: sc.compile("y[i,j] = A[i,j]", formats={"A": payload}, target=target), guard)
    _rejected(lambda: sc.compile("y[i,j] = A[i,j]", out_format=payload, target=target), guard)
    _rejected(lambda: sc.compile("y[i,j] = A[i,j]", formats={"y": payload}, target=target), guard)
    _rejected(lambda: sc.einsum("ij->ij", np.ones((2, 2)), out_format=payload, target=target), guard)
    _rejected(lambda: sc.Tensor.from_numpy(np.ones((2, 2)), format=payload), guard)
    _rejected(lambda: sc.parse_format(payload, 2), guard)


# ------------------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("payload", _values(DTYPE_PAYLOADS), ids=_ids(DTYPE_PAYLOADS))
@pytest.mark.parametrize("target", TARGETS)
def test_dtype_strings(payload: Any, target: str, guard: Guard) -> None:
    _rejected(lambda: sc.compile("y[i] = A[i]", dtype=payload, target=target), guard, also=(TypeError,))
    _rejected(lambda: sc.compile("y[i] = A[i]", dtype={"A": payload, "y": "float64"}, target=target), guard,
              also=(TypeError,))
    _rejected(lambda: sc.einsum("i->i", np.ones(3), dtype=payload, target=target), guard, also=(TypeError,))


def test_dtype_aliases_are_normalized_not_pasted(guard: Guard) -> None:
    """Spellings numpy accepts ('<f8', 'f8', np.float64) become the canonical name in the IR."""
    from sparsec.api import build_program
    from sparsec.frontend import parse_program

    for alias in ("<f8", "f8", "d", np.dtype("float64"), "=f8"):
        prog = build_program(parse_program("y[i] = A[i]"), None, alias)
        assert {d.dtype for d in prog.decls} == {"float64"}, alias
    guard.clean()


def test_numpy_scalar_types_as_dtype() -> None:
    k = sc.compile("y[i] = A[i] * 2", dtype=np.float32)
    assert k(A=np.ones(2, np.float32)).dtype == np.float32


def test_dtype_specs_numpy_accepts_are_normalized(guard: Guard) -> None:
    """Anything np.dtype accepts (scalar types, Python types, dtype objects, codes) and torch dtypes
    become one of sparsec's own dtype names; None and unsupported kinds are rejected."""
    from sparsec.api import build_program
    from sparsec.frontend import parse_program

    stmts = parse_program("y[i] = A[i]")
    cases = [(np.float32, "float32"), (np.float64, "float64"), (float, "float64"), (int, "int64"),
             (bool, "bool"), (np.int8, "int8"), (np.dtype("int16"), "int16"), ("f2", "float16"),
             (np.bool_, "bool"), ("bfloat16", "bfloat16")]
    torch = None
    try:
        import torch
    except ImportError:  # pragma: no cover
        pass
    if torch is not None:
        cases += [(torch.float32, "float32"), (torch.int32, "int32"), (torch.bfloat16, "bfloat16")]
    for spec, name in cases:
        prog = build_program(stmts, None, spec)
        assert {d.dtype for d in prog.decls} == {name}, spec
        assert all(any(d.dtype is known for known in VALUE_DTYPES) for d in prog.decls)   # sparsec's constants
        prog = build_program(stmts, None, {"A": spec, "y": "float64"})
        assert prog.decl("A").dtype == name
    for bad in (None, np.complex64, complex, str, object, np.uint64, np.dtype("U3"), [("a", "f8")], 3):
        with pytest.raises(VerificationError):
            build_program(stmts, None, bad)
    guard.clean()
    assert sc.einsum("i->i", np.ones(3), dtype=np.float32).dtype == np.float32


# ------------------------------------------------------------------------------------ einsum
@pytest.mark.parametrize("payload", _values(SUBSCRIPT_PAYLOADS), ids=_ids(SUBSCRIPT_PAYLOADS))
@pytest.mark.parametrize("target", TARGETS)
def test_einsum_subscripts(payload: str, target: str, guard: Guard) -> None:
    _rejected(lambda: sc.einsum(payload, np.ones(3), target=target), guard)


def test_accepted_names_compile_and_the_guard_sees_it(guard: Guard) -> None:
    """Control: a long but valid name compiles (so the guard can fail), and stays verbatim in the dumps."""
    name = "K" + "x" * 63
    k = sc.compile(f"y[i] = {name}[i] * 2", name=name, target="cpu")
    np.testing.assert_array_equal(k(**{name: np.arange(3.0)}), [0.0, 2.0, 4.0])
    assert name in k.dump("llvm")
    assert guard.calls.get("cpu.compile", 0) >= 1
    guard.calls.clear()
    if os.environ.get("SPARSEC_CACHE_DIR"):
        assert any(guard.cache.rglob("*.bin")), "the control kernel should have been written to the cache"
