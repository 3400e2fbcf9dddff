"""A tenant's image history: /api/v1/images (list, one, delete) and the hosted /api/v1/gallery."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response, Security

from app.api.deps import (
    AuthDep,
    BaseUrlDep,
    CatalogDep,
    ImageStoreDep,
    SessionDep,
    decided_headers,
)
from app.api.query import (
    MAX_OFFSET,
    choice_param,
    choice_query,
    int_param,
    int_query,
    query_parameters,
    text_param,
    text_query,
)
from app.api.schemas.common import API_KEY, error_responses
from app.api.schemas.native import Gallery, ImageItem, ImagePage
from app.history import images as history
from app.history.images import ImageRecord, PageRequest
from app.storage.base import ImageStore

router = APIRouter(tags=["history"], dependencies=[Security(API_KEY)])

_LIST_ERRORS = error_responses(400, 401, 429, 503)
# 400: a NUL in the id (app.api.query.NulInUrlGuard).
_ONE_ERRORS = error_responses(400, 401, 404, 429, 503)

# The hosted service's gallery also lists other media; this gateway makes only images,
# so `video` is a valid, always empty type and anything unknown is a 400.
GALLERY_TYPES = ("image", "video", "all")
GALLERY_DEFAULT_LIMIT = 12
_OFFSET = "Skip this many images (newest first)"


@router.get(
    "/api/v1/images",
    response_model=ImagePage,
    response_model_exclude_unset=True,
    responses=_LIST_ERRORS,
    openapi_extra=query_parameters(
        int_query("limit", minimum=1, maximum=history.MAX_LIMIT, default=history.DEFAULT_LIMIT),
        text_query("cursor", "A previous page's nextCursor"),
        int_query("offset", minimum=0, maximum=MAX_OFFSET, description=_OFFSET),
        text_query("model", "Only images made by this catalog model (see /api/v1/models)"),
    ),
)
async def list_images(
    request: Request,
    auth: AuthDep,
    session: SessionDep,
    catalog: CatalogDep,
    image_store: ImageStoreDep,
    base_url: BaseUrlDep,
) -> dict[str, Any]:
    """Own images, newest first. `limit` 1..100 (24); `cursor` (a previous `nextCursor`)
    or `offset`; `model` filters by the model that made the image."""
    params = request.query_params
    page_request = PageRequest(
        limit=_limit(request, history.DEFAULT_LIMIT),
        cursor=text_param(params, "cursor"),
        offset=int_param(params, "offset", default=None, minimum=0, maximum=MAX_OFFSET),
        model=choice_param(params, "model", catalog.ids),
    )
    page = await history.list_images(session, auth.tenant_id, page_request)
    body: dict[str, Any] = {
        "items": await _items(image_store, base_url, page.items),
        "hasMore": page.has_more,
        "nextCursor": page.next_cursor,
        "limit": page_request.limit,
    }
    if page_request.offset is not None:
        body["offset"] = page_request.offset
        body["nextOffset"] = page.next_offset
    return body


@router.get("/api/v1/images/{image_id}", response_model=ImageItem, responses=_ONE_ERRORS)
async def get_image(
    image_id: str,
    auth: AuthDep,
    session: SessionDep,
    image_store: ImageStoreDep,
    base_url: BaseUrlDep,
) -> dict[str, Any]:
    record = await history.get_image(session, auth.tenant_id, image_id)
    (item,) = await _items(image_store, base_url, (record,))
    return item


@router.delete("/api/v1/images/{image_id}", status_code=204, responses=_ONE_ERRORS)
async def delete_image(
    image_id: str,
    response: Response,
    auth: AuthDep,
    session: SessionDep,
    image_store: ImageStoreDep,
) -> Response:
    """Removes the stored object; the generation and its billing record stay."""
    await history.delete_image(session, image_store, auth.tenant_id, image_id)
    return decided_headers(Response(status_code=204), response)


@router.get(
    "/api/v1/gallery",
    response_model=Gallery,
    responses=_LIST_ERRORS,
    openapi_extra=query_parameters(
        choice_query("type", GALLERY_TYPES, default="image"),
        int_query("limit", minimum=1, maximum=history.MAX_LIMIT, default=GALLERY_DEFAULT_LIMIT),
        int_query("offset", minimum=0, maximum=MAX_OFFSET, default=0, description=_OFFSET),
    ),
)
async def gallery(
    request: Request,
    auth: AuthDep,
    session: SessionDep,
    image_store: ImageStoreDep,
    base_url: BaseUrlDep,
) -> dict[str, Any]:
    """The hosted service's gallery: `{items, count, offset, limit, hasMore}`, where
    `count` is the number of items in this page."""
    params = request.query_params
    kind = choice_param(params, "type", GALLERY_TYPES, default="image")
    limit = _limit(request, GALLERY_DEFAULT_LIMIT)
    offset = int_param(params, "offset", default=0, minimum=0, maximum=MAX_OFFSET)
    items: list[dict[str, Any]] = []
    has_more = False
    if kind != "video":
        page = await history.list_images(
            session, auth.tenant_id, PageRequest(limit=limit, offset=offset)
        )
        items = [
            {"type": "image", **item} for item in await _items(image_store, base_url, page.items)
        ]
        has_more = page.has_more
    return {
        "items": items,
        "count": len(items),
        "offset": offset,
        "limit": limit,
        "hasMore": has_more,
    }


def _limit(request: Request, default: int) -> int:
    return int_param(
        request.query_params, "limit", default=default, minimum=1, maximum=history.MAX_LIMIT
    )


async def _items(
    store: ImageStore, base_url: str, records: tuple[ImageRecord, ...]
) -> list[dict[str, Any]]:
    """Each record with a freshly signed URL."""
    urls = await asyncio.gather(*(store.url(record.storage_key, base_url) for record in records))
    return [image_item(record, url) for record, url in zip(records, urls, strict=True)]


def image_item(record: ImageRecord, url: str) -> dict[str, Any]:
    return {
        "id": record.id,
        "url": url,
        "mimeType": record.mime_type,
        "fileSize": record.file_size,
        "width": record.width,
        "height": record.height,
        "model": record.model,
        "prompt": record.prompt,
        "stylePreset": record.style_preset,
        "aspectRatio": record.aspect_ratio,
        "imageToImage": record.image_to_image,
        "text": record.text,
        "index": record.index,
        "generationId": record.generation_id,
        "createdAt": iso_utc(record.created_at),
    }


def iso_utc(value: datetime) -> str:
    """`2026-01-31T12:00:00.123Z`: what JavaScript's Date parses everywhere."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
