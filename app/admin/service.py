"""Read models for operators: tenants with balances, a tenant's keys, usage by day.

Writes (create tenant, create and revoke keys, grants, limits) reuse app.tenants.service
and app.credits.ledger. The caller owns the transaction; nothing here commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, String, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import ApiKey, CreditAccount, Generation, Image, Tenant
from app.db.statuses import GenerationStatus

# Generations that delivered nothing (and were charged nothing).
FAILED_STATUSES = (
    GenerationStatus.FAILED,
    GenerationStatus.REJECTED,
    GenerationStatus.ABANDONED,
)


@dataclass(frozen=True, slots=True)
class TenantSummary:
    id: str
    name: str
    created_at: datetime
    balance: int
    rate_limit_per_minute: int | None
    key_rate_limit_per_minute: int | None
    active_keys: int


@dataclass(frozen=True, slots=True)
class UsageQuery:
    tenant_id: str | None = None
    model: str | None = None
    since: date | None = None  # inclusive, UTC days
    until: date | None = None  # inclusive


@dataclass(frozen=True, slots=True)
class UsageRow:
    day: str  # YYYY-MM-DD in UTC
    tenant: str
    tenant_id: str
    model: str
    generations: int
    failed: int
    images: int
    credits_charged: int


async def list_tenants(session: AsyncSession, *, limit: int, offset: int) -> list[TenantSummary]:
    """Tenants by name, each with its balance and number of active keys."""
    rows = await session.execute(_summaries().order_by(Tenant.name).limit(limit).offset(offset))
    return [_summary(tenant, balance, active) for tenant, balance, active in rows]


async def count_tenants(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Tenant)) or 0)


async def tenant_summary(session: AsyncSession, tenant: Tenant) -> TenantSummary:
    row = (await session.execute(_summaries().where(Tenant.id == tenant.id))).one()
    return _summary(row[0], row[1], row[2])


async def list_keys(session: AsyncSession, tenant_id: str) -> list[ApiKey]:
    """A tenant's keys, newest first, revoked ones included (they are history)."""
    rows = await session.scalars(
        select(ApiKey)
        .where(ApiKey.tenant_id == tenant_id)
        .order_by(ApiKey.created_at.desc(), ApiKey.prefix)
    )
    return list(rows)


async def usage(session: AsyncSession, query: UsageQuery) -> list[UsageRow]:
    """Generations per UTC day, tenant and requested model: how many, how many delivered
    nothing, images delivered (deleted ones too: they were paid for) and credits charged."""
    day = _utc_day(Generation.created_at, session.get_bind().dialect.name).label("day")
    images = (
        select(Image.generation_id, func.count().label("images"))
        .group_by(Image.generation_id)
        .subquery()
    )
    statement = (
        select(
            day,
            Tenant.name,
            Tenant.id,
            Generation.model,
            func.count(Generation.id),
            func.sum(case((Generation.status.in_(FAILED_STATUSES), 1), else_=0)),
            func.sum(func.coalesce(images.c.images, 0)),
            func.sum(Generation.credits_charged),
        )
        .join(Tenant, Tenant.id == Generation.tenant_id)
        .outerjoin(images, images.c.generation_id == Generation.id)
        # In-flight generations have not charged or delivered yet.
        .where(Generation.status != GenerationStatus.PENDING)
        .group_by(day, Tenant.name, Tenant.id, Generation.model)
        .order_by(day, Tenant.name, Generation.model)
    )
    if query.tenant_id is not None:
        statement = statement.where(Generation.tenant_id == query.tenant_id)
    if query.model is not None:
        statement = statement.where(Generation.model == query.model)
    if query.since is not None:
        statement = statement.where(Generation.created_at >= _midnight(query.since))
    if query.until is not None:
        statement = statement.where(
            Generation.created_at < _midnight(query.until + timedelta(days=1))
        )
    return [
        UsageRow(
            day=str(row[0]),
            tenant=row[1],
            tenant_id=row[2],
            model=row[3],
            generations=int(row[4]),
            failed=int(row[5] or 0),
            images=int(row[6] or 0),
            credits_charged=int(row[7] or 0),
        )
        for row in await session.execute(statement)
    ]


def _summaries() -> Select[Tenant, int, int]:
    active_keys = (
        select(ApiKey.tenant_id, func.count().label("active"))
        .where(ApiKey.revoked_at.is_(None))
        .group_by(ApiKey.tenant_id)
        .subquery()
    )
    return (
        select(
            Tenant,
            func.coalesce(CreditAccount.balance, 0),
            func.coalesce(active_keys.c.active, 0),
        )
        .outerjoin(CreditAccount, CreditAccount.tenant_id == Tenant.id)
        .outerjoin(active_keys, active_keys.c.tenant_id == Tenant.id)
    )


def _summary(tenant: Tenant, balance: int, active: int) -> TenantSummary:
    return TenantSummary(
        id=tenant.id,
        name=tenant.name,
        created_at=tenant.created_at,
        balance=int(balance),
        rate_limit_per_minute=tenant.rate_limit_per_minute,
        key_rate_limit_per_minute=tenant.key_rate_limit_per_minute,
        active_keys=int(active),
    )


def _utc_day(column: Any, dialect: str) -> ColumnElement[str]:
    """The UTC calendar day of a timestamp column as 'YYYY-MM-DD'."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    # SQLite keeps UtcDateTime values as UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'.
    return func.substr(cast(column, String), 1, 10)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)
