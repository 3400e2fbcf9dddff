"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.deps import (
    ConcurrencyDep,
    EngineDep,
    ImageStoreDep,
    MetricsDep,
    RateLimiterDep,
    RequestBudgetDep,
)
from app.api.schemas.native import Health, Readiness
from app.ratelimit import describe
from app.ratelimit.redis import ResilientRateLimiter

router = APIRouter(tags=["health"])

_CHECK_TIMEOUT = 3.0


@router.get("/healthz", response_model=Health)
async def healthz(
    rate_limiter: RateLimiterDep, concurrency: ConcurrencyDep, request_budget: RequestBudgetDep
) -> dict[str, Any]:
    """Alive: the process answers. Says which rate limiter is deciding, whether the
    upstream concurrency caps are shared by the replicas (Redis) or held per process, and
    how many bytes of the request-bytes budget in-flight requests hold."""
    return {
        "status": "ok",
        "rateLimiter": describe(rate_limiter),
        "concurrency": concurrency.status,
        "requestBytesInUse": request_budget.in_use,
        "requestsWaitingForBytes": request_budget.waiting,
    }


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency does not answer"}},
)
async def readyz(
    engine: EngineDep, image_store: ImageStoreDep, rate_limiter: RateLimiterDep
) -> JSONResponse:
    """Ready: the database, the image store and (when configured) Redis answer."""
    checks: dict[str, Any] = {
        "database": _check(_database(engine)),
        "storage": _check(image_store.check()),
    }
    if isinstance(rate_limiter, ResilientRateLimiter):
        checks["redis"] = _check(rate_limiter.ping())
    results = dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))
    ready = all(result == "ok" for result in results.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": results},
        status_code=200 if ready else 503,
    )


@router.get(
    "/metrics",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    response_class=Response,
)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4")


async def _database(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _check(probe: Any) -> str:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            await probe
    except TimeoutError:
        return "timeout"
    except Exception as exc:  # noqa: BLE001 - a readiness probe reports any failure
        return f"error: {type(exc).__name__}"
    return "ok"
