"""OpenAI's wire vocabulary, shared by the emulator's Images and Responses endpoints.

Error bodies, JSON responses with OpenAI's headers, the image options both APIs accept
(size, format, compression, quality, background) with OpenAI's validation messages,
deterministic image rendering in the requested format, and a multipart/form-data reader.
"""

from __future__ import annotations

import asyncio
import base64
import email.message
import email.parser
import email.policy
import email.utils
import hashlib
import io
import json
import secrets
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image
from starlette.responses import Response

from app.emulators.images import InvalidMask, InvalidSourceImage, per_call_variant, synthesize_png

SIZES: dict[str, tuple[int, int]] = {
    "1024x1024": (1024, 1024),
    "1536x1024": (1536, 1024),
    "1024x1536": (1024, 1536),
}
AUTO_SIZE = "1024x1024"
# gpt-image-2 takes any WIDTHxHEIGHT: both sides multiples of 16, the long side at most
# 3840, a ratio from 1:3 to 3:1 and 655,360 to 8,294,400 pixels in all.
CUSTOM_SIZE_MODELS = ("gpt-image-2",)
CUSTOM_SIZE_STEP, CUSTOM_MAX_SIDE = 16, 3840
CUSTOM_MIN_PIXELS, CUSTOM_MAX_PIXELS = 655_360, 3840 * 2160
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
QUALITIES = ("low", "medium", "high", "auto")
AUTO_QUALITY = "medium"
BACKGROUNDS = ("transparent", "opaque", "auto")
# Output tokens GPT Image bills per image, by quality: (square, portrait or landscape).
OUTPUT_TOKENS = {"low": (272, 408), "medium": (1056, 1584), "high": (4160, 6240)}
INPUT_IMAGE_TOKENS = 85  # per input image, as OpenAI's docs estimate at low detail


