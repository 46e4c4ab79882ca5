"""The uniform peer interface and how a peer's outcome becomes a status.

A peer is a small object:

* ``missing()`` -> ``None`` or why the library cannot be used (import error ...);
* ``supports(case)`` -> ``True`` or the reason it cannot run this kernel/dtype;
* ``prepare(case, ops)`` -> a zero-argument callable computing the result
  (format conversion and device upload happen here, untimed);
* ``to_host(result)`` -> numpy array or scipy sparse matrix, for the check;
* ``threads_ctx()`` -> context manager that sets its thread count;
* ``compile_seconds(case)`` -> explicit compile time, if the peer compiles.

Statuses: ``ok``; ``wrong`` (result off the float64 reference beyond the
dtype's bound: its time is not measured); ``failed`` (exception, reason kept);
``unsupported`` (the peer says it cannot, or raises "not implemented for
'Half'" and the like); ``missing`` (library not importable); ``skipped`` (the
harness chose not to run the case, e.g. SpGEMM over the size cap).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Callable

_UNSUPPORTED = re.compile(
    r"not implemented for|not supported|unsupported|does not support|no kernel image|"
    r"only supports|is not implemented|NotImplementedError|but got (Half|BFloat16)|not a supported|"
    r"only [\w ,]+ (are|is) supported", re.I)


class Unsupported(Exception):
    """Raised by prepare() when the data (not the kernel/dtype) is out of a peer's reach."""


class Skip(Exception):
    """Raised by prepare() when the harness chooses not to run a case on this peer (size caps)."""


def classify(exc: BaseException) -> tuple[str, str]:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, Skip):
        return "skipped", msg[:300]
    if isinstance(exc, Unsupported):
        return "unsupported", msg[:300]
    reason = f"{type(exc).__name__}: {msg}"[:300]
    if isinstance(exc, (Unsupported, NotImplementedError)) or _UNSUPPORTED.search(reason):
        return "unsupported", reason
    return "failed", reason


class Peer:
    name = "peer"
    device = "cpu"
    threads = 1
    note = ""           # how it is run, in a few words (goes into the CSV)

    threaded = False    # True when the peer is run at explicit thread counts (label shows them)
    rotate = True       # False: never prepare rotated input copies (the peer's own data dwarfs them)

    @property
    def label(self) -> str:
        return f"{self.name}[{self.threads}t]" if self.threaded else self.name

    def missing(self) -> str | None:
        return None

    def supports(self, case) -> bool | str:
        return True

    def prepare(self, case, ops) -> Callable[[], Any]:
        raise NotImplementedError

    def to_host(self, result: Any) -> Any:
        return result

    def threads_ctx(self):
        return contextlib.nullcontext()

    def compile_seconds(self, case) -> float | None:
        return None

    def version(self) -> str:
        return ""

    def sync(self) -> None:
        """Wait for queued device work (GPU peers)."""
