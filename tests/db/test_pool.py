"""The database connection pool's settings (#17 item 2), on real engines.

IMAGEGATE_DB_POOL_SIZE / _OVERFLOW / _TIMEOUT_SECONDS reach the gateway's engine, the
timeout keeps its per-backend default, and a request that cannot get a connection in
time answers 503 dependency_unavailable and charges nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from app.db.engine import create_engine
from app.db.models import CreditAccount
from app.main import create_app
from app.settings import Settings
from tests.support.gateway import Stack
from tests.support.locks import rows_locked
from tests.support.servers import serve_in_thread

GENERATE = "/api/v1/generate-image"
BODY = {"prompt": "a red bicycle leaning on a wall"}


def _account(tenant_id: str) -> Select[str]:
    # Locked, the tenant's next request waits on it holding the gateway's connection.
    return select(CreditAccount.tenant_id).where(CreditAccount.tenant_id == tenant_id)


def _pool(engine: AsyncEngine) -> QueuePool:
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    return pool


def test_settings_read_the_pool_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_DB_POOL_SIZE", "7")
    monkeypatch.setenv("IMAGEGATE_DB_POOL_OVERFLOW", "3")
    monkeypatch.setenv("IMAGEGATE_DB_POOL_TIMEOUT_SECONDS", "2.5")
    settings = Settings(_env_file=None)
    assert (settings.db_pool_size, settings.db_pool_overflow) == (7, 3)
    assert settings.db_pool_timeout_seconds == 2.5
    for name in ("SIZE", "OVERFLOW", "TIMEOUT_SECONDS"):
        monkeypatch.delenv(f"IMAGEGATE_DB_POOL_{name}")
    defaults = Settings(_env_file=None)
    assert defaults.db_pool_size == 20
    assert (defaults.db_pool_overflow, defaults.db_pool_timeout_seconds) == (20, None)


async def test_postgres_pool_takes_size_overflow_and_timeout(postgres_url: str) -> None:
    engine = create_engine(postgres_url, pool_size=7, max_overflow=3, pool_timeout=2.5)
    default = create_engine(postgres_url)
    try:
        pool = _pool(engine)
        assert (pool.size(), pool._max_overflow, pool._timeout) == (7, 3, 2.5)
        assert (_pool(default).size(), _pool(default)._max_overflow) == (20, 20)
        assert _pool(default)._timeout == 10
    finally:
        await engine.dispose()
        await default.dispose()


async def test_sqlite_keeps_one_connection_and_waits_60_s_by_default(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/pool.db"
    default = create_engine(url, pool_size=50, max_overflow=50)
    short = create_engine(url, pool_timeout=3)
    try:
        assert (_pool(default).size(), _pool(default)._max_overflow) == (1, 0)
        assert _pool(default)._timeout == 60
        assert _pool(short)._timeout == 3
    finally:
        await default.dispose()
        await short.dispose()


async def test_an_exhausted_pool_is_503_and_charges_nothing(
    postgres_stack: Stack,
) -> None:
    """One connection, no overflow, 0.5 s wait: while a request holds the only connection
    (blocked on a locked row), another tenant's request answers 503 within the wait."""
    settings = postgres_stack.settings.model_copy(
        update={"db_pool_size": 1, "db_pool_overflow": 0, "db_pool_timeout_seconds": 0.5}
    )
    holder = await postgres_stack.new_tenant(credits=20)
    other = await postgres_stack.new_tenant(credits=20)
    with serve_in_thread(create_app(settings)) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            with rows_locked(settings.resolved_database_url, _account(holder.id)):
                blocked = asyncio.create_task(client.post(GENERATE, headers=holder.auth, json=BODY))
                await asyncio.sleep(1.0)  # the holder waits on the lock, connection held
                assert not blocked.done()
                response = await client.post(GENERATE, headers=other.auth, json=BODY)
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "dependency_unavailable"
            assert (await blocked).status_code == 200  # the lock released, it completes
            assert (await client.post(GENERATE, headers=other.auth, json=BODY)).status_code == 200
    assert await postgres_stack.balance(other) == 20 - 4  # only the request that succeeded
    assert (await postgres_stack.audit(holder, other)).ok
