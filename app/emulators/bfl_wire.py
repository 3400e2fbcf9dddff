"""The BFL emulator's wire: endpoints and their limits, the Kontext output sizes, the Kontext
submit body's validation (FastAPI-style 422s, inputs never echoed; FLUX.2's body is
`bfl_flux2.py`), error bodies, and the sample render (deterministic in endpoint, prompt,
aspect ratio, seed and input images; a request without a seed gets a new one per call, as
real BFL draws one)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import io
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, Field, PlainValidator, ValidationError, field_validator

from app.emulators.images import per_call_variant, synthesize_png


@dataclass(frozen=True, slots=True)
class Endpoint:
    max_active: int
    cost: float  # BFL credits per image (1 credit = $0.01); FLUX.2: its first megapixel
    megapixel_cost: float = 0.0  # FLUX.2: each further output megapixel (started)

    def cost_of(self, width: int, height: int) -> float:
        # BFL's megapixel is 1024x1024: 2048x2048 is its "4 MP".
        extra = max(0, math.ceil(width * height / (1024 * 1024)) - 1)
        return self.cost + self.megapixel_cost * extra


ENDPOINTS: dict[str, Endpoint] = {
    "flux-kontext-max": Endpoint(max_active=6, cost=8.0),
    "flux-kontext-pro": Endpoint(max_active=24, cost=4.0),
    "flux-2-pro": Endpoint(max_active=24, cost=3.0, megapixel_cost=1.5),
    "flux-2-flex": Endpoint(max_active=24, cost=5.0, megapixel_cost=5.0),
}
# The resolutions FLUX.1 Kontext was trained on (from BFL's flux repository): each about
# one megapixel with both sides multiples of 16, spanning exactly 9:21 to 21:9. A request
# gets the one nearest its aspect ratio (by log-ratio distance), so 1:1 -> 1024x1024,
# 16:9 -> 1392x752, 4:3 -> 1184x880, 21:9 -> 1568x672; like the real model, the output
# ratio is close to, not always exactly, the requested one.
KONTEXT_SIZES: tuple[tuple[int, int], ...] = (
    (672, 1568),
    (688, 1504),
    (720, 1456),
    (752, 1392),
    (800, 1328),
    (832, 1248),
    (880, 1184),
    (944, 1104),
    (1024, 1024),
    (1104, 944),
    (1184, 880),
    (1248, 832),
    (1328, 800),
    (1392, 752),
    (1456, 720),
    (1504, 688),
    (1568, 672),
)
MAX_REQUEST_BYTES = 20 * 1024 * 1024
MAX_PROMPT_CHARS = 10_000

_RATIO = re.compile(r"(\d{1,5}):(\d{1,5})")
NOT_AUTHENTICATED = "Not authenticated - Invalid Authentication"
DEFAULT_MESSAGES = {
    402: "Insufficient credits. Add credits at https://api.bfl.ai to continue.",
    403: NOT_AUTHENTICATED,
    429: "Rate limit exceeded. Please retry later.",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def parse_aspect_ratio(value: str) -> float:
    """Width over height of a "W:H" ratio between 21:9 and 9:21; ValueError otherwise."""
    match = _RATIO.fullmatch(value)
    width, height = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if width <= 0 or height <= 0:
        raise ValueError("aspect_ratio must look like 'W:H' with positive integers")
    # Integer cross-multiplication: 21:9 and 9:21 themselves must pass exactly.
    if not (9 * width <= 21 * height and 21 * width >= 9 * height):
        raise ValueError("aspect_ratio must be between 21:9 and 9:21")
    return width / height


def output_size(aspect_ratio: str | float) -> tuple[int, int]:
    """The Kontext output size for a "W:H" ratio (or a width/height float)."""
    ratio = parse_aspect_ratio(aspect_ratio) if isinstance(aspect_ratio, str) else aspect_ratio
    target = math.log(ratio)
    return min(KONTEXT_SIZES, key=lambda size: abs(math.log(size[0] / size[1]) - target))


# --- request parsing -------------------------------------------------------------------


def decode_input_image(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("input_image must be a base64 string")
    head = value[:16].lower()
    if head.startswith("data:") or "://" in head:
        # Real BFL also fetches URLs; the emulator never makes outbound requests.
        raise ValueError("input_image must be raw base64 image data (no URL, no data: prefix)")
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except binascii.Error:
        raise ValueError("input_image is not valid base64") from None
    if not data:
        raise ValueError("input_image is empty")
    return data


class _SubmitBody(BaseModel):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    input_image: Annotated[bytes | None, PlainValidator(decode_input_image)] = None
    # Kontext's extra references (experimental multi-reference editing).
    input_image_2: Annotated[bytes | None, PlainValidator(decode_input_image)] = None
    input_image_3: Annotated[bytes | None, PlainValidator(decode_input_image)] = None
    input_image_4: Annotated[bytes | None, PlainValidator(decode_input_image)] = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    aspect_ratio: str | None = Field(default=None, max_length=16)
    output_format: Literal["png", "jpeg"] = "png"
    safety_tolerance: int = Field(default=2, ge=0, le=6)
    prompt_upsampling: bool = False
    webhook_url: str | None = None  # accepted and ignored: the emulator never calls out
    webhook_secret: str | None = None

    @field_validator("aspect_ratio")
    @classmethod
    def _check_ratio(cls, value: str | None) -> str | None:
        if value is not None:
            parse_aspect_ratio(value)
        return value


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    prompt: str
    input_image: bytes | None
    seed: int
    aspect_ratio: str  # as requested, or derived from the input image
    width: int
    height: int
    output_format: Literal["png", "jpeg"]
    references: tuple[bytes, ...] = ()  # input_image_2..4, in order

    def without_image(self) -> SubmitRequest:
        return dataclasses.replace(self, input_image=None, references=())


def parse_submit(body: bytes, endpoint: str) -> SubmitRequest:
    """Validate a submit body; raises RequestValidationError, which FastAPI renders as 422."""
    try:
        parsed = _SubmitBody.model_validate_json(body)
        ratio = parsed.aspect_ratio
        source_ratio = _image_ratio(parsed.input_image) if parsed.input_image else None
    except ValidationError as exc:
        raise request_error(exc) from None
    except ValueError as exc:
        error = {"type": "value_error", "loc": ("body", "input_image"), "msg": str(exc)}
        raise RequestValidationError([error]) from None
    if ratio is not None:
        width, height = output_size(ratio)
    elif source_ratio is not None:  # Kontext keeps the input's shape when none is asked for
        width, height = output_size(min(max(source_ratio, 9 / 21), 21 / 9))
        ratio = f"{width}:{height}"
    else:
        ratio, (width, height) = "1:1", output_size("1:1")
    references = tuple(
        image
        for image in (parsed.input_image_2, parsed.input_image_3, parsed.input_image_4)
        if image is not None
    )
    seed = parsed.seed
    if seed is None:
        # Real BFL draws a seed per task (and reports it): a new one per call, so the
        # same request twice gives two pictures, and the reported seed reproduces one.
        digest = hashlib.sha256(f"{endpoint}\0{parsed.prompt}\0{ratio}".encode())
        digest.update(f"\0{per_call_variant()}".encode())
        seed = int.from_bytes(digest.digest()[:4], "big")
    return SubmitRequest(
        parsed.prompt,
        parsed.input_image,
        seed,
        ratio,
        width,
        height,
        parsed.output_format,
        references,
    )


def request_error(exc: ValidationError) -> RequestValidationError:
    """A body's validation errors as FastAPI's 422, without the inputs: unlike FastAPI's
    own, they are not echoed (they may be megabytes of base64)."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors])


def _image_ratio(data: bytes) -> float:
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            return image.width / image.height
    except (OSError, ValueError, SyntaxError, ZeroDivisionError, Image.DecompressionBombError):
        raise ValueError("input_image is not a decodable image") from None


def render_sample(endpoint: str, request: SubmitRequest) -> bytes:
    seed_text = f"{request.prompt} [{endpoint} {request.aspect_ratio} seed {request.seed}]"
    images = [image for image in (request.input_image, *request.references) if image is not None]
    png = synthesize_png(seed_text, request.width, request.height, images)
    if request.output_format == "png":
        return png
    out = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.save(out, "JPEG", quality=90)
    return out.getvalue()


def detail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)
