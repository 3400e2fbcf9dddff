"""The one retry policy: bounded attempts, provider-given delays honoured, one deadline.

No attempt is ever cancelled. Cancelling a call inside httpx while its pool is contended
leaks pool slots for good (encode/httpcore#1093, #830; see app.providers.transport), so
the attempt's deadline is handed to the transport, whose own timeouts end the exchange in
time, and the caller waits for the attempt with a backstop that stops waiting (but does
not cancel) a moment after the deadline. An attempt that outlives its backstop is left to
finish on its own (its HTTP exchanges end at the deadline: every socket operation is capped
by it), and it keeps its model and provider slots until it has really ended.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from app.providers.base import ProviderError, UpstreamTimeout
from app.providers.sockets import attempt_deadline

T = TypeVar("T")
log = logging.getLogger(__name__)
# How long past an attempt's deadline the caller still waits for the transport's own
# timeout to end it (with its own, more precise error) before giving up on it.
BACKSTOP_GRACE = 0.5


class Slots(Protocol):
    """A counting semaphore: an asyncio.Semaphore, or a cap shared by every replica
    (app.ratelimit.slots). `acquire` may be cancelled (a deadline); `release` gives back
    one slot this process holds."""

    async def acquire(self) -> bool: ...

    def release(self) -> None: ...


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
    limiter: Slots | None = None,
    provider_cap: Slots | None = None,
    upstream_slots: Slots | None = None,
) -> T:
    """Run `call` until it succeeds, fails for good, attempts run out or `deadline`
    (a time.monotonic() value) would pass. Raises the last ProviderError.

    With a `limiter` (a model's cap), a `provider_cap` (the provider account's) and
    `upstream_slots` (this process's bound on calls in flight to the provider), each
    attempt first waits for a slot of each, in that fixed order (no two callers wait for
    each other's slots), bounded by the deadline, not by the attempt timeout, so a capped
    upstream queues callers instead of failing them, and a call that could not be sent
    costs no SDK work.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            held = await _take_slots((limiter, provider_cap, upstream_slots), deadline, what)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _release(held)
                raise UpstreamTimeout(f"{what}: deadline passed before attempt {attempt}")
            ends = time.monotonic() + min(policy.attempt_timeout, remaining)
            return await _attempt(call, ends, what, held)
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


async def _attempt(
    call: Callable[[], Awaitable[T]], ends: float, what: str, held: list[Slots]
) -> T:
    """`call()` with every upstream exchange bounded by `ends`, awaited without cancelling.

    The slots in `held` are given back when the attempt's task ends, not when we stop
    waiting for it: an abandoned attempt is still running upstream, and a retry that took
    its slots at once would exceed the model's and the provider's caps.
    """
    task: asyncio.Future[T] | None = None
    try:
        gate = _start_gate()
        try:
            # Our own semaphore: timing its wait out cancels nothing of httpx's.
            async with asyncio.timeout(max(0.0, ends - time.monotonic())):
                await gate.acquire()
        except TimeoutError:
            raise UpstreamTimeout(f"{what}: no time left to start the attempt") from None
        try:
            with attempt_deadline(ends):
                # The task copies the context, so the deadline travels with it.
                task = asyncio.ensure_future(call())
            task.add_done_callback(lambda _: _release(held))
            # Its first step, the SDK's synchronous request building (milliseconds), runs
            # now, before this gate slot lets another attempt start: see _start_gate.
            await asyncio.sleep(0)
        finally:
            gate.release()
        done, _ = await asyncio.wait({task}, timeout=ends - time.monotonic() + BACKSTOP_GRACE)
    finally:
        if task is None:
            _release(held)  # never started: nothing runs upstream
        elif not task.done():
            # Also when our caller is cancelled: the attempt ends by its own deadline.
            task.add_done_callback(_forget)
    if not done:
        raise UpstreamTimeout(f"{what}: upstream did not answer in time")
    return task.result()


_START_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)
# Attempts that may start in one loop iteration: each builds its request for a few ms
# before its first await, so this bounds the stall to ~20 ms while keeping throughput.
STARTS_PER_ITERATION = 4


def _start_gate() -> asyncio.Semaphore:
    """A few attempts start per event-loop iteration.

    Hundreds of attempts become ready together in an incident (a burst arrives; slots
    freed by attempts timing out together). Each spends a few milliseconds building its
    request in the SDK before its first await, and asyncio runs everything ready in one
    iteration before it polls sockets again, so /healthz would wait for all of them. The
    slots hand over once per iteration, so sockets are polled between attempt starts.
    """
    loop = asyncio.get_running_loop()
    gate = _START_GATES.get(loop)
    if gate is None:
        gate = _START_GATES[loop] = asyncio.Semaphore(STARTS_PER_ITERATION)
    return gate


def _forget(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned attempt's outcome, so asyncio does not log it as unhandled."""
    if not task.cancelled():
        task.exception()


async def _take_slots(
    limiters: tuple[Slots | None, ...], deadline: float, what: str
) -> list[Slots]:
    """A slot of each limiter, in order, each wait bounded by `deadline`; all or none."""
    held: list[Slots] = []
    try:
        for limiter in limiters:
            if limiter is None:
                continue
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await limiter.acquire()
            held.append(limiter)
    except TimeoutError:
        _release(held)
        raise UpstreamTimeout(f"{what}: no upstream slot free before the deadline") from None
    except BaseException:
        _release(held)
        raise
    return held


def _release(held: list[Slots]) -> None:
    """Gives the slots back, once (the list is emptied)."""
    while held:
        held.pop().release()
