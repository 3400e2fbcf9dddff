"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from app.api.deps import get_services
from app.api.schemas.native import Health, Readiness
from app.ratelimit import describe
from app.ratelimit.redis import ResilientRateLimiter
from app.services import Services

router = APIRouter(tags=["health"])

_CHECK_TIMEOUT = 3.0


@router.get("/healthz", response_model=Health)
async def healthz(services: Annotated[Services, Depends(get_services)]) -> dict[str, Any]:
    """Alive: the process answers. Says which rate limiter is deciding, and how many
    bytes of the request-bytes budget in-flight requests hold."""
    return {
        "status": "ok",
        "rateLimiter": describe(services.rate_limiter),
        "requestBytesInUse": services.request_budget.in_use,
        "requestsWaitingForBytes": services.request_budget.waiting,
    }


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency does not answer"}},
)
async def readyz(services: Annotated[Services, Depends(get_services)]) -> JSONResponse:
    """Ready: the database, the image store and (when configured) Redis answer."""
    checks: dict[str, Any] = {
        "database": _check(_database(services)),
        "storage": _check(services.image_store.check()),
    }
    if isinstance(services.rate_limiter, ResilientRateLimiter):
        checks["redis"] = _check(services.rate_limiter.ping())
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
async def metrics(services: Annotated[Services, Depends(get_services)]) -> Response:
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")


async def _database(services: Services) -> None:
    async with services.engine.connect() as connection:
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
