"""Webhooks of async jobs over real HTTP: a gateway on Postgres+S3 (its own database) posts
each finished job's body, signed, to a receiver on a loopback port; the job shows its
attempts; the request and the admin API refuse what they must."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from standardwebhooks import Webhook

from app.db.migrate import upgrade
from app.settings import Settings
from tests.support.gateway import Stack, TenantHandle, create_database, stack_in_thread
from tests.support.webhook_receiver import Receiver, webhook_receiver

PATH = "/api/v1/generate-image"
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def hooked(postgres_settings: Settings, postgres_url: str) -> AsyncIterator[Stack]:
    """A gateway of its own (a fresh database: the session's Postgres gateway would try
    these webhooks too, refusing loopback) that may post to loopback, retrying fast."""
    database_url = await create_database(postgres_url)
    await asyncio.to_thread(upgrade, database_url)
    settings = postgres_settings.model_copy(
        update={
            "database_url": database_url,
            "webhook_allow_private": True,
            "webhook_retry_delays_seconds": [0.05],
        }
    )
    async for stack in stack_in_thread(settings, "webhooks"):
        yield stack


def _admin(stack: Stack) -> dict[str, str]:
    assert stack.settings.admin_token is not None
    return {"Authorization": f"Bearer {stack.settings.admin_token.get_secret_value()}"}


async def _secret(stack: Stack, tenant: str, **body: Any) -> httpx.Response:
    async with stack.client() as client:
        return await client.post(
            f"/admin/v1/tenants/{tenant}/webhook-secret", json=body or None, headers=_admin(stack)
        )


async def _tenant_with_secret(stack: Stack) -> tuple[TenantHandle, str]:
    tenant = await stack.new_tenant(credits=100)
    response = await _secret(stack, tenant.name)
    assert response.status_code == 200, response.text
    return tenant, str(response.json()["secret"])


async def _submit(stack: Stack, tenant: TenantHandle, url: str, **headers: str) -> httpx.Response:
    async with stack.client() as client:
        return await client.post(
            PATH,
            json={"prompt": "a lighthouse", "webhookUrl": url},
            headers={**tenant.auth, **ASYNC, **headers},
        )


async def _webhook_settled(stack: Stack, tenant: TenantHandle, location: str) -> dict[str, Any]:
    async with stack.client() as client:
        for _ in range(400):
            job = (await client.get(location, headers=tenant.auth)).json()
            if job.get("webhook", {}).get("status") not in (None, "pending"):
                return dict(job)
            await asyncio.sleep(0.05)
    raise AssertionError("the webhook never settled")


def _of_job(receiver: Receiver, path: str, job_id: str) -> list[Any]:
    return [r for r in receiver.received(path) if f'"jobId":"{job_id}"'.encode() in r.body]


async def test_a_finished_job_posts_its_signed_body(hooked: Stack, receiver: Receiver) -> None:
    tenant, secret = await _tenant_with_secret(hooked)
    submitted = await _submit(hooked, tenant, receiver.url("/ok"))
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    job = await _webhook_settled(hooked, tenant, submitted.headers["location"])
    (got,) = _of_job(receiver, "/ok", job_id)
    posted = Webhook(secret).verify(got.body, got.headers)
    # The body polling shows, without the webhook's own log.
    assert "webhook" not in posted
    for field in ("jobId", "status", "id", "model", "numImages", "creditsCharged", "progress"):
        assert posted[field] == job[field]
    assert posted["status"] == "succeeded" and len(posted["images"]) == 1
    async with hooked.client() as client:
        image = await client.get(posted["images"][0]["url"])
    assert image.status_code == 200
    webhook = job["webhook"]
    assert webhook["url"] == receiver.url("/ok") and webhook["status"] == "delivered"
    assert webhook["nextAttemptAt"] is None
    assert [(d["attempt"], d["statusCode"], d["error"]) for d in webhook["deliveries"]] == [
        (1, 200, None)
    ]


async def test_a_failed_job_is_posted_and_a_500_retried(hooked: Stack, receiver: Receiver) -> None:
    tenant, secret = await _tenant_with_secret(hooked)
    await hooked.set_faults({"kind": "error", "status": 500, "count": 1000})
    try:
        submitted = await _submit(hooked, tenant, receiver.url("/flaky"))
        assert submitted.status_code == 202, submitted.text
        job = await _webhook_settled(hooked, tenant, submitted.headers["location"])
    finally:
        await hooked.set_faults()
    got = _of_job(receiver, "/flaky", submitted.json()["id"])
    assert len(got) == 2 and got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
    posted = Webhook(secret).verify(got[1].body, got[1].headers)
    assert posted["status"] == "failed" and posted["error"] == job["error"]
    assert [(d["attempt"], d["statusCode"]) for d in job["webhook"]["deliveries"]] == [
        (1, 500),
        (2, 200),
    ]
    assert job["webhook"]["status"] == "delivered"


async def test_a_job_without_a_webhook_shows_none(hooked: Stack) -> None:
    tenant = await hooked.new_tenant(credits=100)
    async with hooked.client() as client:
        submitted = await client.post(
            PATH, json={"prompt": "plain"}, headers={**tenant.auth, **ASYNC}
        )
    job = await hooked.wait_for_job(tenant, submitted.headers["location"])
    assert "webhook" not in job


async def test_webhook_url_without_respond_async_is_a_400(hooked: Stack) -> None:
    tenant, _ = await _tenant_with_secret(hooked)
    async with hooked.client() as client:
        response = await client.post(
            PATH, json={"prompt": "x", "webhookUrl": "https://example.com/in"}, headers=tenant.auth
        )
    assert response.status_code == 400
    assert response.json()["field"] == "webhookUrl"
    assert "respond-async" in response.json()["error"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/in", "http:// or https://"),
        ("https://u:p@example.com/in", "user name or password"),
        ("https://example.com/" + "a" * 2100, "longer than 2048"),
    ],
)
async def test_a_bad_webhook_url_is_a_400_and_no_job(hooked: Stack, url: str, message: str) -> None:
    tenant, _ = await _tenant_with_secret(hooked)
    response = await _submit(hooked, tenant, url)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "webhookUrl" and message in response.json()["error"]


async def test_a_tenant_without_a_secret_is_told_the_operator_command(
    hooked: Stack, receiver: Receiver
) -> None:
    tenant = await hooked.new_tenant(credits=100)
    response = await _submit(hooked, tenant, receiver.url("/ok"))
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "webhook_secret_missing" and body["field"] == "webhookUrl"
    assert f"imagegate tenants webhook-secret {tenant.name}" in body["error"]
    assert await hooked.balance(tenant) == 100


async def test_the_admin_api_creates_keeps_and_rotates_the_secret(hooked: Stack) -> None:
    tenant = await hooked.new_tenant()
    first = await _secret(hooked, tenant.name)
    assert first.status_code == 200, first.text
    assert first.json()["created"] is True and first.json()["tenant"] == tenant.name
    secret = first.json()["secret"]
    Webhook(secret)  # the package accepts it as a Standard Webhooks secret
    assert secret.startswith("whsec_")
    again = await _secret(hooked, tenant.name)
    assert again.json() == {"tenant": tenant.name, "secret": secret, "created": False}
    rotated = await _secret(hooked, tenant.name, rotate=True)
    assert rotated.json()["created"] is True and rotated.json()["secret"] != secret
    assert (await _secret(hooked, tenant.name)).json()["secret"] == rotated.json()["secret"]


async def test_the_admin_api_refuses_a_bad_body_and_an_unknown_tenant(hooked: Stack) -> None:
    tenant = await hooked.new_tenant()
    bad = await _secret(hooked, tenant.name, rotate="yes")
    assert bad.status_code == 400 and bad.json()["field"] == "rotate"
    missing = await _secret(hooked, f"nobody-{uuid.uuid4().hex[:8]}")
    assert missing.status_code == 404
    async with hooked.client() as client:
        anonymous = await client.post(f"/admin/v1/tenants/{tenant.name}/webhook-secret")
    assert anonymous.status_code == 401
