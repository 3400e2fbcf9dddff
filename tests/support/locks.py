"""Rows locked by another transaction, so the gateway's statement on them waits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Select

from app.db.engine import create_engine


@contextmanager
def rows_locked(database_url: str, query: Select[str]) -> Iterator[None]:
    """The rows `query` selects locked FOR UPDATE by another transaction (its own thread
    and engine) within the block; released on leaving it."""
    locked, release = threading.Event(), threading.Event()

    async def lock() -> None:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with engine.connect() as connection, connection.begin():
                await connection.execute(query.with_for_update())
                locked.set()
                await asyncio.to_thread(release.wait, 60)
        finally:
            await engine.dispose()

    thread = threading.Thread(target=asyncio.run, args=(lock(),), daemon=True)
    thread.start()
    assert locked.wait(30), "could not lock the rows"
    try:
        yield
    finally:
        release.set()
        thread.join(30)
