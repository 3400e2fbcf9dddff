"""Concurrency caps shared through a real Valkey: two SharedSlots are two replicas."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from app.ratelimit.slots import DEFAULT_LEASE_SECONDS, SharedSemaphore, SharedSlots
from tests.support.servers import free_port


@pytest_asyncio.fixture
async def replicas(redis_url: str) -> AsyncIterator[Callable[..., SharedSlots]]:
    """A factory of SharedSlots on the test Valkey, each with its own client."""
    made: list[SharedSlots] = []

    def make(lease_seconds: float = DEFAULT_LEASE_SECONDS) -> SharedSlots:
        made.append(SharedSlots(redis_url, lease_seconds=lease_seconds))
        return made[-1]

    yield make
    for slots in made:
        await slots.aclose()


async def _hold_briefly(semaphore: SharedSemaphore, in_flight: list[int], peak: list[int]) -> None:
    await semaphore.acquire()
    try:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        await asyncio.sleep(0.02)
    finally:
        in_flight[0] -= 1
        semaphore.release()


async def test_many_acquirers_on_two_replicas_never_exceed_the_cap(
    replicas: Callable[..., SharedSlots],
) -> None:
    name, cap = f"test-{uuid.uuid4().hex}", 3
    first = replicas().semaphore(name, cap)
    second = replicas().semaphore(name, cap)
    in_flight, peak = [0], [0]

    async with asyncio.timeout(60):
        await asyncio.gather(
            *(_hold_briefly(s, in_flight, peak) for _ in range(15) for s in (first, second))
        )

    # Each process capping alone would let 2 x cap run at once.
    assert peak[0] == cap
    assert first.leases == second.leases == []


async def test_a_dead_replicas_leases_expire_and_a_live_ones_are_renewed(
    replicas: Callable[..., SharedSlots],
) -> None:
    name, cap = f"test-{uuid.uuid4().hex}", 2
    dead = replicas(lease_seconds=0.5)  # takes every slot, then never renews nor releases
    for _ in range(cap):
        await dead.semaphore(name, cap).acquire()
    live = replicas(lease_seconds=0.5)
    heartbeat = asyncio.create_task(live.heartbeat())
    try:
        held = live.semaphore(name, cap)
        async with asyncio.timeout(10):  # the dead replica's slots come back
            await held.acquire()
            await held.acquire()
        # The live replica keeps both slots for many lease times: nobody else gets one.
        other = replicas(lease_seconds=0.5).semaphore(name, cap)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2.0):
                await other.acquire()
        held.release()
        async with asyncio.timeout(10):
            await other.acquire()
    finally:
        heartbeat.cancel()


async def test_unreachable_redis_falls_back_to_the_per_process_cap() -> None:
    slots = SharedSlots(f"redis://127.0.0.1:{free_port()}/0")
    try:
        semaphore = slots.semaphore("unreachable", 2)
        async with asyncio.timeout(10):
            await semaphore.acquire()
            await semaphore.acquire()
        assert slots.status == "local (redis unavailable)"
        # The local cap still holds: a third waits until one is released.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await semaphore.acquire()
        semaphore.release()
        async with asyncio.timeout(10):
            await semaphore.acquire()
        assert semaphore.leases == []
    finally:
        await slots.aclose()
