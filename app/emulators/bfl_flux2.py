"""The BFL emulator's FLUX.2 submit body (`/v1/flux-2-pro`, `/v1/flux-2-flex`): `prompt`,
up to eight references `input_image`, `input_image_2` .. `input_image_8` (raw base64),
`width`/`height` (multiples of 16, at least 64, at most 4 MP in all; absent: the first
reference's size, else 1024x1024), `seed`, `safety_tolerance`, `output_format`, and on
flex `steps` and `guidance`. Errors are FastAPI-style 422s without the inputs echoed."""

from __future__ import annotations

import hashlib
import io
from typing import Annotated, Literal

from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, Field, PlainValidator, ValidationError

from app.emulators.bfl_wire import (
    MAX_PROMPT_CHARS,
    SubmitRequest,
    decode_input_image,
    request_error,
)
from app.emulators.images import per_call_variant

SIDE_STEP, MIN_SIDE, MAX_PIXELS = 16, 64, 2048 * 2048
DEFAULT_SIZE = (1024, 1024)
_Reference = Annotated[bytes | None, PlainValidator(decode_input_image)]


class _Flux2Body(BaseModel):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    input_image: _Reference = None
    input_image_2: _Reference = None
    input_image_3: _Reference = None
    input_image_4: _Reference = None
    input_image_5: _Reference = None
    input_image_6: _Reference = None
    input_image_7: _Reference = None
    input_image_8: _Reference = None
    width: int | None = Field(default=None, ge=MIN_SIDE, multiple_of=SIDE_STEP)
    height: int | None = Field(default=None, ge=MIN_SIDE, multiple_of=SIDE_STEP)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    safety_tolerance: int = Field(default=2, ge=0, le=6)
    output_format: Literal["png", "jpeg"] = "png"
    prompt_upsampling: bool = True
    webhook_url: str | None = None  # accepted and ignored: the emulator never calls out
    webhook_secret: str | None = None

    def references(self) -> tuple[bytes, ...]:
        images = (
            self.input_image, self.input_image_2, self.input_image_3, self.input_image_4,
            self.input_image_5, self.input_image_6, self.input_image_7, self.input_image_8,
        )  # fmt: skip
        return tuple(image for image in images if image is not None)


class _Flux2FlexBody(_Flux2Body):
    steps: int = Field(default=50, ge=1, le=50)
    guidance: float = Field(default=4.5, ge=1.5, le=10)


def parse_flux2_submit(body: bytes, endpoint: str) -> SubmitRequest:
    """Validate a FLUX.2 submit body; raises RequestValidationError (FastAPI's 422)."""
    model = _Flux2FlexBody if endpoint == "flux-2-flex" else _Flux2Body
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        raise request_error(exc) from None
    references = parsed.references()
    width, height = _size(parsed, references[0] if references else None)
    if width * height > MAX_PIXELS:
        message = f"width x height must be at most {MAX_PIXELS} pixels (4 MP)"
        error = {"type": "value_error", "loc": ("body", "width"), "msg": message}
        raise RequestValidationError([error])
    seed = parsed.seed
    if seed is None:  # a new seed per task, as real BFL draws one
        digest = hashlib.sha256(f"{endpoint}\0{parsed.prompt}\0{width}x{height}".encode())
        digest.update(f"\0{per_call_variant()}".encode())
        seed = int.from_bytes(digest.digest()[:4], "big")
    return SubmitRequest(
        parsed.prompt,
        references[0] if references else None,
        seed,
        f"{width}:{height}",
        width,
        height,
        parsed.output_format,
        references[1:],
    )


def _size(parsed: _Flux2Body, first: bytes | None) -> tuple[int, int]:
    if parsed.width is not None and parsed.height is not None:
        return parsed.width, parsed.height
    if first is None:
        return parsed.width or DEFAULT_SIZE[0], parsed.height or DEFAULT_SIZE[1]
    try:
        with Image.open(io.BytesIO(first)) as image:  # reads the header only
            width, height = image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        message = "input_image is not a decodable image"
        error = {"type": "value_error", "loc": ("body", "input_image"), "msg": message}
        raise RequestValidationError([error]) from None
    scale = min(1.0, (MAX_PIXELS / (width * height)) ** 0.5)
    return (
        max(MIN_SIDE, int(width * scale) // SIDE_STEP * SIDE_STEP),
        max(MIN_SIDE, int(height * scale) // SIDE_STEP * SIDE_STEP),
    )
