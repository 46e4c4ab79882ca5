"""Public entry points: :func:`compile`, :func:`einsum` and the :class:`Kernel` they return.

``sc.compile`` takes index notation text (or tensor IR, or DSL tensors), the
formats and dtypes of its tensors, and a target; it runs every pass once and
compiles every kernel, and returns a :class:`Kernel` that is called with named
operands any number of times. ``sc.einsum`` is the numpy-compatible one-call
form: it derives formats and dtypes from the operands and caches the kernel.

Return values: a dense output comes back as a numpy array (a torch tensor when
the operands were torch tensors); a sparse output (``out_format=``) comes back
as an :class:`sparsec.Tensor`.
"""

from __future__ import annotations

import functools
import os
import string
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np

from .backends import get_backend
from .errors import FormatError, ScheduleError, VerificationError
from .formats import FormatLike, as_format
from .ir.tensor_ir import Assignment, Program, TensorDecl, VALUE_DTYPES
from .passes.pipeline import LoweredProgram, lower_program
from .fastcall import FALLBACK, FastCall
from .runtime import ProgramRunner, StatementRunner, as_tensor
from .tensor import Tensor

_SCHEDULES = (None, "default", "auto")


def _statements(statement: Any) -> list[Assignment]:
    from .frontend import parse_program

    if isinstance(statement, str):
        return list(parse_program(statement))
    if isinstance(statement, Assignment):
        return [statement]
    if isinstance(statement, Program):
        return list(statement.statements)
    if isinstance(statement, (list, tuple)) and all(isinstance(s, Assignment) for s in statement):
        return list(statement)
    stmts = getattr(statement, "statements", None)
    if stmts:
        return list(stmts)
    raise TypeError(f"cannot compile a {type(statement).__name__}; pass index notation text, an Assignment, "
                    "a Program or a DSL tensor that was assigned to")


_DTYPE_NAMES: dict[Any, str] = {}


def _normalize_dtype(dt: Any, what: str) -> str:
    """The dtype's name in :data:`VALUE_DTYPES`, or a VerificationError naming ``what``."""
    try:
        return _DTYPE_NAMES[dt]
    except (KeyError, TypeError):
        pass
    name = _dtype_name(dt, what)
    try:
        _DTYPE_NAMES[dt] = name
    except TypeError:  # pragma: no cover - unhashable dtype spec
        pass
    return name


def _dtype_name(dt: Any, what: str) -> str:
    try:
        name = "bfloat16" if str(dt) in ("bfloat16", "torch.bfloat16") else np.dtype(str(dt).replace("torch.", "")).name
    except TypeError:
        raise VerificationError(f"{what}: unknown dtype {dt!r}") from None
    if name not in VALUE_DTYPES:
        raise VerificationError(f"{what}: unsupported dtype {name!r}; use one of {', '.join(VALUE_DTYPES)}")
    return name


def build_program(statements: Sequence[Assignment], formats: Mapping[str, FormatLike] | None,
                  dtype: Any, out_format: FormatLike | None = None) -> Program:
    """Declare every tensor of ``statements`` with its format (default dense) and dtype."""
    formats = dict(formats or {})
    ndims: dict[str, int] = {}
    for s in statements:
        for a in [s.output] + s.accesses():
            if a.tensor in ndims and ndims[a.tensor] != len(a.indices):
                raise VerificationError(f"tensor {a.tensor!r} is used with {ndims[a.tensor]} and with "
                                        f"{len(a.indices)} indices")
            ndims[a.tensor] = len(a.indices)
    unknown = set(formats) - set(ndims)
    if unknown:
        raise FormatError(f"formats given for {sorted(unknown)}, which the expression does not use")
    outputs = [s.output.tensor for s in statements]
    if out_format is not None:
        formats.setdefault(outputs[-1], out_format)
    dtypes = dtype if isinstance(dtype, Mapping) else {n: dtype for n in ndims}
    decls = []
    for name, nd in ndims.items():
        fmt = as_format(formats.get(name), nd)
        dt = _normalize_dtype(dtypes.get(name, "float64"), f"tensor {name!r}")
        decls.append(TensorDecl(name, nd, fmt, dt))
    program = Program(tuple(statements), tuple(decls))
    from .ir.verify import verify

    verify(program)
    return program


