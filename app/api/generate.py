"""POST /api/v1/generate-image: the seed's contract."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Security
from fastapi.responses import JSONResponse

from app import idempotency
from app.api import jobs as jobs_api
from app.api.body import read_json_body
from app.api.body_budget import EXEMPT_BYTES, reserve_body
from app.api.deps import authenticated, external_base_url, get_services
from app.api.rendering import result_body, with_urls
from app.api.schemas.common import API_KEY, error_responses
from app.api.schemas.native import Generation, JobAccepted
from app.generation.request import GenerateImageBody, GenerateRequest, parse_generate_request
from app.services import Services
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
        **error_responses(400, 401, 402, 409, 413, 415, 429, 500, 503),
    },
)
async def generate_image(
    request: Request,
    auth: Annotated[AuthContext, Depends(authenticated)],
    services: Annotated[Services, Depends(get_services)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    settings = services.settings
    async with reserve_body(
        request,
        services.request_budget,
        max_body_bytes=settings.max_body_bytes,
        wait_seconds=settings.request_bytes_wait_seconds,
    ):
        return await _generate_image(request, auth, services, idempotency_key)


async def _generate_image(
    request: Request, auth: AuthContext, services: Services, idempotency_key: str | None
) -> JSONResponse:
    payload = await read_json_body(
        request, services.settings.max_body_bytes, unsized_limit=EXEMPT_BYTES
    )
    generate_request = await parse_request(payload, services)
    if jobs_api.wants_async(request):
        return await jobs_api.submit(
            request, services, auth, payload, generate_request, idempotency_key
        )
    base_url = external_base_url(request)
    if idempotency_key is None:
        result = await services.generation.generate(auth.caller, generate_request)
        body, keys = result_body(result)
        return JSONResponse(await with_urls(body, keys, services.image_store, base_url))

    async def run() -> dict[str, Any]:
        result = await services.generation.generate(auth.caller, generate_request)
        body, keys = result_body(result)
        return {"body": body, "keys": keys}

    once = await idempotency.run_once(
        services.sessions,
        auth.tenant_id,
        idempotency.validate_key(idempotency_key),
        idempotency.request_hash(payload),
        lock_for=jobs_api.idempotency_lock(services),
        run=run,
    )
    if once.replayed:  # a generation's 200, or the job an async request made
        return await jobs_api.replay_response(services, once.response, base_url)
    body, keys = once.response["body"], once.response["keys"]
    return JSONResponse(await with_urls(body, keys, services.image_store, base_url))


async def parse_request(payload: Any, services: Services) -> GenerateRequest:
    """The contract's body; a `sourceImage` (megabytes of base64) is decoded in a thread."""
    parse = functools.partial(
        parse_generate_request,
        payload,
        services.catalog,
        max_source_bytes=services.generation.max_source_bytes,
    )
    if isinstance(payload, dict) and payload.get("sourceImage"):
        return await asyncio.to_thread(parse)
    return parse()


# Referenced by the OpenAPI requestBody above; registered by app.api.openapi.
OPENAPI_SCHEMAS = {
    "GenerateImageBody": GenerateImageBody.model_json_schema(
        ref_template="#/components/schemas/{model}"
    ),
}
