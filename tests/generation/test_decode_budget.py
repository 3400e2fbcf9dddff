"""The decode budget's accounting: never more pixels held than its capacity, under load,
cancellation and timeouts; pixels return only when the decoding thread is really done."""

from __future__ import annotations

import asyncio
import functools
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.generation.decode_budget import DecodeBudget, DecodeBusy

CAPACITY = 100


class Holdings:
    """What the worker threads hold at once, seen from inside the threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0
        self.runs = 0
        self.started = threading.Event()

    def work(self, cost: int, release: threading.Event | None = None) -> int:
        with self._lock:
            self.current += cost
            self.peak = max(self.peak, self.current)
            self.runs += 1
        self.started.set()
        try:
            if release is not None:
                release.wait(10)
            else:
                threading.Event().wait(random.uniform(0, 0.004))
        finally:
            with self._lock:
                self.current -= cost
        return cost


async def test_concurrent_work_never_holds_more_than_the_capacity() -> None:
    budget = DecodeBudget(CAPACITY)
    held = Holdings()
    rng = random.Random(11)
    costs = [rng.randint(1, CAPACITY) for _ in range(300)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = await asyncio.gather(
            *(
                budget.run(cost, functools.partial(held.work, cost), wait_seconds=30, executor=pool)
                for cost in costs
            )
        )
    assert results == costs
    assert held.runs == len(costs)
    assert 0 < held.peak <= CAPACITY
    # Enough parallelism happened for the bound to mean something.
    assert held.peak > max(costs) // 2
    assert budget.available == CAPACITY
    assert budget.waiting == 0


async def test_a_cancelled_caller_returns_pixels_only_when_its_thread_ends() -> None:
    budget = DecodeBudget(CAPACITY)
    held = Holdings()
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=2) as pool:
        task = asyncio.create_task(
            budget.run(80, lambda: held.work(80, release), wait_seconds=5, executor=pool)
        )
        assert await asyncio.to_thread(held.started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The thread still holds its decoded image: the budget must still count it.
        assert budget.available == CAPACITY - 80
        waiter = asyncio.create_task(
            budget.run(50, lambda: held.work(50), wait_seconds=5, executor=pool)
        )
        await asyncio.sleep(0.05)
        assert not waiter.done()
        assert held.peak == 80
        release.set()
        assert await waiter == 50
    assert held.peak == 80
    assert budget.available == CAPACITY


async def test_a_wait_that_runs_out_is_decode_busy_and_leaves_no_trace() -> None:
    budget = DecodeBudget(CAPACITY)
    held = Holdings()
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=2) as pool:
        blocker = asyncio.create_task(
            budget.run(70, lambda: held.work(70, release), wait_seconds=5, executor=pool)
        )
        assert await asyncio.to_thread(held.started.wait, 5)
        with pytest.raises(DecodeBusy) as info:
            await budget.run(40, lambda: held.work(40), wait_seconds=0.05, executor=pool)
        assert info.value.status_code == 503
        assert "Retry-After" in info.value.headers
        assert budget.waiting == 0
        release.set()
        await blocker
    assert budget.available == CAPACITY
    assert held.runs == 1


async def test_a_big_waiter_is_not_starved_by_small_ones() -> None:
    budget = DecodeBudget(CAPACITY)
    order: list[str] = []
    release = threading.Event()
    started = threading.Event()
    with ThreadPoolExecutor(max_workers=8) as pool:

        def step(name: str, event: threading.Event | None = None) -> None:
            order.append(name)
            started.set()
            if event is not None:
                event.wait(10)

        first = asyncio.create_task(
            budget.run(60, lambda: step("small-0", release), wait_seconds=5, executor=pool)
        )
        assert await asyncio.to_thread(started.wait, 5)
        big = asyncio.create_task(
            budget.run(90, lambda: step("big"), wait_seconds=5, executor=pool)
        )
        await asyncio.sleep(0.01)
        # 40 pixels are free, enough for these, but the big one queued first.
        smalls = [
            asyncio.create_task(
                budget.run(20, functools.partial(step, f"small-{i}"), wait_seconds=5, executor=pool)
            )
            for i in (1, 2)
        ]
        await asyncio.sleep(0.05)
        assert order == ["small-0"]
        release.set()
        await asyncio.gather(first, big, *smalls)
    assert order[:2] == ["small-0", "big"]
    assert budget.available == CAPACITY


async def test_a_timed_out_big_waiter_lets_the_smaller_ones_behind_it_run() -> None:
    budget = DecodeBudget(CAPACITY)
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=4) as pool:
        blocker = asyncio.create_task(
            budget.run(60, lambda: release.wait(10), wait_seconds=5, executor=pool)
        )
        await asyncio.sleep(0.01)
        big = asyncio.create_task(budget.run(90, lambda: None, wait_seconds=0.05, executor=pool))
        small = asyncio.create_task(budget.run(30, lambda: "ran", wait_seconds=5, executor=pool))
        with pytest.raises(DecodeBusy):
            await big
        # The big one left the head of the queue: the small one fits beside the blocker.
        assert await asyncio.wait_for(small, 5) == "ran"
        release.set()
        await blocker
    assert budget.available == CAPACITY


async def test_an_error_in_the_thread_reaches_the_caller_and_returns_the_pixels() -> None:
    budget = DecodeBudget(CAPACITY)

    def broken() -> None:
        raise OSError("corrupt pixel data")

    with pytest.raises(OSError, match="corrupt"):
        await budget.run(CAPACITY, broken, wait_seconds=1)
    assert budget.available == CAPACITY


async def test_work_larger_than_the_whole_budget_is_refused() -> None:
    budget = DecodeBudget(CAPACITY)
    assert budget.fits(CAPACITY)
    assert not budget.fits(CAPACITY + 1)
    with pytest.raises(ValueError, match="exceeds the whole budget"):
        await budget.run(CAPACITY + 1, lambda: None, wait_seconds=1)
    assert budget.available == CAPACITY
