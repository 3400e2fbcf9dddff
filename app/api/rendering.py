"""The contract's response body, from a fresh result or from stored records.

Bodies are built without URLs (signed per response) plus the storage keys, so a body can
be kept (idempotency replays, async jobs) and given fresh URLs when it is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from app.db.models import Image
from app.generation.service import GenerationResult, ImageFailure
from app.jobs.service import JOB_RECORD
from app.providers.catalog import CatalogModel
from app.storage.base import ImageStore


@dataclass(frozen=True, slots=True)
class ImageView:
    key: str
    mime_type: str
    file_size: int
    width: int
    height: int
    index: int
    model: str
    text: str | None

    @classmethod
    def from_row(cls, row: Image) -> ImageView:
        return cls(
            row.storage_key,
            row.mime_type,
            row.bytes,
            row.width,
            row.height,
            row.index,
            row.model,
            row.text,
        )


def contract_body(
    *,
    generation_id: str,
    model: str,
    images: Sequence[ImageView],
    charged: int,
    remaining: int,
    failures: Sequence[ImageFailure] = (),
) -> tuple[dict[str, Any], list[str]]:
    body: dict[str, Any] = {
        "images": [
            {
                "url": None,
                "text": image.text,
                "mimeType": image.mime_type,
                "fileSize": image.file_size,
                "width": image.width,
                "height": image.height,
                "index": image.index,
                "model": image.model,
            }
            for image in images
        ],
        "numImages": len(images),
        "id": generation_id,
        "model": model,
        "creditsCharged": charged,
        "creditsRemaining": remaining,
    }
    if failures:
        body["failures"] = [
            {"index": f.index, "code": f.code, "error": f.message} for f in failures
        ]
    return body, [image.key for image in images]


def result_body(result: GenerationResult) -> tuple[dict[str, Any], list[str]]:
    views = [
        ImageView(
            item.key,
            item.image.mime_type,
            len(item.image.data),
            item.image.width,
            item.image.height,
            item.index,
            item.model.id,
            item.text,
        )
        for item in result.images
    ]
    return contract_body(
        generation_id=result.generation_id,
        model=result.model,
        images=views,
        charged=result.credits_charged,
        remaining=result.credits_remaining,
        failures=result.failures,
    )


async def with_urls(
    body: dict[str, Any], keys: list[str], store: ImageStore, base_url: str
) -> dict[str, Any]:
    urls = await asyncio.gather(*(store.url(key, base_url) for key in keys))
    for image, url in zip(body["images"], urls, strict=True):
        image["url"] = url
    return body


def openai_model_objects(models: Iterable[CatalogModel]) -> list[dict[str, Any]]:
    """The catalogue as OpenAI model objects (`/v1/models`, and `data` of `/api/v1/models`,
    which elizaOS clients read)."""
    return [
        {"id": model.id, "object": "model", "created": 0, "owned_by": model.provider}
        for model in models
    ]


REPLAYED = {"Idempotent-Replayed": "true"}


async def replay_response(
    image_store: ImageStore, replay: dict[str, Any], base_url: str
) -> JSONResponse:
    """An Idempotency-Key's stored response, sent again: a job's 202 or a generation's 200."""
    if JOB_RECORD in replay:
        return accepted(replay[JOB_RECORD], replayed=True)
    body = await with_urls(replay["body"], replay["keys"], image_store, base_url)
    return JSONResponse(body, headers=REPLAYED)


def accepted(body: dict[str, Any], *, replayed: bool = False) -> JSONResponse:
    """A job's 202, pointing at its status URL."""
    headers = {"Location": body["statusUrl"], "Preference-Applied": "respond-async"}
    return JSONResponse(body, status_code=202, headers=headers | (REPLAYED if replayed else {}))
