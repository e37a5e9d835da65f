"""Run a stage's chunks in parallel: on a Dask cluster when params.yaml names one, else on a local process pool.

`Engine.imap(fn, tasks)` returns results in task order, with at most `window` tasks in flight, so a stage can
stream: it never holds more than a few chunks, whatever the number of records. Tasks must be pure functions of
their arguments (module-level, picklable); that is what makes the results identical on every engine. Workers on
other machines must see the same files at the same paths (a shared filesystem), see docs/operations.md.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

from atelier.config import EngineParams

T = TypeVar("T")
INLINE_HEAVY = 2  # heavy tasks run in the stage's own process before local workers are started


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter), without reading ahead."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class _Done:
    """A task run in this process, queued behind the workers' so that results keep their order."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class Engine:
    """A context manager; `describe()` says where the work ran, for the stage's log and summary."""

    def __init__(self, p: EngineParams):
        self.p = p
        # the team's cluster (ATELIER_DASK_SCHEDULER, atelier/team.py) wins over params: results do not depend on it
        self.scheduler = os.environ.get("ATELIER_DASK_SCHEDULER") or p.dask_scheduler
        self._pool: ProcessPoolExecutor | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._client = None

    def __enter__(self) -> Engine:
        if self.scheduler:
            from distributed import Client  # imported only when a cluster is configured

            try:
                self._client = Client(self.scheduler, timeout="30s", set_as_default=False)
            except OSError as exc:
                raise ConnectionError(
                    f"Dask scheduler {self.scheduler} (engine.dask_scheduler or ATELIER_DASK_SCHEDULER): cannot "
                    f"reach it ({exc}); start it, or unset both to run on local processes"
                ) from None
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    def describe(self) -> str:
        if self._client is not None:
            return f"dask {self.scheduler} ({len(self._client.scheduler_info()['workers'])} workers)"
        if self._pool is not None:
            return f"{self.p.workers} local processes"
        if self._threads is not None:
            return f"{self.p.workers} threads in this process"
        return "this process" + (" (too little work to start workers)" if self.p.workers > 1 else "")

    @property
    def window(self) -> int:
        if self._client is not None:
            return 2 * max(1, len(self._client.scheduler_info()["workers"]))
        return 2 * self.p.workers

    def _submit(self, fn, task):
        if self._client is not None:
            return self._client.submit(fn, *task, pure=False)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.p.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool.submit(fn, *task)

    def imap(
        self,
        fn: Callable[..., T],
        tasks: Iterable[tuple],
        light: Callable[[tuple], bool] = lambda t: False,
        threads: bool = False,
    ) -> Iterator[T]:
        """fn(*task) for each task, in order; a task's exception is raised here, in the stage.

        `light(task)` says a task has (almost) nothing to do, e.g. every record in it was done by the last run: it
        runs here, not on a worker. Local workers start only at the INLINE_HEAVY+1-th heavy task, so an incremental
        run with a few new records does not pay for starting processes.

        `threads=True`: without a Dask cluster, heavy tasks run on `workers` threads of this process instead of
        processes, for work that releases the GIL and would pay seconds of imports in each new process (torch).
        Only for functions that touch no process-wide state."""
        parallel = self._client is not None or self.p.workers > 1
        heavy_seen = 0
        pending: deque = deque()
        for task in tasks:
            if threads and parallel and self._client is None and not light(task):
                if self._threads is None:
                    self._threads = ThreadPoolExecutor(self.p.workers)
                pending.append(self._threads.submit(fn, *task))
                if len(pending) >= self.window:
                    yield pending.popleft().result()
                continue
            inline = (
                not parallel
                or light(task)
                or (self._client is None and self._pool is None and heavy_seen < INLINE_HEAVY)
            )
            heavy_seen += not light(task)
            pending.append(_Done(fn(*task)) if inline else self._submit(fn, task))
            if len(pending) >= self.window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
