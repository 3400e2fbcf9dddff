"""OpenAI adapters on the official `openai` async client (one image per call).

Two upstream APIs draw images: the Images API (`gpt-image-*` models) and the Responses API
(models such as `gpt-5-nano`, through the `image_generation` tool). Both share the error
translation at the bottom of this module, so every SDK error becomes one of the shared
ProviderError types at a single boundary.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import math
import re
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import httpx
import openai
from openai import AsyncOpenAI, AsyncStream, omit
from openai.types import (
    ImageEditCompletedEvent,
    ImageEditPartialImageEvent,
    ImageEditStreamEvent,
    ImageGenCompletedEvent,
    ImageGenPartialImageEvent,
    ImageGenStreamEvent,
)
from openai.types.image_edit_completed_event import Usage as EditUsage
from openai.types.image_gen_completed_event import Usage as GenUsage
from openai.types.responses import Response as OpenAIResponse
from openai.types.responses import ResponseInputMessageContentListParam
from openai.types.responses.response_output_item import ImageGenerationCall
from openai.types.responses.tool_param import ImageGeneration

from app.imaging.formats import sniff_image_type
from app.providers.base import (
    ImageRequest,
    Moderated,
    PartialImageSink,
    ProviderError,
    ProviderImage,
    RateLimited,
    SourceImage,
    TokenUsage,
    Unavailable,
    UpstreamBadRequest,
    UpstreamTimeout,
)
from app.providers.images_answer import ImagesAnswer, read_images_answer
from app.providers.transport import too_large_cause, translate_http_error

if TYPE_CHECKING:
    import httpx2

Quality = Literal["low", "medium", "high", "auto"]

# The request's aspect ratio is always one of the catalog's native ratios for these models
# (the gateway centre-crops to anything else), so this table is total for valid requests.
NATIVE_SIZES: dict[str, Literal["1024x1024", "1536x1024", "1024x1536"]] = {
    "1:1": "1024x1024",
    "3:2": "1536x1024",
    "2:3": "1024x1536",
}
# 2K and 4K at the same ratios, for models that take any WxH (gpt-image-2: sides multiples
# of 16, ratio 1:3 to 3:1, at most 3840x2160 pixels in all); the catalog offers them only
# there. 2880x2880 is the largest square within that pixel bound.
LARGE_SIZES: dict[str, dict[str, str]] = {
    "2K": {"1:1": "2048x2048", "3:2": "2496x1664", "2:3": "1664x2496"},
    "4K": {"1:1": "2880x2880", "3:2": "3504x2336", "2:3": "2336x3504"},
}
# WebP straight from the upstream means the gateway need not re-encode; 90 keeps detail.
OUTPUT_FORMAT: Literal["webp"] = "webp"
OUTPUT_COMPRESSION = 90
_PARTIAL_EVENTS = (ImageGenPartialImageEvent, ImageEditPartialImageEvent)
_COMPLETED_EVENTS = (ImageGenCompletedEvent, ImageEditCompletedEvent)
_MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
_FILE_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# Scrubbed from upstream messages before they reach our errors (and so users and logs).
_SECRETS = re.compile(r"\b(?:sk|rk|sess)-[A-Za-z0-9_*.-]{4,}")
_BLOBS = re.compile(r"[A-Za-z0-9+/=_-]{80,}")
_MAX_MESSAGE = 300


class _Body(Protocol):
    @property
    def content(self) -> bytes: ...


class _RawResponse(Protocol):
    """What `with_raw_response` returns, as far as it is read here."""

    @property
    def http_response(self) -> _Body: ...


class _OpenAIAdapter(abc.ABC):
    """The SDK client and the error boundary both OpenAI adapters share."""

    name = "openai"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        http_client: httpx.AsyncClient,
        quality: Quality = "auto",
    ) -> None:
        # max_retries=0: retries belong to our one policy (app.providers.retry), and an
        # SDK retrying underneath it would multiply attempts and ignore our deadline. The SDK
        # accepts a plain httpx client at runtime; its annotation names only httpx2's.
        self._client = AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            http_client=cast("httpx2.AsyncClient", http_client),
            max_retries=0,
        )
        self._quality: Quality = quality

    # How errors and messages name the upstream.
    label = "OpenAI"

    async def generate(self, request: ImageRequest) -> ProviderImage:
        size = self._size(request)
        return await _translate_errors(lambda: self._generate(request, size), self.label)

    def _size(self, request: ImageRequest) -> str:
        """The `size` parameter for `request` (OpenAI's three native sizes)."""
        return _native_size(request)

    @abc.abstractmethod
    async def _generate(self, request: ImageRequest, size: str) -> ProviderImage:
        """One upstream call for `request` at `size`; SDK errors propagate untranslated."""

    async def aclose(self) -> None:
        # Nothing to release: the httpx client (and its pool) is shared by both OpenAI
        # adapters and owned by whoever built it; AsyncOpenAI.close() would close it.
        return None


class ImagesAPIAdapter(_OpenAIAdapter):
    """One image through the Images API: `images.generate`, or `images.edit` with sources.
    Subclasses choose the parameters (`_params`) and read the answer (`_image`)."""

    async def _generate(self, request: ImageRequest, size: str) -> ProviderImage:
        # The raw body, parsed once (app/providers/images_answer.py), not the SDK's models.
        raw = cast(_RawResponse, await self._call(request, size, raw=True))
        # Parsing and decoding a 4K image's base64 takes long enough to stall the loop.
        return await read_images_answer(raw.http_response.content, self.label, self._image)

    def _image(self, response: ImagesAnswer) -> ProviderImage:
        images = [item.b64_json for item in response.data if item.b64_json]
        if not images:
            # GPT Image always answers 200 with b64_json; a refusal is a 400
            # moderation_blocked. An empty 200 is an upstream fault worth retrying, not a
            # verdict on the prompt.
            raise Unavailable(f"{self.label} returned no image")
        return _provider_image(images[0], None, response.usage, self.label)

    def _params(self, request: ImageRequest, size: str) -> dict[str, Any]:
        """The parameters `images.generate` and `images.edit` share (GPT Image's)."""
        options = request.options
        return {
            "model": request.upstream_model,
            "prompt": request.prompt,
            "n": 1,
            "size": size,
            "quality": _given(options.quality or self._quality),
            "background": _given(options.background),
            "output_format": OUTPUT_FORMAT,
            "output_compression": OUTPUT_COMPRESSION,
        }

    async def _call(
        self, request: ImageRequest, size: str, *, raw: bool = False, **stream: Any
    ) -> object:
        """`images.generate`, or `images.edit` with sources: the one place both calls'
        parameters are built, streamed or not (`stream`: stream=True, partial_images);
        `raw`: the SDK's raw response (its body not parsed into models)."""
        options = request.options
        common: dict[str, Any] = {**self._params(request, size), **stream}
        images = self._client.images.with_raw_response if raw else self._client.images
        if not request.source_images:
            return await images.generate(moderation=_given(options.moderation), **common)
        files = [
            (f"image{i}.{_FILE_EXTENSIONS.get(s.mime_type, 'png')}", s.data, s.mime_type)
            for i, s in enumerate(request.source_images)
        ]
        mask = request.mask
        return await images.edit(
            # One file is sent as `image`, several as `image[]` (as the SDK does).
            image=files[0] if len(files) == 1 else files,
            mask=("mask.png", mask.data, mask.mime_type) if mask is not None else omit,
            input_fidelity=_given(options.input_fidelity),
            **common,
        )


class OpenAIImagesAdapter(ImagesAPIAdapter):
    """`gpt-image-*` models through `images.generate`, or `images.edit` with a source;
    `generate_streaming` asks for the same with `stream=True` and partial images."""

    name = "openai-images"

    async def generate_streaming(
        self, request: ImageRequest, partial_images: int, on_partial: PartialImageSink
    ) -> ProviderImage:
        size = self._size(request)
        return await _translate_errors(
            lambda: self._stream(request, size, partial_images, on_partial), self.label
        )

    async def _stream(
        self, request: ImageRequest, size: str, partial_images: int, on_partial: PartialImageSink
    ) -> ProviderImage:
        # The events arrive through the guarded transport like any body: the size cap
        # counts the whole stream and every read ends by the attempt's deadline.
        stream = cast(
            "AsyncStream[ImageGenStreamEvent] | AsyncStream[ImageEditStreamEvent]",
            await self._call(request, size, stream=True, partial_images=partial_images),
        )
        final: ImageGenCompletedEvent | ImageEditCompletedEvent | None = None
        # Leaving the block closes the response, also when `on_partial` raises.
        async with stream:
            async for event in stream:
                if isinstance(event, _PARTIAL_EVENTS):
                    await on_partial(event.partial_image_index, _decoded(event.b64_json))
                elif isinstance(event, _COMPLETED_EVENTS):
                    final = event
        if final is None or not final.b64_json:
            raise Unavailable("OpenAI's image stream ended without the final image")
        return _provider_image(final.b64_json, None, _usage(final.usage))


class OpenAIResponsesAdapter(_OpenAIAdapter):
    """Models such as `gpt-5-nano` through `responses.create` and the image tool."""

    name = "openai-responses"

    async def _generate(self, request: ImageRequest, size: str) -> ProviderImage:
        content: ResponseInputMessageContentListParam = [
            {"type": "input_text", "text": request.prompt}
        ]
        for source in request.source_images:
            content.append(
                {"type": "input_image", "image_url": _data_url(source), "detail": "auto"}
            )
        options = request.options
        tool: ImageGeneration = {
            "type": "image_generation",
            "size": cast(Any, size),  # 1K only: the catalog offers no more here
            "quality": cast(Quality, options.quality or self._quality),
            "output_format": OUTPUT_FORMAT,
            "output_compression": OUTPUT_COMPRESSION,
        }
        if options.background is not None:
            tool["background"] = cast(Any, options.background)
        if options.moderation is not None:
            tool["moderation"] = cast(Any, options.moderation)
        if options.input_fidelity is not None:
            tool["input_fidelity"] = cast(Any, options.input_fidelity)
        if request.mask is not None:
            tool["input_image_mask"] = {"image_url": _data_url(request.mask)}
        response = await self._client.responses.create(
            model=request.upstream_model,
            input=[{"role": "user", "content": content}],
            tools=[tool],
            tool_choice={"type": "image_generation"},
        )
        return await asyncio.to_thread(_image_from_response, response)


def _image_from_response(response: OpenAIResponse) -> ProviderImage:
    calls = [item for item in response.output if isinstance(item, ImageGenerationCall)]
    done = [call.result for call in calls if call.status == "completed" and call.result]
    if done:
        # The tool may run more than once in a turn; the last finished image is the answer.
        return _provider_image(done[-1], response.output_text.strip() or None)
    if response.error is not None:
        message = f"OpenAI response failed ({response.error.code})"
        if str(response.error.code) in _MODERATION_CODES:
            raise Moderated(message)
        raise Unavailable(message)
    failed = [call for call in calls if call.status == "failed"]
    if failed:
        # The model ran the tool and it declined to draw. OpenAI reports moderation here
        # (error.code moderation_blocked); the same prompt would be declined again and
        # each attempt is billed, so this is a verdict (Moderated), not a retryable fault.
        error = failed[-1].error
        reason = error.code if error is not None and error.code else "image generation failed"
        if error is not None and error.moderation_details is not None:
            reason += f": {', '.join(error.moderation_details.categories)}"
        raise Moderated(f"the provider returned no image ({reason})")
    # With tool_choice forcing the tool, a completed response without any image call is an
    # upstream anomaly rather than a judgement on the prompt: retry (or fall back).
    status = response.status or "unknown"
    raise Unavailable(f"OpenAI response ({status}) contained no image")


def _native_size(request: ImageRequest) -> str:
    if request.image_size != "1K":
        large = LARGE_SIZES.get(request.image_size, {}).get(request.aspect_ratio)
        if large is None:
            raise UpstreamBadRequest(
                f"imageSize {request.image_size} at {request.aspect_ratio} has no OpenAI size"
            )
        return large
    size = NATIVE_SIZES.get(request.aspect_ratio)
    if size is None:
        raise UpstreamBadRequest(
            f"aspect ratio {request.aspect_ratio} is not native to OpenAI image models "
            f"(native: {', '.join(NATIVE_SIZES)})"
        )
    return size


def _provider_image(
    b64: str, text: str | None, usage: TokenUsage | None = None, label: str = "OpenAI"
) -> ProviderImage:
    data = _decoded(b64, label)
    return ProviderImage(data, _sniff_mime_type(data), text, usage)


def _decoded(b64: str, label: str = "OpenAI") -> bytes:
    try:
        return base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise Unavailable(f"{label} returned an image that is not valid base64") from None


def _usage(usage: GenUsage | EditUsage | None) -> TokenUsage | None:
    """OpenAI's usage object, from a stream's completed event (a whole answer's is
    read by app/providers/images_answer.py)."""
    if usage is None:
        return None
    details = usage.input_tokens_details
    return TokenUsage(
        input_tokens=usage.input_tokens,
        input_image_tokens=details.image_tokens,
        input_text_tokens=details.text_tokens,
        output_tokens=usage.output_tokens,
    )


def _data_url(image: SourceImage) -> str:
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def _given(value: str | None) -> Any:
    """An optional SDK parameter: `omit` (not sent) for None. Values were validated
    against OpenAI's literals by the caller."""
    return omit if value is None else value


def _sniff_mime_type(data: bytes) -> str:
    """The format the bytes really are: we ask for WebP, but trust the magic, not the ask."""
    return sniff_image_type(data) or "application/octet-stream"


# --- the one error boundary ----------------------------------------------------------


async def _translate_errors(
    call: Callable[[], Awaitable[ProviderImage]], upstream: str = "OpenAI"
) -> ProviderImage:
    try:
        return await call()
    except openai.APIError as exc:
        raise translate_error(exc, upstream) from None
    except httpx.HTTPError as exc:  # a body read outside the SDK's own error handling
        raise translate_http_error(exc, upstream) from None


def translate_error(exc: openai.APIError, upstream: str = "OpenAI") -> ProviderError:
    """The shared ProviderError for an SDK error; messages carry no keys or image data and
    name the upstream as `upstream` (OpenAI, or a self-hosted server's label)."""
    # The SDK wraps transport errors (the body cap among them) in APIConnectionError.
    wrapped = exc.__cause__
    if isinstance(wrapped, httpx.HTTPError) and too_large_cause(wrapped) is not None:
        return translate_http_error(wrapped, upstream)
    # APITimeoutError subclasses APIConnectionError, so it is checked first.
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout(f"{upstream} did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "connection error"
        return Unavailable(f"{upstream} unreachable: {cause}")
    if not isinstance(exc, openai.APIStatusError):
        # A 2xx body the SDK could not read (APIResponseValidationError) or similar.
        return Unavailable(f"{upstream} returned a response that could not be read")

    status = exc.status_code
    code = exc.code or exc.type or ""
    label = f"{upstream} {status} {code}".strip()
    detail = _scrub(exc.body)
    if status == 429:
        if exc.code == "insufficient_quota":
            # Our account is out of credit: not a passing limit, but another model may serve.
            return Unavailable(f"{label}: the {upstream} account has no quota left")
        return RateLimited(label, retry_after=_retry_after(exc.response.headers))
    if status >= 500 or status == 409:  # 409: OpenAI's lock contention, retryable
        return Unavailable(label)
    if status == 408:
        return UpstreamTimeout(label)
    if status == 400 and exc.code in _MODERATION_CODES:
        return Moderated(f"rejected by {upstream}'s safety system ({exc.code}){detail}")
    return UpstreamBadRequest(f"{label}{detail}")


def _scrub(body: object) -> str:
    """`: <message>` from an error body, with key-like and base64-like runs removed."""
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message.strip():
        return ""
    message = _BLOBS.sub("[data]", _SECRETS.sub("[key]", message.strip()))
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return f": {message}"


def _retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` (preferred, as the SDK does) or `retry-after`."""
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    raw = headers.get("retry-after")
    seconds = _number(raw)
    if seconds is not None or not raw:
        return seconds
    try:
        when = parsedate_to_datetime(raw)  # an HTTP-date
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None
