"""The one retry policy: bounded attempts, provider delays honoured, one deadline."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response

from app.providers.base import Moderated, ProviderImage, RateLimited, Unavailable, UpstreamTimeout
from app.providers.retry import RetryPolicy, call_with_retries
from tests.support.servers import serve_in_thread

FAST = RetryPolicy(max_attempts=3, attempt_timeout=5, base_delay=0.001, max_delay=0.002)


class Script:
    """Answers each call with the next scripted error, then an image."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> ProviderImage:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return ProviderImage(b"img", "image/png")


async def test_retryable_errors_are_retried_until_success() -> None:
    script = Script(Unavailable("a"), RateLimited("b"))
    result = await call_with_retries(script, FAST, deadline=time.monotonic() + 5, what="t")
    assert result.data == b"img" and script.calls == 3


async def test_attempts_are_bounded() -> None:
    script = Script(*(Unavailable(str(i)) for i in range(10)))
    with pytest.raises(Unavailable, match="2"):
        await call_with_retries(script, FAST, deadline=time.monotonic() + 5, what="t")
    assert script.calls == 3


async def test_final_errors_are_not_retried() -> None:
    script = Script(Moderated("no"))
    with pytest.raises(Moderated):
        await call_with_retries(script, FAST, deadline=time.monotonic() + 5, what="t")
    assert script.calls == 1


async def test_retry_after_beyond_the_deadline_gives_up_at_once() -> None:
    script = Script(RateLimited("slow down", retry_after=30))
    # Had it slept the 30 s, the next attempt would have found the deadline passed and
    # raised UpstreamTimeout: the provider's own error says it gave up at once.
    with pytest.raises(RateLimited):
        await call_with_retries(script, FAST, deadline=time.monotonic() + 2, what="t")
    assert script.calls == 1


async def test_retry_after_is_honoured() -> None:
    script = Script(RateLimited("wait", retry_after=0.2))
    started = time.monotonic()
    await call_with_retries(script, FAST, deadline=time.monotonic() + 5, what="t")
    assert time.monotonic() - started >= 0.2


async def test_a_hanging_attempt_times_out_and_is_retried() -> None:
    calls = 0

    async def hang_once() -> ProviderImage:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)
        return ProviderImage(b"img", "image/png")

    policy = RetryPolicy(max_attempts=2, attempt_timeout=0.1, base_delay=0.001, max_delay=0.001)
    result = await call_with_retries(hang_once, policy, deadline=time.monotonic() + 5, what="t")
    assert result.data == b"img" and calls == 2


async def test_deadline_bounds_the_whole_call() -> None:
    async def hang() -> ProviderImage:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")

    policy = RetryPolicy(max_attempts=10, attempt_timeout=5, base_delay=0.001, max_delay=0.001)
    with pytest.raises(UpstreamTimeout):
        await call_with_retries(hang, policy, deadline=time.monotonic() + 0.2, what="t")


@pytest.fixture(scope="module")
def counting_server() -> Iterator[tuple[str, dict[str, int]]]:
    """A loopback server counting the requests it serves at once: /first answers the first
    request after 1.5 s, every later one at once."""
    app = FastAPI()
    stats = {"served": 0, "now": 0, "peak": 0}
    lock = threading.Lock()

    @app.get("/first")
    async def first() -> Response:
        with lock:
            stats["served"] += 1
            stats["now"] += 1
            stats["peak"] = max(stats["peak"], stats["now"])
            slow = stats["served"] == 1
        try:
            if slow:
                await asyncio.sleep(1.5)
        finally:
            with lock:
                stats["now"] -= 1
        return Response(b"{}", media_type="application/json")

    with serve_in_thread(app) as url:
        yield url, stats


async def test_an_abandoned_attempt_keeps_its_slots_until_it_has_ended(
    counting_server: tuple[str, dict[str, int]],
) -> None:
    url, stats = counting_server
    model_cap = asyncio.Semaphore(1)
    provider_slots = asyncio.Semaphore(1)
    # A client that does not honour the attempt deadline (no guarded transport), so the
    # backstop gives up on the first attempt while it is still running upstream.
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:

        async def call() -> ProviderImage:
            response = await client.get(f"{url}/first")
            response.raise_for_status()
            return ProviderImage(b"img", "image/png")

        policy = RetryPolicy(max_attempts=3, attempt_timeout=0.3, base_delay=0.01, max_delay=0.01)
        result = await call_with_retries(
            call,
            policy,
            deadline=time.monotonic() + 20,
            what="t",
            limiter=model_cap,
            upstream_slots=provider_slots,
        )
    assert result.data == b"img"
    assert stats["served"] == 2  # the first attempt was abandoned, the retry succeeded
    # With a cap of 1 the retry waited for the abandoned attempt to end upstream.
    assert stats["peak"] == 1
    assert not model_cap.locked() and not provider_slots.locked()
