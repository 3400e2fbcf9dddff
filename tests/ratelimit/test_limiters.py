"""GCRA in process and in Valkey: same decisions, shared state, fallback when Redis dies."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from app.ratelimit import RateLimiter
from app.ratelimit.gcra import Limit, MemoryRateLimiter
from app.ratelimit.redis import RedisRateLimiter, ResilientRateLimiter
from tests.support.servers import free_port


def _key() -> str:
    return uuid.uuid4().hex


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    redis = RedisRateLimiter(request.getfixturevalue("redis_url"))
    yield redis
    await redis.aclose()


async def test_burst_then_refuse_with_retry_after(limiter: RateLimiter) -> None:
    key, limit = _key(), Limit(5, period=60)
    decisions = [await limiter.hit([key], [limit]) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    refused = decisions[-1]
    assert refused.headers()["Retry-After"] == "12"  # one slot frees every 60/5 s
    assert refused.headers()["X-RateLimit-Limit"] == "5"
    assert 59 <= refused.reset_after <= 60


async def test_refused_by_one_limit_consumes_neither(limiter: RateLimiter) -> None:
    key_a, key_b, tenant = _key(), _key(), _key()
    tight = [Limit(10), Limit(2)]
    assert (await limiter.hit([key_a, tenant], tight)).allowed
    assert (await limiter.hit([key_a, tenant], tight)).allowed
    refused = await limiter.hit([key_a, tenant], tight)
    assert not refused.allowed and refused.limit == 2
    # key_a's own limit was not charged for the refused request: 8 left, not 7.
    alone = await limiter.hit([key_a], [Limit(10)])
    assert alone.remaining == 7
    # Another key of the same tenant is held by the tenant limit too.
    assert not (await limiter.hit([key_b, tenant], tight)).allowed


async def test_slots_refill_over_time(limiter: RateLimiter) -> None:
    key, limit = _key(), Limit(2, period=0.4)
    assert (await limiter.hit([key], [limit])).allowed
    assert (await limiter.hit([key], [limit])).allowed
    assert not (await limiter.hit([key], [limit])).allowed
    await asyncio.sleep(0.25)
    assert (await limiter.hit([key], [limit])).allowed


async def test_two_replicas_share_one_redis_limit(redis_url: str) -> None:
    first, second = RedisRateLimiter(redis_url), RedisRateLimiter(redis_url)
    key, limit = _key(), Limit(4)
    try:
        results = [await (first if i % 2 else second).hit([key], [limit]) for i in range(6)]
    finally:
        await first.aclose()
        await second.aclose()
    assert [r.allowed for r in results] == [True] * 4 + [False] * 2


async def test_unreachable_redis_falls_back_to_memory_and_still_limits() -> None:
    dead = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0")
    limiter = ResilientRateLimiter(dead, MemoryRateLimiter())
    key, limit = _key(), Limit(3)
    try:
        results = [await limiter.hit([key], [limit]) for _ in range(4)]
    finally:
        await limiter.aclose()
    assert limiter.degraded
    assert [r.allowed for r in results] == [True, True, True, False]


async def test_peek_decides_like_a_hit_without_consuming(limiter: RateLimiter) -> None:
    key, limit = _key(), Limit(2, period=60)
    for _ in range(5):  # peeks never use up the budget
        assert (await limiter.peek([key], [limit])).allowed
    assert (await limiter.hit([key], [limit])).allowed
    assert (await limiter.hit([key], [limit])).allowed
    refused = await limiter.peek([key], [limit])
    assert not refused.allowed and refused.headers()["Retry-After"] == "30"
    assert not (await limiter.hit([key], [limit])).allowed
