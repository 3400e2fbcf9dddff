"""The credits ledger. Services flush; the caller owns the transaction and commits.

Every balance change is one conditional UPDATE plus one append-only entry, so the
database (not Python) decides whether credits are there. Entry amounts are signed
balance deltas: grant +n, hold -n, and a hold settles exactly once with either a
`capture` entry (returning the uncaptured remainder, possibly 0) or a `release`
entry (returning all of it).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.credits import key_spend
from app.db.models import CreditAccount, CreditHold, LedgerEntry, new_id, utcnow
from app.db.statuses import HoldStatus, LedgerKind
from app.errors import InsufficientCredits, InvalidRequest

# The per-request statements (reserve, settle) are Core statements on the tables: the
# ORM's unit of work and its session synchronisation cost more CPU than the SQL itself.
# Nothing on those paths holds ORM objects of these tables in its session.
_ACCOUNTS = cast(Table, CreditAccount.__table__)
_HOLDS = cast(Table, CreditHold.__table__)
_ENTRIES = cast(Table, LedgerEntry.__table__)

# Built once: constructing and coercing a statement per call cost more than running it,
# and a reused statement object keeps its cache key. Values come as parameters.
_RESERVE = (
    update(_ACCOUNTS)
    .where(
        _ACCOUNTS.c.tenant_id == bindparam("b_tenant"),
        _ACCOUNTS.c.balance >= bindparam("b_amount"),
    )
    .values(
        balance=_ACCOUNTS.c.balance - bindparam("b_amount"),
        updated_at=bindparam("b_now", type_=_ACCOUNTS.c.updated_at.type),
    )
    .returning(_ACCOUNTS.c.balance)
)
_SETTLE = (
    update(_HOLDS)
    .where(
        _HOLDS.c.id == bindparam("b_hold"),
        _HOLDS.c.status == HoldStatus.OPEN,
        _HOLDS.c.amount >= bindparam("b_captured"),
    )
    .values(
        status=bindparam("b_status", type_=_HOLDS.c.status.type),
        captured=bindparam("b_captured"),
        settled_at=bindparam("b_now", type_=_HOLDS.c.settled_at.type),
    )
    .returning(
        _HOLDS.c.tenant_id,
        _HOLDS.c.amount,
        _HOLDS.c.generation_id,
        _HOLDS.c.spend_key_id,
        _HOLDS.c.spend_period,
    )
)
_INSERT_HOLD = insert(_HOLDS)
_INSERT_ENTRY = insert(_ENTRIES)
_CHANGE_BALANCE = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.tenant_id == bindparam("b_tenant"))
    .values(
        balance=_ACCOUNTS.c.balance + bindparam("b_delta"),
        updated_at=bindparam("b_now", type_=_ACCOUNTS.c.updated_at.type),
    )
    .returning(_ACCOUNTS.c.balance)
)
_BALANCE = select(_ACCOUNTS.c.balance).where(_ACCOUNTS.c.tenant_id == bindparam("b_tenant"))

# The largest single grant, for every way in (admin API, CLI): far above any real top-up,
# and ~9 billion grants short of a 64-bit balance (SQLite turns an overflow into a float).
MAX_GRANT = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    tenant_id: str
    amount: int
    balance_after: int


async def ensure_account(session: AsyncSession, tenant_id: str) -> None:
    if await session.get(CreditAccount, tenant_id) is None:
        session.add(CreditAccount(tenant_id=tenant_id, balance=0))
        await session.flush()


async def get_balance(session: AsyncSession, tenant_id: str) -> int:
    balance = await session.scalar(_BALANCE, {"b_tenant": tenant_id})
    return int(balance or 0)


async def grant(session: AsyncSession, tenant_id: str, amount: int, note: str | None = None) -> int:
    """Add credits; returns the new balance."""
    validate_grant(amount)
    await ensure_account(session, tenant_id)
    balance = await _change_balance(session, tenant_id, amount)
    session.add(LedgerEntry(tenant_id=tenant_id, kind=LedgerKind.GRANT, amount=amount, note=note))
    await session.flush()
    return balance


def validate_grant(amount: int) -> int:
    """`amount` if it is a grant the ledger accepts (1..MAX_GRANT), else InvalidRequest."""
    if not 0 < amount <= MAX_GRANT:
        raise InvalidRequest(f"amount must be an integer from 1 to {MAX_GRANT}", field="amount")
    return amount


async def reserve(
    session: AsyncSession,
    tenant_id: str,
    amount: int,
    *,
    generation_id: str,
    ttl: timedelta,
    api_key_id: str | None = None,
) -> Hold:
    """Move `amount` out of the balance into an open hold, or raise InsufficientCredits;
    with `api_key_id`, also into the key's spend for this period, or raise KeyCreditLimit
    (the caller's transaction then rolls back the balance change too)."""
    now = utcnow()
    result = await session.execute(
        _RESERVE, {"b_tenant": tenant_id, "b_amount": amount, "b_now": now}
    )
    balance_after = result.scalar_one_or_none()
    if balance_after is None:
        raise InsufficientCredits(required=amount, available=await get_balance(session, tenant_id))
    spend = await key_spend.take(session, api_key_id, amount, now) if api_key_id else None
    hold_id = new_id()
    await session.execute(
        _INSERT_HOLD,
        {
            "id": hold_id,
            "tenant_id": tenant_id,
            "generation_id": generation_id,
            "amount": amount,
            "captured": 0,
            "status": HoldStatus.OPEN,
            "created_at": now,
            "expires_at": now + ttl,
            "spend_key_id": spend.spend_key_id if spend else None,
            "spend_period": spend.period_start if spend else None,
        },
    )
    await session.execute(
        _INSERT_ENTRY,
        {
            "tenant_id": tenant_id,
            "kind": LedgerKind.HOLD,
            "amount": -amount,
            "hold_id": hold_id,
            "generation_id": generation_id,
            "note": f"reserved {amount}",
            "created_at": now,
        },
    )
    return Hold(id=hold_id, tenant_id=tenant_id, amount=amount, balance_after=int(balance_after))


async def settle(session: AsyncSession, hold_id: str, captured: int) -> bool:
    """Capture `captured` credits of an open hold and return the rest.

    Returns False if the hold was already settled (e.g. the sweeper released it after
    expiry); then nothing changes and the caller was not charged.
    """
    return await _settle(session, hold_id, captured, with_balance=False) is not None


async def settle_with_balance(session: AsyncSession, hold_id: str, captured: int) -> int | None:
    """`settle`, returning the tenant's balance after it, or None if the hold was already
    settled (nothing changed). The balance comes from the UPDATE's RETURNING, not a
    SELECT: on SQLite a read is a thread hop, a write inside the transaction is not."""
    return await _settle(session, hold_id, captured, with_balance=True)


async def _settle(
    session: AsyncSession, hold_id: str, captured: int, *, with_balance: bool
) -> int | None:
    """None if the hold was already settled; else the balance after (with_balance) or 0."""
    now = utcnow()
    status = HoldStatus.CAPTURED if captured > 0 else HoldStatus.RELEASED
    result = await session.execute(
        _SETTLE, {"b_hold": hold_id, "b_captured": captured, "b_status": status, "b_now": now}
    )
    row = result.one_or_none()
    if row is None:
        return None
    tenant_id, amount, generation_id, spend_key_id, spend_period = row
    returned = int(amount) - captured
    balance = 0
    if returned or with_balance:  # a zero change still answers the balance
        balance = await _return_to_balance(session, tenant_id, returned)
    if returned and spend_key_id is not None:  # to the period it was taken from
        await key_spend.give_back(session, key_spend.SpendRow(spend_key_id, spend_period), returned)
    kind = LedgerKind.CAPTURE if captured > 0 else LedgerKind.RELEASE
    note = f"captured {captured} of {amount}" if captured else f"released {amount}"
    await session.execute(
        _INSERT_ENTRY,
        {
            "tenant_id": tenant_id,
            "kind": kind,
            "amount": returned,
            "hold_id": hold_id,
            "generation_id": generation_id,
            "note": note,
            "created_at": now,
        },
    )
    return balance


async def expired_hold_ids(session: AsyncSession, now: datetime, limit: int = 100) -> list[str]:
    rows = await session.scalars(
        select(CreditHold.id)
        .where(CreditHold.status == HoldStatus.OPEN, CreditHold.expires_at < now)
        .order_by(CreditHold.expires_at)
        .limit(limit)
    )
    return list(rows)


async def open_hold_ids(session: AsyncSession, generation_id: str) -> list[str]:
    """The holds of one generation still open (at most one, from its reserve)."""
    rows = await session.scalars(
        select(CreditHold.id).where(
            CreditHold.generation_id == generation_id, CreditHold.status == HoldStatus.OPEN
        )
    )
    return list(rows)


async def recent_entries(
    session: AsyncSession, tenant_id: str, limit: int = 20
) -> list[LedgerEntry]:
    rows = await session.scalars(
        select(LedgerEntry)
        .where(LedgerEntry.tenant_id == tenant_id)
        .order_by(LedgerEntry.id.desc())
        .limit(limit)
    )
    return list(rows)


async def _change_balance(session: AsyncSession, tenant_id: str, delta: int) -> int:
    result = await session.execute(
        update(CreditAccount)
        .where(CreditAccount.tenant_id == tenant_id)
        .values(balance=CreditAccount.balance + delta, updated_at=utcnow())
        .returning(CreditAccount.balance)
    )
    return int(result.scalar_one())


async def _return_to_balance(session: AsyncSession, tenant_id: str, delta: int) -> int:
    """`_change_balance` as a prebuilt Core statement, for the per-request settle (whose
    session holds no account object to keep in sync)."""
    result = await session.execute(
        _CHANGE_BALANCE, {"b_tenant": tenant_id, "b_delta": delta, "b_now": utcnow()}
    )
    return int(result.scalar_one())


async def entry_sums(
    session: AsyncSession, tenant_ids: Collection[str] | None = None
) -> dict[str, int]:
    query = select(LedgerEntry.tenant_id, func.coalesce(func.sum(LedgerEntry.amount), 0))
    if tenant_ids is not None:
        query = query.where(LedgerEntry.tenant_id.in_(tenant_ids))
    rows = await session.execute(query.group_by(LedgerEntry.tenant_id))
    return {tenant_id: int(total) for tenant_id, total in rows}
