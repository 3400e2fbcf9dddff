"""Asynchronous generations (Prefer: respond-async): submit, claim, finish, look up.

State lives in the database so jobs survive a restart. A job is charged exactly once:
each attempt records its generation id before it starts, so after a crash the next
attempt first asks whether that generation already finished (and was charged).
The service flushes; callers own transactions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Generation, Image, Job, utcnow
from app.db.statuses import GenerationStatus, JobStatus
from app.errors import NotFound
from app.storage.keys import job_source_key

# Contract fields kept for a job; the source image goes to the image store instead.
REQUEST_FIELDS = ("prompt", "model", "aspectRatio", "numImages", "stylePreset")
SOURCE_MIME_FIELD = "sourceMimeType"
FINAL_GENERATION = {
    GenerationStatus.SUCCEEDED,
    GenerationStatus.PARTIAL,
    GenerationStatus.FAILED,
    GenerationStatus.REJECTED,
}
DELIVERED_GENERATION = {GenerationStatus.SUCCEEDED, GenerationStatus.PARTIAL}
# HTTP status of a job whose generation failed, by the generation's error code.
ERROR_STATUS = {"content_rejected": 400, "dependency_unavailable": 503}


@dataclass(frozen=True, slots=True)
class JobView:
    job: Job
    generation: Generation | None
    images: list[Image]


async def create_job(
    session: AsyncSession,
    *,
    job_id: str,
    tenant_id: str,
    api_key_id: str,
    request: dict[str, Any],
    source_mime_type: str | None,
    num_images: int,
) -> Job:
    job = Job(
        id=job_id,
        tenant_id=tenant_id,
        api_key_id=api_key_id,
        status=JobStatus.QUEUED,
        request_json=json.dumps(
            {k: request[k] for k in REQUEST_FIELDS if k in request}
            | ({SOURCE_MIME_FIELD: source_mime_type} if source_mime_type else {})
        ),
        source_key=job_source_key(tenant_id, job_id) if source_mime_type else None,
        images_total=num_images,
    )
    session.add(job)
    await session.flush()
    return job


async def claim_next(session: AsyncSession, lease: timedelta) -> Job | None:
    """Take the oldest queued job, or a running one whose runner's lease ran out."""
    now = utcnow()
    claimable = or_(
        Job.status == JobStatus.QUEUED,
        (Job.status == JobStatus.RUNNING) & (Job.locked_until < now),
    )
    candidate = select(Job.id).where(claimable).order_by(Job.created_at).limit(1).scalar_subquery()
    result = await session.execute(
        update(Job)
        .where(Job.id == candidate, claimable)
        .values(
            status=JobStatus.RUNNING,
            locked_until=now + lease,
            attempts=Job.attempts + 1,
            started_at=now,
        )
        .returning(Job)
    )
    return result.scalar_one_or_none()


async def start_attempt(session: AsyncSession, job_id: str, generation_id: str) -> None:
    await session.execute(
        update(Job).where(Job.id == job_id).values(generation_id=generation_id, images_done=0)
    )


async def count_image(session: AsyncSession, job_id: str) -> None:
    await session.execute(
        update(Job).where(Job.id == job_id).values(images_done=Job.images_done + 1)
    )


async def finish(
    session: AsyncSession,
    job_id: str,
    *,
    error: tuple[int, str, str] | None = None,
) -> None:
    """Mark a job succeeded, or failed with (status, code, message)."""
    values: dict[str, Any] = {"completed_at": utcnow(), "locked_until": None}
    if error is None:
        values["status"] = JobStatus.SUCCEEDED
    else:
        status, code, message = error
        values.update(
            status=JobStatus.FAILED,
            error_status=status,
            error_code=code,
            error_message=message[:500],
        )
    await session.execute(update(Job).where(Job.id == job_id).values(**values))


async def get_job(session: AsyncSession, tenant_id: str, job_id: str) -> JobView:
    job = await session.get(Job, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound("Job not found")
    generation = await session.get(Generation, job.generation_id) if job.generation_id else None
    images: list[Image] = []
    if generation is not None and job.status == JobStatus.SUCCEEDED:
        images = list(
            await session.scalars(
                select(Image).where(Image.generation_id == generation.id).order_by(Image.index)
            )
        )
    return JobView(job, generation, images)


def previous_outcome(generation: Generation | None) -> Literal["delivered", "failed", "unfinished"]:
    """What an earlier attempt's generation says: it delivered (and was charged), it
    failed for good, or it never finished (its hold expires; run again)."""
    if generation is None or generation.status not in FINAL_GENERATION:
        return "unfinished"
    return "delivered" if generation.status in DELIVERED_GENERATION else "failed"


def generation_error(generation: Generation) -> tuple[int, str, str]:
    code = generation.error_code or "generation_failed"
    return ERROR_STATUS.get(code, 500), code, generation.error_message or "Generation failed"
