"""A wire-faithful fake of OpenAI's image generation endpoints.

The official `openai` SDK runs unchanged against it (base_url `<mount prefix>/v1`):
`POST /v1/images/generations` (JSON), `POST /v1/images/edits` (multipart/form-data) and
`POST /v1/responses` with the `image_generation` tool, Bearer auth, OpenAI's error bodies
and rate-limit headers. Images are real PNG/JPEG/WebP files derived deterministically from
(model, prompt, size, index, source image). Scripted faults come from a shared FaultPlan,
controllable at `/_emulator/...`.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import email.utils
import hashlib
import io
import json
import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.emulators.faults import (
    BlockedFault,
    DelayFault,
    ErrorFault,
    Fault,
    FaultPlan,
    RefusedFault,
    fault_control_router,
)
from app.emulators.images import InvalidSourceImage, synthesize_png
from app.emulators.openai_responses import (
    ImageCallOutcome,
    ResponsesInputError,
    parse_responses_request,
    response_object,
)

SIZES: dict[str, tuple[int, int]] = {
    "1024x1024": (1024, 1024),
    "1536x1024": (1536, 1024),
    "1024x1536": (1024, 1536),
}
AUTO_SIZE = "1024x1024"
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
QUALITIES = ("low", "medium", "high", "auto")
AUTO_QUALITY = "medium"
BACKGROUNDS = ("transparent", "opaque", "auto")
EDIT_MIME_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
MAX_IMAGES = 10
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # up to 16 edit images of 50 MB would be more; enough
# Output tokens GPT Image bills per image, by quality: (square, portrait or landscape).
OUTPUT_TOKENS = {"low": (272, 408), "medium": (1056, 1584), "high": (4160, 6240)}

_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
_SAFETY_PROMPT = (
    "Your request was rejected by the safety system. If you believe this is an error, contact "
    "us at help.openai.com and include the request ID {request_id}. safety_violations=[{reason}]."
)
_SAFETY_OUTPUT = (
    "The generated image was rejected by the safety system's output moderation. "
    "safety_violations=[{reason}]."
)
# (type, code, message) of scripted HTTP errors, by status.
_FAULT_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for images per minute (IPM): Limit 5, Used 5, Requested 1. "
        "Visit https://platform.openai.com/account/rate-limits to learn more.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
}


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
        return _json_response({"error": body}, self.status, self.headers)


def invalid_request(message: str, param: str | None, code: str | None = None) -> OpenAIApiError:
    return OpenAIApiError(400, message, param=param, code=code)


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
        return SIZES[self.size]

    @property
    def output_tokens(self) -> int:
        square, other = OUTPUT_TOKENS[self.quality]
        return square if self.size == AUTO_SIZE else other


def create_openai_emulator(faults: FaultPlan | None = None) -> FastAPI:
    """The emulator as an ASGI app; mountable under any prefix (e.g. `/emulators/openai`)."""
    plan = faults if faults is not None else FaultPlan()
    app = FastAPI(title="OpenAI API emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.faults = plan
    app.include_router(fault_control_router(plan))
    app.add_exception_handler(StarletteHTTPException, _http_exception_as_openai_error)

    @app.post("/v1/images/generations")
    async def generations(request: Request) -> Response:
        return await _handle(plan, request, _images_generations)

    @app.post("/v1/images/edits")
    async def edits(request: Request) -> Response:
        return await _handle(plan, request, _images_edits)

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        return await _handle(plan, request, _responses)

    return app


async def _handle(plan: FaultPlan, request: Request, endpoint: Any) -> Response:
    try:
        _authenticate(request)
        # Like the real front end, quota and availability errors come before the body is
        # read, so every authenticated call takes a fault even if its body is invalid.
        fault = plan.next_fault()
        if isinstance(fault, ErrorFault):
            raise _fault_error(fault)
        if isinstance(fault, DelayFault):
            await asyncio.sleep(fault.seconds)
        body = await _read_body(request)
        response: Response = await endpoint(request, body, fault)
        return response
    except OpenAIApiError as exc:
        return exc.response()


def _authenticate(request: Request) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise OpenAIApiError(401, _MISSING_KEY, code="invalid_api_key")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise _too_large()  # refuse before buffering it
    body = await request.body()
    if len(body) > MAX_REQUEST_BYTES:
        raise _too_large()
    return body


def _too_large() -> OpenAIApiError:
    return OpenAIApiError(413, f"Request body exceeds the limit of {MAX_REQUEST_BYTES} bytes.")


# --- Images API ----------------------------------------------------------------------


async def _images_generations(request: Request, body: bytes, fault: Fault | None) -> Response:
    try:
        payload = await asyncio.to_thread(json.loads, body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid_request("We could not parse the JSON body of your request.", None) from exc
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.", None)
    return await _images_response(payload, (), fault)


async def _images_edits(request: Request, body: bytes, fault: Fault | None) -> Response:
    content_type = request.headers.get("content-type", "")
    fields, files = await asyncio.to_thread(parse_multipart, body, content_type)
    sources: list[bytes] = []
    for name, mime, data in files:
        if name not in ("image", "image[]"):
            continue  # `mask` is accepted and, in the emulator, ignored
        if mime and mime != "application/octet-stream" and mime not in EDIT_MIME_TYPES:
            raise invalid_request(
                f"Invalid file 'image': unsupported mimetype ('{mime[:60]}'). Supported file "
                "formats are 'image/jpeg', 'image/png', and 'image/webp'.",
                "image",
                "unsupported_file_mimetype",
            )
        sources.append(data)
    if not sources:
        raise invalid_request(
            "Missing required parameter: 'image'.", "image", "missing_required_parameter"
        )
    return await _images_response(fields, tuple(sources), fault)


async def _images_response(
    fields: Mapping[str, Any], sources: tuple[bytes, ...], fault: Fault | None
) -> Response:
    model = fields.get("model") or "gpt-image-1"
    if not isinstance(model, str) or not model.startswith(("gpt-image", "chatgpt-image")):
        # DALL-E models answer with URLs and other sizes; the emulator speaks GPT Image only.
        raise invalid_request(
            f"Invalid value: '{str(model)[:60]}'. The emulator supports GPT Image models "
            "(gpt-image-*).",
            "model",
            "invalid_value",
        )
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid_request(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    n = _integer(fields.get("n", 1), "n", 1, MAX_IMAGES)
    if fields.get("response_format") not in (None, "b64_json"):
        raise invalid_request(
            "Unknown parameter: 'response_format'.", "response_format", "unknown_parameter"
        )
    if _truthy(fields.get("stream")):
        raise invalid_request("The emulator does not stream images.", "stream")
    options = image_options(fields, prefix="")

    if isinstance(fault, BlockedFault):
        message = _SAFETY_PROMPT.format(request_id=_id("req_"), reason=fault.reason.lower())
        raise _moderation_error(message)
    if isinstance(fault, RefusedFault):
        raise _moderation_error(_SAFETY_OUTPUT.format(reason=fault.finish_reason.lower()))

    images = await asyncio.gather(
        *(_render(model, prompt, options, i, sources, "image") for i in range(n))
    )
    text_tokens = max(1, math.ceil(len(prompt) / 4))
    image_tokens = 85 * len(sources)
    output_tokens = options.output_tokens * n
    body = {
        "created": int(time.time()),
        "background": options.background,
        "data": [{"b64_json": b64} for b64 in images],
        "output_format": options.output_format,
        "quality": options.quality,
        "size": options.size,
        "usage": {
            "input_tokens": text_tokens + image_tokens,
            "input_tokens_details": {"image_tokens": image_tokens, "text_tokens": text_tokens},
            "output_tokens": output_tokens,
            "output_tokens_details": {"image_tokens": output_tokens, "text_tokens": 0},
            "total_tokens": text_tokens + image_tokens + output_tokens,
        },
    }
    return await _large_json_response(body)


def _moderation_error(message: str) -> OpenAIApiError:
    return OpenAIApiError(
        400, message, type_="image_generation_user_error", code="moderation_blocked"
    )


def image_options(fields: Mapping[str, Any], *, prefix: str) -> ImageOptions:
    """Validate size, format, compression, quality and background; `prefix` names params."""
    size = fields.get("size") or "auto"
    if size != "auto" and size not in SIZES:
        raise _invalid_value(prefix + "size", size, [*SIZES, "auto"])
    output_format = fields.get("output_format") or "png"
    if output_format not in OUTPUT_FORMATS:
        raise _invalid_value(prefix + "output_format", output_format, list(OUTPUT_FORMATS))
    compression = _integer(fields.get("output_compression", 100), prefix + "output_compression")
    if compression < 100 and output_format == "png":
        raise invalid_request(
            "Compression less than 100 is not supported for PNG output format.",
            prefix + "output_compression",
            "invalid_value",
        )
    quality = fields.get("quality") or "auto"
    if quality not in QUALITIES:
        raise _invalid_value(prefix + "quality", quality, list(QUALITIES))
    background = fields.get("background") or "auto"
    if background not in BACKGROUNDS:
        raise _invalid_value(prefix + "background", background, list(BACKGROUNDS))
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
        # Emulated images are always opaque; "transparent" is only echoed.
        background="transparent" if background == "transparent" else "opaque",
    )


def _integer(value: Any, param: str, lo: int = 0, hi: int = 100) -> int:
    # Form fields arrive as strings; JSON ones must be real integers (not booleans).
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_request(
            f"Invalid type for '{param}': expected an integer, but got {type(value).__name__}.",
            param,
            "invalid_type",
        )
    if value < lo:
        raise invalid_request(
            f"Invalid '{param}': integer below minimum value. Expected a value >= {lo}, "
            f"but got {value} instead.",
            param,
            "integer_below_min_value",
        )
    if value > hi:
        raise invalid_request(
            f"Invalid '{param}': integer above maximum value. Expected a value <= {hi}, "
            f"but got {value} instead.",
            param,
            "integer_above_max_value",
        )
    return value


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _invalid_value(param: str, value: Any, allowed: Sequence[str]) -> OpenAIApiError:
    listed = ", ".join(f"'{a}'" for a in allowed[:-1]) + f", and '{allowed[-1]}'"
    return invalid_request(
        f"Invalid value: '{str(value)[:60]}'. Supported values are: {listed}.",
        param,
        "invalid_value",
    )


async def _render(
    model: str,
    prompt: str,
    options: ImageOptions,
    index: int,
    sources: tuple[bytes, ...],
    source_param: str,
) -> str:
    """One image as base64; drawing and encoding run in a worker thread."""
    try:
        return await asyncio.to_thread(render_b64, model, prompt, options, index, sources)
    except InvalidSourceImage as exc:
        raise invalid_request(
            "Invalid image file or mode for image 1, please check your image file.",
            source_param,
            "invalid_image_file",
        ) from exc


def render_b64(
    model: str, prompt: str, options: ImageOptions, index: int, sources: tuple[bytes, ...]
) -> str:
    """Deterministic in (model, prompt, size, index, sources); the first source is edited."""
    seed = f"{prompt} [{model} {options.size} #{index}]"
    for extra in sources[1:]:
        seed += " +" + hashlib.sha256(extra).hexdigest()[:16]
    width, height = options.dimensions
    png = synthesize_png(seed, width, height, sources[0] if sources else None)
    if options.output_format != "png":
        with Image.open(io.BytesIO(png)) as image:
            out = io.BytesIO()
            image.save(out, OUTPUT_FORMATS[options.output_format], quality=options.compression)
            png = out.getvalue()
    return base64.b64encode(png).decode("ascii")


# --- Responses API -------------------------------------------------------------------


async def _responses(request: Request, body: bytes, fault: Fault | None) -> Response:
    try:
        # JSON and base64 decoding of multi-megabyte input images stay off the event loop.
        call = await asyncio.to_thread(parse_responses_request, body)
    except ResponsesInputError as exc:
        raise invalid_request(exc.message, exc.param, exc.code) from None
    options = image_options(call.tool, prefix=f"{call.tool_param}.") if call.tool else None

    if isinstance(fault, BlockedFault):
        raise OpenAIApiError(
            400,
            _SAFETY_PROMPT.format(request_id=_id("req_"), reason=fault.reason.lower()),
            code="moderation_blocked",
        )
    outcome: ImageCallOutcome | None = None
    if call.tool is not None and options is not None:
        result: str | None = None
        refusal: str | None = None
        if isinstance(fault, RefusedFault):
            # The model answers, but the tool call fails: a 200 without an image.
            refusal = fault.finish_reason
        else:
            image_model = f"{call.model}/{call.tool.get('model') or 'gpt-image-1'}"
            result = await _render(image_model, call.prompt, options, 0, call.images, "input")
        outcome = ImageCallOutcome(
            size=options.size,
            output_format=options.output_format,
            quality=options.quality,
            background=options.background,
            output_tokens=options.output_tokens,
            result_b64=result,
            refusal_reason=refusal,
        )
    return await _large_json_response(response_object(call, outcome))


# --- multipart/form-data -------------------------------------------------------------


def parse_multipart(
    body: bytes, content_type: str
) -> tuple[dict[str, str], list[tuple[str, str, bytes]]]:
    """Text fields by name, and files as (field name, content type, bytes), in order.

    A small RFC 7578 reader, so the emulator needs no extra dependency: parts are split on
    CRLF + "--" + boundary, and each part's headers are read with the stdlib email parser.
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
            files.append(
                (name, headers.get_content_type() if "content-type" in headers else "", content)
            )
        else:
            fields[name] = content.decode("utf-8", "replace")
    raise invalid_request("Malformed multipart/form-data body.", None)


