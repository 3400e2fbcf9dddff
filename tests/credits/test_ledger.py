"""The ledger and its invariant on SQLite and on Postgres."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from app.credits import ledger
from app.credits.audit import audit_ledger
from app.db.models import CreditAccount, LedgerEntry, utcnow
from app.errors import InsufficientCredits, InvalidRequest
from tests.support.ledger import Sessions, balance, new_tenant, problems_for, reserve


async def test_grant_reserve_capture_release(sessions: Sessions) -> None:
    tenant_id = await new_tenant(sessions, 100)
    hold_a = await reserve(sessions, tenant_id, 40)
    hold_b = await reserve(sessions, tenant_id, 30)
    assert await balance(sessions, tenant_id) == 30
    async with sessions() as session, session.begin():
        assert await ledger.settle(session, hold_a, 10)  # 10 of 40 captured
        assert await ledger.settle(session, hold_b, 0)  # nothing delivered
    assert await balance(sessions, tenant_id) == 90
    async with sessions() as session:
        kinds = (
            await session.scalars(
                select(LedgerEntry.kind)
                .where(LedgerEntry.tenant_id == tenant_id)
                .order_by(LedgerEntry.id)
            )
        ).all()
    assert kinds == ["grant", "hold", "hold", "capture", "release"]
    assert await problems_for(sessions, tenant_id) == []


async def test_a_hold_settles_exactly_once(sessions: Sessions) -> None:
    tenant_id = await new_tenant(sessions, 10)
    hold_id = await reserve(sessions, tenant_id, 10)
    async with sessions() as session, session.begin():
        assert await ledger.settle(session, hold_id, 10)
    async with sessions() as session, session.begin():
        assert not await ledger.settle(session, hold_id, 0)
    assert await balance(sessions, tenant_id) == 0
    assert await problems_for(sessions, tenant_id) == []


async def test_reserve_beyond_balance_raises_with_numbers(sessions: Sessions) -> None:
    tenant_id = await new_tenant(sessions, 7)
    with pytest.raises(InsufficientCredits) as raised:
        await reserve(sessions, tenant_id, 8)
    assert raised.value.extra == {
        "required": 8,
        "available": 7,
        "requiredCredits": 8,
        "availableCredits": 7,
    }
    assert await balance(sessions, tenant_id) == 7


async def test_grant_must_be_positive(sessions: Sessions) -> None:
    tenant_id = await new_tenant(sessions)
    async with sessions() as session, session.begin():
        with pytest.raises(InvalidRequest):
            await ledger.grant(session, tenant_id, 0)


async def test_database_refuses_negative_balance(sessions: Sessions) -> None:
    tenant_id = await new_tenant(sessions, 5)
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            await session.execute(
                update(CreditAccount).where(CreditAccount.tenant_id == tenant_id).values(balance=-1)
            )


async def test_concurrent_reservations_never_overspend(sessions: Sessions) -> None:
    tenant_id = await new_tenant(sessions, 50)

    async def attempt() -> bool:
        try:
            await reserve(sessions, tenant_id, 5)
        except InsufficientCredits:
            return False
        return True

    results = await asyncio.gather(*(attempt() for _ in range(30)))
    assert results.count(True) == 10
    assert await balance(sessions, tenant_id) == 0
    assert await problems_for(sessions, tenant_id) == []


async def test_audit_names_a_tampered_account(sessions: Sessions) -> None:
    tenant_id = await new_tenant(sessions, 10)
    async with sessions() as session, session.begin():
        await session.execute(
            update(CreditAccount)
            .where(CreditAccount.tenant_id == tenant_id)
            .values(balance=11, updated_at=utcnow())
        )
    problems = await problems_for(sessions, tenant_id)
    assert problems == ["balance 11 != sum of entries 10"]
    async with sessions() as session, session.begin():  # put it back for other tests
        await session.execute(
            update(CreditAccount).where(CreditAccount.tenant_id == tenant_id).values(balance=10)
        )


async def test_audit_finds_a_hold_settled_twice(sessions: Sessions) -> None:
    tenant_id = await new_tenant(sessions, 10)
    hold_id = await reserve(sessions, tenant_id, 10)
    async with sessions() as session, session.begin():
        await ledger.settle(session, hold_id, 0)
        # A second release written behind the service's back, with its balance change.
        session.add(LedgerEntry(tenant_id=tenant_id, kind="release", amount=10, hold_id=hold_id))
        await session.execute(
            update(CreditAccount).where(CreditAccount.tenant_id == tenant_id).values(balance=20)
        )
    problems = await problems_for(sessions, tenant_id)
    assert len(problems) == 1 and hold_id in problems[0]
    async with sessions() as session, session.begin():
        await session.execute(
            delete(LedgerEntry).where(
                LedgerEntry.hold_id == hold_id,
                LedgerEntry.kind == "release",
                LedgerEntry.id
                == select(LedgerEntry.id)
                .where(LedgerEntry.hold_id == hold_id)
                .order_by(LedgerEntry.id.desc())
                .limit(1)
                .scalar_subquery(),
            )
        )
        await session.execute(
            update(CreditAccount).where(CreditAccount.tenant_id == tenant_id).values(balance=10)
        )
    assert await problems_for(sessions, tenant_id) == []


async def test_an_audit_scoped_to_one_tenant_ignores_another_tenants_broken_ledger(
    sessions: Sessions,
) -> None:
    broken = await new_tenant(sessions, 10)
    clean = await new_tenant(sessions, 10)
    hold_id = await reserve(sessions, clean, 4)
    async with sessions() as session, session.begin():
        assert await ledger.settle(session, hold_id, 4)
        # An entry written straight into the table, without its balance change.
        await session.execute(
            insert(LedgerEntry).values(tenant_id=broken, kind="adjustment", amount=5, note="x")
        )
    try:
        async with sessions() as session:
            scoped = await audit_ledger(session, tenant_ids=[clean])
            everything = await audit_ledger(session)
        assert scoped.ok and (scoped.accounts, scoped.holds) == (1, 1)
        assert ("balance 10 != sum of entries 15", broken) in {
            (p.problem, p.tenant_id) for p in everything.problems
        }
        assert everything.accounts > scoped.accounts
    finally:  # the database is shared by the session's other tests
        async with sessions() as session, session.begin():
            await session.execute(
                delete(LedgerEntry).where(
                    LedgerEntry.tenant_id == broken, LedgerEntry.kind == "adjustment"
                )
            )
    async with sessions() as session:
        assert (await audit_ledger(session, tenant_ids=[broken, clean])).ok
