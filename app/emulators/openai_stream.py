"""The emulator's streamed Images API answers: `stream=true` as OpenAI sends it.

With `stream: true` (a JSON boolean for generations, the form field `true` for edits)
OpenAI answers `text/event-stream`: `partial_images` (0-3) partial events, then one
completed event carrying the final image and the usage, each as an `event:` line naming
the type and a `data:` line with the JSON object (`type`, `b64_json`, `created_at`,
`size`, `quality`, `background`, `output_format`, and `partial_image_index` or `usage`).
Edits use `image_edit.*` for `image_generation.*`. Streaming takes `n=1` only.

Partials are the final image progressively less blurred, so each one differs from the
next and from the final. Events are rendered one at a time (in a thread) and sent as they
are ready; a body fault (reset, slow_body, ...) spoils the whole stream instead, so the
scripted faults apply mid-stream as they do to a JSON body.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageFilter
from starlette.responses import Response, StreamingResponse

from app.emulators.faults import BODY_FAULTS, Fault
from app.emulators.openai_wire import (
    OUTPUT_FORMATS,
    ImageOptions,
    OpenAIApiError,
    integer,
    invalid_request,
    new_id,
)

MAX_PARTIAL_IMAGES = 3
# OpenAI bills each partial image as 100 more image output tokens.
PARTIAL_IMAGE_TOKENS = 100
# The blur radius of the first partial, as a fraction of the image's shorter side.
_FIRST_BLUR = 1 / 24


@dataclass(frozen=True, slots=True)
class StreamRequest:
    partial_images: int

    @property
    def partial_tokens(self) -> int:
        return PARTIAL_IMAGE_TOKENS * self.partial_images


def stream_request(fields: Mapping[str, Any], n: int) -> StreamRequest | None:
    """The streaming ask of a request (None: answer JSON), validated as OpenAI does."""
    stream = fields.get("stream")
    if stream not in (True, "true", "True"):
        if stream not in (None, False, "false", "False", ""):
            raise invalid_request(
                f"Invalid type for 'stream': expected a boolean, but got {type(stream).__name__}.",
                "stream",
                "invalid_type",
            )
        return None
    if n != 1:
        raise OpenAIApiError(
            400,
            "Streaming is only supported with n=1.",
            type_="image_generation_user_error",
            param="input",
            code="unsupported_parameter",
        )
    partials = integer(fields.get("partial_images", 0), "partial_images", 0, MAX_PARTIAL_IMAGES)
    return StreamRequest(partial_images=partials)


async def stream_response(
    *,
    edit: bool,
    final_b64: str,
    options: ImageOptions,
    usage: dict[str, Any],
    stream: StreamRequest,
    fault: Fault | None,
) -> Response:
    """The event stream of one image: its partials, then the completed event (`usage`
    counts the partials' tokens: see `partial_tokens`)."""
    prefix = "image_edit" if edit else "image_generation"
    common = {
        "background": options.background,
        "output_format": options.output_format,
        "quality": options.quality,
        "size": options.size,
    }

    async def events() -> AsyncIterator[bytes]:
        for index in range(stream.partial_images):
            b64 = await asyncio.to_thread(
                _partial_b64, final_b64, options, index, stream.partial_images
            )
            yield _event(
                f"{prefix}.partial_image",
                {**common, "b64_json": b64, "partial_image_index": index},
            )
        yield _event(f"{prefix}.completed", {**common, "b64_json": final_b64, "usage": usage})

    headers = {"x-request-id": new_id("req_"), "openai-version": "2020-10-01"}
    if isinstance(fault, BODY_FAULTS):
        # A body fault spoils bytes it holds whole (app.emulators.bodies): render them all.
        body = b"".join([chunk async for chunk in events()])
        return Response(body, media_type="text/event-stream", headers=headers)
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps({"type": kind, "created_at": int(time.time()), **payload})
    return f"event: {kind}\ndata: {data}\n\n".encode()


def _partial_b64(final_b64: str, options: ImageOptions, index: int, count: int) -> str:
    """Partial `index` of `count`: the final image blurred, less so at each step."""
    with Image.open(io.BytesIO(base64.b64decode(final_b64))) as final:
        image = final.convert("RGB")
    radius = min(image.size) * _FIRST_BLUR * (count - index) / count
    blurred = image.filter(ImageFilter.GaussianBlur(radius))
    out = io.BytesIO()
    if options.output_format == "png":
        blurred.save(out, "PNG", compress_level=1)
    else:
        blurred.save(out, OUTPUT_FORMATS[options.output_format], quality=options.compression)
    return base64.b64encode(out.getvalue()).decode("ascii")
