"""Dependencies failing under a live gateway: storage down, database down, upstream slow.

Each gives the documented status with a clear message, charges nothing for what the
caller did not get, leaves a ledger that passes the audit, and the gateway recovers by
itself once the dependency is back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.credits.ledger import get_balance
from app.db.engine import create_engine, create_sessionmaker
from app.db.models import CreditHold, Generation, utcnow
from app.main import create_app
from tests.support.gateway import Stack, gateway_settings
from tests.support.locks import rows_locked
from tests.support.process import (
    EMULATOR_STATE_PATH,
    GatewayProcess,
    ProcessTenant,
    create_tenant,
    fresh_database,
    gateway_env,
    imagegate,
    run_in_session,
)
from tests.support.proxy import TcpProxy, postgres_target
from tests.support.servers import serve_in_thread
from tests.support.services import S3Service

pytestmark = pytest.mark.slow  # outages, proxies and subprocess gateways: 10-27 s each here

T = TypeVar("T")

GENERATE = "/api/v1/generate-image"
PRICE = 4  # google/gemini-2.5-flash-image
BODY = {"prompt": "a red bicycle leaning on a wall"}


# --------------------------------------------------------------------------- storage


async def _open_holds(stack: Stack, tenant_id: str) -> int:
    async with stack.sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(CreditHold)
            .where(CreditHold.tenant_id == tenant_id, CreditHold.status == "open")
        )
    return int(count or 0)


async def test_storage_outage_is_503_and_charges_nothing(
    postgres_stack: Stack, s3_endpoint: S3Service
) -> None:
    tenant = await postgres_stack.new_tenant(credits=20)
    store = s3_endpoint.client()
    bucket = postgres_stack.settings.s3_bucket
    async with postgres_stack.client() as client:
        with s3_endpoint.stopped():
            response = await client.post(
                GENERATE, headers=tenant.auth, json={**BODY, "numImages": 2}
            )
        assert response.status_code == 503, response.text
        error = response.json()
        assert error["code"] == "dependency_unavailable"
        assert "storage is unavailable" in error["error"]
        assert "no credits were charged" in error["error"]
        assert await postgres_stack.balance(tenant) == 20
        assert await _open_holds(postgres_stack, tenant.id) == 0
        listing = store.list_objects_v2(Bucket=bucket, Prefix=f"{tenant.id}/")
        assert listing.get("KeyCount", 0) == 0

        # The storage server is back: the same gateway serves without a restart.
        response = await client.post(GENERATE, headers=tenant.auth, json=BODY)
        assert response.status_code == 200, response.text
        assert response.json()["creditsRemaining"] == 20 - PRICE
    assert await postgres_stack.balance(tenant) == 20 - PRICE
    assert (await postgres_stack.audit(tenant)).ok


# --------------------------------------------------------------------------- database


@pytest.fixture
def proxied_database(postgres_url: str) -> Iterator[tuple[str, str, TcpProxy]]:
    """(direct URL, URL through a proxy, the proxy) for a fresh, migrated database."""
    direct = fresh_database(postgres_url)
    target, template = postgres_target(direct)
    proxy = TcpProxy(target).start()
    try:
        yield direct, template.format(port=proxy.port), proxy
    finally:
        proxy.stop()


def _wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """The probe's first true answer."""
    deadline = time.monotonic() + timeout
    while not (answer := probe()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return answer


def _holds(database_url: str, tenant: ProcessTenant) -> list[CreditHold]:
    async def work(session: AsyncSession) -> list[CreditHold]:
        return list(
            await session.scalars(select(CreditHold).where(CreditHold.tenant_id == tenant.id))
        )

    return run_in_session(database_url, work)


def _balance(database_url: str, tenant: ProcessTenant) -> int:
    async def work(session: AsyncSession) -> int:
        return await get_balance(session, tenant.id)

    return run_in_session(database_url, work)


def test_database_outage_is_503_and_charges_nothing(
    proxied_database: tuple[str, str, TcpProxy],
    spawn_gateway: Callable[[dict[str, str]], GatewayProcess],
    tmp_path: Path,
) -> None:
    direct, proxied, proxy = proxied_database
    env = gateway_env(
        tmp_path / "data",
        database_url=proxied,
        hold_ttl_seconds=300,
        upstream_deadline_seconds=60,
    )
    gateway = spawn_gateway(env)
    tenant = create_tenant(env, "dbdown", credits=20)

    def generate(**body: object) -> httpx.Response:
        return httpx.post(
            f"{gateway.base_url}{GENERATE}",
            headers=tenant.auth,
            json={**BODY, **body},
            timeout=60,
        )

    assert generate().status_code == 200  # the pool holds live connections now

    # Down before the request: authentication cannot even look the key up.
    with proxy.down():
        for _ in range(2):  # with connections pooled (pre-ping finds them dead), then none
            response = generate()
            assert response.status_code == 503, response.text
            assert response.json() == {
                "error": "The database is unavailable; nothing was charged. Retry shortly.",
                "code": "dependency_unavailable",
            }
    assert _balance(direct, tenant) == 20 - PRICE

    # Back: served again by the same process, and only the successes were charged.
    response = generate()
    assert response.status_code == 200, response.text
    assert _balance(direct, tenant) == 20 - 2 * PRICE

    # Down in the middle of a generation, after the reservation: the gateway cannot
    # settle, answers 503, and the hold it could not release expires into the sweeper.
    gateway.set_faults({"kind": "delay", "seconds": 2})
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(generate)
        _wait_for(
            "the reservation", lambda: any(h.status == "open" for h in _holds(direct, tenant))
        )
        with proxy.down():
            response = pending.result(timeout=60)
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "dependency_unavailable"
    assert _balance(direct, tenant) == 20 - 3 * PRICE  # held, not charged
    _expire_the_open_hold(direct, env, tenant)
    assert _balance(direct, tenant) == 20 - 2 * PRICE


def _expire_the_open_hold(direct: str, env: dict[str, str], tenant: ProcessTenant) -> None:
    """The one open hold (a generation the gateway could not settle) expires; the sweeper
    releases it, abandons its generation, and the ledger and the store audit clean."""
    [hold] = [h for h in _holds(direct, tenant) if h.status == "open"]

    async def expire(session: AsyncSession) -> None:
        await session.execute(
            update(CreditHold)
            .where(CreditHold.id == hold.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

    run_in_session(direct, expire)
    _wait_for(
        "the sweeper to release the hold",
        lambda: all(h.status != "open" for h in _holds(direct, tenant)),
    )

    async def generation_status(session: AsyncSession) -> str | None:
        return await session.scalar(
            select(Generation.status).where(Generation.id == hold.generation_id)
        )

    assert run_in_session(direct, generation_status) == "abandoned"
    audit = imagegate(env, "credits", "audit")
    assert (audit["_exit"], audit["problems"]) == (0, [])
    scan = imagegate(env, "storage", "orphans")
    assert (scan["_exit"], scan["orphans"]) == (0, [])


def _waiting_on_a_lock(database_url: str) -> bool:
    async def work(session: AsyncSession) -> bool:
        waiting = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return bool(waiting)

    return run_in_session(database_url, work)


def test_a_database_that_stalls_mid_statement_is_503_and_charges_nothing(
    proxied_database: tuple[str, str, TcpProxy],
    spawn_gateway: Callable[[dict[str, str]], GatewayProcess],
    tmp_path: Path,
) -> None:
    """The settlement's statement is on the server (waiting for a row lock) when the
    server stops answering on the open connection: no reset, no TCP error, and the
    server's own cancel at its statement_timeout never arrives. Only the client's
    command timeout ends the wait; without it the request hangs past the client's 30 s."""
    direct, proxied, proxy = proxied_database
    env = gateway_env(
        tmp_path / "data",
        database_url=proxied,
        db_statement_timeout_seconds=3,
        database_connect_timeout_seconds=1,
        hold_ttl_seconds=300,
        upstream_deadline_seconds=60,
    )
    gateway = spawn_gateway(env)
    tenant = create_tenant(env, "stalled", credits=20)
    with httpx.Client(base_url=gateway.base_url, headers=tenant.auth, timeout=30) as client:
        assert client.post(GENERATE, json=BODY).status_code == 200
        gateway.set_faults({"kind": "delay", "seconds": 2})
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(client.post, GENERATE, json=BODY)
            hold = _wait_for(
                "the reservation",
                lambda: next((h for h in _holds(direct, tenant) if h.status == "open"), None),
            )
            with rows_locked(direct, select(CreditHold.id).where(CreditHold.id == hold.id)):
                _wait_for("the settlement to wait", lambda: _waiting_on_a_lock(direct))
                with proxy.stall():
                    response = pending.result(timeout=60)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "dependency_unavailable"
        assert _balance(direct, tenant) == 20 - 2 * PRICE  # held, not charged
        gateway.set_faults()
        # Answering again: the stalled connections were discarded, new ones serve.
        assert client.post(GENERATE, json=BODY).status_code == 200
    _expire_the_open_hold(direct, env, tenant)
    assert _balance(direct, tenant) == 20 - 2 * PRICE


def test_a_database_that_never_answers_is_503_within_the_connect_timeout(
    proxied_database: tuple[str, str, TcpProxy],
    spawn_gateway: Callable[[dict[str, str]], GatewayProcess],
    tmp_path: Path,
) -> None:
    """Packets dropped, not refused: asyncpg alone would wait 60 s per connection; the
    client gives up after 30 s, so only the configured connect timeout lets this pass."""
    direct, proxied, proxy = proxied_database
    env = gateway_env(tmp_path / "data", database_url=proxied, database_connect_timeout_seconds=2)
    gateway = spawn_gateway(env)
    tenant = create_tenant(env, "blackhole", credits=20)
    with httpx.Client(base_url=gateway.base_url, headers=tenant.auth, timeout=30) as client:
        assert client.post(GENERATE, json=BODY).status_code == 200
        with proxy.black_hole():
            for _ in range(2):  # the pooled connections are cut, then none can be opened
                response = client.post(GENERATE, json=BODY)
                assert response.status_code == 503, response.text
                assert response.json()["code"] == "dependency_unavailable"
        assert client.post(GENERATE, json=BODY).status_code == 200
    assert _balance(direct, tenant) == 20 - 2 * PRICE
    assert _holds(direct, tenant) and all(h.status != "open" for h in _holds(direct, tenant))


# --------------------------------------------------------------------------- upstream


@pytest_asyncio.fixture
async def impatient_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """An embedded gateway that gives each upstream attempt 0.5 s, three attempts."""
    settings = gateway_settings(
        data_dir=tmp_path / "data",
        upstream_attempt_timeout_seconds=0.5,
        upstream_max_attempts=3,
    )
    with serve_in_thread(create_app(settings)) as base_url:
        engine = create_engine(settings.resolved_database_url)
        try:
            yield Stack("impatient", settings, base_url, engine, create_sessionmaker(engine))
        finally:
            await engine.dispose()


async def test_upstream_timeouts_are_retried_then_refunded(impatient_stack: Stack) -> None:
    stack = impatient_stack
    tenant = await stack.new_tenant(credits=20)
    async with stack.client() as client, stack.control_client() as control:
        await control.delete(EMULATOR_STATE_PATH)  # zero the call counter
        await stack.set_faults({"kind": "delay", "seconds": 5, "count": 3})
        response = await client.post(GENERATE, headers=tenant.auth, json=BODY)
        assert response.status_code == 500, response.text
        error = response.json()
        assert error["code"] == "generation_failed"
        assert "did not answer in time" in error["error"]
        assert "credits were refunded" in error["error"]
        state = (await control.get(EMULATOR_STATE_PATH)).json()
        assert state["calls"] == 3  # every attempt was made, each one timed out

        # The upstream is fast again: the next request succeeds and is charged once.
        response = await client.post(GENERATE, headers=tenant.auth, json=BODY)
        assert response.status_code == 200, response.text
    assert await stack.balance(tenant) == 20 - PRICE
    assert await _open_holds(stack, tenant.id) == 0
    assert (await stack.audit(tenant)).ok
