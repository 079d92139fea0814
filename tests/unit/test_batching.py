"""The cross-stream batcher: calls made while a batch runs share the next one; errors and cancellation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from txd.batching import Batcher


class Model:
    """Doubles numbers; the first call can be held on its worker thread until released."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.calls.append(list(items))
        self.entered.set()
        self.release.wait(timeout=10)
        if any(i < 0 for i in items):
            with self._lock:
                self.running -= 1
            raise ValueError("negative input")
        with self._lock:
            self.running -= 1
        return [2 * i for i in items]


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


async def _hold_first(model: Model, batcher: Batcher[int, int], first: int) -> asyncio.Task[int]:
    """Start a call that blocks inside the model until `model.release` is set."""
    task = asyncio.create_task(batcher(first))
    await asyncio.to_thread(model.entered.wait, 10)
    return task


@pytest.mark.asyncio
async def test_one_caller_makes_plain_calls(executor: ThreadPoolExecutor) -> None:
    model = Model()
    model.release.set()
    batcher = Batcher(model, executor)
    assert [await batcher(i) for i in range(3)] == [0, 2, 4]
    assert model.calls == [[0], [1], [2]]
    assert batcher.stats.batches == 3 and batcher.stats.largest == 1


@pytest.mark.asyncio
async def test_calls_arriving_during_a_batch_share_the_next_one(executor: ThreadPoolExecutor) -> None:
    model = Model()
    batcher = Batcher(model, executor, max_batch=3)
    first = await _hold_first(model, batcher, 1)
    waiting = [asyncio.create_task(batcher(i)) for i in (2, 3, 4, 5)]
    await asyncio.sleep(0)  # let them queue (ordering only; nothing waits on time)
    model.release.set()
    assert await first == 2
    assert [await t for t in waiting] == [4, 6, 8, 10]
    # The held call alone, then the four that came meanwhile, at most three at a time, oldest first.
    assert model.calls == [[1], [2, 3, 4], [5]]
    assert batcher.stats.largest == 3 and batcher.stats.calls == 5
    assert model.most_running == 1  # one batch at a time, although the executor has four workers


@pytest.mark.asyncio
async def test_an_error_reaches_every_caller_of_its_batch(executor: ThreadPoolExecutor) -> None:
    model = Model()
    batcher = Batcher(model, executor)
    first = await _hold_first(model, batcher, 1)
    bad = [asyncio.create_task(batcher(i)) for i in (2, -1)]
    await asyncio.sleep(0)
    model.release.set()
    assert await first == 2
    for task in bad:
        with pytest.raises(ValueError, match="negative"):
            await task
    assert await batcher(3) == 6  # the batcher keeps working


@pytest.mark.asyncio
async def test_a_cancelled_caller_leaves_the_others_their_results(executor: ThreadPoolExecutor) -> None:
    model = Model()
    batcher = Batcher(model, executor)
    first = await _hold_first(model, batcher, 1)  # `first` leads the running batch
    queued = [asyncio.create_task(batcher(i)) for i in (2, 3)]
    await asyncio.sleep(0)
    first.cancel()
    queued[0].cancel()  # waiting for its turn: taken out of the queue
    model.release.set()
    assert await queued[1] == 6
    with pytest.raises(asyncio.CancelledError):
        await first
    assert [2] not in model.calls and [2, 3] not in model.calls
    assert model.most_running == 1
