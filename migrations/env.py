"""Alembic environment: async engines on both SQLite and Postgres."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from app.db.engine import create_engine
from app.db.models import Base
from app.settings import Settings, asyncpg_database_url

target_metadata = Base.metadata


def _database_url() -> str:
    """The URL to migrate; postgresql:// and postgres:// are given asyncpg, like the
    gateway's own (app.settings.asyncpg_database_url)."""
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        url = context.get_x_argument(as_dictionary=True).get("url")
    return asyncpg_database_url(url or Settings().resolved_database_url)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    # No statement timeout: a migration may rewrite a large table.
    engine = create_engine(_database_url(), pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
