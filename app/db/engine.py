"""Engine and session factory, created once per process and reused."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.db.asyncpg_bounded import bounded_dbapi, is_no_answer
from app.db.sqlite import CONNECT_ARGS, one_hop_dbapi
from app.settings import asyncpg_database_url

# How much longer than the server's statement_timeout the client waits for an answer:
# a live server cancels first (a clean error, the connection stays usable); only one
# that does not answer at all is given up on by the client.
CLIENT_TIMEOUT_MARGIN = 1.0
# Default pool-checkout waits: SQLite's one connection is a FIFO queue for the write
# lock, so its waiters wait longer than Postgres ones (see _create_sqlite_engine).
POSTGRES_POOL_TIMEOUT = 10.0
SQLITE_POOL_TIMEOUT = 60.0


def create_engine(
    database_url: str,
    *,
    pool_size: int = 20,
    max_overflow: int | None = None,
    pool_timeout: float | None = None,
    connect_timeout: float = 10.0,
    statement_timeout: float | None = None,
) -> AsyncEngine:
    """An engine for the URL (postgresql:// and postgres:// are given asyncpg).

    With `statement_timeout` (seconds), every Postgres connection has that server-side
    statement_timeout and a client-side command timeout just above it (see
    app/db/asyncpg_bounded.py); None (migrations) leaves statements unbounded.
    `max_overflow` defaults to `pool_size`; `pool_timeout` (how long a checkout waits
    for a free connection) to POSTGRES_POOL_TIMEOUT or SQLITE_POOL_TIMEOUT.
    """
    if database_url.startswith("sqlite"):
        return _create_sqlite_engine(database_url, pool_timeout=pool_timeout or SQLITE_POOL_TIMEOUT)
    database_url = asyncpg_database_url(database_url)
    asyncpg_driver = _is_asyncpg(database_url)
    connect_args: dict[str, Any] = {}
    if asyncpg_driver:
        # asyncpg's own connect timeout (60 s by default): a host that drops packets
        # would otherwise hold every request that needs a new connection for a minute.
        connect_args["timeout"] = connect_timeout
        if statement_timeout is not None:
            milliseconds = max(1, round(statement_timeout * 1000))
            connect_args["server_settings"] = {"statement_timeout": str(milliseconds)}
            connect_args["command_timeout"] = statement_timeout + CLIENT_TIMEOUT_MARGIN
    engine = create_async_engine(
        database_url,
        connect_args=connect_args,
        **({"module": bounded_dbapi()} if asyncpg_driver else {}),
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=True,
        pool_timeout=pool_timeout or POSTGRES_POOL_TIMEOUT,
    )
    _connect_failures_are_operational(engine)
    _disconnects_are_operational(engine)
    return engine


def _is_asyncpg(database_url: str) -> bool:
    return make_url(database_url).get_driver_name() == "asyncpg"


def _connect_failures_are_operational(engine: AsyncEngine) -> None:
    """A database that cannot be reached raises OperationalError, like any other outage.

    While connecting, asyncpg raises OSError (refused, unreachable), TimeoutError or a
    PostgresError (starting up, shutting down, authentication) and SQLAlchemy lets the
    first two through unwrapped, so they escaped the API's 503 mapping as 500s. Every
    connect failure is re-raised as the driver's OperationalError, which SQLAlchemy wraps
    as sqlalchemy.exc.OperationalError.
    """

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        dbapi = dialect.loaded_dbapi
        try:
            return dialect.connect(*cargs, **cparams)
        except dbapi.OperationalError:
            raise
        except (OSError, TimeoutError, dbapi.Error) as exc:
            raise dbapi.OperationalError(f"cannot connect to the database: {exc}") from exc


def _disconnects_are_operational(engine: AsyncEngine) -> None:
    """A connection lost mid-statement raises OperationalError too, like any other outage.

    asyncpg reports it as ConnectionDoesNotExistError ("connection was closed in the
    middle of operation"), a PostgresError that SQLAlchemy wraps as a bare DBAPIError
    (it maps only a few asyncpg classes), and a socket error may come through raw; both
    escaped the API's 503 mapping as 500s. The dialect already knows a disconnect when it
    sees one (`is_disconnect`), so this only gives every disconnect the same class.
    """

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> BaseException | None:
        original = context.original_exception
        if is_no_answer(original):
            # The client gave up on a statement the server never answered: the
            # connection's state is unknown, so the pool discards it (during a
            # pre-ping: and opens a new one, which the connect timeout bounds).
            context.is_disconnect = True
            return None
        if (
            context.is_pre_ping  # it reconnects by itself
            or not isinstance(original, Exception)  # a cancellation stays a cancellation
            or isinstance(context.sqlalchemy_exception, OperationalError)
        ):
            return None
        if not (context.is_disconnect or isinstance(original, OSError)):
            return None
        context.is_disconnect = True  # the pool discards the connection
        return OperationalError(
            context.statement,
            context.parameters,
            original,
            hide_parameters=True,
            connection_invalidated=True,
        )


def _create_sqlite_engine(database_url: str, *, pool_timeout: float) -> AsyncEngine:
    # Take the write lock at BEGIN: a deferred transaction that upgrades to a writer later
    # fails with SQLITE_BUSY instead of waiting, which concurrent requests would hit.
    # One connection: every transaction takes SQLite's write lock at BEGIN (below), so more
    # connections add no parallelism, only lock waits in SQLite's busy handler, which
    # sleeps in growing steps (up to 100 ms) and served waiters unfairly (p99 of seconds
    # at 20 concurrent requests). Waiting in the pool's queue instead is FIFO and cheap.
    engine = create_async_engine(
        database_url,
        module=one_hop_dbapi(),
        connect_args={"timeout": 30, "isolation_level": None, **CONNECT_ARGS},
        pool_size=1,
        max_overflow=0,
        pool_timeout=pool_timeout,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
