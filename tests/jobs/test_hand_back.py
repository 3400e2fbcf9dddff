"""jobs.hand_back (#16 item 4): a draining runner gives its job back to the queue, only
while the lease is still its own, and keeps the generation only if it delivered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest_asyncio
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade
from app.db.models import Job, new_id, utcnow
from app.db.statuses import GenerationStatus, JobStatus
from app.jobs import service as jobs
from app.tenants import service as tenants
from tests.support.ledger import generation_row

LEASE = timedelta(minutes=5)
Sessions = async_sessionmaker[AsyncSession]


@pytest_asyncio.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Sessions]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def _queued_job(sessions: Sessions) -> str:
    async with sessions() as session, session.begin():
        tenant = await tenants.create_tenant(session, "hand-back")
        key = await tenants.create_key(session, tenant, "test")
        job = await jobs.create_job(
            session,
            job_id=new_id(),
            tenant_id=tenant.id,
            api_key_id=key.key.id,
            request={"prompt": "a red bicycle"},
            source_mime_types=[],
            num_images=1,
        )
    return job.id


async def _claim(sessions: Sessions) -> Job:
    async with sessions() as session, session.begin():
        job = await jobs.claim_next(session, LEASE)
    assert job is not None
    return job


async def _hand_back(sessions: Sessions, job: Job) -> bool:
    async with sessions() as session, session.begin():
        return await jobs.hand_back(session, job)


async def _row(sessions: Sessions, job_id: str) -> Job:
    async with sessions() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    return job


async def test_a_handed_back_job_is_queued_again_uncounted(sessions: Sessions) -> None:
    job_id = await _queued_job(sessions)
    claimed = await _claim(sessions)
    async with sessions() as session, session.begin():
        await jobs.start_attempt(session, job_id, new_id())  # never got a Generation row
    assert await _hand_back(sessions, claimed)
    row = await _row(sessions, job_id)
    assert (row.status, row.locked_until, row.attempts, row.generation_id) == (
        JobStatus.QUEUED,
        None,
        0,
        None,
    )
    again = await _claim(sessions)  # claimable at once, by any runner
    assert (again.id, again.attempts) == (job_id, 1)


async def test_a_lease_another_runner_took_over_is_not_handed_back(sessions: Sessions) -> None:
    job_id = await _queued_job(sessions)
    stale = await _claim(sessions)
    async with sessions() as session, session.begin():  # its lease ran out...
        past = utcnow() - timedelta(seconds=1)
        await session.execute(update(Job).where(Job.id == job_id).values(locked_until=past))
    current = await _claim(sessions)  # ...and another runner claimed the job
    assert not await _hand_back(sessions, stale)
    row = await _row(sessions, job_id)
    assert (row.status, row.locked_until, row.attempts) == (
        JobStatus.RUNNING,
        current.locked_until,
        2,
    )


async def test_a_delivered_generation_stays_with_the_handed_back_job(sessions: Sessions) -> None:
    job_id = await _queued_job(sessions)
    claimed = await _claim(sessions)
    generation_id = new_id()
    async with sessions() as session, session.begin():
        session.add(generation_row(generation_id, claimed.tenant_id, GenerationStatus.SUCCEEDED))
        await jobs.start_attempt(session, job_id, generation_id)
    assert await _hand_back(sessions, claimed)
    # The next attempt finds it delivered (and charged) and only finishes the job.
    assert (await _row(sessions, job_id)).generation_id == generation_id
