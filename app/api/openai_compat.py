"""OpenAI Images API on the same keys, credits and storage: apps that speak the OpenAI
SDK point `base_url` at the gateway. Errors come in OpenAI's shape, so the SDK raises
its typed exceptions (AuthenticationError, RateLimitError, ...)."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from app.api.body import declared_length, read_json_body
from app.api.body_budget import reserve_body
from app.api.deps import (
    AuthDep,
    CatalogDep,
    GenerationDep,
    ImageStoreDep,
    RequestBudgetDep,
    SettingsDep,
)
from app.api.errors import DATABASE_UNAVAILABLE
from app.api.query import parse_int
from app.api.schemas.common import API_KEY, openai_error_responses
from app.api.schemas.openai import (
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesResponse,
    OpenAIModelList,
)
from app.errors import GatewayError, InvalidRequest, PayloadTooLarge
from app.generation.request import DEFAULT_MODEL, MAX_IMAGES, parse_generate_request
from app.generation.service import GenerationResult, GenerationService
from app.imaging.aspect import CONTRACT_RATIOS, nearest_native
from app.providers.catalog import Catalog
from app.storage.base import ImageStore
from app.tenants.service import AuthContext

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "insufficient_credits",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}
_FORMATS = {"webp": "WEBP", "png": "PNG", "jpeg": "JPEG"}
# A side of more than 5 digits is no image size; it only feeds an aspect ratio here.
_MAX_SIDE_DIGITS = 5


def openai_error(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    body = {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "api_error"),
            "param": param,
            "code": code,
        }
    }
    return JSONResponse(body, status_code=status)


class OpenAIErrorRoute(APIRoute):
    """Renders every error of these routes (auth and validation included) OpenAI's way."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except GatewayError as exc:
                response = openai_error(
                    exc.status_code, exc.message, exc.code, exc.extra.get("field")
                )
                response.headers.update(exc.headers)
                return response
            except HTTPException as exc:  # Starlette's own, e.g. a malformed multipart body
                return openai_error(exc.status_code, str(exc.detail), "invalid_request")
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                param = str(first.get("loc", ("", ""))[-1])
                return openai_error(400, f"{param}: {first.get('msg')}", "invalid_value", param)
            except DATABASE_UNAVAILABLE:
                return openai_error(
                    503, "The database is unavailable; nothing was charged", "unavailable"
                )

        return handle


router = APIRouter(
    prefix="/v1",
    route_class=OpenAIErrorRoute,
    tags=["openai-compatible"],
    dependencies=[Security(API_KEY)],
    responses=openai_error_responses(401, 429, 503),
)
_GENERATION_ERRORS = openai_error_responses(400, 402, 403, 413, 415, 500)


