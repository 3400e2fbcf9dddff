"""GET /api/v1/jobs/{id}: an async job's status and progress, then the contract's body
(jobs are submitted by generate-image with `Prefer: respond-async`, app/api/generate.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, Security
from fastapi.responses import JSONResponse

from app.api.deps import AuthDep, BaseUrlDep, ImageStoreDep, SessionDep, decided_headers
from app.api.rendering import ImageView, contract_body, with_urls
from app.api.schemas.common import API_KEY, error_responses
from app.api.schemas.native import Job
from app.credits.ledger import get_balance
from app.db.statuses import JobStatus
from app.jobs import service as jobs

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
