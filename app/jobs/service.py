"""Asynchronous generations (Prefer: respond-async): submit, claim, finish, look up.

State lives in the database so jobs survive a restart. A job is charged exactly once:
each attempt records its generation id before it starts, so after a crash the next
attempt first asks whether that generation already finished (and was charged).
The functions below `submit_job` flush; callers own transactions. `submit_job` is the
submission use case and owns its transaction (with the idempotency claim).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import idempotency
from app.credits.key_spend import check_headroom
from app.credits.ledger import get_balance
from app.db.models import Generation, Image, Job, new_id, utcnow
from app.db.statuses import GenerationStatus, JobStatus
from app.errors import InsufficientCredits, NotFound
from app.generation.pricing import required_credits
from app.generation.request import GenerateRequest
from app.providers.base import SourceImage
from app.providers.catalog import CatalogModel
from app.storage.base import ImageStore
from app.storage.keys import job_source_key

# Contract fields kept for a job; the source image goes to the image store instead.
REQUEST_FIELDS = ("prompt", "model", "aspectRatio", "numImages", "stylePreset", "imageSize")
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
# The key of an idempotency record's response that is an accepted job (not a 200 body).
JOB_RECORD = "job"


@dataclass(frozen=True, slots=True)
class JobView:
    job: Job
    generation: Generation | None
    images: list[Image]


@dataclass(frozen=True, slots=True)
class Submission:
    """A new job (`replay` is None), or the stored response of the idempotency key's
    first request: a job's `{JOB_RECORD: accepted}` or a generation's 200."""

    job_id: str
    replay: dict[str, Any] | None = None


def accepted_body(job_id: str) -> dict[str, Any]:
    """The 202 body of a new job; also what its idempotency record remembers."""
    return {"id": job_id, "status": JobStatus.QUEUED, "statusUrl": f"/api/v1/jobs/{job_id}"}


async def submit_job(
    *,
    sessions: async_sessionmaker[AsyncSession],
    image_store: ImageStore,
    tenant_id: str,
    api_key_id: str,
    payload: dict[str, Any],
    request: GenerateRequest,
    chain: Sequence[CatalogModel],
    source: SourceImage | None,
    idempotency_key: str | None,
    lock_for: timedelta,
) -> Submission:
    """Queue a job for `request`; with an (already validated) idempotency key, the key's
    job: one per key and body. `chain` is the models that may serve it (the generation
    service's usable chain), priced as the sync hold prices it, so a job that passes the
    pre-check is not refused for credits when it runs. The claim, the 402 pre-check and
    the job row are one transaction; a stored source no job will read is deleted again."""
    job_id = new_id()
    required = required_credits(request, chain)

    async def create(session: AsyncSession) -> dict[str, Any]:
        # Checked now so an obvious 402 is not deferred; the job reserves when it runs.
        available = await get_balance(session, tenant_id)
        if available < required:
            raise InsufficientCredits(required=required, available=available)
        if api_key_id:
            await check_headroom(session, api_key_id, required)
        await create_job(
            session,
            job_id=job_id,
            tenant_id=tenant_id,
            api_key_id=api_key_id,
            request=payload | {"model": request.model.id},
            source_mime_type=source.mime_type if source else None,
            num_images=request.num_images,
        )
        return {JOB_RECORD: accepted_body(job_id)}

    # Stored first: the job may run as soon as it commits.
    if source is not None:
        await image_store.put(job_source_key(tenant_id, job_id), source.data, source.mime_type)
    replay: dict[str, Any] | None = None
    created = False
    try:
        if idempotency_key is None:
            async with sessions() as session, session.begin():
                await create(session)
        else:
            claim = await idempotency.claim(
                sessions,
                tenant_id,
                idempotency_key,
                idempotency.request_hash(payload),
                lock_for=lock_for,
                on_claim=create,
            )
            replay = claim.replay
        created = replay is None
    finally:
        if source is not None and not created:  # no job will read it
            await asyncio.shield(image_store.delete(job_source_key(tenant_id, job_id)))
    return Submission(job_id, replay)


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
