"""The webhook dispatcher against a real database (SQLite and Postgres) and a real HTTP
receiver on a loopback port: signing, retries, exactly one POST per attempt with two
dispatchers racing, restarts, and the address, redirect and answer-size guards."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from app.db.models import Tenant, WebhookAttempt, WebhookDelivery
from app.db.statuses import WebhookStatus
from app.jobs import service as jobs
from app.jobs import webhooks
from app.jobs.webhook_dispatcher import WebhookDispatcher, webhook_client
from app.settings import Settings
from app.tenants import service as tenants
from app.tenants.webhook_secret import webhook_secret
from tests.support.webhook_receiver import Receiver, webhook_receiver

Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class Made:
    tenant_id: str
    job_id: str
    delivery_id: str
    secret: str


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


async def _render(tenant_id: str, job_id: str, base_url: str) -> dict[str, Any]:
    return {"jobId": job_id, "status": "succeeded", "baseUrl": base_url}


async def _finished_job(sessions: Sessions, url: str) -> Made:
    """A tenant with a secret and a job that just ended, whose webhook is due."""
    async with sessions() as session, session.begin():
        tenant = await tenants.create_tenant(session, f"wh-{uuid.uuid4().hex[:10]}")
        secret, _ = await webhook_secret(session, tenant.name, rotate=False)
        job = await jobs.create_job(
            session,
            job_id=str(uuid.uuid4()),
            tenant_id=tenant.id,
            api_key_id=None,  # type: ignore[arg-type]
            request={"prompt": "p"},
            source_mime_types=[],
            num_images=1,
        )
        delivery = await webhooks.create_delivery(
            session,
            job_id=job.id,
            tenant_id=tenant.id,
            webhook=webhooks.WebhookRequest(url=url, base_url="http://gateway.test"),
        )
        await jobs.finish(session, job.id)
    return Made(tenant.id, job.id, delivery.id, secret)


def _dispatcher(
    sessions: Sessions, client: httpx.AsyncClient, **overrides: Any
) -> WebhookDispatcher:
    settings = Settings(
        _env_file=None,
        **{
            "webhook_allow_private": True,
            "webhook_retry_delays_seconds": [0.05],
            "webhook_timeout_seconds": 5.0,
            **overrides,
        },
    )
    return WebhookDispatcher.from_settings(
        settings, sessions=sessions, client=client, render=_render, poll_interval=0.02
    )


@asynccontextmanager
async def _running(*dispatchers: WebhookDispatcher) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(d.run()) for d in dispatchers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _settled(sessions: Sessions, *delivery_ids: str) -> list[WebhookDelivery]:
    """The deliveries once none is pending any more (polled; a generous deadline)."""
    for _ in range(1500):
        async with sessions() as session:
            rows = list(
                await session.scalars(
                    select(WebhookDelivery).where(WebhookDelivery.id.in_(delivery_ids))
                )
            )
        if all(row.status != WebhookStatus.PENDING for row in rows):
            return rows
        await asyncio.sleep(0.02)
    raise AssertionError("deliveries still pending")


async def _attempts(sessions: Sessions, delivery_id: str) -> list[WebhookAttempt]:
    async with sessions() as session:
        return list(
            await session.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == delivery_id)
                .order_by(WebhookAttempt.attempt)
            )
        )


def _client() -> httpx.AsyncClient:
    return webhook_client(Settings(_env_file=None))


async def _deliver(
    sessions: Sessions, url: str, **overrides: Any
) -> tuple[Made, WebhookDelivery, list[WebhookAttempt]]:
    made = await _finished_job(sessions, url)
    async with _client() as client, _running(_dispatcher(sessions, client, **overrides)):
        (row,) = await _settled(sessions, made.delivery_id)
    return made, row, await _attempts(sessions, made.delivery_id)


def _for(receiver: Receiver, path: str, made: Made) -> list[Any]:
    return [r for r in receiver.received(path) if json.loads(r.body)["jobId"] == made.job_id]


async def test_a_signed_webhook_reaches_the_receiver_and_verifies(
    sessions: Sessions, receiver: Receiver
) -> None:
    # By name: resolved once and connected to by address, the name kept in Host.
    made, row, attempts = await _deliver(sessions, receiver.url("/ok", host="localhost"))
    (got,) = _for(receiver, "/ok", made)
    assert got.headers["host"] == receiver.url("", host="localhost").split("//")[1]
    assert got.headers["webhook-id"] == made.delivery_id
    assert got.headers["content-type"] == "application/json"
    verified = Webhook(made.secret).verify(got.body, got.headers)
    assert verified == {
        "jobId": made.job_id,
        "status": "succeeded",
        "baseUrl": "http://gateway.test",
    }
    # Tampering breaks it: the check above could fail.
    with pytest.raises(Exception, match="signature"):
        Webhook(made.secret).verify(got.body.replace(b"succeeded", b"failed"), got.headers)
    assert row.status == WebhookStatus.DELIVERED and row.last_status_code == 200
    assert [(a.attempt, a.status_code, a.error) for a in attempts] == [(1, 200, None)]


async def test_a_500_is_retried_with_the_same_id_and_signature_scheme(
    sessions: Sessions, receiver: Receiver
) -> None:
    made, row, attempts = await _deliver(sessions, receiver.url("/flaky"))
    got = _for(receiver, "/flaky", made)
    assert len(got) == 2
    assert {r.headers["webhook-id"] for r in got} == {made.delivery_id}
    for received in got:
        Webhook(made.secret).verify(received.body, received.headers)
    assert row.status == WebhookStatus.DELIVERED and row.attempts == 2
    assert [(a.attempt, a.status_code, a.error) for a in attempts] == [
        (1, 500, "HTTP 500"),
        (2, 200, None),
    ]


async def test_gives_up_after_the_last_attempt(sessions: Sessions, receiver: Receiver) -> None:
    made, row, attempts = await _deliver(sessions, receiver.url("/fail"), webhook_max_attempts=3)
    assert len(_for(receiver, "/fail", made)) == 3
    assert row.status == WebhookStatus.FAILED and row.next_attempt_at is None
    assert [a.status_code for a in attempts] == [500, 500, 500]


async def test_two_dispatchers_racing_make_each_attempt_once(
    sessions: Sessions, receiver: Receiver
) -> None:
    made = [await _finished_job(sessions, receiver.url("/ok")) for _ in range(20)]
    async with _client() as client:
        one, two = _dispatcher(sessions, client), _dispatcher(sessions, client)
        async with _running(one, two):
            rows = await _settled(sessions, *(m.delivery_id for m in made))
    assert {row.status for row in rows} == {WebhookStatus.DELIVERED}
    ids = [r.headers["webhook-id"] for r in receiver.received("/ok")]
    for each in made:
        assert ids.count(each.delivery_id) == 1
        assert [a.attempt for a in await _attempts(sessions, each.delivery_id)] == [1]


async def test_a_delivery_left_by_a_dead_dispatcher_is_made_after_a_restart(
    sessions: Sessions, receiver: Receiver
) -> None:
    made = await _finished_job(sessions, receiver.url("/ok"))
    # A dispatcher claimed it (attempt 1) and died before posting; its lease ran out.
    async with sessions() as session, session.begin():
        claimed = await webhooks.claim_next(session, timedelta(seconds=-1), max_attempts=6)
    assert claimed is not None and claimed.id == made.delivery_id
    async with _client() as client, _running(_dispatcher(sessions, client)):
        (row,) = await _settled(sessions, made.delivery_id)
    assert len(_for(receiver, "/ok", made)) == 1
    assert row.status == WebhookStatus.DELIVERED
    assert [a.attempt for a in await _attempts(sessions, made.delivery_id)] == [2]


async def test_a_delivery_whose_attempts_all_died_unrecorded_is_failed_not_claimed_again(
    sessions: Sessions, receiver: Receiver
) -> None:
    """Every claim counts an attempt; claims that never recorded one (a body that would
    not render, dispatchers dying) must not make a delivery claimable forever."""
    made = await _finished_job(sessions, receiver.url("/ok"))
    for _ in range(2):
        async with sessions() as session, session.begin():
            assert await webhooks.claim_next(session, timedelta(seconds=-1), max_attempts=2)
    async with sessions() as session, session.begin():
        assert await webhooks.claim_next(session, timedelta(seconds=-1), max_attempts=2) is None
    (row,) = await _settled(sessions, made.delivery_id)
    assert row.status == WebhookStatus.FAILED
    assert _for(receiver, "/ok", made) == []


async def test_a_private_address_is_refused_without_the_setting(
    sessions: Sessions, receiver: Receiver
) -> None:
    made, row, attempts = await _deliver(
        sessions, receiver.url("/ok", host="localhost"), webhook_allow_private=False
    )
    assert _for(receiver, "/ok", made) == []
    assert row.status == WebhookStatus.FAILED  # no retry: the address will not change
    (attempt,) = attempts
    assert attempt.status_code is None and attempt.error is not None
    assert "loopback" in attempt.error and "IMAGEGATE_WEBHOOK_ALLOW_PRIVATE" in attempt.error


async def test_a_redirect_is_not_followed(sessions: Sessions, receiver: Receiver) -> None:
    landed = len(receiver.received("/landing"))
    made, row, attempts = await _deliver(
        sessions, receiver.url("/redirect"), webhook_max_attempts=1
    )
    assert len(_for(receiver, "/redirect", made)) == 1
    assert len(receiver.received("/landing")) == landed
    assert row.status == WebhookStatus.FAILED
    assert [(a.status_code, a.error) for a in attempts] == [
        (302, "HTTP 302: redirects are not followed")
    ]


async def test_the_answer_is_not_read_beyond_the_bound(
    sessions: Sessions, receiver: Receiver
) -> None:
    # The receiver sends 8 KiB and then nothing until the client hangs up: a client
    # that read on would wait out its timeout and count the attempt failed.
    _, row, attempts = await _deliver(sessions, receiver.url("/stall"), webhook_max_attempts=1)
    assert row.status == WebhookStatus.DELIVERED
    assert [(a.status_code, a.error) for a in attempts] == [(200, None)]
    await _eventually(lambda: "/stall" in receiver.hung_up)


async def _eventually(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def test_an_attempt_is_signed_with_the_secret_as_it_is_then(
    sessions: Sessions, receiver: Receiver
) -> None:
    made = await _finished_job(sessions, receiver.url("/ok"))
    async with sessions() as session, session.begin():
        tenant = await session.get(Tenant, made.tenant_id)
        assert tenant is not None
        rotated, created = await webhook_secret(session, tenant.name, rotate=True)
    assert created and rotated != made.secret
    async with _client() as client, _running(_dispatcher(sessions, client)):
        await _settled(sessions, made.delivery_id)
    (got,) = _for(receiver, "/ok", made)
    Webhook(rotated).verify(got.body, got.headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(made.secret).verify(got.body, got.headers)
