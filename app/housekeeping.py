"""Periodic jobs: release holds that outlived their process (crash, kill -9) once they
expire, and forget expired idempotency keys."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.credits.ledger import expired_hold_ids, settle
from app.db.models import CreditHold, Generation, utcnow
from app.idempotency import purge_expired

log = logging.getLogger(__name__)


async def release_expired_holds(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Release every expired open hold; returns how many this call released."""
    released = 0
    while True:
        async with sessions() as session:
            hold_ids = await expired_hold_ids(session, utcnow())
        if not hold_ids:
            return released
        for hold_id in hold_ids:
            async with sessions() as session, session.begin():
                # settle() is conditional on the hold being open, so replicas sweeping
                # at the same time release each hold once.
                if not await settle(session, hold_id, 0):
                    continue
                hold = await session.get(CreditHold, hold_id)
                if hold is not None and hold.generation_id:
                    await session.execute(
                        update(Generation)
                        .where(Generation.id == hold.generation_id, Generation.status == "pending")
                        .values(
                            status="abandoned", error_code="hold_expired", completed_at=utcnow()
                        )
                    )
                released += 1


async def run_housekeeping(sessions: async_sessionmaker[AsyncSession], interval: float) -> None:
    while True:
        try:
            released = await release_expired_holds(sessions)
            if released:
                log.info("released expired holds", extra={"count": released})
            await purge_expired(sessions)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("housekeeping failed; will retry", extra={"error": type(exc).__name__})
        await asyncio.sleep(interval)
