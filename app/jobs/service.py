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
from app.credits.ledger import get_balance, open_hold_ids
from app.db.models import Generation, Image, Job, new_id, utcnow
from app.db.statuses import GenerationStatus, JobStatus
from app.errors import InsufficientCredits, NotFound
from app.generation.pricing import required_credits
from app.generation.request import GenerateRequest
from app.housekeeping.sweeper import abandon_hold
from app.jobs import webhooks
from app.providers.base import SourceImage
from app.providers.catalog import CatalogModel
from app.storage.base import ImageStore
from app.storage.keys import job_source_key

# Contract fields kept for a job; the source images go to the image store instead, and
# the job's JSON keeps only their types: one under SOURCE_MIME_FIELD (as before several
# were possible), several in order under SOURCE_MIMES_FIELD.
REQUEST_FIELDS = ("prompt", "model", "aspectRatio", "numImages", "stylePreset", "imageSize")
SOURCE_MIME_FIELD = "sourceMimeType"
SOURCE_MIMES_FIELD = "sourceMimeTypes"
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
    sources: Sequence[SourceImage],
    idempotency_key: str | None,
    lock_for: timedelta,
    body_hash: str | None = None,
    webhook: webhooks.WebhookRequest | None = None,
) -> Submission:
    """Queue a job for `request`; with an (already validated) idempotency key, the key's
    job: one per key and body (`body_hash`, the payload's request hash, computed here when
    not given). `chain` is the models that may serve it (the generation service's usable
    chain), priced as the sync hold prices it, so a job that passes the pre-check is not
    refused for credits when it runs. The claim, the 402 pre-check, the job row and its
    webhook delivery (the tenant must have a webhook secret) are one transaction; stored
    sources no job will read are deleted again."""
    job_id = new_id()
    required = required_credits(request, chain)

    async def create(session: AsyncSession) -> dict[str, Any]:
        # Checked now so an obvious 402 is not deferred; the job reserves when it runs.
        available = await get_balance(session, tenant_id)
        if available < required:
            raise InsufficientCredits(required=required, available=available)
        if api_key_id:
            await check_headroom(session, api_key_id, required)
        if webhook is not None:
            await webhooks.require_secret(session, tenant_id)
        await create_job(
            session,
            job_id=job_id,
            tenant_id=tenant_id,
            api_key_id=api_key_id,
            request=payload | {"model": request.model.id},
            source_mime_types=[source.mime_type for source in sources],
            num_images=request.num_images,
        )
        if webhook is not None:
            await webhooks.create_delivery(
                session, job_id=job_id, tenant_id=tenant_id, webhook=webhook
            )
        return {JOB_RECORD: accepted_body(job_id)}

    replay: dict[str, Any] | None = None
    created = False
    try:
        # Stored first: the job may run as soon as it commits.
        for index, source in enumerate(sources):
            key = job_source_key(tenant_id, job_id, index)
            await image_store.put(key, source.data, source.mime_type)
        if idempotency_key is None:
            async with sessions() as session, session.begin():
                await create(session)
        else:
            claim = await idempotency.claim(
                sessions,
                tenant_id,
                idempotency_key,
                body_hash or idempotency.request_hash(payload),
                lock_for=lock_for,
                on_claim=create,
            )
            replay = claim.replay
        created = replay is None
    finally:
        if sources and not created:  # no job will read them
            await asyncio.shield(_delete_sources(image_store, tenant_id, job_id, len(sources)))
    return Submission(job_id, replay)


async def _delete_sources(image_store: ImageStore, tenant_id: str, job_id: str, count: int) -> None:
    for index in range(count):
        await image_store.delete(job_source_key(tenant_id, job_id, index))


