"""A migrated database on each backend, for service-level tests (no gateway)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade
from tests.support.gateway import create_database

__all__ = ["database_url", "sessions"]


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'ledger.db'}"
    else:
        url = asyncio.run(create_database(request.getfixturevalue("postgres_url")))
    upgrade(url)
    return url


@pytest_asyncio.fixture(scope="session")
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url, pool_size=10)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()
