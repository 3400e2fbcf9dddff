"""Crash safety with a real server process: kill -9 it in the middle of a generation.

The generation asks for two images; the emulator answers one at once (it is stored) and
holds the other, so the process dies with an open credit hold, a pending generation and
an object in storage that has no image record. After a restart the sweeper must leave
the hold alone until it expires, then release it, mark the generation abandoned and
delete the object; the audit passes, the balance is whole and no orphan remains.

Expiry is reached by moving the hold's `expires_at` into the past (the database's view
of "TTL seconds later"), not by sleeping: the settings require the hold TTL to exceed the
upstream deadline + 60 s, and that safety rule stays as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.credits.ledger import get_balance
from app.db.models import CreditHold, Generation, LedgerEntry, utcnow
from tests.support.process import (
    GatewayProcess,
    ProcessTenant,
    create_tenant,
    fresh_database,
    gateway_env,
    imagegate,
    run_in_session,
)

pytestmark = pytest.mark.slow  # gateway processes killed and restarted: 30-65 s each here

PRICE = 4  # google/gemini-2.5-flash-image
HOLD_TTL = 300
SWEEP_INTERVAL = 0.5

T = TypeVar("T")


@dataclass
class Backend:
    name: str
    env: dict[str, str]
    database_url: str
    list_keys: Callable[[str], list[str]]  # stored object keys under a prefix


@pytest.fixture(params=["postgres", "embedded"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    settings: dict[str, Any] = {
        "hold_ttl_seconds": HOLD_TTL,
        "upstream_deadline_seconds": 120,
        "sweep_interval_seconds": SWEEP_INTERVAL,
    }
    data_dir = tmp_path / "data"
    if request.param == "embedded":
        images = data_dir / "images"

        def local_keys(prefix: str) -> list[str]:
            root = images / prefix
            if not root.exists():
                return []
            # Whole objects only: a write in progress is a hidden temporary file.
            return sorted(
                str(p.relative_to(images))
                for p in root.rglob("*.webp")
                if p.is_file() and not p.name.startswith(".")
            )

        return Backend(
            "embedded",
            gateway_env(data_dir, **settings),
            f"sqlite+aiosqlite:///{data_dir / 'imagegate.db'}",
            local_keys,
        )

    s3 = request.getfixturevalue("s3_endpoint")
    database_url = fresh_database(request.getfixturevalue("postgres_url"))
    bucket = s3.create_bucket("crash")
    client = s3.client()

    def s3_keys(prefix: str) -> list[str]:
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for item in page.get("Contents", []))

    env = gateway_env(data_dir, database_url=database_url, s3=s3, bucket=bucket, **settings)
    return Backend("postgres", env, database_url, s3_keys)


@pytest.fixture
def gateway(backend: Backend, tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(backend.env, tmp_path / "gateway.log").start()
    try:
        yield process
    finally:
        process.terminate()


def _wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def _holds(backend: Backend, tenant: ProcessTenant) -> list[CreditHold]:
    async def work(session: AsyncSession) -> list[CreditHold]:
        rows = await session.scalars(select(CreditHold).where(CreditHold.tenant_id == tenant.id))
        return list(rows)

    return run_in_session(backend.database_url, work)


def _generation(backend: Backend, generation_id: str) -> Generation:
    async def work(session: AsyncSession) -> Generation:
        generation = await session.get(Generation, generation_id)
        assert generation is not None
        return generation

    return run_in_session(backend.database_url, work)


def _entries(backend: Backend, hold_id: str) -> list[tuple[str, int]]:
    async def work(session: AsyncSession) -> list[tuple[str, int]]:
        rows = await session.execute(
            select(LedgerEntry.kind, LedgerEntry.amount)
            .where(LedgerEntry.hold_id == hold_id)
            .order_by(LedgerEntry.id)
        )
        return [(kind, int(amount)) for kind, amount in rows]

    return run_in_session(backend.database_url, work)


def _expire_now(backend: Backend, hold_id: str) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(
            update(CreditHold)
            .where(CreditHold.id == hold_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

    run_in_session(backend.database_url, work)


def _generate(gateway: GatewayProcess, tenant: ProcessTenant, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/api/v1/generate-image",
        headers=tenant.auth,
        json={"prompt": "a lighthouse in a storm", **body},
        timeout=120,
    )


def _balance(backend: Backend, tenant: ProcessTenant) -> int:
    async def work(session: AsyncSession) -> int:
        return await get_balance(session, tenant.id)

    return run_in_session(backend.database_url, work)


def test_kill_9_mid_generation_then_restart_releases_everything(
    backend: Backend, gateway: GatewayProcess
) -> None:
    tenant = create_tenant(backend.env, "crash", credits=20)
    # Two parallel upstream calls: the first to arrive hangs, the other is answered.
    gateway.set_faults({"kind": "delay", "seconds": 120})

    with ThreadPoolExecutor(max_workers=1) as pool:
        request = pool.submit(_generate, gateway, tenant, numImages=2)
        [hold] = _wait_for("the credit hold", lambda: _holds(backend, tenant))
        [stored_key] = _wait_for("one stored object", lambda: backend.list_keys(tenant.id))
        assert hold.generation_id is not None and hold.generation_id in stored_key
        gateway.kill()
        with pytest.raises(httpx.TransportError):
            request.result(timeout=30)

    # The dead process left: an open hold of 2 x price, a pending generation, one object.
    assert (hold.status, hold.amount) == ("open", 2 * PRICE)
    assert hold.expires_at - hold.created_at == timedelta(seconds=HOLD_TTL)
    assert _generation(backend, hold.generation_id).status == "pending"
    assert _balance(backend, tenant) == 20 - 2 * PRICE
    assert imagegate(backend.env, "credits", "audit")["ok"] is True  # an open hold is valid

    gateway.start()
    # Several sweeps later the hold, not yet expired, is untouched: a slow request that is
    # still running elsewhere (another replica) must keep its reservation.
    time.sleep(6 * SWEEP_INTERVAL)
    [still_open] = _holds(backend, tenant)
    assert still_open.status == "open"
    # The object of an in-flight generation is not an orphan either.
    scan = imagegate(backend.env, "storage", "orphans")
    assert (scan["_exit"], scan["orphans"]) == (0, [])
    assert backend.list_keys(tenant.id) == [stored_key]

    _expire_now(backend, hold.id)
    [released] = _wait_for(
        "the sweeper to settle the expired hold",
        lambda: [h for h in _holds(backend, tenant) if h.status != "open"],
    )
    assert (released.status, released.captured) == ("released", 0)
    assert _entries(backend, hold.id) == [("hold", -2 * PRICE), ("release", 2 * PRICE)]
    generation = _generation(backend, hold.generation_id)
    assert (generation.status, generation.error_code) == ("abandoned", "hold_expired")
    assert _balance(backend, tenant) == 20
    audit = imagegate(backend.env, "credits", "audit")
    assert (audit["_exit"], audit["ok"], audit["problems"]) == (0, True, [])
    # The sweeper deleted what the dead generation stored; nothing is left unrecorded.
    _wait_for("the abandoned object to be deleted", lambda: not backend.list_keys(tenant.id))
    scan = imagegate(backend.env, "storage", "orphans")
    assert (scan["_exit"], scan["orphans"]) == (0, [])

    # And the restarted gateway serves and bills normally.
    response = _generate(gateway, tenant)
    assert response.status_code == 200, response.text
    assert response.json()["creditsRemaining"] == 20 - PRICE