def source_mime_types(payload: dict[str, Any]) -> list[str]:
    """The types of a job's stored source images, in order, taken out of its stored
    request JSON (`payload`, modified); [] for a job without any."""
    several = payload.pop(SOURCE_MIMES_FIELD, None)
    single = payload.pop(SOURCE_MIME_FIELD, None)
    if isinstance(several, list):
        return [str(mime_type) for mime_type in several]
    return [str(single)] if single else []


def source_keys(job: Job) -> list[str]:
    """The image-store keys of a job's source images, in order."""
    if job.source_key is None:
        return []
    try:
        count = len(source_mime_types(json.loads(job.request_json)))
    except (ValueError, TypeError, AttributeError):
        # An unreadable request (the job being given up for it): the first key is known;
        # any others are left to the orphan scan (`imagegate storage orphans`).
        count = 1
    return [job_source_key(job.tenant_id, job.id, index) for index in range(max(count, 1))]


async def create_job(
    session: AsyncSession,
    *,
    job_id: str,
    tenant_id: str,
    api_key_id: str,
    request: dict[str, Any],
    source_mime_types: Sequence[str],
    num_images: int,
) -> Job:
    kept = {k: request[k] for k in REQUEST_FIELDS if k in request}
    if len(source_mime_types) == 1:
        kept[SOURCE_MIME_FIELD] = source_mime_types[0]
    elif source_mime_types:
        kept[SOURCE_MIMES_FIELD] = list(source_mime_types)
    job = Job(
        id=job_id,
        tenant_id=tenant_id,
        api_key_id=api_key_id,
        status=JobStatus.QUEUED,
        request_json=json.dumps(kept),
        # The first source's key; the others follow it (job_source_key's index).
        source_key=job_source_key(tenant_id, job_id) if source_mime_types else None,
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


async def hand_back(session: AsyncSession, job: Job) -> bool:
    """Give a running job back to the queue (its runner is shutting down) so any runner
    claims it at once; the attempt is not counted. Only while the lease is still the one
    `job` was claimed with (another runner may have claimed it since). The generation is
    kept only if it delivered (the next attempt then just finishes the job); otherwise
    the next attempt starts a new one (the abandoned one was refunded or its hold expires)."""
    generation_id = await session.scalar(select(Job.generation_id).where(Job.id == job.id))
    earlier = await session.get(Generation, generation_id) if generation_id else None
    restart: dict[str, Any] = {}
    if previous_outcome(earlier) != "delivered":
        restart = {"generation_id": None, "images_done": 0}
    result = await session.execute(
        update(Job)
        .where(
            Job.id == job.id,
            Job.status == JobStatus.RUNNING,
            Job.locked_until == job.locked_until,
        )
        .values(status=JobStatus.QUEUED, locked_until=None, attempts=Job.attempts - 1, **restart)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


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
    """Mark a job that has not ended succeeded, or failed with (status, code, message); its webhook,
    if it has one, is due from now. A job that already ended keeps its end (a give-up
    after a late error must not turn a charged success into a failure)."""
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
    ended = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
        .values(**values)
    )
    if getattr(ended, "rowcount", 0):
        await webhooks.mark_due(session, job_id)


async def give_up(session: AsyncSession, job: Job, error: tuple[int, str, str]) -> list[Generation]:
    """Fail a job for good (its attempts ran out): the hold of its last attempt, if that
    attempt died holding one, is released now rather than at expiry, and its generation
    marked abandoned. Returns the generations abandoned (their objects are orphans)."""
    abandoned: list[Generation] = []
    if job.generation_id is not None:
        for hold_id in await open_hold_ids(session, job.generation_id):
            _, generation = await abandon_hold(session, hold_id, "job_attempts_exhausted")
            if generation is not None:
                abandoned.append(generation)
    await finish(session, job.id, error=error)
    return abandoned


async def retry_later(session: AsyncSession, job_id: str, delay: timedelta) -> None:
    """End a failed attempt: the job stays running, claimable again once `delay` passed
    (claim_next takes a running job whose lease ran out)."""
    await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(locked_until=utcnow() + delay)
    )


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
