"""The /v1 routes: models, images/generations (JSON) and images/edits (multipart).

Errors come in OpenAI's shape: app/api/errors.py renders every error under /v1 so
(authentication, validation, database outages, unknown paths and methods included), and
the SDK raises its typed exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response, Security
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import UploadFile

from app import idempotency
from app.api.body import declared_length, read_json_body
from app.api.body_budget import reserve_body
from app.api.deps import (
    AuthDep,
    BaseUrlDep,
    CallerIfPresentedDep,
    CatalogDep,
    GenerationDep,
    ImageStoreDep,
    RequestBudgetDep,
    SessionsDep,
    SettingsDep,
    decided_headers,
)
from app.api.models import allows_for
from app.api.openai import params, rendering
from app.api.openai.stream import (
    STREAM_RESPONSE_DOC,
    EventStreamResponse,
    StreamFormat,
    stream_response,
)
from app.api.rendering import openai_model_objects
from app.api.schemas.common import API_KEY, OPTIONAL_API_KEY, openai_error_responses
from app.api.schemas.openai import (
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesResponse,
    OpenAIModel,
    OpenAIModelList,
)
from app.errors import InvalidRequest, NotFound, PayloadTooLarge
from app.generation.request import GenerateRequest, resolve_model
from app.generation.service import GenerationService
from app.providers.catalog import CatalogModel
from app.settings import Settings
from app.storage.base import ImageStore
from app.tenants.service import AuthContext

# Files one edit may upload: OpenAI's 16 references and a mask.
_MAX_FILES = 17
# A generation's JSON: a 32,000-character prompt, even all escaped as \uXXXX pairs, is
# under 800 KB.
GENERATION_BODY_BYTES = 1024 * 1024


router = APIRouter(
    prefix="/v1",
    tags=["openai-compatible"],
    dependencies=[Security(API_KEY)],
    responses=openai_error_responses(401, 429, 503),
)
_GENERATION_ERRORS = {
    **openai_error_responses(400, 402, 403, 409, 413, 415, 500),
    **STREAM_RESPONSE_DOC,
}


def _body(model: type[ImageGenerationRequest | ImageEditRequest], media_type: str) -> Any:
    """`openapi_extra` declaring a body the route parses by hand (size cap first)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


def _digests(images: list[bytes], mask: bytes | None) -> list[str]:
    digests = [hashlib.sha256(data).hexdigest() for data in images]
    if mask is not None:
        digests.append("mask:" + hashlib.sha256(mask).hexdigest())
    return digests


@dataclass(frozen=True, slots=True)
class _Use:
    """What a generation on these routes uses, declared once for both routes."""

    settings: Settings
    generation: GenerationService
    image_store: ImageStore
    sessions: async_sessionmaker[AsyncSession]
    base_url: str


async def _use(
    settings: SettingsDep,
    generation: GenerationDep,
    image_store: ImageStoreDep,
    sessions: SessionsDep,
    base_url: BaseUrlDep,
) -> _Use:
    return _Use(settings, generation, image_store, sessions, base_url)


_UseDeps = Annotated[_Use, Depends(_use)]


@router.get("/models", response_model=OpenAIModelList, openapi_extra=OPTIONAL_API_KEY)
async def list_models(caller: CallerIfPresentedDep, catalog: CatalogDep) -> dict[str, Any]:
    """Public: no key needed, no rate limit; a key that is sent must be valid, and a key
    limited to some models sees only those."""
    allows = allows_for(caller)
    return {
        "object": "list",
        "data": openai_model_objects(model for model in catalog if allows(model.id)),
    }


@router.get(
    "/models/{model_id:path}",
    response_model=OpenAIModel,
    responses=openai_error_responses(404),
    openapi_extra=OPTIONAL_API_KEY,
)
async def retrieve_model(
    model_id: str, caller: CallerIfPresentedDep, catalog: CatalogDep
) -> dict[str, Any]:
    """A catalog id (`openai/gpt-image-1`, raw or with %2F) or a bare upstream name."""
    model: CatalogModel | None
    try:
        model = resolve_model(model_id, catalog)
    except InvalidRequest:
        model = None
    if model is None or not allows_for(caller)(model.id):
        raise NotFound(f"The model '{model_id[:100]}' does not exist", field="model")
    return openai_model_objects([model])[0]


