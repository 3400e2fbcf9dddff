"""The adapter interface and the few error types every adapter translates into."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# Called with (partial_image_index, image bytes as the upstream sent them).
PartialImageSink = Callable[[int, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SourceImage:
    mime_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """One image from one upstream call."""

    upstream_model: str
    prompt: str
    aspect_ratio: str  # a ratio the upstream supports natively, e.g. "16:9"
    source_image: SourceImage | None = None


@dataclass(frozen=True, slots=True)
class ProviderImage:
    data: bytes
    mime_type: str
    text: str | None = None


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
