"""POST /api/v1/generate-image: the seed's contract."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from app.api.body import read_json_body
from app.api.deps import authenticated, external_base_url, get_services
from app.generation.request import GenerateImageBody, parse_generate_request
from app.generation.service import GenerationResult
from app.services import Services
from app.storage.base import ImageStore
from app.tenants.service import AuthContext

router = APIRouter()

_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


@router.post(
    "/api/v1/generate-image",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/GenerateImageBody"}}
            },
        }
    },
    responses={code: _ERROR for code in (400, 401, 402, 413, 415, 429, 500, 503)},
)
async def generate_image(
    request: Request,
    auth: Annotated[AuthContext, Depends(authenticated)],
    services: Annotated[Services, Depends(get_services)],
) -> JSONResponse:
    payload = await read_json_body(request, services.settings.max_body_bytes)
    generate_request = parse_generate_request(payload, services.catalog)
    result = await services.generation.generate(auth, generate_request)
    body = await render_result(result, services.image_store, external_base_url(request))
    return JSONResponse(body)


async def render_result(
    result: GenerationResult, store: ImageStore, base_url: str
) -> dict[str, Any]:
    urls = await asyncio.gather(*(store.url(item.key, base_url) for item in result.images))
    body: dict[str, Any] = {
        "images": [
            {
                "url": url,
                "text": item.text,
                "mimeType": item.image.mime_type,
                "fileSize": len(item.image.data),
                "width": item.image.width,
                "height": item.image.height,
                "index": item.index,
                "model": item.model.id,
            }
            for url, item in zip(urls, result.images, strict=True)
        ],
        "numImages": len(result.images),
        "id": result.generation_id,
        "model": result.model,
        "creditsCharged": result.credits_charged,
        "creditsRemaining": result.credits_remaining,
    }
    if result.failures:
        body["failures"] = [
            {"index": f.index, "code": f.code, "error": f.message} for f in result.failures
        ]
    return body


# Referenced by the OpenAPI requestBody above; registered by app.main.
OPENAPI_SCHEMAS = {
    "GenerateImageBody": GenerateImageBody.model_json_schema(
        ref_template="#/components/schemas/{model}"
    ),
    "Error": {
        "type": "object",
        "required": ["error", "code"],
        "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
    },
}
