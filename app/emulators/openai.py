"""A wire-faithful fake of OpenAI's image generation endpoints.

The official `openai` SDK runs unchanged against it (base_url `<mount prefix>/v1`):
`POST /v1/images/generations` (JSON), `POST /v1/images/edits` (multipart/form-data) and
`POST /v1/responses` with the `image_generation` tool (app.emulators.openai_responses),
with Bearer auth, OpenAI's error bodies and rate-limit headers; `stream: true` answers
Server-Sent Events with partial images (app.emulators.openai_stream). Images are real
PNG/JPEG/WebP files derived deterministically from (model, prompt, size, index, source
image). Scripted faults come from a shared FaultPlan, controllable at `/_emulator/...`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.emulators.bodies import CLIENT_GONE, delay_unless_gone, spoil
from app.emulators.faults import (
    BlockedFault,
    DelayFault,
    ErrorFault,
    Fault,
    FaultPlan,
    RefusedFault,
    control_guard,
    fault_control_router,
)
from app.emulators.openai_responses import create_response
from app.emulators.openai_stream import stream_request, stream_response
from app.emulators.openai_wire import (
    INPUT_IMAGE_TOKENS,
    SERVED,
    OpenAIApiError,
    image_options,
    image_usage,
    integer,
    invalid_json,
    invalid_request,
    large_json_response,
    missing_parameter,
    new_id,
    parse_multipart,
    render,
    text_tokens,
)

EDIT_MIME_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
MAX_IMAGES = 10
MAX_REQUEST_BYTES = 64 * 1024 * 1024

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
# (type, code, default message) of scripted HTTP errors, by status.
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

# An endpoint gets the request, its body and the fault scripted for the call.
Endpoint = Callable[[Request, bytes, Fault | None], Awaitable[Response]]


def create_openai_emulator(
    faults: FaultPlan | None = None, *, control: bool = True, control_token: str | None = None
) -> FastAPI:
    """The emulator as an ASGI app; mountable under any prefix (e.g. `/emulators/openai`).

    `control` false leaves out the `/_emulator/*` routes; `control_token` guards them.
    """
    plan = faults if faults is not None else FaultPlan()
    app = FastAPI(title="OpenAI API emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.faults = plan
    if control:
        app.include_router(fault_control_router(plan, token=control_token))

        @app.get("/_emulator/openai/served", dependencies=list(control_guard(control_token)))
        def served() -> dict[str, list[str]]:
            return {"sha256": list(SERVED)}

    app.add_exception_handler(StarletteHTTPException, _http_exception_as_openai_error)

    @app.post("/v1/images/generations")
    async def generations(request: Request) -> Response:
        return await _handle(plan, request, _images_generations)

    @app.post("/v1/images/edits")
    async def edits(request: Request) -> Response:
        return await _handle(plan, request, _images_edits)

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        return await _handle(plan, request, lambda _, body, fault: create_response(body, fault))

    return app


async def _handle(plan: FaultPlan, request: Request, endpoint: Endpoint) -> Response:
    try:
        _authenticate(request)
        # Like the real front end, quota and availability errors come before the body is
        # read, so every authenticated call takes a fault even if its body is invalid.
        fault = plan.next_fault()
        if isinstance(fault, ErrorFault):
            raise _fault_error(fault)
        body = await _read_body(request)
        if isinstance(fault, DelayFault) and await delay_unless_gone(request, fault.seconds):
            return Response(status_code=CLIENT_GONE)
        return spoil(fault, await endpoint(request, body, fault))
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
        raise invalid_json() from exc
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.", None)
    return await _images_response(payload, (), fault)


async def _images_edits(request: Request, body: bytes, fault: Fault | None) -> Response:
    content_type = request.headers.get("content-type", "")
    fields, files = await asyncio.to_thread(parse_multipart, body, content_type)
    sources: list[bytes] = []
    mask: bytes | None = None
    for name, mime, data in files:
        if name == "mask":
            mask = data  # applied to the first image, as OpenAI does
            continue
        if name not in ("image", "image[]"):
            continue
        if mime and mime != "application/octet-stream" and mime not in EDIT_MIME_TYPES:
            raise invalid_request(
                f"Invalid file 'image': unsupported mimetype ('{mime[:60]}'). Supported file "
                "formats are 'image/jpeg', 'image/png', and 'image/webp'.",
                "image",
                "unsupported_file_mimetype",
            )
        sources.append(data)
    if not sources:
        raise missing_parameter("image")
    return await _images_response(fields, tuple(sources), fault, mask)


async def _images_response(
    fields: Mapping[str, Any],
    sources: tuple[bytes, ...],
    fault: Fault | None,
    mask: bytes | None = None,
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
        raise missing_parameter("prompt")
    n = integer(fields.get("n", 1), "n", 1, MAX_IMAGES)
    if fields.get("response_format") not in (None, "b64_json"):
        # GPT Image models only ever return b64_json.
        raise invalid_request(
            "Unknown parameter: 'response_format'.", "response_format", "unknown_parameter"
        )
    stream = stream_request(fields, n)
    options = image_options(fields, model=model)

    if isinstance(fault, BlockedFault):
        message = _SAFETY_PROMPT.format(request_id=new_id("req_"), reason=fault.reason.lower())
        raise _moderation_error(message)
    if isinstance(fault, RefusedFault):
        raise _moderation_error(_SAFETY_OUTPUT.format(reason=fault.finish_reason.lower()))

    images = await asyncio.gather(
        *(
            render(model, prompt, options, i, sources, source_param="image", mask=mask)
            for i in range(n)
        )
    )
    prompt_tokens = text_tokens(prompt)
    image_tokens = INPUT_IMAGE_TOKENS * len(sources)
    output_tokens = options.output_tokens * n + (stream.partial_tokens if stream else 0)
    usage = image_usage(prompt_tokens, image_tokens, output_tokens)
    if stream is not None:
        return await stream_response(
            edit=bool(sources),
            final_b64=images[0],
            options=options,
            usage=usage,
            stream=stream,
            fault=fault,
        )
    body = {
        "created": int(time.time()),
        "background": options.background,
        "data": [{"b64_json": b64} for b64 in images],
        "output_format": options.output_format,
        "quality": options.quality,
        "size": options.size,
        "usage": usage,
    }
    return await large_json_response(body)


def _moderation_error(message: str) -> OpenAIApiError:
    return OpenAIApiError(
        400, message, type_="image_generation_user_error", code="moderation_blocked"
    )


# --- faults and unknown routes -------------------------------------------------------


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
