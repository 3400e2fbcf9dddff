"""GET /api/v1/jobs/{id}: an async job's status and progress, then the contract's body
(jobs are submitted by generate-image with `Prefer: respond-async`, app/api/generate.py),
and its webhook's attempts. A finished job's body is also what its webhook POSTs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, Security
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.api.deps import AuthDep, BaseUrlDep, ImageStoreDep, SessionDep, decided_headers
from app.api.rendering import ImageView, contract_body, with_urls
from app.api.schemas.common import API_KEY, error_responses
from app.api.schemas.native import Job
from app.credits.ledger import get_balance
from app.db.statuses import JobStatus
from app.jobs import service as jobs
from app.jobs import webhooks
from app.jobs.webhook_dispatcher import RenderJob
from app.storage.base import ImageStore

router = APIRouter(dependencies=[Security(API_KEY)])


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
    body = await job_body(session, image_store, auth.tenant_id, job_id, base_url)
    delivery = await webhooks.delivery_of(session, job_id)
    if delivery is not None:
        body["webhook"] = webhook_view(delivery)
    return decided_headers(JSONResponse(body), response)


async def job_body(
    session: AsyncSession, image_store: ImageStore, tenant_id: str, job_id: str, base_url: str
) -> dict[str, Any]:
    """The job's status and progress; finished, the contract's body or the error."""
    view = await jobs.get_job(session, tenant_id, job_id)
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
            remaining=await get_balance(session, tenant_id),
        )
        return envelope | await with_urls(body, keys, image_store, base_url)
    if job.status == JobStatus.FAILED:
        envelope["error"] = {
            "status": job.error_status,
            "code": job.error_code,
            "error": job.error_message,
        }
    return envelope


def webhook_view(view: webhooks.DeliveryView) -> dict[str, Any]:
    """The webhook's URL, where it stands and each attempt's outcome (never a body)."""
    delivery = view.delivery
    return {
        "url": delivery.url,
        "status": delivery.status,
        "nextAttemptAt": webhooks.iso(
            delivery.next_attempt_at if delivery.status == "pending" else None
        ),
        "deliveries": [
            {
                "attempt": attempt.attempt,
                "at": attempt.at.isoformat(),
                "statusCode": attempt.status_code,
                "error": attempt.error,
            }
            for attempt in view.attempts
        ],
    }


def job_renderer(sessions: async_sessionmaker[AsyncSession], image_store: ImageStore) -> RenderJob:
    """What the webhook dispatcher POSTs: the finished job's body, without its own
    `webhook` log (which each attempt changes)."""

    async def render(tenant_id: str, job_id: str, base_url: str) -> dict[str, Any]:
        async with sessions() as session:
            return await job_body(session, image_store, tenant_id, job_id, base_url)

    return render
