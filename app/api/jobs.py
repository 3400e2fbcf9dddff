"""Asynchronous generation: `Prefer: respond-async` on generate-image answers 202 with a
job; GET /api/v1/jobs/{id} reports status and progress, then the contract's body."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response, Security
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import idempotency
from app.api.deps import AuthDep, BaseUrlDep, ImageStoreDep, SessionDep, decided_headers
from app.api.rendering import ImageView, contract_body, with_urls
from app.api.schemas.common import API_KEY, error_responses
from app.api.schemas.native import Job
from app.credits.ledger import get_balance
from app.db.statuses import JobStatus
from app.generation.request import GenerateRequest
from app.generation.service import GenerationService
from app.jobs import service as jobs
from app.jobs.runner import JobRunner
from app.settings import Settings
from app.storage.base import ImageStore
from app.tenants.service import AuthContext

router = APIRouter(dependencies=[Security(API_KEY)])

REPLAYED = {"Idempotent-Replayed": "true"}
JOB_RECORD = jobs.JOB_RECORD


def wants_async(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(part.strip().lower() == "respond-async" for part in prefer.split(","))


async def submit(
    *,
    sessions: async_sessionmaker[AsyncSession],
    image_store: ImageStore,
    generation: GenerationService,
    job_runner: JobRunner,
    settings: Settings,
    auth: AuthContext,
    payload: dict[str, Any],
    parsed: GenerateRequest,
    idempotency_key: str | None,
    base_url: str,
) -> JSONResponse:
    """202 with a new job; with an Idempotency-Key, the key's job (one per key and body)."""
    key = idempotency.validate_key(idempotency_key) if idempotency_key is not None else None
    source = None
    if parsed.source_images:
        source = await generation.decode_source(parsed.source_images[0])
    submission = await jobs.submit_job(
        sessions=sessions,
        image_store=image_store,
        tenant_id=auth.tenant_id,
        api_key_id=auth.api_key_id,
        payload=payload,
        request=parsed,
        # Priced like the sync hold: the dearest model of the chain that may serve it.
        chain=generation.usable_chain(parsed),
        source=source,
        idempotency_key=key,
        lock_for=idempotency_lock(settings),
    )
    if submission.replay is not None:
        return await replay_response(image_store, submission.replay, base_url)
    job_runner.wake()
    return _accepted(jobs.accepted_body(submission.job_id))


def idempotency_lock(settings: Settings) -> timedelta:
    """How long a claimed key stays in progress before another request may take it over."""
    return timedelta(seconds=settings.upstream_deadline_seconds + 60)


async def replay_response(
    image_store: ImageStore, replay: dict[str, Any], base_url: str
) -> JSONResponse:
    """An Idempotency-Key's stored response, sent again: a job's 202 or a generation's 200."""
    if JOB_RECORD in replay:
        return _accepted(replay[JOB_RECORD], replayed=True)
    body = await with_urls(replay["body"], replay["keys"], image_store, base_url)
    return JSONResponse(body, headers=REPLAYED)


def _accepted(body: dict[str, Any], *, replayed: bool = False) -> JSONResponse:
    headers = {"Location": body["statusUrl"], "Preference-Applied": "respond-async"}
    return JSONResponse(body, status_code=202, headers=headers | (REPLAYED if replayed else {}))


@router.get(
    "/api/v1/jobs/{job_id}", response_model=Job, responses=error_responses(400, 401, 404, 429, 503)
)
async def get_job(
    job_id: str,
    response: Response,
    auth: AuthDep,
    session: SessionDep,
    image_store: ImageStoreDep,
    base_url: BaseUrlDep,
) -> JSONResponse:
    view = await jobs.get_job(session, auth.tenant_id, job_id)
    balance = await get_balance(session, auth.tenant_id)
    job = view.job
    envelope: dict[str, Any] = {
        "jobId": job.id,
        "status": job.status,
        "progress": {"imagesDone": job.images_done, "imagesTotal": job.images_total},
        "createdAt": job.created_at.isoformat(),
        "completedAt": job.completed_at.isoformat() if job.completed_at else None,
    }
    if job.status == JobStatus.SUCCEEDED and view.generation is not None:
        body, keys = contract_body(
            generation_id=view.generation.id,
            model=view.generation.model,
            images=[ImageView.from_row(row) for row in view.images],
            charged=view.generation.credits_charged,
            remaining=balance,
        )
        body = await with_urls(body, keys, image_store, base_url)
        return decided_headers(JSONResponse(envelope | body), response)
    if job.status == JobStatus.FAILED:
        envelope["error"] = {
            "status": job.error_status,
            "code": job.error_code,
            "error": job.error_message,
        }
    return decided_headers(JSONResponse(envelope), response)
