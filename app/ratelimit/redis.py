"""GCRA in Redis/Valkey: one Lua script checks and updates every key atomically, on the
server's clock, so all replicas share one limit. Falls back to the in-process limiter
while Redis is unreachable (never failing open, never refusing all traffic)."""

from __future__ import annotations

import logging
import time

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from app.ratelimit.gcra import Decision, Limit, MemoryRateLimiter, decide

log = logging.getLogger(__name__)

# KEYS: one per limit. ARGV: commit (1: a hit, 0: a peek), then interval_us, period_us
# per key. Returns {allowed, retry_after_us, now_us, tat_us...}; TATs are written only if
# allowed and committing.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local allowed = 1
local retry = 0
local old = {}
local new = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local period = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  old[i] = tat
  new[i] = tat + interval
  local allow_at = new[i] - period
  if allow_at > now then
    allowed = 0
    if allow_at - now > retry then retry = allow_at - now end
  end
end
if allowed == 0 then new = old end
local out = {allowed, string.format('%.0f', retry), string.format('%.0f', now)}
for i = 1, #KEYS do
  if allowed == 1 and ARGV[1] == '1' then
    local ttl_ms = math.ceil((new[i] - now) / 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%.0f', new[i]), 'PX', ttl_ms)
  end
  out[#out + 1] = string.format('%.0f', new[i])
end
return out
"""

_US = 1_000_000


class RedisRateLimiter:
    def __init__(self, url: str, *, prefix: str = "imagegate:rl:") -> None:
        # Short timeouts: a slow Redis must not stall requests; we fall back instead.
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=0.25, socket_connect_timeout=0.25, retry_on_timeout=False
        )
        self._script = self._redis.register_script(_SCRIPT)
        self._prefix = prefix

    async def hit(self, keys: list[str], limits: list[Limit]) -> Decision:
        return await self._run(keys, limits, commit=True)

    async def peek(self, keys: list[str], limits: list[Limit]) -> Decision:
        """Would a hit be allowed now? Changes nothing."""
        return await self._run(keys, limits, commit=False)

    async def _run(self, keys: list[str], limits: list[Limit], *, commit: bool) -> Decision:
        args: list[int] = [1 if commit else 0]
        for limit in limits:
            args += [round(limit.interval * _US), round(limit.period * _US)]
        reply = await self._script(keys=[self._prefix + k for k in keys], args=args)
        allowed, retry_us, now_us, *tats_us = (int(value) for value in reply)
        now = now_us / _US
        return decide(bool(allowed), retry_us / _US, [t / _US for t in tats_us], limits, now)

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def aclose(self) -> None:
        await self._redis.aclose()


class ResilientRateLimiter:
    """Redis first; the in-process limiter while Redis is down, probing it again shortly."""

    def __init__(
        self, redis: RedisRateLimiter, fallback: MemoryRateLimiter, probe_every: float = 5.0
    ) -> None:
        self._redis = redis
        self._fallback = fallback
        self._probe_every = probe_every
        self._next_probe = 0.0
        self.degraded = False

    async def hit(self, keys: list[str], limits: list[Limit]) -> Decision:
        return await self._decide(keys, limits, commit=True)

    async def peek(self, keys: list[str], limits: list[Limit]) -> Decision:
        return await self._decide(keys, limits, commit=False)

    async def _decide(self, keys: list[str], limits: list[Limit], *, commit: bool) -> Decision:
        fallback = self._fallback.hit if commit else self._fallback.peek
        if self.degraded and time.monotonic() < self._next_probe:
            return await fallback(keys, limits)
        try:
            decision = await (self._redis.hit if commit else self._redis.peek)(keys, limits)
        except (RedisError, OSError) as exc:
            if not self.degraded:
                log.warning(
                    "Redis rate limiter unreachable; using the in-process limiter",
                    extra={"error": type(exc).__name__},
                )
            self.degraded = True
            self._next_probe = time.monotonic() + self._probe_every
            return await fallback(keys, limits)
        if self.degraded:
            log.warning("Redis rate limiter reachable again")
            self.degraded = False
        return decision

    async def ping(self) -> bool:
        return await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()
