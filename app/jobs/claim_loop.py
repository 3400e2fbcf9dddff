"""The loop a background worker runs in every process: while a slot is free, claim one
piece of work from the database and handle it in a task; when there is none, wait for the
poll interval or a wake-up. Claims are the caller's (conditional UPDATEs with a lease), so
any number of processes may run the same loop on one database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

T = TypeVar("T")


class ClaimLoop(Generic[T]):
    def __init__(
        self,
        *,
        claim: Callable[[], Awaitable[T | None]],
        handle: Callable[[T], Awaitable[None]],
        concurrency: int,
        poll_interval: float,
        what: str,
    ) -> None:
        self._claim = claim
        self._handle = handle
        self._slots = asyncio.Semaphore(concurrency)
        self._poll_interval = poll_interval
        self._what = what
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """New work: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                await self._claim_while_free()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval):
                        await self._wake.wait()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _claim_while_free(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                claimed = await self._claim()
            except SQLAlchemyError as exc:
                self._slots.release()
                log.warning(f"could not claim {self._what}", extra={"error": type(exc).__name__})
                return
            if claimed is None:
                self._slots.release()
                return
            task = asyncio.create_task(self._handled(claimed))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handled(self, claimed: T) -> None:
        try:
            await self._handle(claimed)
        finally:
            self._slots.release()
