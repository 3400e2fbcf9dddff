"""SQLAlchemy's asyncpg adapter, with a database that stops answering made an outage.

Every gateway connection to Postgres carries two bounds (app/db/engine.py): the server's
`statement_timeout`, which cancels a statement that runs too long, and asyncpg's client
side `command_timeout`, a little longer, which gives up on a server that does not answer
at all (a stalled host, a dropped network path: no TCP reply ever comes, so the server's
own timeout never fires). Stock SQLAlchemy lets both through in shapes the API cannot
tell from a bug: the server's cancel (QueryCanceledError) is a bare DBAPIError, and the
client's TimeoutError is not a DBAPI error at all, so during the pool's pre-ping it even
escapes unwrapped. Here both are the driver's OperationalError, the class every other
outage has (app/api/errors.py maps it to 503 `dependency_unavailable`).

It plugs in through create_async_engine's `module=` argument, as app/db/sqlite.py does.
"""

from __future__ import annotations

from typing import Any, NoReturn

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import (
    AsyncAdapt_asyncpg_connection,
    AsyncAdapt_asyncpg_dbapi,
)


class BoundedConnection(AsyncAdapt_asyncpg_connection):
    __slots__ = ()

    def _handle_exception(self, error: Exception) -> NoReturn:
        if isinstance(error, TimeoutError):
            raise self.dbapi.OperationalError(
                "the database did not answer within the command timeout", error
            ) from error
        if isinstance(error, asyncpg.QueryCanceledError):
            # statement_timeout (or an operator's pg_cancel_backend): the server is
            # there and the connection is usable, but this statement did not finish.
            raise self.dbapi.OperationalError(
                "the database cancelled a statement (statement timeout)", error
            ) from error
        super()._handle_exception(error)


class BoundedDBAPI(AsyncAdapt_asyncpg_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> BoundedConnection:
        cache_size = kw.get("prepared_statement_cache_size", 100)
        name_func = kw.get("prepared_statement_name_func")
        stock = super().connect(*arg, **kw)  # type: ignore[no-untyped-call]
        return BoundedConnection(  # type: ignore[no-untyped-call]
            self,
            stock._connection,
            prepared_statement_cache_size=cache_size,
            prepared_statement_name_func=name_func,
        )


def bounded_dbapi() -> BoundedDBAPI:
    return BoundedDBAPI(asyncpg)  # type: ignore[no-untyped-call]


def is_no_answer(error: BaseException | None) -> bool:
    """Whether a driver error says the server never answered: the connection's state is
    then unknown, so it must be discarded, not reused."""
    return isinstance(getattr(error, "orig", None), TimeoutError)
