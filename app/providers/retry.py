"""The one retry policy: bounded attempts, provider-given delays honoured, one deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from app.providers.base import ProviderError, UpstreamTimeout

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    attempt_timeout: float = 60.0
    base_delay: float = 0.5
    max_delay: float = 8.0

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff for the pause after `attempt` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    deadline: float,
    what: str,
    limiter: asyncio.Semaphore | None = None,
) -> T:
    """Run `call` until it succeeds, fails for good, attempts run out or `deadline`
    (a time.monotonic() value) would pass. Raises the last ProviderError.

    With a `limiter`, each attempt first waits for a slot (bounded by the deadline, not
    by the attempt timeout), so a capped upstream queues callers instead of failing them.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            async with _slot(limiter, deadline, what):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UpstreamTimeout(f"{what}: deadline passed before attempt {attempt}")
                try:
                    async with asyncio.timeout(min(policy.attempt_timeout, remaining)):
                        return await call()
                except TimeoutError:
                    raise UpstreamTimeout(f"{what}: upstream did not answer in time") from None
        except ProviderError as exc:
            error = exc
        if not error.retryable or attempt >= policy.max_attempts:
            raise error
        delay = max(error.retry_after or 0.0, policy.backoff(attempt))
        if time.monotonic() + delay >= deadline:
            raise error
        log.info(
            "retrying upstream call",
            extra={
                "what": what,
                "attempt": attempt,
                "delay_s": round(delay, 2),
                "error": type(error).__name__,
            },
        )
        await asyncio.sleep(delay)


@contextlib.asynccontextmanager
async def _slot(
    limiter: asyncio.Semaphore | None, deadline: float, what: str
) -> AsyncIterator[None]:
    if limiter is None:
        yield
        return
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            await limiter.acquire()
    except TimeoutError:
        raise UpstreamTimeout(f"{what}: no upstream slot free before the deadline") from None
    try:
        yield
    finally:
        limiter.release()
