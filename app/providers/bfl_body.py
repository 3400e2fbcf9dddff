"""The submit bodies of BFL's endpoints: FLUX.1 Kontext (`aspect_ratio`, one `input_image`)
and FLUX.2 (`width`/`height` in multiples of 16 up to 4 MP, `input_image` ..
`input_image_8`). Base64 and JSON of multi-megabyte references: call off the event loop."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from app.imaging.aspect import parse_ratio
from app.providers.base import ImageRequest, UpstreamBadRequest

FLUX2_MAX_REFERENCES = 8
FLUX2_SIDE_STEP = 16
FLUX2_MIN_SIDE = 64
FLUX2_MAX_PIXELS = 2048 * 2048  # "up to 4 MP"
# The pixels an imageSize asks FLUX.2 for: 1K about one megapixel, 2K its maximum.
FLUX2_PIXELS = {"1K": 1024 * 1024, "2K": FLUX2_MAX_PIXELS}


def is_flux2(upstream_model: str) -> bool:
    return upstream_model.startswith("flux-2")


def flux2_dimensions(aspect_ratio: str, image_size: str) -> tuple[int, int]:
    """Width and height for a "W:H" ratio at `image_size`: the sides nearest the ratio at
    the size's pixel count, each rounded down to a multiple of 16 (so never over 4 MP);
    the gateway crops the result to the exact ratio."""
    pixels = FLUX2_PIXELS.get(image_size)
    if pixels is None:
        raise UpstreamBadRequest(f"FLUX.2 has no imageSize {image_size}")
    w, h = parse_ratio(aspect_ratio)
    ratio = w / h

    def side(value: float) -> int:
        return max(FLUX2_MIN_SIDE, int(value) // FLUX2_SIDE_STEP * FLUX2_SIDE_STEP)

    return side(math.sqrt(pixels * ratio)), side(math.sqrt(pixels / ratio))


def submit_body(request: ImageRequest) -> bytes:
    """The JSON body for `POST /v1/{request.upstream_model}`."""
    if request.mask is not None:
        raise UpstreamBadRequest("BFL models take no edit mask")
    body: dict[str, Any] = {"prompt": request.prompt}
    if is_flux2(request.upstream_model):
        if len(request.source_images) > FLUX2_MAX_REFERENCES:
            raise UpstreamBadRequest(f"FLUX.2 takes at most {FLUX2_MAX_REFERENCES} input images")
        width, height = flux2_dimensions(request.aspect_ratio, request.image_size)
        body |= {"width": width, "height": height}
    else:
        # The catalog's max_reference_images (1) and sizes (1K) keep the gateway from
        # asking for more; this is the adapter's own guard.
        if len(request.source_images) > 1 or request.image_size != "1K":
            raise UpstreamBadRequest("FLUX Kontext takes one input image, at 1K")
        body |= {"aspect_ratio": request.aspect_ratio, "prompt_upsampling": False}
    body |= {"output_format": "png", "safety_tolerance": 2}  # lossless: we re-encode
    for index, source in enumerate(request.source_images):
        # Raw base64 without a data: prefix, as BFL expects: input_image, input_image_2...
        name = "input_image" if index == 0 else f"input_image_{index + 1}"
        body[name] = base64.b64encode(source.data).decode("ascii")
    return json.dumps(body, separators=(",", ":")).encode("utf-8")
