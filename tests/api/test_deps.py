"""app/api/deps.py: SessionDep commits what a route wrote when it returns and rolls it
back when it raises; AuthDep's rate-limit headers reach errors raised after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.api.deps import SessionDep, get_sessions
from app.api.errors import install_error_handlers
from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade
from app.db.models import Tenant
from app.errors import InvalidRequest
from app.tenants import service as tenants
from tests.support.gateway import Stack


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
