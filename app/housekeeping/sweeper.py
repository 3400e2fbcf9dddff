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
from app.db.statuses import GenerationStatus
from app.housekeeping.orphans import generation_keys
from app.idempotency import purge_expired
from app.storage.base import ImageStore, StorageUnavailable

log = logging.getLogger(__name__)


async def release_expired_holds(
    sessions: async_sessionmaker[AsyncSession], store: ImageStore | None = None
) -> int:
    """Release every expired open hold and drop what its dead generation may have stored;
    returns how many holds this call released."""
    released = 0
    while True:
        async with sessions() as session:
            hold_ids = await expired_hold_ids(session, utcnow())
        if not hold_ids:
            return released
        for hold_id in hold_ids:
            async with sessions() as session, session.begin():
                released_now, abandoned = await abandon_hold(session, hold_id, "hold_expired")
            released += released_now
            if store is not None:
                await drop_objects(store, abandoned)


async def abandon_hold(
    session: AsyncSession, hold_id: str, reason: str
) -> tuple[bool, Generation | None]:
    """Release an open hold whose generation's process is gone and mark that generation
    abandoned (`reason` its error code). Returns whether this call released the hold and
    the generation it abandoned, if any (its objects are orphans: drop_objects).

    settle() is conditional on the hold being open, so replicas doing this at the same
    time release each hold once."""
    if not await settle(session, hold_id, 0):
        return False, None
    hold = await session.get(CreditHold, hold_id)
    abandoned = None
    if hold is not None and hold.generation_id:
        abandoned = await session.scalar(
            update(Generation)
            .where(
                Generation.id == hold.generation_id,
                Generation.status == GenerationStatus.PENDING,
            )
            .values(status=GenerationStatus.ABANDONED, error_code=reason, completed_at=utcnow())
            .returning(Generation)
        )
    return True, abandoned


async def drop_objects(store: ImageStore, abandoned: Generation | None) -> None:
    """A generation that never finished recorded no images: its objects are orphans."""
    if abandoned is not None:
        for key in generation_keys(abandoned):
            await store.delete(key)


async def run_housekeeping(
    sessions: async_sessionmaker[AsyncSession], store: ImageStore, interval: float
) -> None:
    while True:
        try:
            released = await release_expired_holds(sessions, store)
            if released:
                log.info("released expired holds", extra={"count": released})
            await purge_expired(sessions)
        except (SQLAlchemyError, OSError, StorageUnavailable) as exc:
            log.warning("housekeeping failed; will retry", extra={"error": type(exc).__name__})
        await asyncio.sleep(interval)
