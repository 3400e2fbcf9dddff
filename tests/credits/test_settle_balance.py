"""settle_with_balance: the balance after a settle, from the settle's own UPDATE."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.credits import ledger
from app.db.engine import create_engine
from app.db.models import Base
from tests.support.ledger import Sessions, new_tenant, reserve
from tests.support.sqlite_hops import count_hops


async def _tenant_with_hold(sessions: Sessions, amount: int) -> tuple[str, str]:
    tenant_id = await new_tenant(sessions, credits=10)
    return tenant_id, await reserve(sessions, tenant_id, amount)


@pytest.mark.parametrize("captured", [0, 2, 4])
async def test_returns_the_balance_after_and_settles_once(
    sessions: Sessions, captured: int
) -> None:
    tenant_id, hold_id = await _tenant_with_hold(sessions, 4)
    async with sessions() as session, session.begin():
        balance = await ledger.settle_with_balance(session, hold_id, captured)
        assert balance == await ledger.get_balance(session, tenant_id) == 10 - captured
    async with sessions() as session, session.begin():
        assert await ledger.settle_with_balance(session, hold_id, captured) is None
        assert await ledger.get_balance(session, tenant_id) == 10 - captured
    async with sessions() as session:
        sums = await ledger.entry_sums(session, [tenant_id])
    assert sums[tenant_id] == 10 - captured  # the ledger agrees with the balance


async def test_a_settle_on_sqlite_sends_only_the_commit_to_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hops.db'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        _, hold_id = await _tenant_with_hold(sessions, 4)
        sent = count_hops(monkeypatch)
        async with sessions() as session, session.begin():
            assert await ledger.settle_with_balance(session, hold_id, 4) == 6
        # The settle's writes run inside the write lock on the loop; a balance SELECT
        # would be one more hop.
        assert sent == ["commit"]
    finally:
        await engine.dispose()
