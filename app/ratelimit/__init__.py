"""Rate limiting after authentication, per API key and per tenant."""

from __future__ import annotations

from typing import Protocol

from app.ratelimit.gcra import Decision, Limit, MemoryRateLimiter
from app.ratelimit.redis import RedisRateLimiter, ResilientRateLimiter
from app.settings import Settings

__all__ = ["Decision", "Limit", "RateLimiter", "create_rate_limiter", "describe"]


class RateLimiter(Protocol):
    async def hit(self, keys: list[str], limits: list[Limit]) -> Decision: ...

    async def peek(self, keys: list[str], limits: list[Limit]) -> Decision: ...

    async def aclose(self) -> None: ...


def create_rate_limiter(settings: Settings) -> RateLimiter:
    if settings.redis_url:
        return ResilientRateLimiter(RedisRateLimiter(settings.redis_url), MemoryRateLimiter())
    return MemoryRateLimiter()


def describe(limiter: RateLimiter) -> str:
    """For health output: which backend is deciding right now."""
    if isinstance(limiter, ResilientRateLimiter):
        return "memory (redis unreachable)" if limiter.degraded else "redis"
    return "memory"
