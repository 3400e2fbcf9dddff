"""The expired-hold sweeper: releases what a dead process left reserved, once."""

from __future__ import annotations

from sqlalchemy import select

from app.db.models import CreditHold, Generation
from app.housekeeping.sweeper import release_expired_holds
from tests.support.ledger import (
    Sessions,
    balance,
    generation_row,
    new_tenant,
    problems_for,
    reserve,
)


async def test_sweeper_releases_only_expired_holds(sessions: Sessions) -> None:
    tenant_id = await new_tenant(sessions, 30)
    expired = await reserve(sessions, tenant_id, 10, ttl=-1)
    live = await reserve(sessions, tenant_id, 10, ttl=600)
    async with sessions() as session, session.begin():
        hold = await session.get(CreditHold, expired)
        assert hold is not None and hold.generation_id is not None
        session.add(generation_row(hold.generation_id, tenant_id))
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
    assert await balance(sessions, tenant_id) == 20
    assert await problems_for(sessions, tenant_id) == []
