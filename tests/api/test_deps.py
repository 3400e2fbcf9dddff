"""app/api/deps.py: SessionDep commits what a route wrote when it returns and rolls it
back when it raises; AuthDep's rate-limit headers reach errors raised after it; no route
of the gateway (or of a mounted emulator) depends on a plain `def`, which FastAPI would run
in its thread pool (a thread hop per dependency per request)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.routing import BaseRoute, Mount

from app.api.deps import SessionDep, get_sessions
from app.api.errors import install_error_handlers
from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade
from app.db.models import Tenant
from app.errors import InvalidRequest
from app.main import create_app
from app.tenants import service as tenants
from tests.support.gateway import Stack, gateway_settings


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'deps.db'}"
    await asyncio.to_thread(upgrade, url)  # alembic runs its own event loop
    engine = create_engine(url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


def _app(sessions: async_sessionmaker[AsyncSession]) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.dependency_overrides[get_sessions] = lambda: sessions

    @app.post("/tenants/{name}")
    async def create(name: str, session: SessionDep, fail: bool = False) -> dict[str, str]:
        await tenants.create_tenant(session, name)  # flushed, not committed
        if fail:
            raise InvalidRequest("refused after the write")
        return {"name": name}

    return app


async def _names(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        return list(await session.scalars(select(Tenant.name).order_by(Tenant.name)))


async def test_session_commits_when_the_route_returns_and_rolls_back_when_it_raises(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    transport = httpx.ASGITransport(app=_app(sessions))
    async with httpx.AsyncClient(transport=transport, base_url="http://deps") as client:
        kept = await client.post("/tenants/kept")
        refused = await client.post("/tenants/refused", params={"fail": "true"})
    assert kept.status_code == 200, kept.text
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_request"
    assert await _names(sessions) == ["kept"]


async def test_errors_after_authentication_carry_the_rate_limit_headers(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=0)
    async with stack.client() as client:
        missing_job = await client.get("/api/v1/jobs/no-such-job", headers=tenant.auth)
        no_credits = await client.post(
            "/api/v1/generate-image", json={"prompt": "x"}, headers=tenant.auth
        )
    assert (missing_job.status_code, no_credits.status_code) == (404, 402)
    for response in (missing_job, no_credits):
        assert int(response.headers["x-ratelimit-limit"]) > 0, response.headers
        assert int(response.headers["x-ratelimit-remaining"]) >= 0
        assert int(response.headers["x-ratelimit-reset"]) >= 0


def _runs_on_the_loop(call: Any) -> bool:
    """What FastAPI awaits directly: a coroutine or async-generator function (or an object
    whose `__call__` is one, like `Security(APIKeyHeader(...))`); the rest go to threads."""
    for candidate in (call, getattr(call, "__call__", None)):  # noqa: B004
        if inspect.iscoroutinefunction(candidate) or inspect.isasyncgenfunction(candidate):
            return True
    return False


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif isinstance(route, Mount):  # the emulators, mounted when emulating
            yield from _api_routes(route.routes)
        elif (included := getattr(route, "original_router", None)) is not None:
            # FastAPI >= 0.16x keeps an included router as one route wrapping the original
            # (the router's own `dependencies=` are merged into each of its APIRoutes).
            yield from _api_routes(included.routes)


def _sync_calls(dependant: Dependant) -> Iterator[str]:
    for sub in dependant.dependencies:
        if sub.call is not None and not _runs_on_the_loop(sub.call):
            yield f"{sub.call.__module__}.{getattr(sub.call, '__qualname__', sub.call)}"
        yield from _sync_calls(sub)


def test_no_route_depends_on_a_sync_callable() -> None:
    settings = gateway_settings(docs_enabled=True)  # every router included
    routes = list(_api_routes(create_app(settings).routes))
    assert len(routes) > 50, "the walk found the gateway's routes, emulators' included"
    # Endpoints are not walked: a few plain-`def` ones serve files from disk on purpose.
    offenders = sorted({call for route in routes for call in _sync_calls(route.dependant)})
    assert offenders == [], "run in FastAPI's thread pool:\n" + "\n".join(offenders)
