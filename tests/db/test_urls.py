"""`postgresql://` and `postgres://` URLs, as hosting services hand them out, work for the
gateway's engine and for migrations (#16 item 3): they get the asyncpg driver."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from app.db.engine import create_engine
from app.db.migrate import upgrade
from tests.support.gateway import create_database


def _plain(url: str, scheme: str) -> str:
    plain = url.replace("postgresql+asyncpg://", f"{scheme}://", 1)
    assert plain != url
    return plain


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_plain_postgres_urls_connect_with_asyncpg(postgres_url: str, scheme: str) -> None:
    engine = create_engine(_plain(postgres_url, scheme), pool_size=1)
    try:
        assert engine.dialect.driver == "asyncpg"
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_migrations_accept_a_postgres_url(postgres_url: str) -> None:
    url = await create_database(postgres_url)
    await asyncio.to_thread(upgrade, _plain(url, "postgres"))
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            version = await connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalar()
    finally:
        await engine.dispose()