def _body(model: type[ImageGenerationRequest | ImageEditRequest], media_type: str) -> Any:
    """`openapi_extra` declaring a body the route parses by hand (size cap first)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


@router.get("/models", response_model=OpenAIModelList)
async def list_models(auth: AuthDep, catalog: CatalogDep) -> dict[str, Any]:
    """The catalog models this key may use."""
    return {
        "object": "list",
        "data": [
            {"id": model.id, "object": "model", "created": 0, "owned_by": model.provider}
            for model in catalog
            if auth.allows(model.id)
        ],
    }


@router.post(
    "/images/generations",
    response_model=ImagesResponse,
    response_model_exclude_unset=True,
    responses=_GENERATION_ERRORS,
    openapi_extra=_body(ImageGenerationRequest, "application/json"),
)
async def generations(
    request: Request,
    auth: AuthDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    generation: GenerationDep,
    image_store: ImageStoreDep,
) -> dict[str, Any]:
    payload = await read_json_body(request, settings.max_body_bytes)
    if not isinstance(payload, dict):
        raise InvalidRequest("Request body must be a JSON object")
    return await _generate(
        catalog, generation, image_store, auth, request, payload, source_data_url=None
    )


@router.post(
    "/images/edits",
    response_model=ImagesResponse,
    response_model_exclude_unset=True,
    responses=_GENERATION_ERRORS,
    openapi_extra=_body(ImageEditRequest, "multipart/form-data"),
)
async def edits(
    request: Request,
    auth: AuthDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    generation: GenerationDep,
    image_store: ImageStoreDep,
    request_budget: RequestBudgetDep,
) -> dict[str, Any]:
    limit = settings.max_body_bytes
    declared = declared_length(request)
    # Refuse before parsing: multipart parsing would spool the whole body first.
    if declared is None or declared > limit:
        raise PayloadTooLarge(f"Request body must declare a length of at most {limit} bytes")
    # The upload is copied (form, bytes, data URL, decoded image) like a native source.
    async with reserve_body(
        request,
        request_budget,
        max_body_bytes=limit,
        wait_seconds=settings.request_bytes_wait_seconds,
    ):
        return await _edit(request, auth, catalog, generation, image_store)


async def _edit(
    request: Request,
    auth: AuthContext,
    catalog: Catalog,
    generation: GenerationService,
    image_store: ImageStore,
) -> dict[str, Any]:
    async with request.form(max_files=16, max_fields=32) as form:
        images = [item for key in ("image", "image[]") for item in form.getlist(key)]
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = next((item for item in images if isinstance(item, UploadFile)), None)
        if upload is None:
            raise InvalidRequest("image is required: send it as a multipart file", field="image")
        data = await upload.read()
    content_type = upload.content_type or "application/octet-stream"
    subtype = content_type.removeprefix("image/") if content_type.startswith("image/") else "png"
    source = f"data:image/{subtype};base64,{base64.b64encode(data).decode('ascii')}"
    payload: dict[str, Any] = dict(fields)
    if "n" in payload:
        payload["n"] = _count_field(payload["n"], "n")
    return await _generate(
        catalog, generation, image_store, auth, request, payload, source_data_url=source
    )


async def _generate(
    catalog: Catalog,
    generation: GenerationService,
    image_store: ImageStore,
    auth: AuthContext,
    request: Request,
    payload: dict[str, Any],
    source_data_url: str | None,
) -> dict[str, Any]:
    response_format = payload.get("response_format") or "url"
    if response_format not in ("url", "b64_json"):
        raise InvalidRequest("response_format must be 'url' or 'b64_json'", field="response_format")
    output_format = payload.get("output_format") or "webp"
    if not isinstance(output_format, str) or output_format not in _FORMATS:  # {} is unhashable
        raise InvalidRequest("output_format must be one of: webp, png, jpeg", field="output_format")
    contract = {
        "prompt": payload.get("prompt"),
        "model": resolve_model(payload.get("model"), catalog),
        "aspectRatio": ratio_for_size(payload.get("size")),
        "numImages": payload.get("n", 1),
        "sourceImage": source_data_url,
    }
    generate_request = parse_generate_request(contract, catalog)
    auth.require_model(generate_request.model.id)  # the key's allow-list, 403
    result = await generation.generate(auth, generate_request)
    data = await _render(image_store, request, result, response_format, output_format)
    first = result.images[0].image
    return {
        "created": int(time.time()),
        "data": data,
        "output_format": output_format,
        "size": f"{first.width}x{first.height}",
    }


async def _render(
    image_store: ImageStore,
    request: Request,
    result: GenerationResult,
    response_format: str,
    output_format: str,
) -> list[dict[str, Any]]:
    if response_format == "url":
        base_url = str(request.base_url).rstrip("/")
        urls = await asyncio.gather(
            *(image_store.url(item.key, base_url) for item in result.images)
        )
        # URLs serve the stored WebP; output_format applies to b64_json answers.
        return [{"url": url, "revised_prompt": None} for url in urls]
    encoded = await asyncio.gather(
        *(asyncio.to_thread(_transcode, item.image.data, output_format) for item in result.images)
    )
    return [{"b64_json": base64.b64encode(data).decode("ascii")} for data in encoded]


def resolve_model(value: Any, catalog: Catalog) -> Any:
    """Accept catalog ids and, for convenience, a bare upstream name like `gpt-image-1`."""
    if value is None:
        return DEFAULT_MODEL
    if isinstance(value, str) and catalog.get(value) is None:
        matches = [model.id for model in catalog if model.id.split("/", 1)[1] == value]
        if len(matches) == 1:
            return matches[0]
    return value


def ratio_for_size(size: Any) -> str:
    """OpenAI's `size` (WIDTHxHEIGHT or auto) as the nearest contract aspect ratio."""
    if size is None or size == "auto":
        return "1:1"
    if isinstance(size, str):
        width_text, _, height_text = size.partition("x")
        width = parse_int(width_text, _MAX_SIDE_DIGITS)
        height = parse_int(height_text, _MAX_SIDE_DIGITS)
        if width and height:  # neither None nor 0
            return nearest_native(f"{width}:{height}", CONTRACT_RATIOS)
    raise InvalidRequest(
        "size must be WIDTHxHEIGHT (e.g. 1024x1024, 1536x1024, 1024x1536) or auto", field="size"
    )


def _count_field(value: str, field: str) -> int:
    count = parse_int(value)
    if count is None or not 1 <= count <= MAX_IMAGES:
        raise InvalidRequest(f"{field} must be an integer from 1 to {MAX_IMAGES}", field=field)
    return count


def _transcode(webp: bytes, output_format: str) -> bytes:
    if output_format == "webp":
        return webp
    with Image.open(io.BytesIO(webp)) as image:
        converted = image.convert("RGB") if output_format == "jpeg" else image
        buffer = io.BytesIO()
        converted.save(buffer, _FORMATS[output_format])
    return buffer.getvalue()