def _header_param(header: str, value: str, param: str) -> str | None:
    message = email.message.Message()
    message[header] = value
    found = message.get_param(param, header=header)
    if found is None:
        return None
    return email.utils.collapse_rfc2231_value(found)


# --- faults and responses ------------------------------------------------------------


def _fault_error(fault: ErrorFault) -> OpenAIApiError:
    type_, code, default = _FAULT_ERRORS.get(
        fault.status,
        ("server_error" if fault.status >= 500 else "invalid_request_error", None, "Error."),
    )
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        # OpenAI sends both; the SDK prefers the millisecond one.
        headers["retry-after"] = str(math.ceil(fault.retry_after))
        headers["retry-after-ms"] = str(round(fault.retry_after * 1000))
    if fault.status == 429:
        headers["x-ratelimit-limit-requests"] = "5"
        headers["x-ratelimit-remaining-requests"] = "0"
        headers["x-ratelimit-reset-requests"] = f"{fault.retry_after or 12:g}s"
    return OpenAIApiError(
        fault.status, fault.message or default, type_=type_, code=code, headers=headers
    )


async def _large_json_response(body: dict[str, Any]) -> Response:
    # Serialising megabytes of base64 stays off the event loop too.
    content = await asyncio.to_thread(json.dumps, body, separators=(",", ":"))
    return _json_response(content, 200)


def _json_response(
    body: dict[str, Any] | str, status: int, headers: Mapping[str, str] | None = None
) -> Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return Response(
        content,
        status_code=status,
        media_type="application/json",
        headers={"x-request-id": _id("req_"), "openai-version": "2020-10-01", **(headers or {})},
    )


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


async def _http_exception_as_openai_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and methods get OpenAI's error shape rather than FastAPI's `detail`.
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    where = f"({request.method} {request.url.path})"
    if exc.status_code == 405:
        return OpenAIApiError(405, f"Invalid method for URL {where}").response()
    if exc.status_code == 404:
        return OpenAIApiError(404, f"Invalid URL {where}").response()
    return OpenAIApiError(exc.status_code, str(exc.detail)).response()
