"""Migration 0005 (key limits and policies) upgrades a database that holds data from 0004,
on SQLite and on Postgres: the rows survive, old keys keep working unlimited, an open
hold from before settles, and the new rules apply (#14 item 6)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import IntegrityError

from app.credits import ledger
from app.credits.audit import audit_ledger
from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade
from app.db.models import ApiKey, ApiKeySpend, UtcDateTime, utcnow
from app.errors import KeyCreditLimit
from app.tenants import service as tenants
from app.tenants.policy import KeyChanges
from tests.support.gateway import create_database

TENANT, KEY, HOLD = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())

# Rows as 0004 knew them (the models now have columns 0004 lacks, so raw SQL).
_ROWS_0004 = [
    (
        "INSERT INTO tenants (id, name, created_at) VALUES (:tenant, 'old-co', :now)",
        {},
    ),
    (
        "INSERT INTO api_keys (id, tenant_id, prefix, key_hash, label, created_at) "
        "VALUES (:key, :tenant, 'ig_oldkey01', :hash, 'legacy', :now)",
        {"hash": tenants.hash_key("ig_oldkey01" + "x" * 40)},
    ),
    (
        "INSERT INTO credit_accounts (tenant_id, balance, updated_at) VALUES (:tenant, 70, :now)",
        {},
    ),
    (
        "INSERT INTO credit_holds (id, tenant_id, generation_id, amount, captured, status, "
        "created_at, expires_at) VALUES (:hold, :tenant, NULL, 30, 0, 'open', :now, :later)",
        {},
    ),
    (
        "INSERT INTO ledger_entries (tenant_id, kind, amount, note, created_at) "
        "VALUES (:tenant, 'grant', 100, 'before 0005', :now)",
        {},
    ),
    (
        "INSERT INTO ledger_entries (tenant_id, kind, amount, hold_id, note, created_at) "
        "VALUES (:tenant, 'hold', -30, :hold, 'reserved 30', :now)",
        {},
    ),
]


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'upgrade.db'}"
    return asyncio.run(create_database(request.getfixturevalue("postgres_url")))


async def _write_0004_rows(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            now = utcnow()
            for sql, extra in _ROWS_0004:
                statement = text(sql).bindparams(
                    *(
                        bindparam(name, type_=UtcDateTime())
                        for name in ("now", "later")
                        if f":{name}" in sql
                    )
                )
                params: dict[str, object] = {"tenant": TENANT, "key": KEY, "hold": HOLD, **extra}
                params |= {"now": now, "later": now + timedelta(hours=1)}
                used = {name: value for name, value in params.items() if f":{name}" in sql}
                await connection.execute(statement, used)
    finally:
        await engine.dispose()


async def _check_upgraded(url: str) -> None:
    engine = create_engine(url, pool_size=2)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session:
            key = await session.get(ApiKey, KEY)
            assert key is not None
            assert (key.prefix, key.label, key.tenant_id) == ("ig_oldkey01", "legacy", TENANT)
            assert (key.credit_limit, key.limit_period, key.models) == (None, "total", None)
            assert key.spend_key_id == KEY and key.expires_at is None
            assert await ledger.get_balance(session, TENANT) == 70
            assert (await audit_ledger(session, tenant_ids=[TENANT])).ok
        # The hold from before 0005 carries no key: it settles against the tenant alone.
        async with sessions() as session, session.begin():
            assert await ledger.settle(session, HOLD, 10)
        # The old key now takes limits like a new one.
        async with sessions() as session, session.begin():
            await tenants.update_key(
                session,
                "ig_oldkey01",
                KeyChanges(credit_limit=25, limit_period="day"),
                frozenset(),
            )
        async with sessions() as session, session.begin():
            await ledger.reserve(
                session,
                TENANT,
                20,
                generation_id=str(uuid.uuid4()),
                ttl=timedelta(minutes=5),
                api_key_id=KEY,
            )
        with pytest.raises(KeyCreditLimit):
            async with sessions() as session, session.begin():
                await ledger.reserve(
                    session,
                    TENANT,
                    6,
                    generation_id=str(uuid.uuid4()),
                    ttl=timedelta(minutes=5),
                    api_key_id=KEY,
                )
        async with sessions() as session:
            spent = await session.scalar(
                select(ApiKeySpend.spent).where(ApiKeySpend.spend_key_id == KEY)
            )
            assert spent == 20
            assert await ledger.get_balance(session, TENANT) == 70 + 20 - 20
            assert (await audit_ledger(session, tenant_ids=[TENANT])).ok
        # The database itself refuses what the rules forbid.
        for statement in (
            "UPDATE api_keys SET limit_period = 'week' WHERE id = :key",
            "UPDATE api_keys SET credit_limit = -1 WHERE id = :key",
            "UPDATE api_key_spend SET spent = -1 WHERE spend_key_id = :key",
        ):
            with pytest.raises(IntegrityError):
                async with sessions() as session, session.begin():
                    await session.execute(text(statement), {"key": KEY})
    finally:
        await engine.dispose()


def test_upgrading_a_0004_database_with_data(fresh_url: str) -> None:
    upgrade(fresh_url, "0004")
    asyncio.run(_write_0004_rows(fresh_url))
    upgrade(fresh_url)
    asyncio.run(_check_upgraded(fresh_url))
