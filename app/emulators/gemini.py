"""A wire-faithful fake of the Gemini API's `generateContent` for image models.

The official google-genai SDK runs unchanged against it: same path
(`/v1beta/models/{model}:generateContent`), same `x-goog-api-key` header, same JSON shapes
for requests, responses, blocked prompts, refusals and Google's error bodies. Images are
real PNGs derived deterministically from (model, prompt, aspect ratio, source image).
Scripted faults come from a shared FaultPlan, controllable at `/_emulator/...`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.emulators.bodies import CLIENT_GONE, delay_unless_gone, spoil
from app.emulators.faults import (
    BlockedFault,
    DelayFault,
    ErrorFault,
    FaultPlan,
    RefusedFault,
    fault_control_router,
)
from app.emulators.images import InvalidSourceImage, per_call_variant, synthesize_png

# gemini-2.5-flash-image output sizes at imageSize "1K".
NATIVE_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
DEFAULT_ASPECT_RATIO = "1:1"
# imageSize scales the 1K table; which sizes a model takes is model_sizes().
IMAGE_SIZE_SCALE = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}
API_VERSIONS = frozenset({"v1beta", "v1alpha", "v1"})
INPUT_MIME_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
MAX_REQUEST_BYTES = 20 * 1024 * 1024  # Gemini's inline request limit
OUTPUT_IMAGE_TOKENS = 1290  # what Google bills per 1K output image
INPUT_IMAGE_TOKENS = 258

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEFAULT_MESSAGES = {
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_TYPE_PREFIX = "type.googleapis.com/google.rpc."
_INVALID_KEY_MESSAGE = "API key not valid. Please pass a valid API key."


class GoogleApiError(Exception):
    """An error rendered as Google's `{"error": {code, message, status, details}}` body."""

    def __init__(
        self, code: int, message: str, *, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "status": STATUS_NAMES.get(self.code, "UNKNOWN"),
        }
        # Google omits `details` entirely when there are none.
        if self.details:
            body["details"] = self.details
        return JSONResponse({"error": body}, status_code=self.code)


def invalid_argument(message: str) -> GoogleApiError:
    return GoogleApiError(400, message)


@dataclass(frozen=True)
class ImageRequest:
    """The parts of a generateContent request the emulator acts on."""

    prompt: str
    images: tuple[bytes, ...]
    aspect_ratio: str
    width: int
    height: int
    wants_image: bool
    # generationConfig.seed pins the picture; without one each call draws a new variant.
    seed: int | None = None
    variant: int | None = None

    @property
    def text_tokens(self) -> int:
        # Roughly four characters per token, as Google's docs estimate.
        return math.ceil(len(self.prompt) / 4)

    @property
    def image_tokens(self) -> int:
        return INPUT_IMAGE_TOKENS * len(self.images)


