"""jobs.finish: a job's end is written once. A give-up after a late error (the source
delete failing once the success committed) must not turn a charged success into a failure."""

from __future__ import annotations

from sqlalchemy import select

from app.db.models import Job
from app.db.statuses import JobStatus
from app.jobs import service as jobs
from tests.jobs.test_hand_back import Sessions, _claim, _queued_job, sessions

__all__ = ["sessions"]  # the fixture, used by name


async def test_a_finished_job_keeps_its_end(sessions: Sessions) -> None:
    job_id = await _queued_job(sessions)
    job = await _claim(sessions)
    assert job.id == job_id
    async with sessions() as session, session.begin():
        await jobs.finish(session, job_id)
    async with sessions() as session, session.begin():
        await jobs.finish(session, job_id, error=(500, "internal_error", "given up"))
    async with sessions() as session:
        status = await session.scalar(select(Job.status).where(Job.id == job_id))
    assert status == JobStatus.SUCCEEDED
