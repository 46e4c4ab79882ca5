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
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .backends import get_backend
from .errors import FormatError, ScheduleError, VerificationError
from .formats import FormatLike, as_format
from .ir.tensor_ir import Assignment, Program, TensorDecl, VALUE_DTYPES
from .passes.pipeline import LoweredProgram, lower_program
from .fastcall import FALLBACK, FastCall
from .kernel_cache import LRUCache
from .runtime import ProgramRunner, StatementRunner, as_tensor, is_torch
from .tensor import Tensor

_SCHEDULES = (None, "default", "auto")


def _statements(statement: Any) -> tuple[list[Assignment], Mapping[str, TensorDecl], list[str] | None]:
    """The statements to compile, the declarations that came with them (a Program's, a DSL tensor's), and
    the outputs asked for (a DSL tensor: that tensor; what it reads is fused or computed on the way)."""
    from .frontend import TensorVar, parse_program, program

    if isinstance(statement, str):
        return list(parse_program(statement)), {}, None
    if isinstance(statement, Assignment):
        return [statement], {}, None
    if isinstance(statement, TensorVar):
        if not statement.statements:
            raise TypeError(f"cannot compile tensor {statement.name!r}: nothing was assigned to it")
        prog = program(statement)   # with the statements writing the tensors it reads
        return list(prog.statements), prog.decl_map, [statement.name]
    if isinstance(statement, Program):
        return list(statement.statements), statement.decl_map, None
    if isinstance(statement, (list, tuple)) and all(isinstance(s, Assignment) for s in statement):
        return list(statement), {}, None
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
    """Normalize anything ``np.dtype`` accepts (``"f4"``, ``np.float32``, ``float``, a numpy
    dtype) and torch dtypes to a name of :data:`VALUE_DTYPES`; only that name (one of
    sparsec's own constants) travels on, never the user's spelling."""
    spec = dt
    if is_torch(dt):   # torch.float32 -> "float32"
        spec = str(dt)
    if isinstance(spec, str) and spec.startswith("torch."):
        spec = spec[len("torch."):]
    if dt is None:
        spec = _BAD_DTYPE          # (np.dtype(None) is float64: a missing dtype should not pass as one)
    try:
        name = "bfloat16" if isinstance(spec, str) and spec == "bfloat16" else np.dtype(spec).name
    except Exception:              # np.dtype raises TypeError, ValueError, SyntaxError, ...
        raise VerificationError(f"{what}: unknown dtype {_short_repr(dt)}") from None
    for known in VALUE_DTYPES:
        if name == known:
            return known
    raise VerificationError(f"{what}: unsupported dtype {_short_repr(name)}; use one of {', '.join(VALUE_DTYPES)}")


_BAD_DTYPE = object()


def _short_repr(x: Any, limit: int = 80) -> str:
    r = repr(x)
    return r if len(r) <= limit else r[:limit] + f"... ({len(r)} characters)"


