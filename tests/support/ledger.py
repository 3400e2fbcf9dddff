"""Ledger helpers for tests that drive the ledger directly through a sessionmaker."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.credits import ledger
from app.credits.audit import audit_ledger
from app.db.models import Generation, Tenant, utcnow
from app.db.statuses import GenerationStatus
from app.tenants.policy import KeyChanges
from app.tenants.service import create_key, create_tenant

Sessions = async_sessionmaker[AsyncSession]


async def new_tenant(sessions: Sessions, credits: int = 0) -> str:
    """A fresh tenant's id, granted `credits`."""
    async with sessions() as session, session.begin():
        tenant = await create_tenant(session, f"l-{uuid.uuid4().hex[:12]}")
        if credits:
            await ledger.grant(session, tenant.id, credits)
        return tenant.id


async def new_key(
    sessions: Sessions, tenant_id: str, credit_limit: int | None, period: str = "total"
) -> str:
    """A new key's id for the tenant, limited to `credit_limit` per `period`."""
    async with sessions() as session, session.begin():
        tenant = await session.get(Tenant, tenant_id)
        assert tenant is not None
        policy = KeyChanges(credit_limit=credit_limit, limit_period=period)
        return (await create_key(session, tenant, "test", policy=policy)).key.id


async def reserve(
    sessions: Sessions,
    tenant_id: str,
    amount: int,
    ttl: float = 600,
    api_key_id: str | None = None,
) -> str:
    """A committed hold's id (a negative `ttl` makes it already expired)."""
    async with sessions() as session, session.begin():
        hold = await ledger.reserve(
            session,
            tenant_id,
            amount,
            generation_id=str(uuid.uuid4()),
            ttl=timedelta(seconds=ttl),
            api_key_id=api_key_id,
        )
        return hold.id


async def balance(sessions: Sessions, tenant_id: str) -> int:
    async with sessions() as session:
        return await ledger.get_balance(session, tenant_id)


async def problems_for(sessions: Sessions, tenant_id: str) -> list[str]:
    """What the audit finds wrong with this tenant's ledger alone."""
    async with sessions() as session:
        report = await audit_ledger(session, tenant_ids=[tenant_id])
    return [p.problem for p in report.problems if p.tenant_id == tenant_id]


def generation_row(
    generation_id: str,
    tenant_id: str,
    status: str = GenerationStatus.PENDING,
    *,
    num_images: int = 1,
) -> Generation:
    """A generation record as the service writes one (add it to a session)."""
    return Generation(
        id=generation_id,
        tenant_id=tenant_id,
        model="google/gemini-2.5-flash-image",
        provider="google",
        prompt="p",
        style_preset="none",
        aspect_ratio="1:1",
        num_images=num_images,
        status=status,
        created_at=utcnow(),
    )
