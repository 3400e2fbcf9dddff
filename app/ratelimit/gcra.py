"""GCRA rate limiting (a token bucket in one timestamp per key), in process.

Each limit is `count` requests per `period` seconds with a burst of `count`. A request
is checked against several keys at once (the API key and its tenant) and consumes from
all of them or none, so a request refused by one limit is not counted by the other.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    count: int
    period: float = 60.0

    @property
    def interval(self) -> float:
        return self.period / self.count


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int  # the tightest limit's count, for X-RateLimit-Limit
    remaining: int
    reset_after: float  # seconds until that limit is full again
    retry_after: float  # seconds until a refused request could pass (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


def evaluate(tats: list[float], limits: list[Limit], now: float) -> tuple[Decision, list[float]]:
    """The pure GCRA step shared by both backends: (decision, new TATs).

    `tats` are each key's theoretical arrival time (0 for a new key).
    """
    new_tats: list[float] = []
    allowed = True
    retry_after = 0.0
    for tat, limit in zip(tats, limits, strict=True):
        tat = max(tat, now)
        new_tat = tat + limit.interval
        allow_at = new_tat - limit.period  # burst == count: a full period's worth at once
        if allow_at > now:
            allowed = False
            retry_after = max(retry_after, allow_at - now)
        new_tats.append(new_tat)
    if not allowed:
        new_tats = [max(tat, now) for tat in tats]
    return decide(allowed, retry_after, new_tats, limits, now), new_tats


def decide(
    allowed: bool, retry_after: float, tats: list[float], limits: list[Limit], now: float
) -> Decision:
    """Headers' view of the limits after a check: the one with the fewest requests left."""
    remaining, limit, tat = min(
        (
            (max(0, math.floor((now + limit.period - tat) / limit.interval)), limit, tat)
            for tat, limit in zip(tats, limits, strict=True)
        ),
        key=lambda item: item[0],
    )
    return Decision(
        allowed=allowed,
        limit=limit.count,
        remaining=remaining,
        reset_after=max(0.0, tat - now),
        retry_after=retry_after,
    )


class MemoryRateLimiter:
    """Per-process limiter; state is lost on restart and not shared between replicas."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._tats: dict[str, float] = {}
        self._lock = threading.Lock()
        self._max_keys = max_keys

    async def hit(self, keys: list[str], limits: list[Limit]) -> Decision:
        now = time.time()
        with self._lock:
            if len(self._tats) > self._max_keys:
                # Keys whose TAT passed are indistinguishable from new keys: drop them.
                self._tats = {k: t for k, t in self._tats.items() if t > now}
            decision, new_tats = evaluate([self._tats.get(k, 0.0) for k in keys], limits, now)
            if decision.allowed:
                self._tats.update(zip(keys, new_tats, strict=True))
        return decision

    async def peek(self, keys: list[str], limits: list[Limit]) -> Decision:
        """Would a hit be allowed now? Changes nothing."""
        now = time.time()
        with self._lock:
            decision, _ = evaluate([self._tats.get(k, 0.0) for k in keys], limits, now)
        return decision

    async def aclose(self) -> None:
        return None