@router.post(
    "/images/generations",
    response_model=ImagesResponse,
    responses=_GENERATION_ERRORS,
    openapi_extra=_body(ImageGenerationRequest, "application/json"),
)
async def generations(
    request: Request,
    response: Response,
    auth: AuthDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    use: _UseDeps,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    # Prompts and options only (images go to /edits): a small cap, as the JSON is parsed
    # on the loop outside the request-bytes budget.
    payload = await read_json_body(request, min(settings.max_body_bytes, GENERATION_BODY_BYTES))
    if not isinstance(payload, dict):
        raise InvalidRequest("Request body must be a JSON object")
    stream = params.stream_params(payload)
    parsed, view = params.parse(payload, catalog, allowed=params.GENERATION_PARAMS)
    auth.require_model(parsed.model.id)  # the key's allow-list, 403
    if stream is not None:
        answer = await _stream(request, auth, use, parsed, view, stream, idempotency_key)
    else:
        answer = await _generate(request, auth, use, parsed, view, payload, idempotency_key)
    return decided_headers(answer, response)


@router.post(
    "/images/edits",
    response_model=ImagesResponse,
    responses=_GENERATION_ERRORS,
    openapi_extra=_body(ImageEditRequest, "multipart/form-data"),
)
async def edits(
    request: Request,
    response: Response,
    auth: AuthDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    request_budget: RequestBudgetDep,
    use: _UseDeps,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    limit = settings.max_body_bytes
    declared = declared_length(request)
    # Refuse before parsing: multipart parsing would spool the whole body first.
    if declared is None or declared > limit:
        raise PayloadTooLarge(f"Request body must declare a length of at most {limit} bytes")
    # The uploads are copied (form, bytes, decoded image) like a native source; a stream
    # keeps them, and so its share of the budget, until its last event.
    async with contextlib.AsyncExitStack() as held:
        await held.enter_async_context(
            reserve_body(
                request,
                request_budget,
                max_body_bytes=limit,
                wait_seconds=settings.request_bytes_wait_seconds,
            )
        )
        async with request.form(max_files=_MAX_FILES, max_fields=32) as form:
            fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
            images = [
                await item.read()
                for key in ("image", "image[]")
                for item in form.getlist(key)
                if isinstance(item, UploadFile)
            ]
            mask_file = form.get("mask")
            mask = await mask_file.read() if isinstance(mask_file, UploadFile) else None
        for name in ("image", "image[]", "mask"):
            if name in fields:  # a text field where a file belongs: never silently dropped
                raise InvalidRequest(f"{name} must be sent as a multipart file", field=name)
        if not images:
            raise InvalidRequest("image is required: send it as a multipart file", field="image")
        stream = params.stream_params(fields)
        parsed, view = params.parse(
            fields, catalog, allowed=params.EDIT_PARAMS, images=tuple(images), mask=mask
        )
        auth.require_model(parsed.model.id)  # the key's allow-list, 403
        if stream is not None:
            answer = await _stream(request, auth, use, parsed, view, stream, idempotency_key)
            if isinstance(answer, EventStreamResponse):
                answer.release_after(held.pop_all())
            return decided_headers(answer, response)
        identity = fields
        if idempotency_key is not None:  # the key's body: the fields and each upload's digest
            identity = fields | {"__files__": await asyncio.to_thread(_digests, images, mask)}
        answer = await _generate(request, auth, use, parsed, view, identity, idempotency_key)
        return decided_headers(answer, response)


async def _generate(
    request: Request,
    auth: AuthContext,
    use: _Use,
    parsed: GenerateRequest,
    view: params.View,
    identity: dict[str, Any],
    idempotency_key: str | None,
) -> Response:
    references = len(parsed.source_images)
    if idempotency_key is None:
        result = await use.generation.generate(auth.caller, parsed)
        saved = rendering.record(result, view, references)
        images = [item.image.data for item in result.images]
        return await rendering.render(saved, use.image_store, use.base_url, images=images)

    async def run() -> dict[str, Any]:
        result = await use.generation.generate(auth.caller, parsed)
        return rendering.record(result, view, references)

    once = await idempotency.run_once(
        use.sessions,
        auth.tenant_id,
        idempotency.validate_key(idempotency_key),
        # The route is part of the body: a generation's key is not an edit's.
        idempotency.request_hash({"route": request.url.path, "body": identity}),
        lock_for=idempotency.lock_duration(use.settings),
        run=run,
    )
    return await rendering.render(
        once.response, use.image_store, use.base_url, replayed=once.replayed
    )


async def _stream(
    request: Request,
    auth: AuthContext,
    use: _Use,
    parsed: GenerateRequest,
    view: params.View,
    stream: params.StreamParams,
    idempotency_key: str | None,
) -> Response:
    if idempotency_key is not None:
        # A stream is delivered once, as it happens: there is no answer to replay, and
        # running it again would charge twice. Refused rather than ignored.
        raise InvalidRequest(
            "Idempotency-Key is not supported with stream=true: a stream cannot be "
            "replayed; send the request without one of them",
            field="Idempotency-Key",
        )
    references = len(parsed.source_images)
    return await stream_response(
        request,
        use.generation,
        auth.caller,
        parsed,
        stream,
        StreamFormat(
            kind="image_edit" if references else "image_generation",
            output_format=view.output_format,
            usage=lambda item: rendering.usage((item,), references),
            quality=view.quality or "auto",
            background=view.background,
        ),
    )
