"""The adapter interface and the few error types every adapter translates into."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# Called with (partial_image_index, image bytes as the upstream sent them).
PartialImageSink = Callable[[int, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SourceImage:
    mime_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """Upstream options beyond prompt and ratio (OpenAI's Images API names). None: the
    adapter's default. Callers validate them against the model first (see
    app/api/openai/params.py); an adapter that cannot honour one raises UpstreamBadRequest."""

    quality: str | None = None  # low | medium | high | auto
    background: str | None = None  # transparent | opaque | auto
    moderation: str | None = None  # low | auto
    input_fidelity: str | None = None  # high | low (edits)


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """One image from one upstream call."""

    upstream_model: str
    prompt: str
    aspect_ratio: str  # a ratio the upstream supports natively, e.g. "16:9"
    # References to edit or draw from, in the caller's order (the first is the one edited).
    source_images: tuple[SourceImage, ...] = ()
    mask: SourceImage | None = None  # OpenAI: transparent where the first image may change
    options: ImageOptions = field(default_factory=ImageOptions)
    image_size: str = "1K"  # the native contract's imageSize: 512 | 1K | 2K | 4K
    # What the picture should not show (the style preset's); only upstreams with a
    # negative prompt (AUTOMATIC1111) use it, the others ignore it.
    negative_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """An upstream's token counts for one image (OpenAI's `usage` object)."""

    input_tokens: int
    input_image_tokens: int
    input_text_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ProviderImage:
    data: bytes
    mime_type: str
    text: str | None = None
    usage: TokenUsage | None = None


class ProviderAdapter(Protocol):
    name: str

    async def generate(self, request: ImageRequest) -> ProviderImage:
        """Return one image or raise a ProviderError subclass."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class StreamsPartialImages(Protocol):
    """An adapter whose upstream can stream previews of the image as it draws it."""

    async def generate_streaming(
        self, request: ImageRequest, partial_images: int, on_partial: PartialImageSink
    ) -> ProviderImage:
        """Like `generate`, awaiting `on_partial` for each of up to `partial_images`
        previews; an exception it raises ends the upstream call (the response is closed,
        nothing is cancelled) and propagates."""
        ...


class ProviderError(Exception):
    """Base of the shared upstream error types. Messages never contain keys or image data."""

    retryable = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class UpstreamBadRequest(ProviderError):
    """The upstream rejected the request as malformed or unauthorised."""


class Moderated(ProviderError):
    """The prompt or the output was blocked by the provider's safety system."""


class RateLimited(ProviderError):
    retryable = True


class Unavailable(ProviderError):
    retryable = True


class UpstreamTimeout(ProviderError):
    retryable = True