def create_gemini_emulator(
    faults: FaultPlan | None = None, *, control: bool = True, control_token: str | None = None
) -> FastAPI:
    """The emulator as an ASGI app; mountable under any prefix (e.g. `/emulators/gemini`).

    `control` false leaves out the `/_emulator/*` routes; `control_token` guards them.
    """
    plan = faults if faults is not None else FaultPlan()
    app = FastAPI(title="Gemini API emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.faults = plan
    if control:
        app.include_router(fault_control_router(plan, token=control_token))
    app.add_exception_handler(StarletteHTTPException, _http_exception_as_google_error)

    @app.post("/{api_version}/models/{model_action}")
    async def model_action(api_version: str, model_action: str, request: Request) -> Response:
        # The model and the action share one path segment: `gemini-x:generateContent`.
        model, _, action = model_action.partition(":")
        if api_version not in API_VERSIONS or not model or action != "generateContent":
            return GoogleApiError(404, "Method not found.").response()
        try:
            return await _generate_content(plan, model, request)
        except GoogleApiError as exc:
            return exc.response()

    return app


async def _generate_content(plan: FaultPlan, model: str, request: Request) -> Response:
    api_key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
    if not api_key:
        raise GoogleApiError(
            400,
            _INVALID_KEY_MESSAGE,
            details=[
                {
                    "@type": _TYPE_PREFIX + "ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": _TYPE_PREFIX + "LocalizedMessage",
                    "locale": "en-US",
                    "message": _INVALID_KEY_MESSAGE,
                },
            ],
        )

    # Like a real front end, quota and availability errors come before the body is read,
    # so every authenticated call takes a fault even if its body turns out to be invalid.
    fault = plan.next_fault()
    if isinstance(fault, ErrorFault):
        raise _fault_error(fault, model)

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise _payload_too_large()  # refuse before buffering it
    body = await request.body()
    if len(body) > MAX_REQUEST_BYTES:
        raise _payload_too_large()
    if isinstance(fault, DelayFault) and await delay_unless_gone(request, fault.seconds):
        return Response(status_code=CLIENT_GONE)
    # JSON and base64 decoding of a multi-megabyte body would stall the event loop.
    parsed = await asyncio.to_thread(parse_generate_request, body, model)

    if isinstance(fault, BlockedFault):
        return JSONResponse(
            {
                "promptFeedback": {"blockReason": fault.reason},
                "usageMetadata": _usage(parsed, output_tokens=0),
                "modelVersion": model,
                "responseId": _response_id(),
            }
        )
    parts: list[dict[str, Any]]
    if isinstance(fault, RefusedFault):
        parts = [{"text": "I'm unable to generate that image."}]
        return JSONResponse(_candidate_response(model, parsed, parts, fault.finish_reason, 0))
    if not parsed.wants_image:
        parts = [{"text": f"(emulated text reply to: {parsed.prompt[:200]})"}]
        return JSONResponse(_candidate_response(model, parsed, parts, "STOP", 0))

    # Drawing, PNG/base64 encoding and serialising megabytes of JSON all stay off the loop.
    content = await asyncio.to_thread(_image_response_body, model, parsed)
    return spoil(fault, Response(content, media_type="application/json"))


def parse_generate_request(body: bytes, model: str) -> ImageRequest:
    """Validate a generateContent body the way Google does; raises GoogleApiError (400)."""
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise invalid_argument(f"Invalid JSON payload received. {exc.msg}.") from exc
    except UnicodeDecodeError as exc:
        raise invalid_argument("Invalid JSON payload received. Invalid UTF-8.") from exc
    if not isinstance(payload, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")

    contents = payload.get("contents")
    if not isinstance(contents, list) or not contents:
        raise invalid_argument("* GenerateContentRequest.contents: contents is not specified")
    texts: list[str] = []
    images: list[bytes] = []
    for i, content in enumerate(contents):
        _collect_parts(content, f"contents[{i}]", texts, images)
    prompt = "\n".join(text for text in texts if text.strip()).strip()
    if not prompt and not images:
        raise invalid_argument(
            "* GenerateContentRequest.contents[0].parts: contains an empty text parameter"
        )

    config = _object(_get(payload, "generationConfig", "generation_config"), "generation_config")
    candidate_count = _get(config, "candidateCount", "candidate_count")
    if candidate_count not in (None, 1):
        raise invalid_argument(f"Multiple candidates is not enabled for models/{model}")
    modalities = _get(config, "responseModalities", "response_modalities")
    wants_image = modalities is None or (
        isinstance(modalities, list) and any(str(m).upper() == "IMAGE" for m in modalities)
    )

    image_config = _object(_get(config, "imageConfig", "image_config"), "image_config")
    ratio = _get(image_config, "aspectRatio", "aspect_ratio") or DEFAULT_ASPECT_RATIO
    if not isinstance(ratio, str) or ratio not in NATIVE_SIZES:
        raise invalid_argument(
            "* GenerateContentRequest.generation_config.image_config.aspect_ratio: "
            f"Unsupported aspect ratio: {ratio!s:.20}. "
            f"Supported values are: {', '.join(NATIVE_SIZES)}."
        )
    image_size = _get(image_config, "imageSize", "image_size") or "1K"
    sizes = model_sizes(model)
    if not isinstance(image_size, str) or image_size not in sizes:
        raise invalid_argument(
            "* GenerateContentRequest.generation_config.image_config.image_size: "
            f"Unsupported image size: {image_size!s:.20} for models/{model:.60}. "
            f"Supported values are: {', '.join(sizes)}."
        )
    scale = IMAGE_SIZE_SCALE[image_size]
    width, height = (round(side * scale) for side in NATIVE_SIZES[ratio])
    seed = config.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise invalid_argument(
            "Invalid value at 'generation_config.seed' (TYPE_INT32), must be an integer"
        )
    return ImageRequest(
        prompt=prompt,
        images=tuple(images),
        aspect_ratio=ratio,
        width=width,
        height=height,
        wants_image=wants_image,
        seed=seed,
        variant=per_call_variant() if seed is None else None,
    )


def model_sizes(model: str) -> tuple[str, ...]:
    """The imageSize values a model takes: the pro image models 1K, 2K and 4K, 3.1 Flash
    Image also 512, gemini-2.5-flash-image only its 1K."""
    if "pro" in model:
        return ("1K", "2K", "4K")
    if "3.1-flash" in model:
        return ("512", "1K", "2K", "4K")
    return ("1K",)


def _collect_parts(content: Any, where: str, texts: list[str], images: list[bytes]) -> None:
    content = _object(content, where)
    role = content.get("role", "user")
    if role not in ("user", "model"):
        raise invalid_argument("Please use a valid role: user, model.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise invalid_argument(
            f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty."
        )
    for j, part in enumerate(parts):
        part_where = f"{where}.parts[{j}]"
        part = _object(part, part_where)
        if part.get("thought"):
            continue  # a pro model's interim thoughts, echoed back in multi-turn chats
        text = part.get("text")
        blob = _get(part, "inlineData", "inline_data")
        if isinstance(text, str):
            if role == "user":
                texts.append(text)
        elif blob is not None:
            images.append(_decode_blob(blob, f"{part_where}.inline_data"))
        else:
            raise invalid_argument(
                f"* GenerateContentRequest.{part_where}: the emulator supports only text and "
                "inline_data parts"
            )


def _decode_blob(blob: Any, where: str) -> bytes:
    blob = _object(blob, where)
    mime_type = _get(blob, "mimeType", "mime_type")
    if not isinstance(mime_type, str) or mime_type not in INPUT_MIME_TYPES:
        raise invalid_argument(f"Unsupported MIME type: {mime_type!s:.40}")
    data = blob.get("data")
    if not isinstance(data, str) or not data:
        raise invalid_argument(f"* GenerateContentRequest.{where}.data: data is required")
    # The SDK sends URL-safe base64 (`-`, `_`); other clients send the standard alphabet.
    normalised = data.strip().replace("-", "+").replace("_", "/")
    normalised += "=" * (-len(normalised) % 4)
    try:
        return base64.b64decode(normalised, validate=True)
    except binascii.Error as exc:
        # Google echoes the offending value here; we do not, to keep image data out of logs.
        raise invalid_argument(
            f"Invalid value at '{where}.data' (TYPE_BYTES), Base64 decoding failed"
        ) from exc


def _image_response_body(model: str, request: ImageRequest) -> bytes:
    parts: list[dict[str, Any]] = [
        {"text": "Here is the generated image."},
        {"inlineData": {"mimeType": "image/png", "data": _render_b64(model, request)}},
    ]
    body = _candidate_response(model, request, parts, "STOP", OUTPUT_IMAGE_TOKENS)
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _render_b64(model: str, request: ImageRequest) -> str:
    seed = f"{request.prompt} [{model} {request.aspect_ratio}]"
    if request.seed is not None:
        seed += f" seed {request.seed}"
    try:
        # Every input image shows, each in its own band, in the order sent.
        png = synthesize_png(
            seed, request.width, request.height, request.images, variant=request.variant
        )
    except InvalidSourceImage as exc:
        raise invalid_argument(
            "Unable to process input image. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting"
        ) from exc
    return base64.b64encode(png).decode("ascii")


def _payload_too_large() -> GoogleApiError:
    return invalid_argument(f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes.")


def _fault_error(fault: ErrorFault, model: str) -> GoogleApiError:
    message = fault.message or _DEFAULT_MESSAGES.get(fault.status, "Emulated upstream error.")
    details: list[dict[str, Any]] = []
    if fault.status == 429:
        details.append(
            {
                "@type": _TYPE_PREFIX + "QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/"
                        "generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": model},
                        "quotaValue": "10",
                    }
                ],
            }
        )
    if fault.retry_after is not None:
        details.append(
            {"@type": _TYPE_PREFIX + "RetryInfo", "retryDelay": duration(fault.retry_after)}
        )
    return GoogleApiError(fault.status, message, details=details)


