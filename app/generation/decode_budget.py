"""One process-wide allowance of pixels being decoded at once (and, generalised to any
unit, of request-body bytes in flight: app/api/body_budget.py).

A decoded image costs memory in proportion to its pixels, not its file size (a 136 KB
one-colour 6000x6000 PNG decodes to ~144 MB), so a thread pool's size bounds nothing.
Every decode (source images and upstream outputs) reserves its cost here first, on the
event loop, then runs in a thread; the reservation is returned when the thread is done,
even if the request that started it was cancelled meanwhile, so the accounting always
matches the memory actually held.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from typing import TypeVar

from app.errors import GatewayError

T = TypeVar("T")


class DecodeBusy(GatewayError):
    """No room in the decode budget within the request's time; nothing was charged."""

    status_code = 503
    code = "decode_busy"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = "2"


def _decode_busy() -> GatewayError:
    return DecodeBusy("the gateway is busy decoding other images; retry in a moment")


class DecodeBudget:
    """A FIFO-fair counting budget of units, pixels by default (a big image is not
    starved by small ones). `busy` makes the error raised when a wait runs out."""

    def __init__(self, capacity: int, *, busy: Callable[[], GatewayError] = _decode_busy) -> None:
        if capacity < 1:
            raise ValueError("a decode budget needs a positive capacity")
        self.capacity = capacity
        self._available = capacity
        self._busy = busy
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def available(self) -> int:
        return self._available

    @property
    def in_use(self) -> int:
        return self.capacity - self._available

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def fits(self, cost: int) -> bool:
        return cost <= self.capacity

    async def run(
        self,
        cost: int,
        fn: Callable[[], T],
        *,
        wait_seconds: float,
        executor: Executor | None = None,
    ) -> T:
        """Wait (at most `wait_seconds`) for `cost` pixels, then run `fn` in a thread.

        The caller checks `fits(cost)` first and reports an image larger than the whole
        budget in its own words; here that is a ValueError (a defect). DecodeBusy when
        the wait runs out.
        """
        if not self.fits(cost):
            raise ValueError(f"cost {cost} exceeds the whole budget {self.capacity}")
        await self._acquire(cost, wait_seconds)
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(executor, fn)
        except BaseException:
            self._release(cost)
            raise
        future.add_done_callback(functools.partial(self._finished, cost))
        # shield: a cancelled caller must not return the pixels while the thread still
        # holds them; the done callback returns them when the thread really ends.
        return await asyncio.shield(future)

    @asynccontextmanager
    async def reserve(self, cost: int, *, wait_seconds: float) -> AsyncIterator[None]:
        """Hold `cost` units for the body of the `with`; returned exactly once, however it
        ends (error, cancellation). The busy error when the wait runs out (nothing held)."""
        if not self.fits(cost):
            raise ValueError(f"cost {cost} exceeds the whole budget {self.capacity}")
        await self._acquire(cost, wait_seconds)
        try:
            yield
        finally:
            self._release(cost)

    async def _acquire(self, cost: int, wait_seconds: float) -> None:
        if not self._waiters and self._available >= cost:
            self._available -= cost
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (cost, granted)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(max(wait_seconds, 0.0)):
                await asyncio.shield(granted)
        except BaseException as exc:
            if granted.done() and not granted.cancelled():
                self._release(cost)  # granted just as the wait ended: give it back
            else:
                granted.cancel()
                self._waiters.remove(entry)
                self._wake()  # a big waiter at the head may have blocked smaller ones
            if isinstance(exc, TimeoutError):
                raise self._busy() from None
            raise

    def _finished(self, cost: int, future: asyncio.Future[object]) -> None:
        if not future.cancelled():
            future.exception()  # retrieved: a cancelled caller no longer awaits it
        self._release(cost)

    def _release(self, cost: int) -> None:
        self._available += cost
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._available:
            cost, granted = self._waiters.popleft()
            self._available -= cost
            granted.set_result(None)
