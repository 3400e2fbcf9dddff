"""Statement timeouts on Postgres connections (#16 item 3), against the real test server.

A statement the server runs too long is cancelled by its statement_timeout; a server that
stops answering altogether (the TCP proxy stalls the open connection) is given up on by
asyncpg's command timeout. Both come out as OperationalError, the class the API answers
503 for, and the engine keeps working afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import create_engine
from tests.support.proxy import TcpProxy, postgres_target


@pytest_asyncio.fixture
async def bounded_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url, pool_size=1, statement_timeout=0.3)
    yield engine
    await engine.dispose()


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[tuple[TcpProxy, str]]:
    target, template = postgres_target(postgres_url)
    running = TcpProxy(target).start()
    yield running, template.format(port=running.port)
    running.stop()


async def _one(engine: AsyncEngine, sql: str = "SELECT 1") -> object:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql))).scalar()


async def test_a_statement_over_the_timeout_is_cancelled_by_the_server(
    bounded_engine: AsyncEngine,
) -> None:
    async with bounded_engine.connect() as connection:
        setting = (await connection.execute(text("SHOW statement_timeout"))).scalar()
    assert setting == "300ms"
    with pytest.raises(OperationalError, match="statement timeout"):
        await _one(bounded_engine, "SELECT pg_sleep(5)")
    assert await _one(bounded_engine) == 1  # the same pool, the connection still usable


async def test_migrations_and_other_unbounded_engines_have_no_statement_timeout(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url, pool_size=1)
    try:
        assert await _one(engine, "SHOW statement_timeout") == "0"
    finally:
        await engine.dispose()


async def test_a_server_that_stops_answering_is_an_operational_error(
    proxy: tuple[TcpProxy, str],
) -> None:
    """The server's own timeout never fires here (it never gets the statement): only the
    client's command timeout ends the wait. Without it, both calls below hang for good."""
    tcp, url = proxy
    engine = create_engine(url, pool_size=1, connect_timeout=0.5, statement_timeout=0.3)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
            with tcp.stall():
                with pytest.raises(OperationalError, match="did not answer") as caught:
                    await asyncio.wait_for(connection.execute(text("SELECT 2")), 30)
                assert caught.value.connection_invalidated  # the pool discards it
        # A fresh checkout: the pooled connection was discarded; a new one cannot be
        # opened within the connect timeout, which is an outage like any other.
        with tcp.stall(), pytest.raises(OperationalError):
            await asyncio.wait_for(_one(engine), 30)
        assert await _one(engine) == 1  # answering again: served by a new connection
    finally:
        await engine.dispose()


async def test_a_stalled_pooled_connection_fails_its_pre_ping_and_is_replaced(
    proxy: tuple[TcpProxy, str], postgres_url: str
) -> None:
    """The pool pings a connection before handing it out; that ping on a stalled
    connection raised a bare TimeoutError (a 500 at the API), not an outage."""
    tcp, url = proxy
    engine = create_engine(url, pool_size=1, connect_timeout=0.5, statement_timeout=0.3)
    try:
        assert await _one(engine) == 1  # one pooled connection, through the proxy
        with tcp.stall(), pytest.raises(OperationalError):
            await asyncio.wait_for(_one(engine), 30)
    finally:
        await engine.dispose()
