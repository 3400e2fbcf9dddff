"""Idempotency-Key on POST /api/v1/generate-image, synchronous and with Prefer: respond-async."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from app.credits import ledger
from app.db.models import Generation, IdempotencyRecord, Job, utcnow
from tests.support.gateway import Stack

PATH = "/api/v1/generate-image"
PRICE = 4


def _headers(auth: dict[str, str], key: str) -> dict[str, str]:
    return {**auth, "Idempotency-Key": key}


async def _generations(stack: Stack, tenant_id: str) -> int:
    async with stack.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Generation).where(Generation.tenant_id == tenant_id)
        )
    return int(count or 0)


async def test_same_key_same_body_replays_without_charge(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    key = str(uuid.uuid4())
    body = {"prompt": "a red kite", "aspectRatio": "4:3"}
    async with stack.client() as client:
        first = await client.post(PATH, json=body, headers=_headers(tenant.auth, key))
        again = await client.post(PATH, json=body, headers=_headers(tenant.auth, key))
        image = await client.get(again.json()["images"][0]["url"])
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["images"][0]["fileSize"] == first.json()["images"][0]["fileSize"]
    assert image.status_code == 200 and len(image.content) == first.json()["images"][0]["fileSize"]
    assert await stack.balance(tenant) == 100 - PRICE
    assert await _generations(stack, tenant.id) == 1


async def test_same_key_other_body_is_409(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    key = str(uuid.uuid4())
    async with stack.client() as client:
        first = await client.post(PATH, json={"prompt": "one"}, headers=_headers(tenant.auth, key))
        other = await client.post(PATH, json={"prompt": "two"}, headers=_headers(tenant.auth, key))
    assert first.status_code == 200
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_conflict"
    assert "different request body" in other.json()["error"]
    assert await stack.balance(tenant) == 100 - PRICE


async def test_keys_are_scoped_by_tenant(stack: Stack) -> None:
    first, second = await stack.new_tenant(credits=10), await stack.new_tenant(credits=10)
    key = str(uuid.uuid4())
    async with stack.client() as client:
        a = await client.post(PATH, json={"prompt": "a"}, headers=_headers(first.auth, key))
        b = await client.post(PATH, json={"prompt": "b"}, headers=_headers(second.auth, key))
    assert (a.status_code, b.status_code) == (200, 200)
    assert a.json()["id"] != b.json()["id"]


async def test_duplicate_while_running_is_409_with_retry_after(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    key = str(uuid.uuid4())
    await stack.set_faults({"kind": "delay", "seconds": 1.5})
    try:
        async with stack.client() as client:
            slow = asyncio.create_task(
                client.post(PATH, json={"prompt": "slow"}, headers=_headers(tenant.auth, key))
            )
            await asyncio.sleep(0.5)
            duplicate = await client.post(
                PATH, json={"prompt": "slow"}, headers=_headers(tenant.auth, key)
            )
            original = await slow
    finally:
        await stack.set_faults()
    assert duplicate.status_code == 409
    assert duplicate.headers["retry-after"] == "2"
    assert "still running" in duplicate.json()["error"]
    assert original.status_code == 200
    assert await stack.balance(tenant) == 100 - PRICE


async def test_failed_request_releases_the_key(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    key = str(uuid.uuid4())
    await stack.set_faults({"kind": "error", "status": 500, "count": 1000})
    try:
        async with stack.client() as client:
            failed = await client.post(
                PATH, json={"prompt": "x"}, headers=_headers(tenant.auth, key)
            )
    finally:
        await stack.set_faults()
    async with stack.client() as client:
        retried = await client.post(PATH, json={"prompt": "x"}, headers=_headers(tenant.auth, key))
    assert failed.status_code == 500
    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers
    assert await stack.balance(tenant) == 100 - PRICE


async def test_expired_key_can_be_reused(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    key = str(uuid.uuid4())
    async with stack.client() as client:
        first = await client.post(PATH, json={"prompt": "old"}, headers=_headers(tenant.auth, key))
    async with stack.sessions() as session, session.begin():
        await session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.tenant_id == tenant.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    async with stack.client() as client:
        second = await client.post(PATH, json={"prompt": "new"}, headers=_headers(tenant.auth, key))
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["id"] != second.json()["id"]


async def test_malformed_key_is_400(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=10)
    async with stack.client() as client:
        response = await client.post(
            PATH, json={"prompt": "x"}, headers=_headers(tenant.auth, "x" * 300)
        )
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]
    assert await stack.balance(tenant) == 10


# --------------------------------------------------------------------------- respond-async

ASYNC = {"Prefer": "respond-async"}


async def _jobs(stack: Stack, tenant_id: str) -> list[Job]:
    async with stack.sessions() as session:
        return list(await session.scalars(select(Job).where(Job.tenant_id == tenant_id)))


async def test_async_retries_get_one_job_charged_once(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    key = str(uuid.uuid4())
    body = {"prompt": "a paper crane", "aspectRatio": "3:4"}
    headers = {**_headers(tenant.auth, key), **ASYNC}
    async with stack.client() as client:
        burst = await asyncio.gather(
            *(client.post(PATH, json=body, headers=headers) for _ in range(20))
        )
    assert [r.status_code for r in burst] == [202] * 20, [
        r.text for r in burst if r.status_code != 202
    ]
    assert len({r.json()["id"] for r in burst}) == 1
    assert len({r.headers["location"] for r in burst}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in burst) == 1  # one made it
    [job] = await _jobs(stack, tenant.id)
    location = burst[0].headers["location"]
    assert job.id == burst[0].json()["id"] and location == f"/api/v1/jobs/{job.id}"

    done = await stack.wait_for_job(tenant, location)
    assert done["status"] == "succeeded"
    async with stack.client() as client:
        again = await client.post(PATH, json=body, headers=headers)
        other = await client.post(PATH, json={**body, "prompt": "a crane"}, headers=headers)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert (again.json()["id"], again.headers["location"]) == (job.id, location)
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_conflict"
    assert "different request body" in other.json()["error"]
    assert len(await _jobs(stack, tenant.id)) == 1
    assert await _generations(stack, tenant.id) == 1
    assert await stack.balance(tenant) == 100 - PRICE
    assert (await stack.audit(tenant)).ok


async def test_async_refusal_keeps_no_key_then_the_job_is_replayed(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=PRICE - 1)
    key = str(uuid.uuid4())
    headers = {**_headers(tenant.auth, key), **ASYNC}
    async with stack.client() as client:
        refused = await client.post(PATH, json={"prompt": "p"}, headers=headers)
        async with stack.sessions() as session, session.begin():
            await ledger.grant(session, tenant.id, 1, note="top up")
        accepted = await client.post(PATH, json={"prompt": "p"}, headers=headers)
        replayed = await client.post(PATH, json={"prompt": "p"}, headers=headers)
    assert refused.status_code == 402  # nothing was created, so the key is still free
    assert accepted.status_code == 202 and "idempotent-replayed" not in accepted.headers
    assert replayed.status_code == 202 and replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json()["id"] == accepted.json()["id"]
    assert len(await _jobs(stack, tenant.id)) == 1
    await stack.wait_for_job(tenant, accepted.headers["location"])
    assert await stack.balance(tenant) == 0


async def test_key_used_synchronously_replays_its_200_to_an_async_retry(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    key = str(uuid.uuid4())
    async with stack.client() as client:
        first = await client.post(PATH, json={"prompt": "q"}, headers=_headers(tenant.auth, key))
        retry = await client.post(
            PATH, json={"prompt": "q"}, headers={**_headers(tenant.auth, key), **ASYNC}
        )
    assert first.status_code == 200
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["id"] == first.json()["id"]
    assert await _jobs(stack, tenant.id) == []
    assert await stack.balance(tenant) == 100 - PRICE
