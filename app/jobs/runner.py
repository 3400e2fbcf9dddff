"""Runs queued jobs in the background of each gateway process, a few at a time.

Any replica may run any job: claims are conditional UPDATEs with a lease, and a job whose
runner died (lease expired) is claimed again after a restart. Each attempt has one error
boundary (everything but cancellation): an unexpected error is logged (job id and error
type only) and the job is tried again shortly; every claim counts an attempt, and a job
claimed more than `max_attempts` times (errors, lost databases, killed processes) is
failed for good: its last attempt's hold released, its source object removed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import ApiKey, Generation, Job, new_id
from app.errors import GatewayError
from app.generation.request import GenerateRequest, parse_generate_request
from app.generation.service import GenerationService
from app.generation.source_image import FIELD as SOURCE_IMAGE
from app.generation.sources import SOURCE_IMAGES
from app.housekeeping.sweeper import drop_objects
from app.jobs import service as jobs
from app.jobs.claim_loop import ClaimLoop
from app.observability.tracing import AttributeValue, current_span, root_span
from app.providers.catalog import Catalog
from app.storage.base import ImageStore, StorageUnavailable
from app.tenants.service import Caller

log = logging.getLogger(__name__)
# The pause before a job whose attempt failed unexpectedly is claimed again: doubling per
# attempt, at most RETRY_MAX_DELAY seconds.
RETRY_BASE_DELAY = 1.0
RETRY_MAX_DELAY = 60.0


class JobRunner:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        generation: GenerationService,
        catalog: Catalog,
        store: ImageStore,
        concurrency: int,
        lease: timedelta,
        max_attempts: int = 3,
        poll_interval: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._generation = generation
        self._catalog = catalog
        self._store = store
        self._lease = lease
        self._max_attempts = max_attempts
        self._loop = ClaimLoop(
            claim=self._claim,
            handle=self._run_job,
            concurrency=concurrency,
            poll_interval=poll_interval,
            what="a job",
        )

    def wake(self) -> None:
        """A job was submitted: look now rather than at the next poll."""
        self._loop.wake()

    async def run(self) -> None:
        await self._loop.run()

    async def _claim(self) -> Job | None:
        async with self._sessions() as session, session.begin():
            return await jobs.claim_next(session, self._lease)

    async def _run_job(self, job: Job) -> None:
        # A trace of its own: the submitting request's trace ended with its 202.
        attributes: dict[str, AttributeValue] = {
            "imagegate.job_id": job.id,
            "imagegate.job.attempt": job.attempts,
        }
        with root_span("job.run", attributes) as traced:
            try:
                await self._attempt(job)
            except asyncio.CancelledError:
                await self._hand_back(job)
                raise
            except (SQLAlchemyError, StorageUnavailable, OSError) as exc:
                # The lease expires and another claim retries; nothing was charged twice.
                traced.fail(type(exc).__name__)
                log.warning(
                    "job attempt interrupted", extra={"job": job.id, "error": type(exc).__name__}
                )
            except Exception as exc:  # noqa: BLE001 - the boundary: no job stays running
                # Type only: the message or traceback may quote the request.
                traced.fail(type(exc).__name__)
                log.error(
                    "job attempt failed unexpectedly",
                    extra={"job": job.id, "attempt": job.attempts, "error": type(exc).__name__},
                )
                await self._after_failure(job)

    async def _after_failure(self, job: Job) -> None:
        """Retry a failed attempt after a pause that doubles per attempt, or give up."""
        try:
            if job.attempts >= self._max_attempts:
                await self._give_up(job)
                return
            delay = timedelta(
                seconds=min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2 ** (job.attempts - 1))
            )
            async with self._sessions() as session, session.begin():
                await jobs.retry_later(session, job.id, delay)
        except Exception as exc:  # noqa: BLE001 - still inside the boundary
            # The lease expires and the next claim counts the attempt.
            log.warning(
                "could not end a job attempt", extra={"job": job.id, "error": type(exc).__name__}
            )

    async def _give_up(self, job: Job) -> None:
        log.error("job failed for good", extra={"job": job.id, "attempts": job.attempts})
        error = (
            500,
            "internal_error",
            f"The job failed {job.attempts} times and was given up; credits held for it "
            "were returned.",
        )
        async with self._sessions() as session, session.begin():
            abandoned = await jobs.give_up(session, job, error)
        for generation in abandoned:
            await drop_objects(self._store, generation)
        for key in jobs.source_keys(job):
            await self._store.delete(key)

    async def _hand_back(self, job: Job) -> None:
        """Shutting down (a drain): the job goes back to the queue for another runner now,
        rather than when its lease runs out. Best effort: failing that, the lease does."""
        try:
            async with self._sessions() as session, session.begin():
                handed = await jobs.hand_back(session, job)
        except Exception as exc:  # noqa: BLE001 - shutting down; the lease expires anyway
            error = type(exc).__name__
            log.warning("could not hand a job back", extra={"job": job.id, "error": error})
            return
        log.info("job handed back", extra={"job": job.id, "handed_back": handed})

    async def _attempt(self, job: Job) -> None:
        if job.generation_id is not None:
            async with self._sessions() as session:
                earlier = await session.get(Generation, job.generation_id)
            outcome = jobs.previous_outcome(earlier)
            if outcome != "unfinished":
                assert earlier is not None
                error = jobs.generation_error(earlier) if outcome == "failed" else None
                await self._finish(job, error)
                return
        if job.attempts > self._max_attempts:  # counted on claim: this one is past the bound
            await self._give_up(job)
            return
        generation_id = new_id()
        async with self._sessions() as session, session.begin():
            await jobs.start_attempt(session, job.id, generation_id)
        try:
            request = await self._request(job)
            await self._generation.generate(
                await self._caller(job),
                request,
                generation_id=generation_id,
                on_image=lambda: self._count_image(job.id),
            )
        except GatewayError as exc:
            current_span().fail(exc.code)
            await self._finish(job, (exc.status_code, exc.code, exc.message))
            return
        await self._finish(job, None)

    async def _caller(self, job: Job) -> Caller:
        """The job's tenant and key, with the key's allow-list as it is now (a key narrowed
        after the submission no longer reaches the models it lost)."""
        models = None
        if job.api_key_id is not None:
            async with self._sessions() as session:
                key = await session.get(ApiKey, job.api_key_id)
            listed = key.model_list() if key is not None else None
            models = frozenset(listed) if listed is not None else None
        return Caller(job.tenant_id, job.api_key_id, models)

    async def _request(self, job: Job) -> GenerateRequest:
        """The stored contract fields, with the stored source's bytes (checked again by
        the service, as any source is)."""
        payload: dict[str, Any] = json.loads(job.request_json)
        count = len(jobs.source_mime_types(payload))
        request = parse_generate_request(
            payload, self._catalog, max_source_bytes=self._generation.max_source_bytes
        )
        if job.source_key is not None and count:
            keys = jobs.source_keys(job)
            request = dataclasses.replace(
                request,
                source_images=tuple([await self._store.get(key) for key in keys]),
                # Named as the caller sent them (sourceImages[2] in a message).
                source_field=SOURCE_IMAGES if count > 1 else SOURCE_IMAGE,
            )
        return request

    async def _count_image(self, job_id: str) -> None:
        # Progress is a courtesy: a failed write must not fail the image it counts.
        try:
            async with self._sessions() as session, session.begin():
                await jobs.count_image(session, job_id)
        except SQLAlchemyError as exc:
            log.warning("could not record job progress", extra={"error": type(exc).__name__})

    async def _finish(self, job: Job, error: tuple[int, str, str] | None) -> None:
        async with self._sessions() as session, session.begin():
            await jobs.finish(session, job.id, error=error)
        for key in jobs.source_keys(job):
            await self._store.delete(key)
