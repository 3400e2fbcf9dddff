"""idempotency.run_once on SQLite and on Postgres: one run per key and body, the replay
after it, a failed run forgotten, 409 for another body or a request still running."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import idempotency
from app.db.models import IdempotencyRecord
from app.tenants.service import create_tenant

Sessions = async_sessionmaker[AsyncSession]
LOCK = timedelta(minutes=5)


async def _tenant(sessions: Sessions) -> str:
    async with sessions() as session, session.begin():
        return (await create_tenant(session, f"i-{uuid.uuid4().hex[:12]}")).id


async def _records(sessions: Sessions, tenant_id: str) -> list[IdempotencyRecord]:
    async with sessions() as session:
        query = select(IdempotencyRecord).where(IdempotencyRecord.tenant_id == tenant_id)
        return list(await session.scalars(query))


async def test_runs_once_then_replays(sessions: Sessions) -> None:
    tenant_id = await _tenant(sessions)
    runs: list[int] = []

    async def run() -> dict[str, Any]:
        runs.append(len(runs))
        return {"body": {"n": len(runs)}, "keys": []}

    first = await idempotency.run_once(sessions, tenant_id, "k", "h1", lock_for=LOCK, run=run)
    second = await idempotency.run_once(sessions, tenant_id, "k", "h1", lock_for=LOCK, run=run)
    assert first == idempotency.Once({"body": {"n": 1}, "keys": []}, replayed=False)
    assert second == idempotency.Once({"body": {"n": 1}, "keys": []}, replayed=True)
    assert runs == [0]
    with pytest.raises(idempotency.IdempotencyConflict, match="different request body"):
        await idempotency.run_once(sessions, tenant_id, "k", "h2", lock_for=LOCK, run=run)
    assert runs == [0]


async def test_a_failed_run_is_forgotten(sessions: Sessions) -> None:
    tenant_id = await _tenant(sessions)

    async def fail() -> dict[str, Any]:
        raise RuntimeError("upstream down")

    with pytest.raises(RuntimeError):
        await idempotency.run_once(sessions, tenant_id, "k", "h", lock_for=LOCK, run=fail)
    assert await _records(sessions, tenant_id) == []

    async def succeed() -> dict[str, Any]:
        return {"body": {}, "keys": []}

    again = await idempotency.run_once(sessions, tenant_id, "k", "h", lock_for=LOCK, run=succeed)
    assert not again.replayed


async def test_a_cancelled_run_is_forgotten(sessions: Sessions) -> None:
    tenant_id = await _tenant(sessions)
    started = asyncio.Event()

    async def hang() -> dict[str, Any]:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    task = asyncio.create_task(
        idempotency.run_once(sessions, tenant_id, "k", "h", lock_for=LOCK, run=hang)
    )
    await started.wait()
    (record,) = await _records(sessions, tenant_id)  # in progress while it runs
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _records(sessions, tenant_id) == []
    assert record.response_body is None


async def test_a_duplicate_of_a_running_request_is_409_with_retry_after(
    sessions: Sessions,
) -> None:
    tenant_id = await _tenant(sessions)
    started, finish = asyncio.Event(), asyncio.Event()

    async def slow() -> dict[str, Any]:
        started.set()
        await finish.wait()
        return {"body": {"done": True}, "keys": []}

    first = asyncio.create_task(
        idempotency.run_once(sessions, tenant_id, "k", "h", lock_for=LOCK, run=slow)
    )
    await started.wait()
    with pytest.raises(idempotency.IdempotencyConflict, match="still running") as raised:
        await idempotency.run_once(sessions, tenant_id, "k", "h", lock_for=LOCK, run=slow)
    assert raised.value.headers == {"Retry-After": "2"}
    finish.set()
    assert (await first).response == {"body": {"done": True}, "keys": []}