class OpenAIApiError(Exception):
    """An error rendered as OpenAI's `{"error": {message, type, param, code}}` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json_response({"error": body}, self.status, self.headers)


def invalid_request(message: str, param: str | None, code: str | None = None) -> OpenAIApiError:
    return OpenAIApiError(400, message, param=param, code=code)


def missing_parameter(param: str) -> OpenAIApiError:
    return invalid_request(
        f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    )


def invalid_json() -> OpenAIApiError:
    return invalid_request(
        "We could not parse the JSON body of your request. (HINT: This likely means you "
        "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
        "but what was sent was not valid JSON.)",
        None,
    )


def json_response(
    body: dict[str, Any] | str, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return Response(
        content,
        status_code=status,
        media_type="application/json",
        headers={"x-request-id": new_id("req_"), "openai-version": "2020-10-01", **(headers or {})},
    )


async def large_json_response(body: dict[str, Any]) -> Response:
    # Serialising megabytes of base64 stays off the event loop.
    return json_response(await asyncio.to_thread(json.dumps, body, separators=(",", ":")))


def new_id(prefix: str) -> str:
    # Real ids are a prefix and an opaque hex string, unique per object.
    return prefix + secrets.token_hex(24)


def text_tokens(prompt: str) -> int:
    return max(1, -(-len(prompt) // 4))  # about four characters per token


def image_usage(prompt_tokens: int, image_tokens: int, output_tokens: int) -> dict[str, Any]:
    """The `usage` object of an image generation, as both image APIs report it."""
    return {
        "input_tokens": prompt_tokens + image_tokens,
        "input_tokens_details": {"image_tokens": image_tokens, "text_tokens": prompt_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"image_tokens": output_tokens, "text_tokens": 0},
        "total_tokens": prompt_tokens + image_tokens + output_tokens,
    }


# --- image options -------------------------------------------------------------------


@dataclass(frozen=True)
class ImageOptions:
    """Validated image options shared by the Images API and the image_generation tool."""

    size: str
    output_format: str
    compression: int
    quality: str  # resolved: never "auto"
    background: str  # resolved: "opaque" or "transparent"

    @property
    def dimensions(self) -> tuple[int, int]:
        width, _, height = self.size.partition("x")
        return int(width), int(height)

    @property
    def output_tokens(self) -> int:
        square, other = OUTPUT_TOKENS[self.quality]
        return square if self.size == AUTO_SIZE else other


def image_options(
    fields: Mapping[str, Any], *, prefix: str = "", model: str = "gpt-image-1"
) -> ImageOptions:
    """Validate the options the way OpenAI does; `prefix` locates them in `param`."""
    if model.startswith(CUSTOM_SIZE_MODELS) and custom_size(fields.get("size")):
        size = str(fields["size"])
    else:
        size = _choice(fields, "size", [*SIZES, "auto"], "auto", prefix)
    output_format = _choice(fields, "output_format", list(OUTPUT_FORMATS), "png", prefix)
    compression = integer(fields.get("output_compression", 100), prefix + "output_compression")
    if compression < 100 and output_format == "png":
        raise invalid_request(
            "Compression less than 100 is not supported for PNG output format.",
            prefix + "output_compression",
            "invalid_value",
        )
    quality = _choice(fields, "quality", QUALITIES, "auto", prefix)
    background = _choice(fields, "background", BACKGROUNDS, "auto", prefix)
    if background == "transparent" and output_format == "jpeg":
        raise invalid_request(
            "Transparent background is not supported for jpeg output format.",
            prefix + "background",
            "invalid_value",
        )
    return ImageOptions(
        size=AUTO_SIZE if size == "auto" else size,
        output_format=output_format,
        compression=compression,
        quality=AUTO_QUALITY if quality == "auto" else quality,
        # "auto" resolves to opaque here; "transparent" clears the frame (render_b64).
        background="transparent" if background == "transparent" else "opaque",
    )


def custom_size(value: Any) -> bool:
    """Whether `value` is a WIDTHxHEIGHT gpt-image-2 draws."""
    width, _, height = value.partition("x") if isinstance(value, str) else ("", "", "")
    if not (width.isdigit() and height.isdigit() and len(value) <= 9):
        return False
    w, h = int(width), int(height)
    return (
        w % CUSTOM_SIZE_STEP == 0
        and h % CUSTOM_SIZE_STEP == 0
        and 0 < max(w, h) <= CUSTOM_MAX_SIDE
        and max(w, h) <= 3 * min(w, h)
        and CUSTOM_MIN_PIXELS <= w * h <= CUSTOM_MAX_PIXELS
    )


def _choice(
    fields: Mapping[str, Any], name: str, allowed: Sequence[str], default: str, prefix: str
) -> str:
    value = fields.get(name)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value not in allowed:
        listed = ", ".join(f"'{a}'" for a in allowed[:-1]) + f", and '{allowed[-1]}'"
        raise invalid_request(
            f"Invalid value: '{str(value)[:60]}'. Supported values are: {listed}.",
            prefix + name,
            "invalid_value",
        )
    return value


def integer(value: Any, param: str, lo: int = 0, hi: int = 100) -> int:
    """An integer parameter in [lo, hi], with OpenAI's error codes."""
    # Form fields arrive as strings; JSON ones must be real integers (not booleans).
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_request(
            f"Invalid type for '{param}': expected an integer, but got {type(value).__name__}.",
            param,
            "invalid_type",
        )
    if not lo <= value <= hi:
        below = value < lo
        raise invalid_request(
            f"Invalid '{param}': integer {'below minimum' if below else 'above maximum'} value. "
            f"Expected a value {'>=' if below else '<='} {lo if below else hi}, "
            f"but got {value} instead.",
            param,
            "integer_below_min_value" if below else "integer_above_max_value",
        )
    return value


# --- rendering -----------------------------------------------------------------------

# SHA-256 of the images most recently served (any OpenAI emulator in this process): each
# call draws a new picture, so a test checking that a gateway stored the upstream's bytes
# unchanged looks its file up here (GET /_emulator/openai/served).
SERVED: deque[str] = deque(maxlen=256)


