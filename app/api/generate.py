"""POST /api/v1/generate-image: the seed's contract."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, Security
from fastapi.responses import JSONResponse

from app import idempotency
from app.api import jobs as jobs_api
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
from app.api.rendering import result_body, with_urls
from app.api.schemas.common import API_KEY, error_responses
from app.api.schemas.native import Generation, JobAccepted
from app.generation.request import GenerateImageBody, parse_generate_request

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
        generate_request = parse_generate_request(payload, catalog)
        auth.require_model(generate_request.model.id)  # the key's allow-list, 403
        if jobs_api.wants_async(request):
            rendered = await jobs_api.submit(
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
            result = await generation.generate(auth, generate_request)
            body, keys = result_body(result)
            return {"body": body, "keys": keys}

        if idempotency_key is None:
            produced = await run()
        else:
            once = await idempotency.run_once(
                sessions,
                auth.tenant_id,
                idempotency.validate_key(idempotency_key),
                idempotency.request_hash(payload),
                lock_for=jobs_api.idempotency_lock(settings),
                run=run,
            )
            if once.replayed:  # a generation's 200, or the job an async request made
                rendered = await jobs_api.replay_response(image_store, once.response, base_url)
                return decided_headers(rendered, response)
            produced = once.response
        body = await with_urls(produced["body"], produced["keys"], image_store, base_url)
        return decided_headers(JSONResponse(body), response)


# Referenced by the OpenAPI requestBody above; registered by app.api.openapi.
OPENAPI_SCHEMAS = {
    "GenerateImageBody": GenerateImageBody.model_json_schema(
        ref_template="#/components/schemas/{model}"
    ),
}
