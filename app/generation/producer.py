"""Producing one image: provider call (retries, concurrency cap, fallbacks), WebP, store."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from app.generation.decode_budget import DecodeBudget, DecodeBusy
from app.imaging.decode import ImageDecodeError, decoded_size
from app.imaging.exact import EXACT_COST, OutputSpec, render_exact
from app.imaging.webp import TRANSCODE_COST, EncodedImage, normalise_to_webp, passthrough
from app.observability.metrics import Metrics
from app.observability.tracing import AttributeValue, span
from app.providers.base import (
    ImageOptions,
    ImageRequest,
    ProviderAdapter,
    ProviderError,
    ProviderImage,
    RateLimited,
    SourceImage,
    StreamsPartialImages,
    TokenUsage,
    Unavailable,
    UpstreamTimeout,
)
from app.providers.catalog import CatalogModel
from app.providers.retry import RetryPolicy, Slots, call_with_retries
from app.storage.base import ImageStore
from app.storage.keys import object_key

# Errors that say "this upstream cannot serve right now", which a fallback model may fix.
FALLBACK_ON = (RateLimited, Unavailable, UpstreamTimeout)
log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PartialImages:
    """A streaming caller's ask: up to `count` (1-3) previews from upstreams that stream
    them (others send none), each normalised like the final image and handed to
    `on_partial` with its index."""

    count: int
    on_partial: Callable[[int, EncodedImage], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Job:
    """What every image of one generation shares."""

    tenant_id: str
    generation_id: str
    created: datetime
    prompt: str
    aspect_ratio: str
    source_images: tuple[SourceImage, ...]
    chain: tuple[CatalogModel, ...]  # the requested model, then its usable fallbacks
    deadline: float  # time.monotonic() by which every upstream call must be done
    mask: SourceImage | None = None
    options: ImageOptions = field(default_factory=ImageOptions)
    output: OutputSpec | None = None  # None: WebP at aspect_ratio
    negative_prompt: str | None = None  # the style preset's, for upstreams that take one
    image_size: str = "1K"  # every model of `chain` offers it


@dataclass(frozen=True, slots=True)
class StoredImage:
    index: int
    key: str
    image: EncodedImage
    text: str | None
    model: CatalogModel  # the model that delivered it, and so the price charged
    usage: TokenUsage | None = None  # the upstream's token counts, where it reports them


class ImageProducer:
    def __init__(
        self,
        *,
        adapters: dict[str, ProviderAdapter],  # by CatalogModel.adapter_key
        image_store: ImageStore,
        retry_policy: RetryPolicy,
        max_pixels: int,
        metrics: Metrics,
        limiters: Mapping[str, Slots],
        decode_budget: DecodeBudget,
        encoder: Executor | None = None,
        upstream_slots: Mapping[str, Slots] | None = None,
        provider_caps: Mapping[str, Slots] | None = None,
    ) -> None:
        self._adapters = adapters
        # Where decode + crop + WebP encode run (None: asyncio's default thread pool).
        self._encoder = encoder
        self._store = image_store
        self._retry = retry_policy
        self._max_pixels = max_pixels
        self._limiters = limiters
        # Per adapter key: its upstream's bound on calls in flight (shared by the adapters
        # of one provider or self-hosted upstream), taken before any SDK work.
        self._upstream_slots = upstream_slots or {}
        # Per adapter: its provider account's cap across models (none: unlimited).
        self._provider_caps = provider_caps or {}
        self._metrics = metrics
        self.decode_budget = decode_budget

    def usable_chain(
        self, chain: tuple[CatalogModel, ...], references: int = 0, *, mask: bool = False
    ) -> tuple[CatalogModel, ...]:
        """The models of `chain` whose provider is configured and that can do the job:
        take `references` source images (and a mask)."""
        return tuple(
            model
            for model in chain
            if model.adapter_key in self._adapters
            and model.max_reference_images >= references
            and (model.masks or not mask)
        )

    async def produce(
        self, job: Job, index: int, partials: PartialImages | None = None
    ) -> StoredImage:
        last_error: ProviderError | None = None
        for model in job.chain:
            request = ImageRequest(
                upstream_model=model.upstream_model,
                prompt=job.prompt,
                aspect_ratio=model.upstream_ratio(job.aspect_ratio),
                source_images=job.source_images,
                mask=job.mask,
                options=job.options,
                negative_prompt=job.negative_prompt,
                image_size=job.image_size,
            )
            adapter = self._adapters[model.adapter_key]
            started = time.monotonic()
            call = functools.partial(
                self._observed_call, adapter, model, request, job, partials, index
            )
            try:
                image = await call_with_retries(
                    _numbered(call),
                    self._retry,
                    deadline=job.deadline,
                    what=f"{model.id} image {index}",
                    limiter=self._limiters.get(model.id),
                    provider_cap=self._provider_caps.get(model.adapter_key),
                    upstream_slots=self._upstream_slots.get(model.adapter_key),
                )
            except FALLBACK_ON as exc:
                last_error = exc
                if time.monotonic() >= job.deadline:
                    break
                continue
            with span("transcode", {"imagegate.image_index": index}) as traced:
                encoded = await self._encode(image.data, job, model)
                traced.set("imagegate.image.mime_type", encoded.mime_type)
            key = object_key(job.tenant_id, job.generation_id, index, job.created)
            with span(
                "store", {"imagegate.image_index": index, "imagegate.bytes": len(encoded.data)}
            ):
                await self._store.put(key, encoded.data, encoded.mime_type)
            self._metrics.images_stored.labels(model.id).inc()
            self._metrics.generation_seconds.labels(model.id, model.provider).observe(
                time.monotonic() - started
            )
            return StoredImage(
                index=index,
                key=key,
                image=encoded,
                text=image.text,
                model=model,
                usage=image.usage,
            )
        assert last_error is not None
        raise last_error

    async def _partial(
        self, job: Job, model: CatalogModel, partials: PartialImages, index: int, data: bytes
    ) -> None:
        """One upstream preview, cropped and encoded as the final image will be."""
        try:
            encoded = await self._encode(data, job, model)
        except (ImageDecodeError, ProviderError, DecodeBusy) as exc:
            # A preview is optional: one that cannot be decoded now is skipped, not fatal.
            log.info("partial image skipped", extra={"model": model.id, "error": str(exc)})
            return
        await partials.on_partial(index, encoded)

    async def _encode(self, data: bytes, job: Job, model: CatalogModel) -> EncodedImage:
        """What is stored (and previewed): the job's exact output, or WebP at its ratio."""
        if job.output is not None:
            return await self._transcode(data, job, model, job.output)
        # An exact-ratio WebP is checked on the loop (headers only, microseconds);
        # anything to decode and encode goes to a thread.
        passed = passthrough(data, job.aspect_ratio, max_pixels=self._max_pixels)
        return passed or await self._transcode(data, job, model)

    async def _transcode(
        self, data: bytes, job: Job, model: CatalogModel, output: OutputSpec | None = None
    ) -> EncodedImage:
        """Decode + crop + encode in the encoder pool, once its pixels fit the decode budget:
        WebP at the job's ratio, or `output` (exact size and format)."""
        # The header is read in a thread too: a PNG may carry any number of chunks before it.
        width, height = await asyncio.to_thread(decoded_size, data, max_pixels=self._max_pixels)
        cost = width * height * TRANSCODE_COST
        encode = functools.partial(
            normalise_to_webp, data, job.aspect_ratio, max_pixels=self._max_pixels
        )
        if output is not None:
            out_pixels = (output.width or width) * (output.height or height)
            cost = max(width * height, out_pixels) * EXACT_COST
            encode = functools.partial(render_exact, data, output, max_pixels=self._max_pixels)
        if not self.decode_budget.fits(cost):
            raise ProviderError(
                f"{model.id} returned a {width}x{height} image, more pixels than this gateway "
                "decodes at once"
            )
        return await self.decode_budget.run(
            cost,
            encode,
            wait_seconds=job.deadline - time.monotonic(),
            executor=self._encoder,
        )

    async def _observed_call(
        self,
        adapter: ProviderAdapter,
        model: CatalogModel,
        request: ImageRequest,
        job: Job,
        partials: PartialImages | None,
        index: int,
        attempt: int,
    ) -> ProviderImage:
        in_flight = self._metrics.upstream_in_flight.labels(model.provider)
        in_flight.inc()
        attributes: dict[str, AttributeValue] = {
            "imagegate.model": model.id,
            "imagegate.provider": model.provider,
            "imagegate.image_index": index,
            "imagegate.attempt": attempt,
        }
        with span("upstream.attempt", attributes) as traced:
            try:
                if partials is not None and isinstance(adapter, StreamsPartialImages):
                    sink = functools.partial(self._partial, job, model, partials)
                    image = await adapter.generate_streaming(request, partials.count, sink)
                else:
                    image = await adapter.generate(request)
            except ProviderError as exc:
                self._metrics.upstream_errors.labels(model.provider, type(exc).__name__).inc()
                traced.set("imagegate.outcome", type(exc).__name__)
                raise
            finally:
                in_flight.dec()
            traced.set("imagegate.outcome", "ok")
            return image


def _numbered(call: Callable[[int], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    """`call` given its attempt number (1, 2, ...) each time the retry loop calls it."""
    attempts = itertools.count(1)
    return lambda: call(next(attempts))
