"""Asynchronous generation: `Prefer: respond-async` on generate-image answers 202 with a
job; GET /api/v1/jobs/{id} reports status and progress, then the contract's body."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from app.api.deps import authenticated, external_base_url, get_services
from app.api.rendering import ImageView, contract_body, with_urls
from app.credits.ledger import get_balance
from app.db.models import new_id
from app.errors import InsufficientCredits
from app.generation.request import GenerateRequest
from app.jobs import service as jobs
from app.services import Services
from app.tenants.service import AuthContext

router = APIRouter()


def wants_async(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(part.strip().lower() == "respond-async" for part in prefer.split(","))


async def submit(
    request: Request,
    services: Services,
    auth: AuthContext,
    payload: dict[str, Any],
    parsed: GenerateRequest,
) -> JSONResponse:
    source = None
    if parsed.source_image is not None:
        source = await services.generation.decode_source(parsed.source_image)
    required = parsed.model.price * parsed.num_images
    async with services.sessions() as session:
        available = await get_balance(session, auth.tenant_id)
    # Checked now so an obvious 402 is not deferred; the job reserves when it runs.
    if available < required:
        raise InsufficientCredits(required=required, available=available)
    job_id = new_id()
    if source is not None:
        await services.image_store.put(
            jobs.source_key(auth.tenant_id, job_id), source.data, source.mime_type
        )
    async with services.sessions() as session, session.begin():
        await jobs.create_job(
            session,
            job_id=job_id,
            tenant_id=auth.tenant_id,
            api_key_id=auth.api_key_id,
            request=payload | {"model": parsed.model.id},
            source_mime_type=source.mime_type if source else None,
            num_images=parsed.num_images,
        )
    services.job_runner.wake()
    location = f"/api/v1/jobs/{job_id}"
    return JSONResponse(
        {"id": job_id, "status": "queued", "statusUrl": location},
        status_code=202,
        headers={"Location": location, "Preference-Applied": "respond-async"},
    )


@router.get("/api/v1/jobs/{job_id}")
async def get_job(
    job_id: str,
    request: Request,
    auth: Annotated[AuthContext, Depends(authenticated)],
    services: Annotated[Services, Depends(get_services)],
) -> JSONResponse:
    async with services.sessions() as session:
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
    if job.status == "succeeded" and view.generation is not None:
        body, keys = contract_body(
            generation_id=view.generation.id,
            model=view.generation.model,
            images=[ImageView.from_row(row) for row in view.images],
            charged=view.generation.credits_charged,
            remaining=balance,
        )
        body = await with_urls(body, keys, services.image_store, external_base_url(request))
        return JSONResponse(envelope | body)
    if job.status == "failed":
        envelope["error"] = {
            "status": job.error_status,
            "code": job.error_code,
            "error": job.error_message,
        }
    return JSONResponse(envelope)
