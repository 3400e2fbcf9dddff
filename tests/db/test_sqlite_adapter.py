"""The SQLite adapter (app/db/sqlite.py): fewer thread hops, same semantics."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import create_engine
from tests.support.sqlite_hops import count_hops


@pytest_asyncio.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'adapter.db'}")
    async with engine.begin() as connection:
        await connection.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    yield engine
    await engine.dispose()


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the functions sent to a connection's thread."""
    return count_hops(monkeypatch)


async def test_writes_in_a_transaction_take_no_hop_reads_and_commit_do(
    engine: AsyncEngine, hops: list[str]
) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (id, v) VALUES (1, 10)"))
        await connection.execute(text("UPDATE t SET v = v + 1 WHERE id = 1"))
        value = (await connection.execute(text("SELECT v FROM t WHERE id = 1"))).scalar_one()
    assert value == 11
    # Only the SELECT and the COMMIT go to the thread; no reset rollback either.
    assert hops == ["_run", "commit"]


async def test_begin_waits_for_another_writer_on_the_thread_not_the_loop(
    engine: AsyncEngine, tmp_path: Path, hops: list[str]
) -> None:
    other = sqlite3.connect(tmp_path / "adapter.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def release_later() -> None:
        await asyncio.sleep(0.3)
        other.execute("COMMIT")

    running = asyncio.create_task(ticker())
    releaser = asyncio.create_task(release_later())
    try:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (id, v) VALUES (1, 1)"))
    finally:
        running.cancel()
        await releaser
        other.close()
    # The loop kept running while BEGIN waited (on the thread) for the lock.
    assert ticks >= 10
    assert hops[0] == "_run"  # the BEGIN that had to wait


async def test_returning_rows_and_rowcount_come_back(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (id, v) VALUES (1, 1), (2, 2)"))
        updated = await connection.execute(text("UPDATE t SET v = v * 10 RETURNING id, v"))
        assert sorted(updated.all()) == [(1, 10), (2, 20)]
        deleted = await connection.execute(text("DELETE FROM t WHERE v > 15"))
        assert deleted.rowcount == 1


async def test_errors_are_sqlalchemy_errors_and_roll_back(engine: AsyncEngine) -> None:
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (id, v) VALUES (1, 1)"))
            await connection.execute(text("INSERT INTO t (id, v) VALUES (1, 2)"))
    async with engine.connect() as connection:
        count = (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one()
    assert count == 0


async def test_concurrent_transactions_serialise_without_losing_updates(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (id, v) VALUES (1, 0)"))

    async def increment() -> None:
        async with engine.begin() as connection:
            row = await connection.execute(text("SELECT v FROM t WHERE id = 1"))
            current = row.scalar_one()
            await asyncio.sleep(0)  # let the others try to interleave
            await connection.execute(text("UPDATE t SET v = :v WHERE id = 1"), {"v": current + 1})

    await asyncio.gather(*(increment() for _ in range(50)))
    async with engine.connect() as connection:
        final = (await connection.execute(text("SELECT v FROM t WHERE id = 1"))).scalar_one()
    assert final == 50