def duration(seconds: float) -> str:
    """A google.protobuf.Duration in its JSON form: "2s", "1.500s"."""
    millis = round(seconds * 1000)
    whole, frac = divmod(millis, 1000)
    return f"{whole}s" if frac == 0 else f"{whole}.{frac:03d}s"


def _candidate_response(
    model: str,
    request: ImageRequest,
    parts: list[dict[str, Any]],
    finish_reason: str,
    output_tokens: int,
) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": finish_reason,
                "index": 0,
            }
        ],
        "usageMetadata": _usage(request, output_tokens),
        "modelVersion": model,
        "responseId": _response_id(),
    }


def _usage(request: ImageRequest, output_tokens: int) -> dict[str, Any]:
    prompt_tokens = request.text_tokens + request.image_tokens
    prompt_details = [{"modality": "TEXT", "tokenCount": request.text_tokens}]
    if request.images:
        prompt_details.append({"modality": "IMAGE", "tokenCount": request.image_tokens})
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "totalTokenCount": prompt_tokens + output_tokens,
        "promptTokensDetails": prompt_details,
    }
    if output_tokens:
        usage["candidatesTokenCount"] = output_tokens
        usage["candidatesTokensDetails"] = [{"modality": "IMAGE", "tokenCount": output_tokens}]
    return usage


def _response_id() -> str:
    # Real ids are opaque URL-safe strings, unique per call.
    return secrets.token_urlsafe(16)


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """A field by its proto JSON name or its original proto name; Google accepts both."""
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_argument(f"Invalid JSON payload received. '{where}' must be an object.")
    return value


async def _http_exception_as_google_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and methods get Google's error shape rather than FastAPI's `detail`.
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    code = exc.status_code
    message = "Method not found." if code in (404, 405) else str(exc.detail)
    return GoogleApiError(404 if code == 405 else code, message).response()
