"""Per-key spend, taken and given back in the ledger's transactions (app/credits/ledger.py).

A key adds to the `api_key_spend` row of its spend key (itself, or the key it was
rotated from) for the current UTC period of its `limit_period`. Taking is one
conditional UPDATE (`spent + amount <= credit_limit`), as the tenant's balance is, so
concurrent requests cannot push a key past its limit; a hold remembers the row it took
from and gives back to that row, even after a new period has begun.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Insert, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import ApiKey, ApiKeySpend, utcnow
from app.db.statuses import LimitPeriod
from app.errors import KeyCreditLimit

# The one period of a `total` limit.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_KEYS = cast(Table, ApiKey.__table__)
_SPEND = cast(Table, ApiKeySpend.__table__)

_POLICY = select(_KEYS.c.spend_key_id, _KEYS.c.credit_limit, _KEYS.c.limit_period).where(
    _KEYS.c.id == bindparam("b_key")
)
_ROW = (_SPEND.c.spend_key_id == bindparam("b_spend_key")) & (
    _SPEND.c.period_start == bindparam("b_period", type_=_SPEND.c.period_start.type)
)
_SPENT = select(_SPEND.c.spent).where(_ROW)
_TAKE = (
    update(_SPEND)
    .where(_ROW)
    .values(spent=_SPEND.c.spent + bindparam("b_amount"))
    .returning(_SPEND.c.spent)
)
_TAKE_WITHIN = _TAKE.where(_SPEND.c.spent + bindparam("b_amount") <= bindparam("b_limit"))
_GIVE_BACK = update(_SPEND).where(_ROW).values(spent=_SPEND.c.spent - bindparam("b_amount"))


def _ensure(insert: Insert) -> Insert:
    return insert.on_conflict_do_nothing(index_elements=["spend_key_id", "period_start"])  # type: ignore[attr-defined, no-any-return]


# The period's row, made on first use; a concurrent maker's row wins and is used.
_ENSURE = {
    "postgresql": _ensure(postgresql.insert(_SPEND)),
    "sqlite": _ensure(sqlite.insert(_SPEND)),
}


@dataclass(frozen=True, slots=True)
class SpendRow:
    spend_key_id: str
    period_start: datetime


@dataclass(frozen=True, slots=True)
class KeySpend:
    """A key's limit and what its spend key has spent in the current period."""

    credit_limit: int | None
    limit_period: str
    period_start: datetime
    spent: int

    @property
    def remaining(self) -> int | None:
        return None if self.credit_limit is None else max(self.credit_limit - self.spent, 0)


def period_start(period: str, now: datetime) -> datetime:
    """The first instant of the UTC calendar period of `period` that holds `now`."""
    now = now.astimezone(UTC)
    if period == LimitPeriod.DAY:
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == LimitPeriod.MONTH:
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return EPOCH


async def take(
    session: AsyncSession, api_key_id: str, amount: int, now: datetime
) -> SpendRow | None:
    """Add `amount` to the key's spend for the current period, or raise KeyCreditLimit.
    None when the key no longer exists (nothing to count against)."""
    policy = (await session.execute(_POLICY, {"b_key": api_key_id})).one_or_none()
    if policy is None:
        return None
    spend_key_id, limit, period = policy
    row = SpendRow(spend_key_id, period_start(period, now))
    where = {"b_spend_key": row.spend_key_id, "b_period": row.period_start}
    dialect = session.get_bind().dialect.name
    await session.execute(
        _ENSURE[dialect],
        {"spend_key_id": row.spend_key_id, "period_start": row.period_start, "spent": 0},
    )
    if limit is None:
        await session.execute(_TAKE, where | {"b_amount": amount})
        return row
    taken = await session.execute(_TAKE_WITHIN, where | {"b_amount": amount, "b_limit": limit})
    if taken.scalar_one_or_none() is None:
        spent = int(await session.scalar(_SPENT, where) or 0)
        raise KeyCreditLimit(
            required=amount, available=max(int(limit) - spent, 0), limit=int(limit), period=period
        )
    return row


async def give_back(session: AsyncSession, row: SpendRow, amount: int) -> None:
    await session.execute(
        _GIVE_BACK,
        {"b_spend_key": row.spend_key_id, "b_period": row.period_start, "b_amount": amount},
    )


async def key_spend(session: AsyncSession, key: ApiKey, now: datetime) -> KeySpend:
    """`key`'s limit and its spend key's spend in the current period."""
    start = period_start(key.limit_period, now)
    spent = await session.scalar(_SPENT, {"b_spend_key": key.spend_key_id, "b_period": start})
    return KeySpend(key.credit_limit, key.limit_period, start, int(spent or 0))


async def check_headroom(session: AsyncSession, api_key_id: str, amount: int) -> None:
    """KeyCreditLimit if the key's limit does not cover `amount` now (a pre-check that
    takes nothing: the async submission's, before the job reserves when it runs)."""
    key = await session.get(ApiKey, api_key_id)
    if key is None:
        return
    spend = await key_spend(session, key, utcnow())
    if spend.credit_limit is not None and spend.remaining is not None and spend.remaining < amount:
        raise KeyCreditLimit(
            required=amount,
            available=spend.remaining,
            limit=spend.credit_limit,
            period=spend.limit_period,
        )
