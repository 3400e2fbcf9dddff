"""POST /api/v1/generate-image: the seed's contract."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, Security
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import idempotency
from app.api.body import read_json_body
from app.api.body_budget import EXEMPT_BYTES, reserve_body
from app.api.deps import (
    AuthDep,
    BaseUrlDep,
    CatalogDep,
    GenerationDep,
    ImageStoreDep,
    JobRunnerDep,
    RequestBudgetDep,
    SessionsDep,
    SettingsDep,
    decided_headers,
)
from app.api.rendering import accepted, replay_response, result_body, with_urls
from app.api.schemas.common import API_KEY, error_responses
from app.api.schemas.native import Generation, JobAccepted
from app.errors import InvalidRequest
from app.generation.request import GenerateImageBody, GenerateRequest, parse_generate_request
from app.generation.service import GenerationService
from app.jobs import service as jobs
from app.jobs.runner import JobRunner
from app.jobs.webhook_target import validate_webhook_url
from app.jobs.webhooks import WebhookRequest
from app.providers.catalog import Catalog
from app.settings import Settings
from app.storage.base import ImageStore
from app.tenants.service import AuthContext

router = APIRouter(dependencies=[Security(API_KEY)])

_PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "`respond-async`: answer 202 with a job to poll instead of waiting",
    "schema": {"type": "string", "enum": ["respond-async"]},
}


@router.post(
    "/api/v1/generate-image",
    # Parsed by hand (app.api.body, then parse_generate_request): declared for the schema.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/GenerateImageBody"}}
            },
        },
        "parameters": [_PREFER],
    },
    response_model=Generation,
    responses={
        200: {"description": "The images (an Idempotency-Key's replay is marked so)"},
        202: {"model": JobAccepted, "description": "With `Prefer: respond-async`: the job"},
        **error_responses(400, 401, 402, 403, 409, 413, 415, 429, 500, 503),
    },
)
async def generate_image(
    request: Request,
    response: Response,
    auth: AuthDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    generation: GenerationDep,
    image_store: ImageStoreDep,
    sessions: SessionsDep,
    job_runner: JobRunnerDep,
    request_budget: RequestBudgetDep,
    base_url: BaseUrlDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    async with reserve_body(
        request,
        request_budget,
        max_body_bytes=settings.max_body_bytes,
        wait_seconds=settings.request_bytes_wait_seconds,
    ):
        payload = await read_json_body(request, settings.max_body_bytes, unsized_limit=EXEMPT_BYTES)
        generate_request = await parse_request(payload, catalog, generation)
        auth.require_model(generate_request.model.id)  # the key's allow-list, 403
        wants_async = _wants_async(request)
        if isinstance(payload, dict) and payload.get("webhookUrl") is not None and not wants_async:
            raise InvalidRequest(
                "webhookUrl needs the header 'Prefer: respond-async' (a webhook reports an"
                " async job; a synchronous request answers with the images)",
                field="webhookUrl",
            )
        if wants_async:
            rendered = await _submit(
                sessions=sessions,
                image_store=image_store,
                generation=generation,
                job_runner=job_runner,
                settings=settings,
                auth=auth,
                payload=payload,
                parsed=generate_request,
                idempotency_key=idempotency_key,
                base_url=base_url,
            )
            return decided_headers(rendered, response)

        async def run() -> dict[str, Any]:
            result = await generation.generate(auth.caller, generate_request)
            body, keys = result_body(result)
            return {"body": body, "keys": keys}

        if idempotency_key is None:
            produced = await run()
        else:
            once = await idempotency.run_once(
                sessions,
                auth.tenant_id,
                idempotency.validate_key(idempotency_key),
                await _request_hash(payload),
                lock_for=idempotency.lock_duration(settings),
                run=run,
            )
            if once.replayed:  # a generation's 200, or the job an async request made
                rendered = await replay_response(image_store, once.response, base_url)
                return decided_headers(rendered, response)
            produced = once.response
        body = await with_urls(produced["body"], produced["keys"], image_store, base_url)
        return decided_headers(JSONResponse(body), response)


async def _request_hash(payload: Any) -> str:
    """The Idempotency-Key's body hash; over megabytes of source images, in a thread."""
    if carries_sources(payload):
        return await asyncio.to_thread(idempotency.request_hash, payload)
    return idempotency.request_hash(payload)


def _wants_async(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(part.strip().lower() == "respond-async" for part in prefer.split(","))


async def _submit(
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
    webhook = None
    if payload.get("webhookUrl") is not None:
        url = validate_webhook_url(
            payload["webhookUrl"], allow_private=settings.webhook_allow_private
        )
        webhook = WebhookRequest(url=url, base_url=base_url)
    sources = await generation.source_images(parsed)
    submission = await jobs.submit_job(
        sessions=sessions,
        image_store=image_store,
        tenant_id=auth.tenant_id,
        api_key_id=auth.api_key_id,
        payload=payload,
        body_hash=await _request_hash(payload) if key is not None else None,
        request=parsed,
        # Priced like the sync hold: the dearest model of the chain that may serve it.
        chain=generation.usable_chain(parsed, auth.caller),
        sources=sources,
        idempotency_key=key,
        lock_for=idempotency.lock_duration(settings),
        webhook=webhook,
    )
    if submission.replay is not None:
        return await replay_response(image_store, submission.replay, base_url)
    job_runner.wake()
    return accepted(jobs.accepted_body(submission.job_id))


async def parse_request(
    payload: Any, catalog: Catalog, generation: GenerationService
) -> GenerateRequest:
    """The contract's body; source images (megabytes of base64) are decoded in a thread."""
    parse = functools.partial(
        parse_generate_request,
        payload,
        catalog,
        max_source_bytes=generation.max_source_bytes,
        max_source_bytes_total=generation.max_source_bytes_total,
    )
    if carries_sources(payload):
        return await asyncio.to_thread(parse)
    return parse()


def carries_sources(payload: Any) -> bool:
    """Whether the body has source images (whose hash and decode belong in a thread)."""
    return isinstance(payload, dict) and bool(
        payload.get("sourceImage") or payload.get("sourceImages")
    )


# Referenced by the OpenAPI requestBody above; registered by app.api.openapi.
OPENAPI_SCHEMAS = {
    "GenerateImageBody": GenerateImageBody.model_json_schema(
        ref_template="#/components/schemas/{model}"
    ),
}
