"""The application factory and its lifespan (pools, clients and the sweeper, created once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import files, generate
from app.api.errors import install_error_handlers
from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade
from app.emulators.gemini import create_gemini_emulator
from app.generation.producer import ImageProducer
from app.generation.service import GenerationService
from app.housekeeping import run_housekeeping
from app.providers.catalog import Catalog
from app.providers.registry import build_adapters, configured_upstreams
from app.providers.retry import RetryPolicy
from app.ratelimit import create_rate_limiter, describe
from app.services import Services
from app.settings import Settings
from app.storage.factory import create_image_store
from app.storage.signing import UrlSigner, load_or_create_secret

log = logging.getLogger("app")

EMULATED_HEADER = "X-Imagegate-Emulated"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    emulators: dict[str, ASGIApp] = {}
    if settings.emulate:
        emulators["gemini"] = create_gemini_emulator()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _running_services(app, settings, emulators):
            yield

    app = FastAPI(
        title="imagegate",
        version="0.1.0",
        summary="Self-hosted image-generation gateway",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(generate.router)
    app.include_router(files.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        services: Services = app.state.services
        return {"status": "ok", "rateLimiter": describe(services.rate_limiter)}

    for name, emulator in emulators.items():
        app.mount(f"/emulators/{name}", emulator)
    app.add_middleware(_ResponseHeaders, emulated=bool(emulators))

    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = original_openapi()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(
            generate.OPENAPI_SCHEMAS
        )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


@contextlib.asynccontextmanager
async def _running_services(
    app: FastAPI, settings: Settings, emulators: dict[str, ASGIApp]
) -> AsyncIterator[None]:
    if settings.is_embedded_database:
        await asyncio.to_thread(upgrade, settings.resolved_database_url)
    engine = create_engine(settings.resolved_database_url)
    sessions = create_sessionmaker(engine)
    catalog = Catalog.load(settings.catalog)
    signer = UrlSigner(load_or_create_secret(settings))
    image_store = create_image_store(settings, signer=signer)
    upstreams = configured_upstreams(
        settings, {name: httpx.ASGITransport(app=emu) for name, emu in emulators.items()}
    )
    adapters = build_adapters(upstreams, settings)
    producer = ImageProducer(
        adapters=adapters,
        image_store=image_store,
        retry_policy=RetryPolicy(
            max_attempts=settings.upstream_max_attempts,
            attempt_timeout=settings.upstream_attempt_timeout_seconds,
            base_delay=settings.retry_base_delay_seconds,
            max_delay=settings.retry_max_delay_seconds,
        ),
        max_pixels=settings.max_source_image_pixels,
        limiters={
            model.id: asyncio.Semaphore(model.max_concurrency)
            for model in catalog
            if model.max_concurrency
        },
    )
    generation = GenerationService(
        settings=settings,
        sessions=sessions,
        catalog=catalog,
        producer=producer,
        image_store=image_store,
    )
    rate_limiter = create_rate_limiter(settings)
    app.state.services = Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        catalog=catalog,
        image_store=image_store,
        generation=generation,
        rate_limiter=rate_limiter,
        emulated=bool(emulators),
    )
    app.state.image_store = image_store
    app.state.url_signer = signer
    if emulators:
        log.warning("EMULATED providers: images come from built-in emulators, not real models")
    log.info(
        "imagegate ready",
        extra={"providers": sorted(adapters), "storage": type(image_store).__name__},
    )
    sweeper = asyncio.create_task(
        run_housekeeping(sessions, image_store, settings.sweep_interval_seconds)
    )
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        for adapter in adapters.values():
            await adapter.aclose()
        for upstream in upstreams.values():
            await upstream.http_client.aclose()
        await image_store.aclose()
        await rate_limiter.aclose()
        await engine.dispose()


class _ResponseHeaders:
    """Adds headers decided during the request: rate-limit state (set by the auth
    dependency in scope state, so errors carry it too) and the emulation marker."""

    def __init__(self, app: ASGIApp, *, emulated: bool) -> None:
        self.app = app
        self.emulated = emulated

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                extra: dict[str, str] = scope.get("state", {}).get("rate_limit_headers", {})
                present = {name.lower() for name, _ in headers}
                for name, value in extra.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                if self.emulated:
                    headers.append((EMULATED_HEADER.lower().encode(), b"true"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
