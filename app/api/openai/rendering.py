"""The /v1 images response: what a generation delivered, as OpenAI's ImagesResponse.

A generation becomes a `record` (JSON, no image bytes: object keys and what the response
echoes), which is also what an Idempotency-Key remembers; `render` turns a record into
the response, signing URLs or reading the stored objects for `b64_json` (stored already
in the asked output format and size, so both answers serve the same bytes).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Sequence
from typing import Any

from fastapi.responses import JSONResponse

from app.api.openai.params import View
from app.api.rendering import REPLAYED
from app.generation.producer import StoredImage
from app.generation.service import GenerationResult
from app.storage.base import ImageStore


def record(result: GenerationResult, view: View, references: int) -> dict[str, Any]:
    first = result.images[0].image
    body: dict[str, Any] = {
        "created": int(time.time()),
        "background": view.background,
        "output_format": view.output_format,
        "size": f"{first.width}x{first.height}",
        "usage": usage(result.images, references),
    }
    if view.quality is not None:
        body["quality"] = view.quality
    return {
        "body": body,
        "keys": [item.key for item in result.images],
        "response_format": view.response_format,
    }


async def render(
    saved: dict[str, Any],
    store: ImageStore,
    base_url: str,
    *,
    images: Sequence[bytes] | None = None,
    replayed: bool = False,
) -> JSONResponse:
    """The response for `saved`; `images` are the stored bytes when still in hand."""
    keys: list[str] = saved["keys"]
    if saved["response_format"] == "url":
        urls = await asyncio.gather(*(store.url(key, base_url) for key in keys))
        data = [{"url": url, "revised_prompt": None} for url in urls]
    else:
        if images is None:
            images = await asyncio.gather(*(store.get(key) for key in keys))
        encoded = await asyncio.gather(*(asyncio.to_thread(_b64, data) for data in images))
        data = [{"b64_json": text, "revised_prompt": None} for text in encoded]
    return JSONResponse(saved["body"] | {"data": data}, headers=REPLAYED if replayed else None)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def usage(images: Sequence[StoredImage], references: int) -> dict[str, int | dict[str, int]]:
    """OpenAI's token usage summed over the images when every image's upstream reported
    it; else counts of images (input: the references sent, output: images delivered), so
    a client booking cost from `usage` sees what was made rather than zero."""
    usages = [item.usage for item in images]
    if all(usage is not None for usage in usages):
        text = sum(u.input_text_tokens for u in usages if u is not None)
        image = sum(u.input_image_tokens for u in usages if u is not None)
        output = sum(u.output_tokens for u in usages if u is not None)
    else:
        text, image, output = 0, references, len(images)
    return {
        "input_tokens": text + image,
        "input_tokens_details": {"image_tokens": image, "text_tokens": text},
        "output_tokens": output,
        "output_tokens_details": {"image_tokens": output, "text_tokens": 0},
        "total_tokens": text + image + output,
    }
