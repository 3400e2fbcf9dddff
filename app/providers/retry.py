"""The one retry policy: bounded attempts, provider-given delays honoured, one deadline."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
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
) -> T:
    """Run `call` until it succeeds, fails for good, attempts run out or `deadline`
    (a time.monotonic() value) would pass. Raises the last ProviderError."""
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UpstreamTimeout(f"{what}: deadline passed before attempt {attempt}")
        try:
            async with asyncio.timeout(min(policy.attempt_timeout, remaining)):
                return await call()
        except TimeoutError:
            error: ProviderError = UpstreamTimeout(f"{what}: upstream did not answer in time")
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
