"""A micro-batcher: requests that arrive within a few milliseconds share one forward pass.

`graph.batch(..., config={"max_concurrency": K})` runs K graph invocations in threads; each
model call lands here. The first caller to arrive becomes the leader: it waits `wait_seconds` for
company, runs up to `max_batch_size` requests as one batch, and keeps draining the queue until it
is empty; the other callers block until their own result is ready. No background thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


@dataclass
class MicroBatcher(Generic[Request, Result]):
    """Groups concurrent `submit` calls with the same `key` into calls of `run_batch`."""

    run_batch: Callable[[Sequence[Request]], Sequence[Result]]
    max_batch_size: int = 8
    wait_seconds: float = 0.005
    _pending: list[tuple[Hashable, Request, Future[Result]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _leading: bool = False
    batch_sizes: list[int] = field(default_factory=list)
    """The size of every batch run so far (for tests and benchmarks)."""

    def submit(self, request: Request, key: Hashable = None) -> Result:
        """Run `request` in some batch of requests with the same `key`; blocks for its result."""
        future: Future[Result] = Future()
        with self._lock:
            self._pending.append((key, request, future))
            lead = not self._leading
            self._leading = self._leading or lead
        if lead:
            self._lead()
        return future.result()

    def _lead(self) -> None:
        time.sleep(self.wait_seconds)
        while True:
            with self._lock:
                batch = self._take_batch()
                if not batch:
                    self._leading = False
                    return
            self._run(batch)

    def _take_batch(self) -> list[tuple[Request, Future[Result]]]:
        """The oldest request and up to `max_batch_size - 1` later ones with its key."""
        if not self._pending:
            return []
        key = self._pending[0][0]
        chosen = [item for item in self._pending if item[0] == key][: self.max_batch_size]
        for item in chosen:
            self._pending.remove(item)
        return [(request, future) for _, request, future in chosen]

    def _run(self, batch: list[tuple[Request, Future[Result]]]) -> None:
        self.batch_sizes.append(len(batch))
        try:
            results = self.run_batch([request for request, _ in batch])
        except BaseException as error:  # every waiter gets the failure, the leader carries on
            for _, future in batch:
                future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
