"""Read models for operators: tenants with balances, a tenant's keys, usage by day.

Writes (create tenant, create and revoke keys, grants, limits) reuse app.tenants.service
and app.credits.ledger. The caller owns the transaction; nothing here commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, String, case, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.credits.key_spend import key_spend
from app.db.models import ApiKey, CreditAccount, Generation, Image, LedgerEntry, Tenant, utcnow
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
    api_key_id: str | None = None
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


async def key_details(session: AsyncSession, keys: list[ApiKey]) -> list[dict[str, Any]]:
    """Keys as operators see them (the admin API's KeyDetail, and `imagegate keys`):
    policies and the spend key's spend in the current period; never a secret."""
    tenant_ids = {key.tenant_id for key in keys}
    names: dict[str, str] = {
        tenant_id: name
        for tenant_id, name in await session.execute(
            select(Tenant.id, Tenant.name).where(Tenant.id.in_(tenant_ids))
        )
    }
    sources = {key.rotated_from_id for key in keys if key.rotated_from_id}
    prefixes: dict[str, str] = {
        key_id: prefix
        for key_id, prefix in await session.execute(
            select(ApiKey.id, ApiKey.prefix).where(ApiKey.id.in_(sources))
        )
    }
    now = utcnow()
    details = []
    for key in keys:
        spend = await key_spend(session, key, now)
        details.append(
            {
                "prefix": key.prefix,
                "tenant": names.get(key.tenant_id, "?"),
                "label": key.label,
                "creditLimit": key.credit_limit,
                "limitPeriod": key.limit_period,
                "spent": spend.spent,
                "remaining": spend.remaining,
                "periodStart": _iso(spend.period_start),
                "models": key.model_list(),
                "expiresAt": _iso(key.expires_at),
                "active": is_active(key, now),
                "createdAt": _iso(key.created_at),
                "lastUsedAt": _iso(key.last_used_at),
                "revokedAt": _iso(key.revoked_at),
                "rotatedFrom": prefixes.get(key.rotated_from_id) if key.rotated_from_id else None,
            }
        )
    return details


def is_active(key: ApiKey, now: datetime) -> bool:
    """Not revoked (a rotation's grace period still running counts) and not expired."""
    return (key.revoked_at is None or key.revoked_at > now) and (
        key.expires_at is None or key.expires_at > now
    )


async def ledger_entries(session: AsyncSession, tenant_id: str, limit: int) -> list[dict[str, Any]]:
    """A tenant's newest entries, each with the prefix of the key its generation used."""
    rows = await session.execute(
        select(LedgerEntry, ApiKey.prefix)
        .outerjoin(Generation, Generation.id == LedgerEntry.generation_id)
        .outerjoin(ApiKey, ApiKey.id == Generation.api_key_id)
        .where(LedgerEntry.tenant_id == tenant_id)
        .order_by(LedgerEntry.id.desc())
        .limit(limit)
    )
    return [
        {
            "id": entry.id,
            "kind": entry.kind,
            "amount": entry.amount,
            "note": entry.note,
            "generationId": entry.generation_id,
            "apiKeyPrefix": prefix,
            "createdAt": _iso(entry.created_at),
        }
        for entry, prefix in rows
    ]


def _iso(value: datetime | None) -> str | None:
    """UTC ISO 8601 with a Z, as every API timestamp (app.api.images.iso_utc)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    if query.api_key_id is not None:
        statement = statement.where(Generation.api_key_id == query.api_key_id)
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
    now = utcnow()
    active_keys = (
        select(ApiKey.tenant_id, func.count().label("active"))
        .where(
            or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > now),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        )
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
