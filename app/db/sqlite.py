"""A leaner aiosqlite adapter for SQLAlchemy: one thread hop per statement.

aiosqlite runs each SQLite connection on its own thread and every call on it is a hop:
the event loop queues the call, the thread wakes, runs it and wakes the loop again. That
costs 50-150 us of CPU per hop on a small machine, while SQLite itself answers one of our
statements in a few microseconds. SQLAlchemy's stock adapter makes four hops per
statement (cursor, execute, fetchall, close) and one more for the rollback that resets
every connection returned to the pool; a generation's two transactions paid ~45 hops.

This adapter runs cursor + execute + fetchall + close as one function on the
connection's thread (one hop per statement) and skips the reset rollback when SQLite
says no transaction is open. Two kinds of statement take no hop at all, because they
cannot wait: BEGIN IMMEDIATE tried with a zero busy timeout (if another process holds
the write lock, it goes to the thread and waits there), and data changes inside a
transaction, which already holds the write lock. Reads and COMMIT (fsync) always go to
the thread. A generation makes its two COMMITs and, with an API key, the read of its
spend limit: 2-3 hops where it made ~45.

It plugs in through create_async_engine's `module=` argument, so the dialect, the SQL
and the semantics are SQLAlchemy's own.
"""

from __future__ import annotations

import collections
import re
import sqlite3
from collections.abc import Sequence
from typing import Any, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

_Result = tuple[Any, int, int | None, list[Any]]
_WRITES = re.compile(r"\s*(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
_BEGIN = re.compile(r"\s*BEGIN\s+IMMEDIATE\s*;?\s*$", re.IGNORECASE)
_LOCK_ERRORS = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_BEGUN: _Result = (None, -1, None, [])


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Result:
    """One whole statement, on the connection's own thread."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        else:
            cursor.execute(operation, () if parameters is None else parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


async def _try_begin_here(connection: sqlite3.Connection, operation: str) -> bool:
    """Take the write lock without waiting, or say it is taken (then the thread waits).

    Awaited (though it never suspends) so SQLAlchemy sees the async driver it expects.
    With no other process holding the lock, BEGIN IMMEDIATE takes microseconds; with the
    busy timeout at 0 it cannot wait, so the event loop never blocks on another writer.
    """
    timeout = connection.execute("PRAGMA busy_timeout").fetchone()[0]
    connection.execute("PRAGMA busy_timeout = 0")
    try:
        connection.execute(operation)
        return True
    except sqlite3.OperationalError as error:
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _LOCK_ERRORS:  # extended codes included
            return False
        raise
    finally:
        connection.execute(f"PRAGMA busy_timeout = {int(timeout)}")


async def _run_here(
    connection: sqlite3.Connection, operation: str, parameters: Any, many: bool
) -> _Result:
    # Awaited (though it never suspends) so SQLAlchemy sees the async driver it expects.
    return _run(connection, operation, parameters, many)


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """Buffers the whole result of each statement, as the stock cursor already does."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        # No aiosqlite cursor is opened up front (that was a hop of its own).
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._rows: collections.deque[Any] = collections.deque()
        self._soft_closed_memoized = EMPTY_DICT
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid or 0

    async def _async_soft_close(self) -> None:
        return None  # nothing is left open on the connection's thread

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._run(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        self._run(operation, seq_of_parameters, many=True)

    def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        connection = cast(aiosqlite.Connection, self._connection)
        try:
            raw = connection._conn
            began = (
                not many
                and not raw.in_transaction
                and _BEGIN.match(operation)
                and await_(_try_begin_here(raw, operation))
            )
            if began:
                description, rowcount, lastrowid, rows = _BEGUN
            elif raw.in_transaction and _WRITES.match(operation):
                # The transaction began IMMEDIATE, so this connection holds SQLite's
                # write lock: a data change cannot wait on anyone and takes microseconds
                # (our writes go by key). Running it here saves the hop. Reads (which
                # may be large), BEGIN (may wait for the lock) and COMMIT (fsync) still
                # go to the connection's thread, so the event loop never waits on disk.
                description, rowcount, lastrowid, rows = await_(
                    _run_here(raw, operation, parameters, many)
                )
            else:
                description, rowcount, lastrowid, rows = await_(
                    connection._execute(  # type: ignore[no-untyped-call]
                        _run, raw, operation, parameters, many
                    )
                )
        except (sqlite3.Error, ValueError) as error:  # ValueError: aiosqlite's "closed"
            self._adapt_connection._handle_exception(error)
        self._description, self._rowcount, self._lastrowid = description, rowcount, lastrowid
        self._rows = collections.deque(rows)


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor

    def rollback(self) -> None:
        # The pool rolls back every connection it takes back; after a COMMIT there is
        # nothing to undo, and asking the thread to do nothing is still a hop.
        if self._connection._connection is not None and not self._in_transaction():
            return
        super().rollback()

    def _in_transaction(self) -> bool:
        connection: sqlite3.Connection = self._connection._conn
        return connection.in_transaction


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        stock = super().connect(*arg, **kw)
        return OneHopConnection(self, stock._connection)


def one_hop_dbapi() -> OneHopDBAPI:
    return OneHopDBAPI(aiosqlite, sqlite3)


# Connect with check_same_thread=False: statements may run on the event loop's thread
# (see OneHopCursor._run); SQLAlchemy never uses one connection from two places at once.
CONNECT_ARGS = {"check_same_thread": False}
