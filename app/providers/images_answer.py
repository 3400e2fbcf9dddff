"""The Images API's answer (`images.generate` / `images.edit`), parsed once with orjson.

The SDK still builds and sends the request (`with_raw_response`); only its typed models
around a multi-megabyte base64 string are skipped. A 2xx body that is not JSON or not an
Images answer is an upstream fault (`Unavailable`, retryable), never a bare 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from app.providers.base import TokenUsage, Unavailable

# Bodies up to this size are parsed on the event loop; larger ones (a real image is
# megabytes of base64) in a worker thread, so the loop never stalls on one.
INLINE_PARSE_BYTES = 128 * 1024

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ImagesItem:
    b64_json: str | None
    url: str | None


@dataclass(frozen=True, slots=True)
class ImagesAnswer:
    data: list[ImagesItem]
    usage: TokenUsage | None


async def read_images_answer(body: bytes, label: str, then: Callable[[ImagesAnswer], T]) -> T:
    """`then(parsed body)`, on the loop for a small body, in one worker thread otherwise
    (`then` decodes the base64, which is as slow as the parse)."""
    if len(body) <= INLINE_PARSE_BYTES:
        return then(parse_images_answer(body, label))
    return await asyncio.to_thread(lambda: then(parse_images_answer(body, label)))


def parse_images_answer(body: bytes, label: str) -> ImagesAnswer:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Unavailable(f"{label} returned a response that is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise Unavailable(f"{label} returned a response that is not an Images API answer")
    return ImagesAnswer([_item(item, label) for item in answer["data"]], _usage(answer))


def _item(item: Any, label: str) -> ImagesItem:
    if not isinstance(item, dict):
        raise Unavailable(f"{label} returned an image entry that is not an object")
    b64, url = item.get("b64_json"), item.get("url")
    if not (b64 is None or isinstance(b64, str)) or not (url is None or isinstance(url, str)):
        raise Unavailable(f"{label} returned an image entry whose b64_json or url is no string")
    return ImagesItem(b64, url)


def _usage(answer: dict[str, Any]) -> TokenUsage | None:
    """OpenAI's usage object; None when absent or not of OpenAI's shape (a compatible
    server may count differently: the image is still good)."""
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details")
    details = details if isinstance(details, dict) else {}
    counts = (
        usage.get("input_tokens"),
        details.get("image_tokens"),
        details.get("text_tokens"),
        usage.get("output_tokens"),
    )
    numbers = [count for count in counts if isinstance(count, int) and not isinstance(count, bool)]
    if len(numbers) != len(counts):
        return None
    return TokenUsage(*numbers)
