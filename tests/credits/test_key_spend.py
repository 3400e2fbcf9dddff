"""Per-key credit limits in the ledger, on SQLite and on Postgres (#14 items 1 and 4)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from app.credits import ledger
from app.credits.key_spend import EPOCH, period_start
from app.db.models import ApiKeySpend, CreditHold, utcnow
from app.errors import InsufficientCredits, KeyCreditLimit
from app.housekeeping.sweeper import release_expired_holds
from tests.support.ledger import Sessions, balance, new_key, new_tenant, problems_for, reserve


async def spent(sessions: Sessions, key_id: str) -> dict[datetime, int]:
    async with sessions() as session:
        rows = await session.scalars(select(ApiKeySpend).where(ApiKeySpend.spend_key_id == key_id))
        return {row.period_start: row.spent for row in rows}


async def settle(sessions: Sessions, hold_id: str, captured: int) -> None:
    async with sessions() as session, session.begin():
        assert await ledger.settle(session, hold_id, captured)


def test_periods_are_utc_calendar_periods() -> None:
    now = datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)
    assert period_start("total", now) == EPOCH
    assert period_start("day", now) == datetime(2026, 3, 31, tzinfo=UTC)
    assert period_start("month", now) == datetime(2026, 3, 1, tzinfo=UTC)
    assert period_start("day", now + timedelta(seconds=1)) == datetime(2026, 4, 1, tzinfo=UTC)


async def test_a_hold_takes_from_the_key_and_settling_gives_the_rest_back(
    sessions: Sessions,
) -> None:
    tenant_id = await new_tenant(sessions, 100)
    key_id = await new_key(sessions, tenant_id, 30)
    hold_a = await reserve(sessions, tenant_id, 20, api_key_id=key_id)
    hold_b = await reserve(sessions, tenant_id, 10, api_key_id=key_id)
    assert await spent(sessions, key_id) == {EPOCH: 30}
    await settle(sessions, hold_a, 8)  # partial: 12 back to both
    await settle(sessions, hold_b, 0)  # released: all 10 back to both
    assert await spent(sessions, key_id) == {EPOCH: 8}
    assert await balance(sessions, tenant_id) == 92
    assert await problems_for(sessions, tenant_id) == []


async def test_the_keys_limit_refuses_with_its_numbers_and_charges_nothing(
    sessions: Sessions,
) -> None:
    tenant_id = await new_tenant(sessions, 1000)
    key_id = await new_key(sessions, tenant_id, 25, "month")
    await reserve(sessions, tenant_id, 20, api_key_id=key_id)
    with pytest.raises(KeyCreditLimit) as raised:
        await reserve(sessions, tenant_id, 6, api_key_id=key_id)
    assert raised.value.status_code == 402
    assert raised.value.code == "key_credit_limit"
    extra = raised.value.extra
    assert (extra["required"], extra["available"]) == (6, 5)
    assert (extra["requiredCredits"], extra["availableCredits"]) == (6, 5)
    assert "key's own limit, not the tenant's balance" in raised.value.message
    # The tenant's UPDATE ran first in that transaction and was rolled back with it.
    assert await balance(sessions, tenant_id) == 980
    assert await spent(sessions, key_id) == {period_start("month", utcnow()): 20}
    async with sessions() as session:
        holds = (
            await session.scalars(select(CreditHold).where(CreditHold.tenant_id == tenant_id))
        ).all()
    assert len(holds) == 1
    assert await problems_for(sessions, tenant_id) == []


async def test_the_tenants_balance_still_limits_a_key_with_room(sessions: Sessions) -> None:
    tenant_id = await new_tenant(sessions, 5)
    key_id = await new_key(sessions, tenant_id, 100)
    with pytest.raises(InsufficientCredits):
        await reserve(sessions, tenant_id, 6, api_key_id=key_id)
    assert await spent(sessions, key_id) == {}
    assert await balance(sessions, tenant_id) == 5


async def test_concurrent_reservations_never_push_a_key_past_its_limit(
    sessions: Sessions,
) -> None:
    """30 racing holds of 5 against a key limited to 50; the tenant could pay for all."""
    tenant_id = await new_tenant(sessions, 10_000)
    key_id = await new_key(sessions, tenant_id, 50)

    async def attempt() -> bool:
        try:
            await reserve(sessions, tenant_id, 5, api_key_id=key_id)
        except KeyCreditLimit:
            return False
        return True

    results = await asyncio.gather(*(attempt() for _ in range(30)))
    assert results.count(True) == 10
    assert await spent(sessions, key_id) == {EPOCH: 50}
    assert await balance(sessions, tenant_id) == 10_000 - 50
    assert await problems_for(sessions, tenant_id) == []


async def _move_to_yesterday(sessions: Sessions, key_id: str, hold_id: str) -> datetime:
    """Make a hold and its spend row look taken in yesterday's period."""
    today = period_start("day", utcnow())
    yesterday = today - timedelta(days=1)
    async with sessions() as session, session.begin():
        await session.execute(
            update(ApiKeySpend)
            .where(ApiKeySpend.spend_key_id == key_id, ApiKeySpend.period_start == today)
            .values(period_start=yesterday)
        )
        await session.execute(
            update(CreditHold).where(CreditHold.id == hold_id).values(spend_period=yesterday)
        )
    return yesterday


