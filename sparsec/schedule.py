"""Schedules: *how* a kernel runs, kept apart from *what* it computes (as in TACO).

A :class:`Schedule` is an immutable list of commands built by chaining::

    s = sc.Schedule().reorder("i", "k", "j").split("i", 64).parallelize("i_o").vectorize("j", 8)
    k = sc.compile("C[i,j] = A[i,k] * B[k,j]", formats={"A": "csr"}, schedule=s)
    print(k.dump("loops"))           # the loop IR shows every command's effect

Commands name loops by their index variable (``i``; ``i_blk``/``i_in`` for blocked
dimensions; the names a ``split`` or ``fuse`` created). Each is applied where it fits
and checked for legality; an illegal command raises :class:`sparsec.ScheduleError`
saying why:

* ``reorder(*vars)`` -- the loop order (tensor level). It must respect every sparse
  operand's level order (a CSR operand's rows before its columns).
* ``parallelize(var, unit="threads"|"grid"|"none", reduction=None|"atomic"|"private")``
  -- run the outermost loop ``var`` in parallel (CPU threads; GPU program ids: the
  backend maps it). When its iterations may update the same output (``var`` is a
  reduction variable, as in CSC SpMV), a ``reduction`` is required: ``atomic``
  (atomic updates; float sums lose bitwise determinism) or ``private`` (CPU: each
  chunk accumulates into its own copy of the output, the copies combined in chunk
  order by the statement's reduction, sum, max or min; GPU programs combine with
  atomics instead). A loop over output coordinates writes disjoint entries and
  takes no copies.
* ``pos(var, tensor, segment=None)`` -- split the parallel work by the nonzeros of
  ``tensor``'s level below ``var`` instead of by iterations (CPU: chunks of equal
  nonzeros; GPU: rows cut into segments of at most ``segment`` positions, each
  segment's partial sums added atomically).
* ``split(var, factor, outer=None, inner=None)`` -- strip-mine a ``for`` loop (dense
  or over positions) into ``var_o``/``var_i``; a parallel loop stays parallel over
  its blocks.
* ``fuse(outer, inner, name=None)`` -- merge two perfectly nested dense loops.
* ``skip_zeros(tensor)`` -- Triton: terms whose factor from the dense input ``tensor`` is
  zero at run time are skipped (their other operands' entries are not loaded), as for the
  absent entries of a sparse operand (activation sparsity; see :meth:`Schedule.skip_zeros`).
* ``workspace(var, kind)`` -- a sparse output whose rows are accumulated in a workspace
  along ``var`` (SpGEMM's ``j``): ``"auto"`` (default: per row, a hash table when it is
  much smaller than the dense row), ``"dense"`` (the dense row of n entries) or ``"hash"``
  (a hash table sized from the row's output count). See :meth:`Schedule.workspace`.
* ``vectorize(var, width)`` -- CPU: LLVM vectorization width (1 disables it);
  ``unroll(var, factor)`` -- CPU: unroll count; ``block(var, size)`` -- Triton: the
  tile size of the block dimension that loop became (``BLOCK_N``, ``BLOCK_K``, ...).

``schedule="auto"`` picks among compiled variants at call time from cheap statistics
of the operands (see :mod:`sparsec.autotune`), and :func:`sparsec.autotune` times
candidate schedules on example operands and remembers the fastest on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ScheduleError
from .ir.tensor_ir import check_identifier
from .levels.base import MAX_FACTOR

_UNITS = ("threads", "grid", "none")
_REDUCTIONS = (None, "atomic", "private")


@dataclass(frozen=True)
class Command:
    """One scheduling command: an operation name and its arguments."""

    op: str
    args: tuple

    def __str__(self) -> str:
        return f"{self.op}({', '.join(str(a) for a in self.args if a is not None)})"


def _var(name: Any, what: str = "loop variable") -> str:
    if not isinstance(name, str):
        raise ScheduleError(f"{what} must be a string, got {type(name).__name__}")
    try:
        return check_identifier(name, what)
    except Exception as e:
        raise ScheduleError(str(e)) from None


#: upper bounds of the other integer arguments (factors: MAX_FACTOR): LLVM unrolls a count's copies at
#: compile time; a Triton tile holds at most 2**20 elements
MAX_UNROLL = 64
MAX_VECTOR = 64
MAX_BLOCK = 4096


def _positive(n: Any, what: str, limit: int = MAX_FACTOR) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ScheduleError(f"{what} must be a positive integer, got {n!r}")
    if n > limit:
        raise ScheduleError(f"{what} must be at most {limit}, got {n}")
    return n


@dataclass(frozen=True)
class Schedule:
    """An immutable sequence of scheduling commands (see the module docs)."""

    commands: tuple[Command, ...] = field(default_factory=tuple)

    def _add(self, op: str, *args: Any) -> "Schedule":
        return Schedule(self.commands + (Command(op, tuple(args)),))

    def reorder(self, *vars: str) -> "Schedule":
        """Loop order (outermost first) of the statement's loop variables."""
        if not vars:
            raise ScheduleError("reorder needs at least one loop variable")
        vs = tuple(_var(v) for v in vars)
        if len(set(vs)) != len(vs):
            raise ScheduleError(f"reorder{vs} repeats a variable")
        return self._add("reorder", *vs)

    def parallelize(self, var: str, unit: str = "threads", reduction: str | None = None) -> "Schedule":
        """Run the outermost loop ``var`` in parallel (or serially with ``unit="none"``)."""
        if unit not in _UNITS:
            raise ScheduleError(f"parallelize unit must be one of {_UNITS}, got {unit!r}")
        if reduction not in _REDUCTIONS:
            raise ScheduleError(f"parallelize reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        return self._add("parallelize", _var(var), unit, reduction)

    def pos(self, var: str, tensor: str, segment: int | None = None) -> "Schedule":
        """Balance the parallel loop ``var`` by the nonzeros of ``tensor`` (GPU: rows cut into segments)."""
        seg = None if segment is None else _positive(segment, "segment")
        return self._add("pos", _var(var), _var(tensor, "tensor name"), seg)

    def split(self, var: str, factor: int, outer: str | None = None, inner: str | None = None) -> "Schedule":
        """Strip-mine loop ``var`` by ``factor`` into ``outer`` (default var_o) and ``inner`` (var_i)."""
        v = _var(var)
        o = _var(outer) if outer is not None else f"{v}_o"
        i = _var(inner) if inner is not None else f"{v}_i"
        if o == i:
            raise ScheduleError(f"split of {v!r}: the outer and inner loops need different names")
        return self._add("split", v, _positive(factor, "split factor"), o, i)

    def fuse(self, outer: str, inner: str, name: str | None = None) -> "Schedule":
        """Merge two perfectly nested dense loops into one named ``name`` (default outer_inner)."""
        o, i = _var(outer), _var(inner)
        return self._add("fuse", o, i, _var(name) if name is not None else f"{o}_{i}")

    def workspace(self, var: str, kind: str = "auto", touch: str = "select") -> "Schedule":
        """How a sparse output's rows accumulate along ``var`` (the workspace variable: SpGEMM's ``j``).

        ``"dense"``: in a dense row of n (the column count) values and marks; ``"hash"``: in a
        hash table of T slots, T the least power of two >= 2 * the row's output count (known
        from the symbolic pass); ``"auto"``: per row, the hash table when the dense row is large
        (n * (value bytes + 1) >= :data:`sparsec.passes.sparsify.HASH_MIN_BYTES`) and ``T *
        HASH_RATIO <= n`` (:data:`sparsec.passes.sparsify.HASH_RATIO`), the dense row otherwise. The symbolic
        (counting) kernel always uses the dense marks. A statement without such a workspace
        raises :class:`ScheduleError`.

        ``touch``: how a term finds out whether its column is new to the row (dense marks, in the
        symbolic and the numeric kernel). ``"select"`` (the default, also without a schedule): always
        append the column to the row's list and set its mark, and advance the list by ``1 - mark``,
        with no branch. ``"branch"``: test the mark, and only for a new column set it and append.
        Which is faster depends on the matrix: on a 2-core Xeon over 13 matrices (SpGEMM ``A @ A``,
        benchmarks/results/cpu-2core-spgemm-touch), ``"select"`` was 1.18x faster in geometric mean,
        up to 1.6x on graphs and meshes (whether a column is new is a coin toss there, so the branch
        mispredicts), and up to 1.5x slower on matrices whose rows repeat regular column patterns
        (bcsstk13, memplus). ``sc.autotune`` tries both. Under max/min reductions the numeric kernel
        keeps the branch (a new column also resets its value there).
        """
        from .passes.sparsify import WORKSPACE_KINDS, WORKSPACE_TOUCH

        if kind not in WORKSPACE_KINDS:
            raise ScheduleError(f"workspace kind must be one of {WORKSPACE_KINDS}, got {kind!r}")
        if touch not in WORKSPACE_TOUCH:
            raise ScheduleError(f"workspace touch must be one of {WORKSPACE_TOUCH}, got {touch!r}")
        return self._add("workspace", _var(var), kind, touch)

    def vectorize(self, var: str, width: int) -> "Schedule":
        """CPU vectorization width of loop ``var`` (1: scalar)."""
        return self._add("vectorize", _var(var), _positive(width, "vector width", MAX_VECTOR))

    def unroll(self, var: str, factor: int) -> "Schedule":
        """CPU unroll count of loop ``var`` (at most 64)."""
        return self._add("unroll", _var(var), _positive(factor, "unroll factor", MAX_UNROLL))

    def block(self, var: str, size: int) -> "Schedule":
        """Triton: tile size of the block dimension loop ``var`` became (a power of two, at most 4096)."""
        n = _positive(size, "block size", MAX_BLOCK)
        if n & (n - 1):
            raise ScheduleError(f"block size must be a power of two, got {n}")
        return self._add("block", _var(var), n)

    def skip_zeros(self, tensor: str) -> "Schedule":
        """Triton: skip the terms whose factor from the dense input ``tensor`` is zero at run time.

        For activation sparsity (``y = W x`` with ``x`` thresholded): the kernel tests
        ``tensor``'s entries and does not load the entries of the other operands they
        multiply, so it reads only the weight rows of the nonzero inputs. ``tensor`` must be
        a dense input and a factor of the statement's product (``sum`` of a product), or
        gated by one (``where(cond, X[r,k], 0)``: that factor is zero where ``X`` is and where
        ``cond`` fails). The result is that of the unscheduled kernel except where a skipped
        term's other factor is Inf or NaN (``0 * inf`` is not formed): the rule sparse operands
        follow for their absent entries. The Triton backend skips them in a product of two
        dense matrices (``Y[r,i] = X[r,k] * Wt[k,i]``, its zero-skipping tile template), also
        with the activations thresholded in the kernel (``Y[r,i] = where(abs(X[r,k]) > t,
        X[r,k], 0) * Wt[k,i]``, ``t`` a 0-d operand or a number: entries failing the threshold
        are skipped like zeros); other kernels, and the CPU backend, compute every term.
        """
        return self._add("skip_zeros", _var(tensor, "tensor name"))

    def of(self, op: str) -> list[Command]:
        """The commands with operation ``op``, in order."""
        return [c for c in self.commands if c.op == op]

    def __str__(self) -> str:
        return ".".join(str(c) for c in self.commands) or "(default)"

    def __bool__(self) -> bool:
        return bool(self.commands)


def as_schedule(schedule: Any) -> Schedule | None:
    """None / "default" -> None; a Schedule as is; "auto" is handled by the caller."""
    if schedule is None or schedule == "default":
        return None
    if isinstance(schedule, Schedule):
        return schedule if schedule.commands else None
    raise ScheduleError(f"schedule must be a sparsec.Schedule, 'auto' or None, got {schedule!r}")
