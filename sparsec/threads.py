"""A minimal persistent thread team for running kernel chunks in parallel.

Compiled kernels release the GIL while they run (ctypes), so Python threads give
real parallelism. What costs is waking them: ``ThreadPoolExecutor.map`` takes
about 95 µs for two chunks on the CI machines, more than a sub-millisecond SpMV
gains from a second core. Here each worker sleeps on its own lock; the caller
releases it (a few µs), runs the first chunk itself, then waits for the others.

One call uses the team at a time; a concurrent caller (another Python thread
running a kernel) does not wait for it but runs its chunks one after another on
its own thread, which gives the same result.

A forked child starts with no workers (the parent's threads do not exist in it) and an
unlocked team, so the pre-fork server pattern (warm up, then fork workers) works.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Sequence

Task = Callable[[], None]


class _Worker(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True, name="sparsec-worker")
        self.go = threading.Lock()
        self.go.acquire()
        self.done = threading.Lock()
        self.done.acquire()
        self.task: Task | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        while True:
            self.go.acquire()
            try:
                if self.task is not None:
                    self.task()
            except BaseException as e:  # handed back to the caller
                self.error = e
            finally:
                self.task = None
                self.done.release()


class Team:
    """Persistent workers; :meth:`run` executes tasks in parallel and returns when all are done."""

    def __init__(self) -> None:
        self._workers: list[_Worker] = []
        self._busy = threading.Lock()

    def forget_workers(self) -> None:
        """Drop the workers and the busy lock (after ``fork``: the child has none of the parent's threads;
        waiting for one would hang the call forever)."""
        self._workers = []
        self._busy = threading.Lock()

    def run(self, tasks: Sequence[Task]) -> None:
        """Run every task; the calling thread runs the first. Exceptions propagate (the first one)."""
        if len(tasks) <= 1 or not self._busy.acquire(blocking=False):
            for t in tasks:
                t()
            return
        try:
            while len(self._workers) < len(tasks) - 1:
                self._workers.append(_Worker())
            used = self._workers[: len(tasks) - 1]
            for w, t in zip(used, tasks[1:]):
                w.task, w.error = t, None
                w.go.release()
            first_error: BaseException | None = None
            try:
                tasks[0]()
            except BaseException as e:
                first_error = e
            for w in used:
                w.done.acquire()
                if w.error is not None and first_error is None:
                    first_error = w.error
            if first_error is not None:
                raise first_error
        finally:
            self._busy.release()


TEAM = Team()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=TEAM.forget_workers)