async def test_a_day_limit_resets_and_a_late_settlement_gives_back_to_its_own_day(
    sessions: Sessions,
) -> None:
    tenant_id = await new_tenant(sessions, 1000)
    key_id = await new_key(sessions, tenant_id, 10, "day")
    old_hold = await reserve(sessions, tenant_id, 10, api_key_id=key_id)
    yesterday = await _move_to_yesterday(sessions, key_id, old_hold)
    # Yesterday's full spend does not count today.
    await reserve(sessions, tenant_id, 10, api_key_id=key_id)
    today = period_start("day", utcnow())
    assert await spent(sessions, key_id) == {yesterday: 10, today: 10}
    await settle(sessions, old_hold, 3)  # settled today, returned to yesterday
    assert await spent(sessions, key_id) == {yesterday: 3, today: 10}
    assert await problems_for(sessions, tenant_id) == []


async def test_the_sweeper_gives_an_expired_hold_back_to_the_key(sessions: Sessions) -> None:
    tenant_id = await new_tenant(sessions, 100)
    key_id = await new_key(sessions, tenant_id, 40)
    await reserve(sessions, tenant_id, 40, ttl=-1, api_key_id=key_id)
    await release_expired_holds(sessions)
    assert await spent(sessions, key_id) == {EPOCH: 0}
    assert await balance(sessions, tenant_id) == 100
    await reserve(sessions, tenant_id, 40, api_key_id=key_id)  # the limit is free again
    assert await problems_for(sessions, tenant_id) == []


async def test_a_key_without_a_limit_still_records_its_spend(sessions: Sessions) -> None:
    tenant_id = await new_tenant(sessions, 100)
    key_id = await new_key(sessions, tenant_id, None)
    hold_id = await reserve(sessions, tenant_id, 60, api_key_id=key_id)
    await settle(sessions, hold_id, 45)
    assert await spent(sessions, key_id) == {EPOCH: 45}


async def test_the_audit_names_a_key_whose_spend_does_not_match_its_holds(
    sessions: Sessions,
) -> None:
    tenant_id = await new_tenant(sessions, 100)
    key_id = await new_key(sessions, tenant_id, 50)
    hold_id = await reserve(sessions, tenant_id, 20, api_key_id=key_id)
    await settle(sessions, hold_id, 20)
    async with sessions() as session, session.begin():
        await session.execute(
            update(ApiKeySpend).where(ApiKeySpend.spend_key_id == key_id).values(spent=19)
        )
    problems = await problems_for(sessions, tenant_id)
    assert len(problems) == 1 and "spent 19 != 20 taken by its holds" in problems[0]
    # Over its limit, the same way (behind the ledger's back): the audit says so too.
    async with sessions() as session, session.begin():
        await session.execute(
            update(ApiKeySpend).where(ApiKeySpend.spend_key_id == key_id).values(spent=51)
        )
    problems = await problems_for(sessions, tenant_id)
    assert any("spent 51 above its limit 50" in p for p in problems), problems
