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

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.credits.ledger import Hold, get_balance, reserve, settle, settle_with_balance
from app.db.models import Generation, Image, new_id, utcnow
from app.db.statuses import GenerationStatus
from app.errors import (
    ContentRejected,
    DependencyUnavailable,
    GatewayError,
    GenerationFailed,
    InvalidRequest,
    ModelNotAllowed,
    ProviderNotConfigured,
)
from app.generation.decode_budget import DecodeBusy
from app.generation.presets import apply_preset, preset_negative
from app.generation.pricing import required_credits
from app.generation.producer import ImageProducer, Job, PartialImages, StoredImage
from app.generation.request import GenerateRequest
from app.generation.source_image import decode_source_image
from app.generation.sources import check_reference_count, raise_over_total, source_field_at
from app.imaging.decode import ImageDecodeError
from app.observability.metrics import Metrics
from app.observability.tracing import span
from app.providers.base import Moderated, ProviderError, SourceImage
from app.providers.catalog import Catalog, CatalogModel
from app.settings import Settings
from app.storage.base import ImageStore, StorageUnavailable
from app.tenants.service import Caller

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
        caller: Caller,
        request: GenerateRequest,
        *,
        generation_id: str | None = None,
        on_image: Callable[[], Awaitable[None]] | None = None,
        partials: PartialImages | None = None,
        deliver: Callable[[StoredImage], Awaitable[bool]] | None = None,
    ) -> GenerationResult:
        """Run one generation. `on_image` is awaited as each image is stored (progress);
        `partials` asks for previews. With `deliver`, each stored image is handed to it
        before the hold is settled, and only those it returns True for are charged and
        recorded (a stream whose client left: the rest are deleted and refunded)."""
        started = time.monotonic()
        # One deadline for the whole generation: waiting for the decode budget spends it
        # too, so a job's lease (deadline + margin) and the hold's lifetime always outlast it.
        deadline = started + self._settings.upstream_deadline_seconds
        model = request.model
        sources = await self.source_images(request, deadline=deadline)
        mask = await self._mask(request, deadline)
        if not caller.allows(model.id):  # e.g. a queued job whose key was narrowed since
            raise ModelNotAllowed(model.id, sorted(caller.models or ()))
        chain = self.usable_chain(request, caller)
        if not chain or chain[0] != model:
            raise ProviderNotConfigured(
                f"model {model.id} is served by '{model.adapter}', which is not configured on "
                "this gateway"
            )
        generation_id = generation_id or new_id()
        created = utcnow()
        # Reserve for the dearest model that may serve, and capture what actually did.
        amount = required_credits(request, chain)
        with span("hold", {"imagegate.model": model.id, "imagegate.credits": amount}):
            hold = await self._reserve(caller, request, generation_id, created, amount)
        job = Job(
            tenant_id=caller.tenant_id,
            generation_id=generation_id,
            created=created,
            prompt=apply_preset(request.style_preset, request.prompt),
            aspect_ratio=request.aspect_ratio,
            source_images=sources,
            chain=chain,
            deadline=deadline,
            mask=mask,
            options=request.options,
            output=request.output,
            negative_prompt=preset_negative(request.style_preset),
            image_size=request.image_size,
        )
        stored: list[StoredImage] = []
        try:
            outcomes = await asyncio.gather(
                *(self._produce(job, i, on_image, partials) for i in range(request.num_images)),
                return_exceptions=True,
            )
            upstream_ms = int((time.monotonic() - started) * 1000)
            stored.extend(o for o in outcomes if isinstance(o, StoredImage))
            errors = [(i, o) for i, o in enumerate(outcomes) if not isinstance(o, StoredImage)]
            failures = [_failure(index, error) for index, error in errors]
            if deliver is not None:
                failures.extend(await self._hand_over(stored, deliver))
            charged = sum(item.model.price_for(request.image_size) for item in stored)
            with span("settle", {"imagegate.images": len(stored)}) as traced:
                async with self._sessions() as session, session.begin():
                    # The balance comes back from the settle's own UPDATE (no read).
                    balance = await settle_with_balance(session, hold.id, charged)
                    if balance is None:
                        # The sweeper released an expired hold first: the images are free.
                        log.warning(
                            "hold settled by sweeper before delivery", extra={"hold": hold.id}
                        )
                        charged = 0
                        balance = await get_balance(session, caller.tenant_id)
                    await self._record(
                        session,
                        caller.tenant_id,
                        generation_id,
                        stored,
                        charged,
                        failures,
                        upstream_ms,
                        started,
                    )
                    remaining = balance
                traced.set("imagegate.credits.charged", charged)
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

    def usable_chain(
        self, request: GenerateRequest, caller: Caller | None = None
    ) -> tuple[CatalogModel, ...]:
        """The models that may serve `request`: its model, then the usable fallbacks the
        caller's key may use and that offer its imageSize (what `generate` holds for; the
        async pre-check prices the same chain)."""
        chain = self._producer.usable_chain(
            self._catalog.chain(request.model),
            len(request.source_images),
            mask=request.mask is not None,
        )
        return tuple(
            model
            for model in chain
            if (caller is None or caller.allows(model.id)) and request.image_size in model.sizes
        )

    def is_configured(self, model: CatalogModel) -> bool:
        """Whether this gateway has an adapter for the model (else it answers 503)."""
        return bool(self._producer.usable_chain((model,)))

    async def _produce(
        self,
        job: Job,
        index: int,
        on_image: Callable[[], Awaitable[None]] | None,
        partials: PartialImages | None,
    ) -> StoredImage:
        stored = await self._producer.produce(job, index, partials)
        if on_image is not None:
            await on_image()
        return stored

    async def _hand_over(
        self, stored: list[StoredImage], deliver: Callable[[StoredImage], Awaitable[bool]]
    ) -> list[ImageFailure]:
        """Keeps in `stored` only the images `deliver` took; the others are deleted."""
        refused = [item for item in list(stored) if not await deliver(item)]
        for item in refused:
            stored.remove(item)
        await self._discard(refused)
        return [
            ImageFailure(item.index, "not_delivered", "the client left before this image")
            for item in refused
        ]

    async def _discard(self, items: list[StoredImage]) -> None:
        for item in items:
            try:
                await self._store.delete(item.key)
            except StorageUnavailable:
                log.warning("could not delete an undelivered object", extra={"key": item.key})

    @property
    def max_source_bytes(self) -> int:
        """The most bytes one source image may have (request parsers bound data URLs)."""
        return self._settings.max_source_image_bytes

    @property
    def max_source_bytes_total(self) -> int:
        """The most bytes all of one request's source images may have together."""
        return self._settings.source_bytes_total

    async def source_images(
        self, request: GenerateRequest, *, deadline: float | None = None
    ) -> tuple[SourceImage, ...]:
        """The request's source images, checked against its model (takes images, and this
        many) and the bounds, and decoded; messages name each by index when there are
        several (`sourceImages[2]`)."""
        if not request.source_images:
            return ()
        field, count = request.source_field, len(request.source_images)
        check_reference_count(request.model, count, field)
        if (total := sum(map(len, request.source_images))) > self.max_source_bytes_total:
            raise_over_total(total, self.max_source_bytes_total, field)
        # One after another: each waits for the shared decode budget in turn, all within
        # the one deadline.
        return tuple(
            [
                await self.decode_source(data, source_field_at(field, index, count), deadline)
                for index, data in enumerate(request.source_images)
            ]
        )

    async def _mask(self, request: GenerateRequest, deadline: float) -> SourceImage | None:
        if request.mask is None:
            return None
        if not request.model.masks:
            takers = ", ".join(model.id for model in self._catalog if model.masks)
            raise InvalidRequest(
                f"model {request.model.id} does not take a mask; models that do: {takers}",
                field="mask",
            )
        mask = await self.decode_source(request.mask, "mask", deadline)
        if mask.mime_type != "image/png":
            # OpenAI reads the mask's alpha channel: only a PNG carries one it accepts.
            raise InvalidRequest("mask must be a PNG", field="mask")
        return mask

    async def decode_source(
        self, data: bytes, field: str = "sourceImage", deadline: float | None = None
    ) -> SourceImage:
        """A validated source image; its decode waits for the shared decode budget, until
        `deadline` (time.monotonic()) or for the upstream deadline from now."""
        wait = self._settings.upstream_deadline_seconds
        if deadline is not None:
            wait = max(0.0, deadline - time.monotonic())
        return await decode_source_image(
            data,
            budget=self._producer.decode_budget,
            max_bytes=self._settings.max_source_image_bytes,
            max_pixels=self._settings.max_source_image_pixels,
            wait_seconds=wait,
            field=field,
        )

    async def _reserve(
        self,
        caller: Caller,
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
                    "tenant_id": caller.tenant_id,
                    "api_key_id": caller.api_key_id,
                    "model": request.model.id,
                    "provider": request.model.provider,
                    "prompt": request.prompt,
                    "style_preset": request.style_preset,
                    "aspect_ratio": request.aspect_ratio,
                    "num_images": request.num_images,
                    "image_to_image": bool(request.source_images),
                    "status": GenerationStatus.PENDING,
                    "credits_charged": 0,
                    # Object keys are dated from this; the sweeper rebuilds them from it.
                    "created_at": created,
                },
            )
            return await reserve(
                session,
                caller.tenant_id,
                amount,
                generation_id=generation_id,
                ttl=timedelta(seconds=self._settings.hold_ttl_seconds),
                api_key_id=caller.api_key_id or None,
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
        """Best effort after an unexpected failure (or a cancel): refund, mark failed, drop
        objects. The objects go only once the refund is ours: a cancel that lands after
        the capture committed must not delete images the tenant paid for."""
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
                status = await session.scalar(
                    select(Generation.status).where(Generation.id == generation_id)
                )
        except Exception:
            # The hold expires and the sweeper releases it; objects it cannot name are
            # left to the orphan scan rather than risk deleting delivered ones.
            log.exception("could not release hold after a failure", extra={"hold": hold.id})
            return
        if status not in (GenerationStatus.SUCCEEDED, GenerationStatus.PARTIAL):
            await self._discard(stored)


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
