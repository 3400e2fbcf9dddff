"""The gateway's lifespan: pools, clients and the housekeeping loop, created once."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp

from app.api.body_budget import request_bytes_budget
from app.api.deps import AppState, install_state
from app.api.drain import Drain
from app.api.jobs import job_renderer
from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade
from app.generation.decode_budget import DecodeBudget
from app.generation.producer import ImageProducer
from app.generation.service import GenerationService
from app.housekeeping.sweeper import run_housekeeping
from app.jobs.runner import JobRunner
from app.jobs.webhook_dispatcher import WebhookDispatcher, webhook_client
from app.observability.metrics import Metrics
from app.observability.tracing import configure_tracing, flush_tracing
from app.providers.catalog import Catalog
from app.providers.registry import (
    ADAPTERS,
    build_adapters,
    configured_upstreams,
    upstream_limits,
)
from app.providers.retry import RetryPolicy
from app.providers.self_hosted import build_self_hosted
from app.ratelimit import create_rate_limiter
from app.ratelimit.caps import create_concurrency_caps
from app.settings import Settings
from app.storage.factory import create_image_store
from app.storage.signing import UrlSigner, load_or_create_secret
from app.tenants.auth_cache import AuthCache

log = logging.getLogger("app")


@contextlib.asynccontextmanager
async def running_services(
    app: FastAPI,
    settings: Settings,
    emulators: dict[str, ASGIApp],
    metrics: Metrics,
    *,
    drain: Drain,
    serving: bool = False,
) -> AsyncIterator[None]:
    """Create every long-lived object once, install them as the app's AppState (read by
    app/api/deps.py only), close them at exit.

    `serving`: run by `imagegate serve`, which has migrated already (once, before any
    worker started) and whose SIGTERM drains (app/api/drain.py)."""
    # Once per process; nothing without an endpoint (or the OTEL_* variables).
    configure_tracing(settings.otel_exporter_otlp_endpoint)
    if settings.is_embedded_database and not serving:
        await asyncio.to_thread(upgrade, settings.resolved_database_url)
    engine = create_engine(
        settings.resolved_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_timeout=settings.database_connect_timeout_seconds,
        statement_timeout=settings.db_statement_timeout_seconds,
    )
    sessions = create_sessionmaker(engine)
    catalog = Catalog.load(settings.catalog)
    signer = UrlSigner(load_or_create_secret(settings))
    image_store = create_image_store(settings, signer=signer)
    upstreams = configured_upstreams(
        settings, {name: httpx.ASGITransport(app=emu) for name, emu in emulators.items()}
    )
    adapters = build_adapters(upstreams, settings)
    # Calls in flight per provider, bounded like its exchanges (app.providers.transport).
    provider_slots = {
        name: asyncio.Semaphore(settings.upstream_max_in_flight) for name in upstreams
    }
    # Catalog entries with their own upstream (never emulated): adapters by model id.
    self_hosted = build_self_hosted(catalog, settings, upstream_limits(settings))
    # Each model's and provider account's cap, shared by the replicas through Redis.
    caps = create_concurrency_caps(settings, catalog, {spec.provider for spec in ADAPTERS.values()})
    # Transcodes are CPU-bound: more threads than cores only make the event loop wait
    # longer for the GIL and a core (and hold more decoded images in memory at once).
    encoder = ThreadPoolExecutor(
        max_workers=settings.resolved_image_workers,
        thread_name_prefix="imagegate-encode",
    )
    producer = ImageProducer(
        adapters={**adapters, **self_hosted.adapters},
        image_store=image_store,
        retry_policy=RetryPolicy(
            max_attempts=settings.upstream_max_attempts,
            attempt_timeout=settings.upstream_attempt_timeout_seconds,
            base_delay=settings.retry_base_delay_seconds,
            max_delay=settings.retry_max_delay_seconds,
        ),
        max_pixels=settings.max_source_image_pixels,
        metrics=metrics,
        decode_budget=DecodeBudget(settings.decode_budget_pixels),
        limiters=caps.models,
        encoder=encoder,
        upstream_slots={
            **{name: provider_slots[ADAPTERS[name].provider] for name in adapters},
            **self_hosted.slots,
        },
        provider_caps={
            name: caps.providers[ADAPTERS[name].provider]
            for name in adapters
            if ADAPTERS[name].provider in caps.providers
        },
    )
    generation = GenerationService(
        settings=settings,
        sessions=sessions,
        catalog=catalog,
        producer=producer,
        image_store=image_store,
        metrics=metrics,
    )
    rate_limiter = create_rate_limiter(settings)
    job_runner = JobRunner(
        sessions=sessions,
        generation=generation,
        catalog=catalog,
        store=image_store,
        concurrency=settings.job_concurrency,
        # Longer than any attempt can take, so a live runner never loses its job.
        lease=timedelta(seconds=settings.upstream_deadline_seconds + 120),
        max_attempts=settings.job_max_attempts,
    )
    webhook_http = webhook_client(settings)
    dispatcher = WebhookDispatcher.from_settings(
        settings,
        sessions=sessions,
        client=webhook_http,
        render=job_renderer(sessions, image_store),
    )
    install_state(
        app,
        AppState(
            settings=settings,
            engine=engine,
            sessions=sessions,
            catalog=catalog,
            image_store=image_store,
            url_signer=signer,
            generation=generation,
            rate_limiter=rate_limiter,
            concurrency=caps,
            job_runner=job_runner,
            metrics=metrics,
            auth_cache=AuthCache(settings.auth_cache_seconds),
            request_budget=request_bytes_budget(settings.request_bytes_budget),
        ),
    )
    if emulators:
        log.warning("EMULATED providers: images come from built-in emulators, not real models")
    log.info(
        "imagegate ready",
        extra={
            "providers": sorted(adapters),
            "self_hosted_models": sorted(self_hosted.adapters),
            "storage": type(image_store).__name__,
        },
    )
    # Everything built so far lives as long as the process: out of the cyclic collector's
    # sight, so the collection each big request ends with (app/api/body_budget.py) walks
    # only what requests made (milliseconds, not the ~150 ms of a full heap).
    gc.collect()
    gc.freeze()
    # Full collections stop the loop for a walk of everything in flight: made rare
    # (IMAGEGATE_GC_THRESHOLDS; bench/inflight.py --gc probe measures them).
    default_thresholds = gc.get_threshold()
    gc.set_threshold(*settings.gc_thresholds)
    caps.start()
    background = [
        asyncio.create_task(
            run_housekeeping(sessions, image_store, settings.sweep_interval_seconds)
        ),
        asyncio.create_task(dispatcher.run()),
    ]
    runner = asyncio.create_task(job_runner.run())
    background.append(runner)

    # Draining: running jobs go back to the queue now, for another replica to take.
    def stop_jobs() -> None:
        runner.cancel()

    drain.on_start(stop_jobs)
    undo_sigterm = drain.install_sigterm(settings.drain_delay_seconds) if serving else None
    try:
        yield
    finally:
        if undo_sigterm is not None:
            undo_sigterm()
        gc.unfreeze()  # what this app built may be collected once it is gone (tests)
        gc.set_threshold(*default_thresholds)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await webhook_http.aclose()
        for adapter in adapters.values():
            await adapter.aclose()
        for upstream in upstreams.values():
            await upstream.http_client.aclose()
        await self_hosted.aclose()
        encoder.shutdown(wait=False, cancel_futures=True)
        await image_store.aclose()
        await rate_limiter.aclose()
        await caps.aclose()
        await engine.dispose()
        await asyncio.to_thread(flush_tracing)  # the batched spans of the last requests
