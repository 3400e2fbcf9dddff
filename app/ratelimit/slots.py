"""Counting semaphores shared by every replica: slots are leases in Redis/Valkey.

One sorted set per cap (`imagegate:sem:<name>`): member = lease id, score = when the lease
expires (server clock, ms). Taking a slot is one Lua script that drops expired leases,
then adds one if fewer than the cap remain. A process renews the leases it holds every
third of the lease time (one heartbeat task per process), so a long upstream call keeps
its slot; a killed replica stops renewing and its slots come back when its leases expire.
Waiting polls with jittered backoff; the caller bounds the wait (its deadline).

While Redis does not answer (connection error or timeout), each semaphore falls back to
its in-process cap, probing Redis again every few seconds; `SharedSlots.status` says which.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable
from typing import Literal

from redis import asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# KEYS[1]: the cap's sorted set. ARGV: cap, lease id, lease ms. Returns 1 if taken.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  return 1
end
return 0
"""
# KEYS[1]: the cap's sorted set. ARGV: lease ms, then the lease ids to renew; a lease
# that already expired (and may have been dropped) is not brought back.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) > now then
    redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 0
"""

DEFAULT_LEASE_SECONDS = 15.0
# Polling for a free slot: the first pause, and the longest.
_FIRST_POLL = 0.01
_MAX_POLL = 0.25

Status = Literal["shared", "local (redis unavailable)"]


class SharedSlots:
    """One per process: the Redis client, the lease heartbeat and whether Redis answers."""

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        probe_every: float = 5.0,
        prefix: str = "imagegate:sem:",
    ) -> None:
        # Short timeouts: a slow Redis must not stall upstream calls; we fall back instead.
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, retry_on_timeout=False
        )
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self._probe_every = probe_every
        self._prefix = prefix
        self._semaphores: list[SharedSemaphore] = []
        self._pending: set[asyncio.Future[object]] = set()
        self._next_probe = 0.0
        self.degraded = False

    @property
    def lease_seconds(self) -> float:
        return self._lease_ms / 1000

    @property
    def status(self) -> Status:
        return "local (redis unavailable)" if self.degraded else "shared"

    def semaphore(self, name: str, cap: int) -> SharedSemaphore:
        """The cap `name` (e.g. a model id), `cap` slots across every replica."""
        semaphore = SharedSemaphore(self, self._prefix + name, cap)
        self._semaphores.append(semaphore)
        return semaphore

    def use_redis(self) -> bool:
        """Whether to ask Redis now: it answers, or it is time to probe it again."""
        return not self.degraded or time.monotonic() >= self._next_probe

    async def take(self, key: str, cap: int) -> str | None:
        """One attempt at a slot: its lease id, or None when all `cap` are taken.
        Raises RedisError/OSError when Redis does not answer."""
        lease = uuid.uuid4().hex
        call = asyncio.ensure_future(self._acquire(keys=[key], args=[cap, lease, self._lease_ms]))
        try:
            granted = await asyncio.shield(call)
        except asyncio.CancelledError:
            # The script may still add the lease: drop it once it has run.
            call.add_done_callback(lambda _: self.give_back(key, lease))
            raise
        except (RedisError, OSError) as exc:
            self._unreachable(exc)
            raise
        self._reachable()
        return lease if int(granted) == 1 else None

    def give_back(self, key: str, lease: str) -> None:
        """Remove a lease in the background (if Redis does not answer, it expires)."""
        self._background(self._redis.zrem(key, lease))

    async def heartbeat(self) -> None:
        """Renew every lease this process holds, every third of the lease time."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            await self.renew()

    async def renew(self) -> None:
        held = [(s.key, list(s.leases)) for s in self._semaphores if s.leases]
        if not held:
            return
        try:
            for key, leases in held:
                await self._renew(keys=[key], args=[self._lease_ms, *leases])
        except (RedisError, OSError) as exc:
            self._unreachable(exc)

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def aclose(self) -> None:
        for semaphore in self._semaphores:
            for lease in semaphore.leases:
                self.give_back(semaphore.key, lease)
        if self._pending:
            await asyncio.wait(self._pending, timeout=1.0)
        await self._redis.aclose()

    def _background(self, work: Awaitable[object]) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Future[object]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("could not remove a lease; it expires", extra={"error": "redis"})

    def _unreachable(self, exc: BaseException) -> None:
        if not self.degraded:
            log.warning(
                "Redis concurrency caps unreachable; each process caps alone",
                extra={"error": type(exc).__name__},
            )
        self.degraded = True
        self._next_probe = time.monotonic() + self._probe_every

    def _reachable(self) -> None:
        if self.degraded:
            log.warning("Redis concurrency caps reachable again; caps are shared")
            self.degraded = False


class SharedSemaphore:
    """`cap` slots across every replica (a `Slots`, app.providers.retry).

    The leases this process holds are interchangeable: `release` gives back any one of
    them (or, for a slot taken while Redis was down, one of the local cap's).
    """

    def __init__(self, shared: SharedSlots, key: str, cap: int) -> None:
        self._shared = shared
        self.key = key
        self.cap = cap
        self.leases: list[str] = []
        self._local = asyncio.Semaphore(cap)
        self._local_held = 0

    async def acquire(self) -> bool:
        pause = _FIRST_POLL
        while self._shared.use_redis():
            try:
                lease = await self._shared.take(self.key, self.cap)
            except (RedisError, OSError):
                break  # caps alone until Redis answers again
            if lease is not None:
                self.leases.append(lease)
                return True
            await asyncio.sleep(random.uniform(pause / 2, pause))
            pause = min(_MAX_POLL, pause * 2)
        await self._local.acquire()
        self._local_held += 1
        return True

    def release(self) -> None:
        if self._local_held:
            self._local_held -= 1
            self._local.release()
        elif self.leases:
            self._shared.give_back(self.key, self.leases.pop())
        else:
            raise ValueError("SharedSemaphore released more often than acquired")