def build_program(statements: Sequence[Assignment], formats: Mapping[str, FormatLike] | None,
                  dtype: Any, out_format: FormatLike | None = None,
                  declared: Mapping[str, TensorDecl] | None = None) -> Program:
    """Declare every tensor of ``statements`` with its format (default dense) and dtype.

    ``declared`` (a DSL program's declarations) gives the defaults: a tensor's format unless
    ``formats`` names it, its dtype unless ``dtype`` names it (one dtype for all, or a mapping; a tensor
    a mapping leaves out takes its declared dtype, else float64), and its shape.
    """
    declared = declared or {}
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
    unknown = set(dtypes) - set(ndims)
    if unknown:
        raise VerificationError(f"dtypes given for {sorted(map(str, unknown))}, which the expression does not use")
    decls = []
    for name, nd in ndims.items():
        old = declared.get(name)
        try:
            fmt = as_format(formats[name], nd) if name in formats else old.format if old else as_format(None, nd)
        except FormatError as e:
            raise FormatError(f"tensor {name!r}: {e}") from None
        dt = _normalize_dtype(dtypes.get(name, old.dtype if old else "float64"), f"tensor {name!r}")
        decls.append(TensorDecl(name, nd, fmt, dt, old.shape if old else None))
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
            # one compute dtype serves every statement, so an intermediate kept from outputs= counts too
            raise VerificationError(f"all written tensors (outputs and intermediates) must share one dtype, got "
                                    f"{sorted(out_dtypes)}")
        t0 = time.perf_counter()
        written = program.outputs()
        if outputs is not None:
            unknown = [o for o in outputs if o not in written]
            if unknown:
                raise VerificationError(f"outputs {unknown} are not written by the program (it writes {written})")
        self.lowered: LoweredProgram = lower_program(program, self.compute_dtype, name, parallel=parallel,
                                                     debug=debug, stmt_text=statement_text,
                                                     outputs=set(outputs) if outputs is not None else None,
                                                     schedule=self.schedule, one_pass=self.backend.threads)
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
        #: inputs declared with a shape (a DSL program's ``shape=``): checked at every call
        self._declared_shapes = {d.name: d.shape for d in program.decls if d.shape is not None and d.name in self._input_set}
        self._call_hook = getattr(self.backend, "call", None)
        self.outputs = list(outputs) if outputs is not None else written

    def _compile_one(self, kernel):
        ck = self.backend.compile(kernel)
        self._compiled[kernel.name] = ck
        return ck

    def operands(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The operands by name from a call's arguments; TypeError for extra, repeated, unknown or missing ones."""
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
        return given

    def _bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Tensor]:
        given = self.operands(args, kwargs)
        bound = {}
        for n in self.inputs:
            d = self.program.decl(n)
            bound[n] = as_tensor(given[n], n, d.format, d.dtype)
        return bound

    def run(self, /, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Run and return every output as a :class:`sparsec.Tensor`, by name."""
        if self._declared_shapes:
            self._check_declared_shapes(args, kwargs)
        return self._runner.run(self._bind(args, kwargs))

    def _check_declared_shapes(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """ShapeError when an operand's shape differs from its declared one (``None`` extents match any)."""
        from .ir.verify import _merge_shape

        given = {**dict(zip(self.inputs, args)), **kwargs}
        for name, declared in self._declared_shapes.items():
            if name in given:
                x = given[name]
                _merge_shape(name, tuple(declared), tuple(int(n) for n in getattr(x, "shape", np.shape(x))))

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        """Run; a dense output comes back as a numpy array, a sparse one as a Tensor.

        A backend may take over the call to keep operands on its device (the Triton
        backend returns torch tensors on the device the kernel ran on).
        """
        if self._declared_shapes:
            self._check_declared_shapes(args, kwargs)
        fast = self._fast
        if fast is not None and self._call_hook is None:
            given = kwargs if not args else {**dict(zip(self.inputs, args)), **kwargs}
            # an operand given twice (by position and by name) or too many positional ones: the general
            # path raises TypeError, as run() does
            if len(given) == len(self._input_set) == len(args) + len(kwargs):
                try:
                    result = fast(given)   # a misnamed operand: KeyError, and the general path explains
                    if result is FALLBACK:
                        result = _fast_with_torch_views(fast, given)
                except KeyError:
                    result = FALLBACK
                if result is not FALLBACK:
                    return result
        if self._call_hook is not None:
            return self._call_hook(self, args, kwargs)
        torch_in = any(is_torch(v) for v in list(args) + list(kwargs.values()))
        results = self.run(*args, **kwargs)
        out = [results[o] for o in self.outputs if o in results]
        final = [_present(t, self.program.decl(n), torch_in) for n, t in zip(self.outputs, out)]
        return final[-1] if len(self.outputs) == 1 else dict(zip(self.outputs, final))

    def dump(self, stage: str = "all") -> str:
        """Text of one stage: ``tensor``, ``passes`` (the program after each pass), ``loops``, ``llvm``, ``asm``,
        ``triton``, or ``all``."""
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
            program_dump = getattr(self.backend, "program_dump", None)
            whole = program_dump(self, stage) if program_dump is not None else None
            return "\n\n".join(([whole] if whole else []) + [ck.dump(stage) for ck in self._compiled.values()])
        raise ValueError(f"unknown stage {stage!r}; this kernel has {', '.join(stages)} and 'all'")

    def __repr__(self) -> str:
        return f"<sparsec.Kernel {self.name} target={self.target} inputs={self.inputs} outputs={self.outputs}>"


def _fast_with_torch_views(fast: Callable[[Mapping[str, Any]], Any], given: Mapping[str, Any]) -> Any:
    """The fast call with dense CPU torch operands passed as numpy views (no copy), the dense result as a
    torch tensor sharing its memory, as the general path returns it; FALLBACK where it does not apply.

    Without it a CPU kernel called on torch tensors goes through the general runtime (measured on the
    2-core VM: ~1 ms against ~0.36 ms for a 128x128 CSR times 128x3136 float32 product).
    """
    views: dict[str, Any] = {}
    torch_in = False
    for name, x in given.items():
        if is_torch(x) and hasattr(x, "layout"):
            import torch

            if x.device.type != "cpu" or x.layout != torch.strided or x.dtype == torch.bfloat16 or x.is_conj() \
                    or x.is_neg():
                return FALLBACK       # the general path converts (or explains)
            views[name] = x.detach().numpy()
            torch_in = True
        else:
            views[name] = x
    if not torch_in:
        return FALLBACK
    result = fast(views)
    if type(result) is np.ndarray and result.ndim:
        import torch

        return torch.from_numpy(result)
    return result


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


def compile(statement: Any, formats: Mapping[str, FormatLike] | None = None, dtype: Any = None,
            target: str = "cpu", schedule: Any = None, out_format: FormatLike | None = None,
            name: str = "kernel", debug: bool | None = None, outputs: Sequence[str] | None = None) -> Kernel:
    """Compile index notation (``"C[i,j] = A[i,k] * B[k,j]"``) into a callable :class:`Kernel`.

    ``formats`` maps tensor names to formats (short names, MLIR encoding text or
    :class:`~sparsec.formats.Format`); unnamed tensors are dense, or as a DSL program
    declared them. ``dtype`` is one dtype for all tensors or a mapping by name (default:
    the DSL declarations', else float64). ``out_format`` sets the format of
    the (last) output. ``target`` is ``"cpu"``, ``"triton"`` or ``"interp"``.
    ``outputs`` lists the tensors to return when the text has several statements;
    the others are intermediates, fused into the statements that read them where
    that is legal (``None``: return every written tensor, fuse nothing; for a DSL tensor
    ``T``, ``[T]``: its statements and those writing what it reads, returning ``T``).
    ``schedule`` is None (the default schedule), a :class:`sparsec.Schedule`, or
    ``"auto"`` (an :class:`sparsec.autotune.AutoKernel` choosing per call).
    ``name`` names the generated function (an identifier); ``debug=True`` prints every
    stage as it is produced (default: ``$SPARSEC_DEBUG``).
    """
    from .ir.tensor_ir import check_identifier

    check_identifier(name, "kernel name")
    statements, declared, wanted = _statements(statement)
    outputs = wanted if outputs is None else outputs
    program = build_program(statements, formats, {} if dtype is None else dtype, out_format, declared)
    kernel = Kernel(program, target, schedule, name, debug, outputs=outputs)
    if schedule == "auto":
        from .autotune import AutoKernel

        return AutoKernel(kernel)
    return kernel


# ------------------------------------------------------------------------------------- einsum
#: einsum's kernels by (subscripts, formats, dtype, out_format, target, schedule); at most
#: ``$SPARSEC_KERNEL_CACHE_SIZE`` (default 256) of them, least recently used evicted first.
_EINSUM_CACHE: LRUCache = LRUCache()
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
    format. The result is dense unless ``out_format`` is given (its index widths are
    widened to the widest sparse operand's). The result dtype
    follows numpy's promotion of the operand dtypes unless ``dtype`` is given (bool operands
    give a bool result, as numpy's do). A Python or numpy scalar is a 0-d operand. ``target`` is
    ``"cpu"``, ``"triton"`` (results stay on the operands' device) or ``"interp"``; ``schedule``
    is None or ``"auto"`` (for a :class:`sparsec.Schedule`, use :func:`compile`).
    Compiled kernels are cached per (subscripts, formats, dtypes, target), at most
    ``$SPARSEC_KERNEL_CACHE_SIZE`` of them (see :mod:`sparsec.kernel_cache`).
    """
    from .frontend import parse_einsum

    backend_einsum = getattr(get_backend(target), "einsum", None)
    if backend_einsum is not None:  # device backends bind operands on their device
        if schedule not in _SCHEDULES:
            raise ScheduleError("einsum takes schedule=None or 'auto'; for a Schedule use sc.compile")
        return backend_einsum(subscripts, *operands, out_format=out_format, dtype=dtype)
    names = _operand_names(len(operands))
    bound: list[Any] = []
    fmt_key: list[Any] = []
    for x, n in zip(operands, names):
        if isinstance(x, (int, float, bool, np.generic)) and not isinstance(x, np.object_):
            x = np.asarray(x)                                # a Python or numpy scalar: a 0-d operand
        elif is_torch(x) and x.ndim == 0:                   # a 0-d torch tensor: its value, on the host
            x = np.asarray(x.detach().cpu().float() if str(x.dtype) == "torch.bfloat16" else x.detach().cpu())
        if type(x) is np.ndarray and x.dtype != object:
            bound.append(x)                                  # dense operands are used in place
            fmt_key.append(("dense", x.ndim))
        else:
            t = _scipy_view(x, n) if _is_scipy_sparse(x) else as_tensor(x, n)
            bound.append(t)
            fmt_key.append(t.format)
    logical = False
    if dtype is None:
        try:
            dtype, logical = einsum_dtype([b.dtype for b in bound])
        except Exception:
            _check_dense_operands(bound, names)   # names the operand whose dtype is the cause
            raise
    else:
        dtype = _normalize_dtype(dtype, "einsum dtype")
    key = (subscripts, tuple(fmt_key), dtype, out_format if isinstance(out_format, (str, type(None))) else
           str(out_format), target.lower(), schedule)
    kernel = _EINSUM_CACHE.get(key)
    if kernel is None:
        stmt = parse_einsum(subscripts, names, "out", ranks=[b.ndim for b in bound])
        fmts = {n: (b.format if isinstance(b, Tensor) else as_format("dense", b.ndim)) for n, b in zip(names, bound)}
        out_fmt = _einsum_out_format(out_format, len(stmt.output.indices), fmts.values())
        kernel = Kernel(build_program([stmt], fmts, dtype, out_fmt), target, schedule, "einsum")
        _EINSUM_CACHE.put(key, kernel)
    given = dict(zip(names, bound))
    result = kernel._fast(given) if kernel._fast is not None else FALLBACK
    if result is FALLBACK:
        torch_in = any(is_torch(x) for x in operands)
        result = _present(kernel.run(**given)["out"], kernel.program.decl("out"), torch_in)
    return as_logical(result) if logical else result


def operand_rank(x: Any) -> int:
    """How many dimensions an einsum operand has as given (a Python or numpy scalar, or a 0-d array: 0)."""
    nd = getattr(x, "ndim", None)
    if nd is None and hasattr(x, "shape"):
        nd = len(x.shape)
    return int(nd) if nd is not None else int(np.ndim(x))


def einsum_dtype(dtypes: Sequence[Any]) -> tuple[str, bool]:
    """The kernel dtype of an ``einsum`` over operands of ``dtypes`` (numpy's promotion; bfloat16 alone
    stays bfloat16, with others it promotes as float32), and whether the result is logical.

    numpy's einsum of bool operands is an "or" of "and"s and returns bool. Index notation sums bools as
    integers, so such a kernel counts the terms in int64 and :func:`as_logical` turns the counts to bool.
    """
    if not dtypes:
        return "float64", False
    if all(str(d) == "bfloat16" for d in dtypes):
        return "bfloat16", False
    res = np.result_type(*[np.dtype("float32") if str(d) == "bfloat16" else d for d in dtypes])
    if res == np.bool_:
        return "int64", True
    return _normalize_dtype(res, "einsum dtype"), False


def as_logical(result: Any) -> Any:
    """An einsum result of counts (numpy, torch, or a sparse tensor's values) as bool: count != 0."""
    if isinstance(result, np.ndarray):
        return result != 0
    if is_torch(result):
        return result != 0
    if hasattr(result, "values") and hasattr(result, "levels"):   # Tensor / DeviceTensor: same pattern
        return type(result)(result.format, result.shape, result.levels, result.values != 0, result.name)
    return np.bool_(result != 0)


def _einsum_out_format(out_format: FormatLike | None, ndim: int, operand_formats: Any) -> Any:
    """``out_format`` as a Format, its position/coordinate widths widened to the widest sparse operand's.

    An operand has wider indices when its shape needs them (an 8-bit crd widens to 16 past
    127 columns); a result built from it usually needs them too (the runtime refuses to
    store a coordinate its width cannot hold).
    """
    if out_format is None:
        return None
    fmt = as_format(out_format, ndim)
    sparse = [f for f in operand_formats if f.is_sparse]
    if fmt.is_sparse and sparse:
        pw = max([fmt.pos_width] + [f.pos_width for f in sparse])
        cw = max([fmt.crd_width] + [f.crd_width for f in sparse])
        if (pw, cw) != (fmt.pos_width, fmt.crd_width):
            fmt = fmt.with_widths(pw, cw)
    return fmt


def _check_dense_operands(bound: Sequence[Any], names: Sequence[str]) -> None:
    """Raise the FormatError naming the first dense numpy operand whose dtype sparsec cannot use."""
    for b, n in zip(bound, names):
        if type(b) is np.ndarray and b.dtype.name not in VALUE_DTYPES:
            as_tensor(b, n)                        # raises "tensor 'A': values dtype ... is not supported"
            raise FormatError(f"operand {n!r}: values dtype {b.dtype} is not supported")


@functools.lru_cache(maxsize=64)
def _operand_names(n: int) -> tuple[str, ...]:
    return tuple(_operand_name(k) for k in range(n))


_VIEWS: "dict[int, tuple[Any, tuple, Tensor, tuple | None]]" = {}
_VIEWS_MAX = 64
#: index arrays (indptr + indices) up to this many entries are re-checked against a byte snapshot
#: (exact; ~0.4 µs at 100 entries, ~5 µs at 16k); larger ones by a vectorized bounds check (~7 µs
#: fixed, then one pass over the coordinates: ~0.15 ms per million). The crossover is near 32k.
_SNAPSHOT_MAX = 32768
_UNSIGNED = {np.dtype(np.int32): np.uint32, np.dtype(np.int64): np.uint64}


def _scipy_view(m: Any, name: str) -> Tensor:
    """A Tensor sharing a canonical scipy CSR/CSC matrix's arrays (no copy), validated once per matrix.

    The view is reused while the matrix object holds the same index and value
    arrays, so values changed in place are seen by the next call. Index arrays
    changed in place after the first call never reach a kernel unchecked: every
    reuse re-checks them (:func:`_view_indices_ok`), and a matrix whose indices
    changed is validated again in full (a corrupt one raises a FormatError naming
    the operand). The reuse check keeps every read in bounds; an in-place change
    that keeps coordinates in bounds but breaks their order within a row of a
    large matrix is not seen (scipy, too, does not re-check its cached
    ``has_canonical_format``): the results are then unspecified, but memory-safe.
    Other scipy types (and non-canonical CSR/CSC) are converted on every call,
    as ``sc.Tensor.from_scipy`` does, so values changed in place are seen there too.
    """
    import weakref

    fmt = getattr(m, "format", None)
    if fmt not in ("csr", "csc"):
        return Tensor.from_scipy(m, name=name)
    arrays = (m.indptr, m.indices, m.data)
    hit = _VIEWS.get(id(m))
    if hit is not None and hit[0]() is m and all(a is b for a, b in zip(hit[1], arrays)) and \
            hit[2].shape == tuple(m.shape) and _view_indices_ok(hit[3], arrays, m.shape, fmt):
        return hit[2]
    ptr, crd = arrays[0], arrays[1]
    if not (ptr.dtype == crd.dtype and ptr.dtype in (np.int32, np.int64) and ptr.ndim == 1 and crd.ndim == 1
            and m.has_canonical_format):
        return Tensor.from_scipy(m, name=name)   # checks the dtypes, converts (sorts, sums duplicates)
    width = 32 if ptr.dtype == np.int32 else 64
    sc_fmt = as_format(fmt, 2).with_widths(width, width)
    t = Tensor.from_buffers(sc_fmt, tuple(m.shape), [{}, {"pos": ptr, "crd": crd}], arrays[2],
                            name=name, validate=True)
    small = ptr.shape[0] + crd.shape[0] <= _SNAPSHOT_MAX
    snapshot = (ptr.tobytes(), crd.tobytes()) if small else None
    key = id(m)

    def _dead(r: Any) -> None:
        # The matrix is gone: drop its view, which holds its arrays. (Runs from the garbage
        # collector, on any thread at any moment: no lock, only single dict operations.)
        entry = _VIEWS.get(key)
        if entry is not None and entry[0] is r:
            _VIEWS.pop(key, None)

    try:
        ref = weakref.ref(m, _dead)
    except TypeError:  # pragma: no cover - not weak-referenceable
        return t
    with _EINSUM_LOCK:
        for old in list(_VIEWS)[:max(0, len(_VIEWS) - _VIEWS_MAX + 1)]:
            _VIEWS.pop(old, None)
        _VIEWS[key] = (ref, arrays, t, snapshot)
    return t


def _view_indices_ok(snapshot: tuple | None, arrays: tuple, shape: tuple, fmt: str) -> bool:
    """Whether a cached view's index arrays may go to a kernel without validating them again.

    Small arrays: byte-for-byte what was validated. Large ones: what keeps every
    read in bounds -- ``indptr`` starts at 0, ends at ``len(indices)`` (no more than
    the values) and never decreases; every coordinate lies in ``[0, extent)``
    (one unsigned max: a negative coordinate reads as a huge one). About 0.15 ms
    per million stored entries (measured: 1M entries, 100k rows), against ~1.6 ms
    for a 1M-entry SpMV and ~4 ms for a full validation.
    """
    ptr, crd, data = arrays
    if snapshot is not None:
        return ptr.tobytes() == snapshot[0] and crd.tobytes() == snapshot[1]
    n = crd.shape[0]
    if ptr.shape[0] != shape[0 if fmt == "csr" else 1] + 1 or data.shape[0] < n or ptr.item(0) != 0 \
            or ptr.item(-1) != n:
        return False
    if ptr.shape[0] > 2 and np.less(ptr[1:], ptr[:-1]).any():
        return False
    extent = shape[1 if fmt == "csr" else 0]
    return n == 0 or int(np.maximum.reduce(crd.view(_UNSIGNED[crd.dtype]))) < extent


def _is_scipy_sparse(x: Any) -> bool:
    mod = type(x).__module__
    if not mod.startswith("scipy"):
        return False
    import scipy.sparse as sp

    return sp.issparse(x)
