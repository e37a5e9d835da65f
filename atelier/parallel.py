"""Run a stage's chunks in parallel: on a Dask cluster when params.yaml names one, else on a local process pool.

`Engine.imap(fn, tasks)` returns results in task order, with at most `window` tasks in flight, so a stage can
stream: it never holds more than a few chunks, whatever the number of records. Tasks must be pure functions of
their arguments (module-level, picklable); that is what makes the results identical on every engine. Workers on
other machines must see the same files at the same paths (a shared filesystem), see README "Scaling out".
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from typing import TypeVar

from atelier.config import EngineParams

T = TypeVar("T")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter), without reading ahead."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class Engine:
    """A context manager; `describe()` says where the work ran, for the stage's log and summary."""

    def __init__(self, p: EngineParams):
        self.p = p
        self._pool: ProcessPoolExecutor | None = None
        self._client = None

    def __enter__(self) -> "Engine":
        if self.p.dask_scheduler:
            from distributed import Client  # imported only when a cluster is configured
            try:
                self._client = Client(self.p.dask_scheduler, timeout="30s", set_as_default=False)
            except OSError as exc:
                raise ConnectionError(f"engine.dask_scheduler={self.p.dask_scheduler}: cannot reach the Dask "
                                      f"scheduler ({exc}); start it, or set engine.dask_scheduler: null to run "
                                      "on local processes") from None
        elif self.p.workers > 1:
            self._pool = ProcessPoolExecutor(self.p.workers, mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    def describe(self) -> str:
        if self._client is not None:
            return f"dask {self.p.dask_scheduler} ({len(self._client.scheduler_info()['workers'])} workers)"
        return f"{self.p.workers} local process(es)" if self._pool is not None else "in process"

    @property
    def window(self) -> int:
        if self._client is not None:
            return 2 * max(1, len(self._client.scheduler_info()["workers"]))
        return 2 * self.p.workers

    def imap(self, fn: Callable[..., T], tasks: Iterable[tuple]) -> Iterator[T]:
        """fn(*task) for each task, in order; a task's exception is raised here, in the stage."""
        if self._pool is None and self._client is None:
            for task in tasks:
                yield fn(*task)
            return
        submit = (self._pool.submit if self._pool is not None
                  else lambda f, *a: self._client.submit(f, *a, pure=False))
        pending: deque = deque()
        for task in tasks:
            pending.append(submit(fn, *task))
            if len(pending) >= self.window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