class Kernel:
    """A compiled program: call it with operands by name; ``dump(stage)`` shows each stage."""

    def __init__(self, program: Program, target: str = "cpu", schedule: str | None = None, name: str = "kernel",
                 debug: bool | None = None, parallel: bool = True, outputs: Sequence[str] | None = None):
        from .schedule import as_schedule

        self.schedule = None if schedule == "auto" else as_schedule(schedule)
        from .ir.tensor_printer import statement_text

        self.program = program
        self.target = target
        self.backend = get_backend(target)
        self.name = name
        out_dtypes = {program.decl(o).dtype for o in program.outputs()}
        self.compute_dtype = program.decl(program.outputs()[-1]).dtype
        if len(out_dtypes) > 1:
            raise VerificationError(f"all outputs must share one dtype, got {sorted(out_dtypes)}")
        t0 = time.perf_counter()
        written = program.outputs()
        if outputs is not None:
            unknown = [o for o in outputs if o not in written]
            if unknown:
                raise VerificationError(f"outputs {unknown} are not written by the program (it writes {written})")
        self.lowered: LoweredProgram = lower_program(program, self.compute_dtype, name, parallel=parallel,
                                                     debug=debug, stmt_text=statement_text,
                                                     outputs=set(outputs) if outputs is not None else None,
                                                     schedule=self.schedule)
        self._compiled: dict[str, Any] = {}
        self._runner = ProgramRunner(self.lowered, self._compile_one, self.backend.threads,
                                     getattr(self.backend, "runner_class", None) or StatementRunner)
        self.compile_seconds = time.perf_counter() - t0
        self._fast = None
        if len(self._runner.runners) == 1 and not self.lowered.temporaries and os.environ.get(
                "SPARSEC_NO_FAST_CALL", "") in ("", "0"):
            self._fast = FastCall.build(self._runner.runners[0], program, self.backend.threads)
        self.inputs = program.inputs()
        self._input_set = set(self.inputs)
        self._call_hook = getattr(self.backend, "call", None)
        self.outputs = list(outputs) if outputs is not None else written

    def _compile_one(self, kernel):
        ck = self.backend.compile(kernel)
        self._compiled[kernel.name] = ck
        return ck

    def _bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Tensor]:
        if len(args) > len(self.inputs):
            raise TypeError(f"kernel takes {len(self.inputs)} operands ({', '.join(self.inputs)}), got {len(args)}")
        given = dict(zip(self.inputs, args))
        for k, v in kwargs.items():
            if k in given:
                raise TypeError(f"operand {k!r} given twice")
            if k not in self.inputs:
                raise TypeError(f"unknown operand {k!r}; this kernel reads {', '.join(self.inputs)}")
            given[k] = v
        missing = [n for n in self.inputs if n not in given]
        if missing:
            raise TypeError(f"missing operand(s) {', '.join(map(repr, missing))}")
        bound = {}
        for n in self.inputs:
            d = self.program.decl(n)
            bound[n] = as_tensor(given[n], n, d.format, d.dtype)
        return bound

    def run(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Run and return every output as a :class:`sparsec.Tensor`, by name."""
        return self._runner.run(self._bind(args, kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run; a dense output comes back as a numpy array, a sparse one as a Tensor.

        A backend may take over the call to keep operands on its device (the Triton
        backend returns torch tensors on the device the kernel ran on).
        """
        if self._call_hook is not None:
            return self._call_hook(self, args, kwargs)
        fast = self._fast
        if fast is not None:
            given = kwargs if not args else {**dict(zip(self.inputs, args)), **kwargs}
            if given.keys() == self._input_set:
                result = fast(given)
                if result is not FALLBACK:
                    return result
        torch_in = any(type(v).__module__.startswith("torch") for v in list(args) + list(kwargs.values()))
        results = self.run(*args, **kwargs)
        out = [results[o] for o in self.outputs if o in results]
        final = [_present(t, self.program.decl(n), torch_in) for n, t in zip(self.outputs, out)]
        return final[-1] if len(self.outputs) == 1 else dict(zip(self.outputs, final))

    def dump(self, stage: str = "all") -> str:
        """Text of one stage: ``tensor``, ``loops``, ``llvm``, ``asm``, ``triton``, or ``all``."""
        from .ir.tensor_printer import program_text

        stages = ("tensor", "passes", "loops") + tuple(self.backend.stages)
        if stage == "all":
            return "\n\n".join(f"// ===== {s} =====\n{self.dump(s)}" for s in stages)
        if stage == "tensor":
            return program_text(self.program)
        if stage == "passes":
            return "\n".join(f"// ----- after {n} -----\n{t}" for n, t in self.lowered.log)
        if stage == "loops":
            return self.lowered.loops_text()
        if stage in self.backend.stages:
            return "\n\n".join(ck.dump(stage) for ck in self._compiled.values())
        raise ValueError(f"unknown stage {stage!r}; this kernel has {', '.join(stages)} and 'all'")

    def __repr__(self) -> str:
        return f"<sparsec.Kernel {self.name} target={self.target} inputs={self.inputs} outputs={self.outputs}>"


def _present(t: Tensor, decl: TensorDecl, torch_out: bool) -> Any:
    if decl.ndim == 0:
        return t.values.reshape(()).copy()
    if decl.format.is_sparse:
        return t
    arr = t.to_numpy()
    if torch_out:
        import torch

        return torch.from_numpy(arr)
    return arr


def compile(statement: Any, formats: Mapping[str, FormatLike] | None = None, dtype: Any = "float64",
            target: str = "cpu", schedule: str | None = None, out_format: FormatLike | None = None,
            name: str = "kernel", debug: bool | None = None, outputs: Sequence[str] | None = None) -> Kernel:
    """Compile index notation (``"C[i,j] = A[i,k] * B[k,j]"``) into a callable :class:`Kernel`.

    ``formats`` maps tensor names to formats (short names, MLIR encoding text or
    :class:`~sparsec.formats.Format`); unnamed tensors are dense. ``dtype`` is one
    dtype for all tensors or a mapping by name. ``out_format`` sets the format of
    the (last) output. ``target`` is ``"cpu"``, ``"triton"`` or ``"interp"``.
    ``outputs`` lists the tensors to return when the text has several statements;
    the others are intermediates, fused into the statements that read them where
    that is legal (``None``: return every written tensor, fuse nothing).
    ``schedule`` is None (the default schedule), a :class:`sparsec.Schedule`, or
    ``"auto"`` (an :class:`sparsec.autotune.AutoKernel` choosing per call).
    """
    from .ir.tensor_ir import check_identifier

    check_identifier(name, "kernel name")
    program = build_program(_statements(statement), formats, dtype, out_format)
    kernel = Kernel(program, target, schedule, name, debug, outputs=outputs)
    if schedule == "auto":
        from .autotune import AutoKernel

        return AutoKernel(kernel)
    return kernel


# ------------------------------------------------------------------------------------- einsum
_EINSUM_CACHE: dict[tuple, Kernel] = {}
_EINSUM_LOCK = threading.Lock()
_NAMES = list(string.ascii_uppercase)


def _operand_name(k: int) -> str:
    return _NAMES[k] if k < len(_NAMES) else f"X{k}"


def _operand_dtype(x: Any) -> str:
    if isinstance(x, Tensor):
        return x.dtype.name
    dt = getattr(x, "dtype", None)
    if dt is not None:
        return _normalize_dtype(dt, "operand")
    return np.asarray(x).dtype.name


def einsum(subscripts: str, *operands: Any, out_format: FormatLike | None = None, target: str = "cpu",
           dtype: Any = None, schedule: str | None = None) -> Any:
    """numpy-compatible ``einsum`` over sparse and dense operands.

    Operands may be numpy arrays, scipy.sparse matrices/arrays, torch tensors
    (dense or sparse) or :class:`sparsec.Tensor` in any format; each keeps its own
    format. The result is dense unless ``out_format`` is given. The result dtype
    follows numpy's promotion of the operand dtypes unless ``dtype`` is given.
    Compiled kernels are cached per (subscripts, formats, dtypes, target).
    """
    from .frontend import parse_einsum

    backend_einsum = getattr(get_backend(target), "einsum", None)
    if backend_einsum is not None:  # device backends bind operands on their device
        if schedule not in _SCHEDULES:
            raise ScheduleError(f"einsum takes schedule=None or 'auto'; for a Schedule use sc.compile")
        return backend_einsum(subscripts, *operands, out_format=out_format, dtype=dtype)
    names = _operand_names(len(operands))
    bound: list[Any] = []
    fmt_key: list[Any] = []
    for x, n in zip(operands, names):
        if type(x) is np.ndarray and x.dtype != object and x.ndim:
            bound.append(x)                                  # dense operands are used in place
            fmt_key.append(("dense", x.ndim))
        else:
            t = _scipy_view(x, n) if _is_scipy_sparse(x) else as_tensor(x, n)
            bound.append(t)
            fmt_key.append(t.format)
    if dtype is None:
        dts = [b.dtype for b in bound]
        res = np.result_type(*dts) if dts else np.dtype("float64")
        dtype = "float64" if res == np.bool_ else res
    dtype = _normalize_dtype(dtype, "einsum dtype")
    key = (subscripts, tuple(fmt_key), dtype, out_format if isinstance(out_format, (str, type(None))) else
           str(out_format), target.lower(), schedule)
    with _EINSUM_LOCK:
        kernel = _EINSUM_CACHE.get(key)
    if kernel is None:
        stmt = parse_einsum(subscripts, names, "out")
        fmts = {n: (b.format if isinstance(b, Tensor) else as_format("dense", b.ndim)) for n, b in zip(names, bound)}
        out_fmt = as_format(out_format, len(stmt.output.indices)) if out_format is not None else None
        kernel = Kernel(build_program([stmt], fmts, dtype, out_fmt), target, schedule, "einsum")
        with _EINSUM_LOCK:
            _EINSUM_CACHE[key] = kernel
    given = dict(zip(names, bound))
    if kernel._fast is not None:
        result = kernel._fast(given)
        if result is not FALLBACK:
            return result
    torch_in = any(type(x).__module__.startswith("torch") for x in operands)
    results = kernel.run(**given)
    return _present(results["out"], kernel.program.decl("out"), torch_in)


@functools.lru_cache(maxsize=64)
def _operand_names(n: int) -> tuple[str, ...]:
    return tuple(_operand_name(k) for k in range(n))


_VIEWS: "dict[int, tuple[Any, tuple, Tensor]]" = {}
_VIEWS_MAX = 64


def _scipy_view(m: Any, name: str) -> Tensor:
    """A Tensor sharing a canonical scipy CSR/CSC matrix's arrays (no copy), validated once per matrix.

    The view is reused while the matrix object holds the same index and value
    arrays, so values changed in place are seen by the next call; index arrays
    mutated in place after the first call are not re-validated. Other scipy
    types (and non-canonical CSR/CSC) are converted, as ``sc.Tensor.from_scipy`` does.
    """
    import weakref

    fmt = getattr(m, "format", None)
    arrays = (getattr(m, "indptr", None), getattr(m, "indices", None), getattr(m, "data", None))
    hit = _VIEWS.get(id(m))
    if hit is not None and hit[0]() is m and all(a is b for a, b in zip(hit[1], arrays)) and \
            hit[2].shape == tuple(m.shape):
        return hit[2]
    if fmt in ("csr", "csc") and m.has_canonical_format and arrays[0].dtype == arrays[1].dtype and \
            arrays[0].dtype in (np.int32, np.int64):
        width = 32 if arrays[0].dtype == np.int32 else 64
        sc_fmt = as_format(fmt, 2).with_widths(width, width)
        t = Tensor.from_buffers(sc_fmt, tuple(m.shape), [{}, {"pos": arrays[0], "crd": arrays[1]}], arrays[2],
                                name=name, validate=True)
    else:
        t = Tensor.from_scipy(m, name=name)
    if len(_VIEWS) >= _VIEWS_MAX:
        _VIEWS.pop(next(iter(_VIEWS)))
    try:
        _VIEWS[id(m)] = (weakref.ref(m), arrays, t)
    except TypeError:  # pragma: no cover - not weak-referenceable
        pass
    return t


def _is_scipy_sparse(x: Any) -> bool:
    mod = type(x).__module__
    if not mod.startswith("scipy"):
        return False
    import scipy.sparse as sp

    return sp.issparse(x)
