"""The expired-hold sweeper: releases what a dead process left reserved, once."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.credits import ledger
from app.credits.audit import audit_ledger
from app.db.models import CreditHold, Generation
from app.housekeeping.sweeper import release_expired_holds
from app.tenants.service import create_tenant

Sessions = async_sessionmaker[AsyncSession]


async def _tenant(sessions: Sessions, credits: int = 0) -> str:
    async with sessions() as session, session.begin():
        tenant = await create_tenant(session, f"l-{uuid.uuid4().hex[:12]}")
        if credits:
            await ledger.grant(session, tenant.id, credits)
        return tenant.id


async def _reserve(sessions: Sessions, tenant_id: str, amount: int, ttl: float = 600) -> str:
    async with sessions() as session, session.begin():
        hold = await ledger.reserve(
            session,
            tenant_id,
            amount,
            generation_id=str(uuid.uuid4()),
            ttl=timedelta(seconds=ttl),
        )
        return hold.id


async def _balance(sessions: Sessions, tenant_id: str) -> int:
    async with sessions() as session:
        return await ledger.get_balance(session, tenant_id)


async def _problems_for(sessions: Sessions, tenant_id: str) -> list[str]:
    async with sessions() as session:
        report = await audit_ledger(session, tenant_ids=[tenant_id])
    return [p.problem for p in report.problems if p.tenant_id == tenant_id]


async def test_sweeper_releases_only_expired_holds(sessions: Sessions) -> None:
    tenant_id = await _tenant(sessions, 30)
    expired = await _reserve(sessions, tenant_id, 10, ttl=-1)
    live = await _reserve(sessions, tenant_id, 10, ttl=600)
    async with sessions() as session, session.begin():
        hold = await session.get(CreditHold, expired)
        assert hold is not None
        session.add(
            Generation(
                id=hold.generation_id,
                tenant_id=tenant_id,
                model="m",
                provider="p",
                prompt="x",
                style_preset="none",
                aspect_ratio="1:1",
                num_images=1,
            )
        )
    assert await release_expired_holds(sessions) >= 1
    async with sessions() as session:
        statuses = {
            h.id: h.status
            for h in (
                await session.scalars(select(CreditHold).where(CreditHold.tenant_id == tenant_id))
            ).all()
        }
        generation = await session.get(Generation, hold.generation_id)
    assert statuses == {expired: "released", live: "open"}
    assert generation is not None and generation.status == "abandoned"
    assert await _balance(sessions, tenant_id) == 20
    assert await _problems_for(sessions, tenant_id) == []
