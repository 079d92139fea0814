"""Calls from several streams to one model, gathered into batches and run one batch at a time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class BatchStats:
    """How the batcher grouped its calls."""

    calls: int = 0
    batches: int = 0
    largest: int = 0

    @property
    def mean_batch(self) -> float:
        return self.calls / self.batches if self.batches else 0.0


class Batcher(Generic[In, Out]):
    """Runs `fn(items) -> outputs` (one output per item, in order) on `executor`, one batch at a time.

    A call that arrives while a batch runs waits and goes into the next batch together with every other call
    that arrived meanwhile, up to `max_batch`: with one caller this is a plain call, with several streams the
    model sees their frames in one call. Only one batch runs at a time, so a model that is not reentrant is
    safe. A caller cancelled while its batch runs leaves the batch running; the others still get their
    results.
    """

    def __init__(
        self, fn: Callable[[list[In]], Sequence[Out]], executor: Executor, *, max_batch: int = 8
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.fn = fn
        self.executor = executor
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._waiting: list[tuple[In, asyncio.Future[Out]]] = []
        self._turn = asyncio.Lock()
        # Held on the worker thread for the whole model call: a batch whose leader was cancelled is still
        # running there, and the next one must not start beside it.
        self._model_lock = threading.Lock()

    async def __call__(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        try:
            while not future.done():
                async with self._turn:
                    if not future.done():
                        # Whoever holds the turn runs what waits, oldest first (its own item among them,
                        # unless more than max_batch wait: then it takes another turn).
                        batch = self._waiting[: self.max_batch]
                        del self._waiting[: self.max_batch]
                        await self._run(batch)
            return future.result()
        except asyncio.CancelledError:
            self._waiting[:] = [waiting for waiting in self._waiting if waiting[1] is not future]
            future.cancel()
            raise

    async def _run(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        self.stats.calls += len(batch)
        self.stats.batches += 1
        self.stats.largest = max(self.stats.largest, len(batch))
        items = [item for item, _ in batch]
        job = asyncio.get_running_loop().run_in_executor(self.executor, self._locked, items)
        job.add_done_callback(lambda done: _settle(batch, done))
        # Shielded: the batch belongs to every caller in it, not to the one that happened to start it.
        await asyncio.wait([job])

    def _locked(self, items: list[In]) -> Sequence[Out]:
        with self._model_lock:
            out = self.fn(items)
        if len(out) != len(items):
            raise RuntimeError(f"batched call returned {len(out)} results for {len(items)} items")
        return out


def _settle(batch: list[tuple[In, asyncio.Future[Out]]], done: asyncio.Future[Sequence[Out]]) -> None:
    error = done.exception() if not done.cancelled() else asyncio.CancelledError()
    for k, (_, future) in enumerate(batch):
        if future.done():
            continue  # its caller was cancelled
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(done.result()[k])
