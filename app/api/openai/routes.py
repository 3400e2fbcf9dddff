"""The /v1 routes: models, images/generations (JSON) and images/edits (multipart).

Errors come in OpenAI's shape: app/api/errors.py renders every error under /v1 so
(authentication, validation, database outages, unknown paths and methods included), and
the SDK raises its typed exceptions.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response, Security
from starlette.datastructures import UploadFile

from app import idempotency
from app.api import jobs as jobs_api
from app.api.body import declared_length, read_json_body
from app.api.body_budget import reserve_body
from app.api.deps import authenticated, caller_if_presented, external_base_url, get_services
from app.api.openai import params, rendering
from app.api.openai.stream import STREAM_RESPONSE_DOC, StreamFormat, stream_response
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
from app.services import Services
from app.tenants.service import AuthContext

# Files one edit may upload: OpenAI's 16 references and a mask.
_MAX_FILES = 17


router = APIRouter(
    prefix="/v1",
    tags=["openai-compatible"],
    dependencies=[Security(API_KEY)],
    responses=openai_error_responses(401, 429, 503),
)
_GENERATION_ERRORS = {
    **openai_error_responses(400, 402, 409, 413, 415, 500),
    **STREAM_RESPONSE_DOC,
}


def _body(model: type[ImageGenerationRequest | ImageEditRequest], media_type: str) -> Any:
    """`openapi_extra` declaring a body the route parses by hand (size cap first)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


@router.get("/models", response_model=OpenAIModelList, openapi_extra=OPTIONAL_API_KEY)
async def list_models(
    _caller: Annotated[AuthContext | None, Depends(caller_if_presented)],
    services: Annotated[Services, Depends(get_services)],
) -> dict[str, Any]:
    """Public: no key needed, no rate limit; a key that is sent must be valid."""
    return {"object": "list", "data": openai_model_objects(services.catalog)}


@router.get(
    "/models/{model_id:path}",
    response_model=OpenAIModel,
    responses=openai_error_responses(404),
    openapi_extra=OPTIONAL_API_KEY,
)
async def retrieve_model(
    model_id: str,
    _caller: Annotated[AuthContext | None, Depends(caller_if_presented)],
    services: Annotated[Services, Depends(get_services)],
) -> dict[str, Any]:
    """A catalog id (`openai/gpt-image-1`, raw or with %2F) or a bare upstream name."""
    try:
        model = resolve_model(model_id, services.catalog)
    except InvalidRequest:
        raise NotFound(f"The model '{model_id[:100]}' does not exist", field="model") from None
    return openai_model_objects([model])[0]


@router.post(
    "/images/generations",
    response_model=ImagesResponse,
    responses=_GENERATION_ERRORS,
    openapi_extra=_body(ImageGenerationRequest, "application/json"),
)
async def generations(
    request: Request,
    auth: Annotated[AuthContext, Depends(authenticated)],
    services: Annotated[Services, Depends(get_services)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    payload = await read_json_body(request, services.settings.max_body_bytes)
    if not isinstance(payload, dict):
        raise InvalidRequest("Request body must be a JSON object")
    stream = params.stream_params(payload)
    parsed, view = params.parse(payload, services.catalog, allowed=params.GENERATION_PARAMS)
    if stream is not None:
        return await _stream(request, auth, services, parsed, view, stream, idempotency_key)
    return await _generate(request, auth, services, parsed, view, payload, idempotency_key)


@router.post(
    "/images/edits",
    response_model=ImagesResponse,
    responses=_GENERATION_ERRORS,
    openapi_extra=_body(ImageEditRequest, "multipart/form-data"),
)
async def edits(
    request: Request,
    auth: Annotated[AuthContext, Depends(authenticated)],
    services: Annotated[Services, Depends(get_services)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    limit = services.settings.max_body_bytes
    declared = declared_length(request)
    # Refuse before parsing: multipart parsing would spool the whole body first.
    if declared is None or declared > limit:
        raise PayloadTooLarge(f"Request body must declare a length of at most {limit} bytes")
    # The uploads are copied (form, bytes, decoded image) like a native source.
    async with reserve_body(
        request,
        services.request_budget,
        max_body_bytes=limit,
        wait_seconds=services.settings.request_bytes_wait_seconds,
    ):
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
            fields,
            services.catalog,
            allowed=params.EDIT_PARAMS,
            images=tuple(images),
            mask=mask,
        )
        if stream is not None:
            return await _stream(request, auth, services, parsed, view, stream, idempotency_key)
        # The key's body: the fields and a digest of each upload, in order.
        digests = [hashlib.sha256(data).hexdigest() for data in images]
        if mask is not None:
            digests.append("mask:" + hashlib.sha256(mask).hexdigest())
        identity = fields | {"__files__": digests}
        return await _generate(request, auth, services, parsed, view, identity, idempotency_key)


async def _generate(
    request: Request,
    auth: AuthContext,
    services: Services,
    parsed: GenerateRequest,
    view: params.View,
    identity: dict[str, Any],
    idempotency_key: str | None,
) -> Response:
    base_url = external_base_url(request)
    references = len(parsed.source_images)
    if idempotency_key is None:
        result = await services.generation.generate(auth.caller, parsed)
        saved = rendering.record(result, view, references)
        images = [item.image.data for item in result.images]
        return await rendering.render(saved, services.image_store, base_url, images=images)

    async def run() -> dict[str, Any]:
        result = await services.generation.generate(auth.caller, parsed)
        return rendering.record(result, view, references)

    once = await idempotency.run_once(
        services.sessions,
        auth.tenant_id,
        idempotency.validate_key(idempotency_key),
        # The route is part of the body: a generation's key is not an edit's.
        idempotency.request_hash({"route": request.url.path, "body": identity}),
        lock_for=jobs_api.idempotency_lock(services),
        run=run,
    )
    return await rendering.render(
        once.response, services.image_store, base_url, replayed=once.replayed
    )


async def _stream(
    request: Request,
    auth: AuthContext,
    services: Services,
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
        services.generation,
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