async def render(
    model: str,
    prompt: str,
    options: ImageOptions,
    index: int,
    sources: tuple[bytes, ...],
    *,
    source_param: str,
    mask: bytes | None = None,
) -> str:
    """One image as base64, a new one per call (OpenAI has no seed); drawing and encoding
    run in a worker thread."""
    variant = per_call_variant()

    def draw() -> str:
        data = render_b64(model, prompt, options, index, sources, mask=mask, variant=variant)
        SERVED.append(hashlib.sha256(base64.b64decode(data)).hexdigest())
        return data

    try:
        return await asyncio.to_thread(draw)
    except InvalidMask as exc:
        raise invalid_request(
            "Invalid mask image file, please check your mask file.", "mask", "invalid_image_file"
        ) from exc
    except InvalidSourceImage as exc:
        raise invalid_request(
            "Invalid image file or mode for image 1, please check your image file.",
            source_param,
            "invalid_image_file",
        ) from exc


def render_b64(
    model: str,
    prompt: str,
    options: ImageOptions,
    index: int,
    sources: tuple[bytes, ...],
    *,
    mask: bytes | None = None,
    variant: int | None = None,
) -> str:
    """Deterministic in (model, prompt, size, index, sources, mask, variant); every source
    shows, and the mask keeps the first where it is opaque."""
    seed = f"{prompt} [{model} {options.size} #{index}]"
    width, height = options.dimensions
    data = synthesize_png(seed, width, height, sources, mask=mask, variant=variant)
    transparent = options.background == "transparent"
    if options.output_format != "png" or transparent:
        with Image.open(io.BytesIO(data)) as image:
            picture = _clear_frame(image) if transparent else image
            out = io.BytesIO()
            picture.save(out, OUTPUT_FORMATS[options.output_format], quality=options.compression)
            data = out.getvalue()
    return base64.b64encode(data).decode("ascii")


def _clear_frame(image: Image.Image) -> Image.Image:
    """A subject on a transparent background, as gpt-image draws one: the outer eighth
    of each side fully transparent, the centre opaque."""
    picture = image.convert("RGBA")
    alpha = Image.new("L", picture.size, 0)
    width, height = picture.size
    alpha.paste(255, (width // 8, height // 8, width - width // 8, height - height // 8))
    picture.putalpha(alpha)
    return picture


# --- multipart/form-data -------------------------------------------------------------


def parse_multipart(
    body: bytes, content_type: str
) -> tuple[dict[str, str], list[tuple[str, str, bytes]]]:
    """Text fields by name, and files as (field name, content type, bytes), in order.

    A small RFC 7578 reader, so the emulator needs no extra dependency: parts are split on
    CRLF "--" boundary, and each part's headers are read with the stdlib email parser.
    """
    boundary = _header_param("content-type", content_type, "boundary")
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        raise invalid_request(
            "Invalid Content-Type header (expected multipart/form-data with a boundary).", None
        )
    fields: dict[str, str] = {}
    files: list[tuple[str, str, bytes]] = []
    sections = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))
    for section in sections[1:]:
        if section.startswith(b"--"):
            return fields, files  # the closing delimiter
        head, separator, content = section.partition(b"\r\n\r\n")
        if not separator:
            break
        headers = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
            head.lstrip(b" \t").removeprefix(b"\r\n") + b"\r\n\r\n", headersonly=True
        )
        disposition = headers.get("content-disposition", "")
        name = _header_param("content-disposition", disposition, "name")
        if name is None:
            continue
        if _header_param("content-disposition", disposition, "filename") is not None:
            mime = headers.get_content_type() if "content-type" in headers else ""
            files.append((name, mime, content))
        else:
            fields[name] = content.decode("utf-8", "replace")
    raise invalid_request("Malformed multipart/form-data body.", None)


def _header_param(header: str, value: str, param: str) -> str | None:
    message = email.message.Message()
    message[header] = value
    found = message.get_param(param, header=header)
    return None if found is None else email.utils.collapse_rfc2231_value(found)
