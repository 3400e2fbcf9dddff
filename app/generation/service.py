"""One generation: reserve credits, produce images, settle, record.

Any failure after the reservation settles the hold for only what was delivered (often
nothing) and removes stored objects the caller will not get; a process that dies
mid-way leaves an expiring hold that the sweeper releases.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.credits.ledger import Hold, get_balance, reserve, settle
from app.db.models import Generation, Image, new_id, utcnow
from app.db.statuses import GenerationStatus
from app.errors import (
    ContentRejected,
    DependencyUnavailable,
    GatewayError,
    GenerationFailed,
    InvalidRequest,
    ProviderNotConfigured,
)
from app.generation.decode_budget import DecodeBusy
from app.generation.presets import apply_preset
from app.generation.pricing import required_credits
from app.generation.producer import ImageProducer, Job, StoredImage
from app.generation.request import GenerateRequest
from app.generation.source_image import decode_source_image
from app.imaging.decode import ImageDecodeError
from app.observability.metrics import Metrics
from app.providers.base import Moderated, ProviderError, SourceImage
from app.providers.catalog import Catalog, CatalogModel
from app.settings import Settings
from app.storage.base import ImageStore, StorageUnavailable
from app.tenants.service import AuthContext

log = logging.getLogger(__name__)

_GENERATIONS = cast(Table, Generation.__table__)
_IMAGES = cast(Table, Image.__table__)
# Built once and given values as parameters (see app/credits/ledger.py).
_INSERT_GENERATION = insert(_GENERATIONS)
_FINISH_GENERATION = update(_GENERATIONS).where(_GENERATIONS.c.id == bindparam("b_id"))
_INSERT_IMAGES = insert(_IMAGES)


@dataclass(frozen=True, slots=True)
class ImageFailure:
    index: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class GenerationResult:
    generation_id: str
    model: str
    images: tuple[StoredImage, ...]
    failures: tuple[ImageFailure, ...]
    credits_charged: int
    credits_remaining: int


class GenerationService:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        catalog: Catalog,
        producer: ImageProducer,
        image_store: ImageStore,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._catalog = catalog
        self._producer = producer
        self._store = image_store
        self._metrics = metrics

    async def generate(
        self,
        auth: AuthContext,
        request: GenerateRequest,
        *,
        generation_id: str | None = None,
        on_image: Callable[[], Awaitable[None]] | None = None,
    ) -> GenerationResult:
        """Run one generation. `on_image` is awaited as each image is stored (progress)."""
        started = time.monotonic()
        model = request.model
        source = await self._source_image(request)
        chain = self._producer.usable_chain(self._catalog.chain(model), source is not None)
        if not chain or chain[0] != model:
            raise ProviderNotConfigured(
                f"model {model.id} is served by '{model.adapter}', which is not configured on "
                "this gateway"
            )
        generation_id = generation_id or new_id()
        created = utcnow()
        # Reserve for the dearest model that may serve, and capture what actually did.
        hold = await self._reserve(
            auth, request, generation_id, created, required_credits(request, chain)
        )
        job = Job(
            tenant_id=auth.tenant_id,
            generation_id=generation_id,
            created=created,
            prompt=apply_preset(request.style_preset, request.prompt),
            aspect_ratio=request.aspect_ratio,
            source_image=source,
            chain=chain,
            deadline=time.monotonic() + self._settings.upstream_deadline_seconds,
        )
        stored: list[StoredImage] = []
        try:
            outcomes = await asyncio.gather(
                *(self._produce(job, i, on_image) for i in range(request.num_images)),
                return_exceptions=True,
            )
            upstream_ms = int((time.monotonic() - started) * 1000)
            stored.extend(o for o in outcomes if isinstance(o, StoredImage))
            errors = [(i, o) for i, o in enumerate(outcomes) if not isinstance(o, StoredImage)]
            failures = [_failure(index, error) for index, error in errors]
            charged = sum(item.model.price for item in stored)
            async with self._sessions() as session, session.begin():
                if not await settle(session, hold.id, charged):
                    # The sweeper released an expired hold first: the images are free.
                    log.warning("hold settled by sweeper before delivery", extra={"hold": hold.id})
                    charged = 0
                await self._record(
                    session,
                    auth.tenant_id,
                    generation_id,
                    stored,
                    charged,
                    failures,
                    upstream_ms,
                    started,
                )
                remaining = await get_balance(session, auth.tenant_id)
            self._metrics.credits_charged.inc(charged)
            self._metrics.credits_refunded.inc(hold.amount - charged)
        except BaseException:
            await asyncio.shield(self._abort(hold, generation_id, stored))
            raise
        if not stored:
            raise _all_failed([error for _, error in errors])
        return GenerationResult(
            generation_id=generation_id,
            model=model.id,
            images=tuple(stored),
            failures=tuple(failures),
            credits_charged=charged,
            credits_remaining=remaining,
        )

    def usable_chain(self, request: GenerateRequest) -> tuple[CatalogModel, ...]:
        """The models that may serve `request`: its model, then the usable fallbacks (what
        `generate` holds for; the async pre-check prices the same chain)."""
        chain = self._catalog.chain(request.model)
        return self._producer.usable_chain(chain, request.source_image is not None)

    def is_configured(self, model: CatalogModel) -> bool:
        """Whether this gateway has an adapter for the model (else it answers 503)."""
        return bool(self._producer.usable_chain((model,), image_to_image=False))

    async def _produce(
        self, job: Job, index: int, on_image: Callable[[], Awaitable[None]] | None
    ) -> StoredImage:
        stored = await self._producer.produce(job, index)
        if on_image is not None:
            await on_image()
        return stored

    async def _source_image(self, request: GenerateRequest) -> SourceImage | None:
        if request.source_image is None:
            return None
        if not request.model.image_to_image:
            raise InvalidRequest(
                f"model {request.model.id} does not support image-to-image (sourceImage)",
                field="sourceImage",
            )
        return await self.decode_source(request.source_image)

    async def decode_source(self, value: str) -> SourceImage:
        """A validated `sourceImage`; its decode waits for the shared decode budget."""
        return await decode_source_image(
            value,
            budget=self._producer.decode_budget,
            max_bytes=self._settings.max_source_image_bytes,
            max_pixels=self._settings.max_source_image_pixels,
            wait_seconds=self._settings.upstream_deadline_seconds,
        )

    async def _reserve(
        self,
        auth: AuthContext,
        request: GenerateRequest,
        generation_id: str,
        created: datetime,
        amount: int,
    ) -> Hold:
        async with self._sessions() as session, session.begin():
            # Core statements here and in _record: the ORM's unit of work cost more CPU
            # than the SQL (see app/credits/ledger.py).
            await session.execute(
                _INSERT_GENERATION,
                {
                    "id": generation_id,
                    "tenant_id": auth.tenant_id,
                    "api_key_id": auth.api_key_id or None,
                    "model": request.model.id,
                    "provider": request.model.provider,
                    "prompt": request.prompt,
                    "style_preset": request.style_preset,
                    "aspect_ratio": request.aspect_ratio,
                    "num_images": request.num_images,
                    "image_to_image": request.source_image is not None,
                    "status": GenerationStatus.PENDING,
                    "credits_charged": 0,
                    # Object keys are dated from this; the sweeper rebuilds them from it.
                    "created_at": created,
                },
            )
            return await reserve(
                session,
                auth.tenant_id,
                amount,
                generation_id=generation_id,
                ttl=timedelta(seconds=self._settings.hold_ttl_seconds),
                api_key_id=auth.api_key_id or None,
            )

    async def _record(
        self,
        session: AsyncSession,
        tenant_id: str,
        generation_id: str,
        stored: list[StoredImage],
        charged: int,
        failures: list[ImageFailure],
        upstream_ms: int,
        started: float,
    ) -> None:
        if stored:
            status = GenerationStatus.PARTIAL if failures else GenerationStatus.SUCCEEDED
        elif failures and all(f.code == ContentRejected.code for f in failures):
            status = GenerationStatus.REJECTED
        else:
            status = GenerationStatus.FAILED
        first_failure = failures[0] if failures else None
        await session.execute(
            _FINISH_GENERATION,
            {
                "b_id": generation_id,
                "status": status,
                "credits_charged": charged,
                "error_code": first_failure.code if first_failure else None,
                "error_message": first_failure.message[:500] if first_failure else None,
                "completed_at": utcnow(),
                "upstream_ms": upstream_ms,
                "total_ms": int((time.monotonic() - started) * 1000),
            },
        )
        if stored:
            now = utcnow()
            await session.execute(
                _INSERT_IMAGES,
                [
                    {
                        "id": new_id(),
                        "generation_id": generation_id,
                        "tenant_id": tenant_id,
                        "index": item.index,
                        "model": item.model.id,
                        "storage_key": item.key,
                        "mime_type": item.image.mime_type,
                        "bytes": len(item.image.data),
                        "width": item.image.width,
                        "height": item.image.height,
                        "text": item.text,
                        "created_at": now,
                    }
                    for item in stored
                ],
            )

    async def _abort(self, hold: Hold, generation_id: str, stored: list[StoredImage]) -> None:
        """Best effort after an unexpected failure: refund, mark failed, drop objects."""
        for item in stored:
            try:
                await self._store.delete(item.key)
            except StorageUnavailable:
                log.warning("could not delete an undelivered object", extra={"key": item.key})
        try:
            async with self._sessions() as session, session.begin():
                if await settle(session, hold.id, 0):
                    self._metrics.credits_refunded.inc(hold.amount)
                await session.execute(
                    update(Generation)
                    .where(
                        Generation.id == generation_id,
                        Generation.status == GenerationStatus.PENDING,
                    )
                    .values(
                        status=GenerationStatus.FAILED,
                        error_code="internal_error",
                        completed_at=utcnow(),
                    )
                )
        except Exception:
            # The hold expires and the sweeper releases it; nothing is lost.
            log.exception("could not release hold after a failure", extra={"hold": hold.id})


def _failure(index: int, error: BaseException) -> ImageFailure:
    if isinstance(error, Moderated):
        return ImageFailure(index, ContentRejected.code, error.message)
    if isinstance(error, StorageUnavailable):
        return ImageFailure(index, DependencyUnavailable.code, "image storage is unavailable")
    if isinstance(error, ProviderError):
        return ImageFailure(index, GenerationFailed.code, error.message)
    if isinstance(error, ImageDecodeError):
        return ImageFailure(
            index, GenerationFailed.code, "the provider returned an unreadable image"
        )
    if isinstance(error, GatewayError):
        return ImageFailure(index, error.code, error.message)
    # A defect, not an upstream answer: log it, count the image as failed, charge nothing.
    log.error("unexpected error producing an image", exc_info=error)
    return ImageFailure(index, GenerationFailed.code, "internal error producing this image")


def _all_failed(errors: list[BaseException]) -> GatewayError:
    if errors and all(isinstance(e, Moderated) for e in errors):
        reasons = sorted({e.message for e in errors if isinstance(e, Moderated)})
        return ContentRejected(
            f"The provider rejected this request: {'; '.join(reasons)}. No credits were charged."
        )
    busy = [e for e in errors if isinstance(e, DecodeBusy)]
    if busy and len(busy) == len(errors):
        # Every image waited for decode budget past its time: a 503 with Retry-After,
        # not a generation failure (the upstream answered).
        return busy[0]
    if any(isinstance(e, StorageUnavailable) for e in errors):
        return DependencyUnavailable(
            "Image storage is unavailable; no credits were charged. Retry shortly."
        )
    details = sorted({e.message for e in errors if isinstance(e, ProviderError)})
    suffix = f" ({'; '.join(details)})" if details else ""
    return GenerationFailed(
        f"Generation failed{suffix}. Your credits were refunded; retry or try a different model."
    )
