"""Prefer: respond-async: 202 + job, then status, progress and the contract's body."""

from __future__ import annotations

import base64
import io
import json
from datetime import timedelta
from typing import Any

import httpx
from PIL import Image
from sqlalchemy import func, select

from app.credits import ledger
from app.db.models import Generation, Job, new_id, utcnow
from app.storage.base import ObjectNotFound
from app.storage.factory import create_image_store
from app.storage.keys import job_source_key
from tests.support.gateway import Stack, TenantHandle

PATH = "/api/v1/generate-image"
ASYNC = {"Prefer": "respond-async"}
PRICE = 4


async def _submit(stack: Stack, tenant: TenantHandle, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "a slow painting")
    async with stack.client() as client:
        return await client.post(PATH, json=body, headers={**tenant.auth, **ASYNC})


async def test_async_generation_end_to_end(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    submitted = await _submit(stack, tenant, numImages=2, aspectRatio="16:9")
    assert submitted.status_code == 202, submitted.text
    location = submitted.headers["location"]
    assert location == f"/api/v1/jobs/{submitted.json()['id']}"
    done = await stack.wait_for_job(tenant, location)
    assert done["status"] == "succeeded"
    assert done["progress"] == {"imagesDone": 2, "imagesTotal": 2}
    assert done["numImages"] == 2 and done["creditsCharged"] == 2 * PRICE
    async with stack.client() as client:
        image = await client.get(done["images"][0]["url"])
    assert image.status_code == 200
    assert Image.open(io.BytesIO(image.content)).size == (
        done["images"][0]["width"],
        done["images"][0]["height"],
    )
    assert await stack.balance(tenant) == 100 - 2 * PRICE
    assert (await stack.audit(tenant)).ok


async def test_async_image_to_image_cleans_up_its_source(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "purple").save(buffer, "PNG")
    source = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    submitted = await _submit(stack, tenant, sourceImage=source)
    assert submitted.status_code == 202
    done = await stack.wait_for_job(tenant, submitted.headers["location"])
    assert done["status"] == "succeeded"
    async with stack.sessions() as session:
        job = await session.get(Job, submitted.json()["id"])
        generation = await session.get(Generation, done["id"])
    assert job is not None and "sourceImage" not in job.request_json
    assert generation is not None and generation.image_to_image
    store = create_image_store(stack.settings)
    try:
        try:
            await store.get(job_source_key(tenant.id, job.id))
            raise AssertionError("the source image outlived its job")
        except ObjectNotFound:
            pass
    finally:
        await store.aclose()


async def test_failed_job_reports_the_error_and_refunds(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=10)
    await stack.set_faults({"kind": "error", "status": 500, "count": 1000})
    try:
        submitted = await _submit(stack, tenant)
        done = await stack.wait_for_job(tenant, submitted.headers["location"])
    finally:
        await stack.set_faults()
    assert done["status"] == "failed"
    assert done["error"]["status"] == 500 and done["error"]["code"] == "generation_failed"
    assert await stack.balance(tenant) == 10


async def test_insufficient_credits_is_402_at_submit(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=PRICE - 1)
    response = await _submit(stack, tenant)
    assert response.status_code == 402
    assert (response.json()["requiredCredits"], response.json()["availableCredits"]) == (
        PRICE,
        PRICE - 1,
    )
    async with stack.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Job).where(Job.tenant_id == tenant.id)
        )
    assert count == 0


async def test_other_tenants_job_is_404(stack: Stack) -> None:
    owner, other = await stack.new_tenant(credits=10), await stack.new_tenant()
    submitted = await _submit(stack, owner)
    async with stack.client() as client:
        response = await client.get(submitted.headers["location"], headers=other.auth)
    assert response.status_code == 404
    await stack.wait_for_job(owner, submitted.headers["location"])


async def _orphaned_job(stack: Stack, tenant: TenantHandle, generation_status: str) -> str:
    """A job whose runner died mid-attempt: running, lease expired, with a generation."""
    job_id, generation_id = new_id(), new_id()
    async with stack.sessions() as session, session.begin():
        session.add(
            Generation(
                id=generation_id,
                tenant_id=tenant.id,
                model="google/gemini-2.5-flash-image",
                provider="google",
                prompt="p",
                style_preset="none",
                aspect_ratio="1:1",
                num_images=1,
                status=generation_status,
                created_at=utcnow(),
            )
        )
        await session.flush()
        if generation_status == "pending":  # the dead attempt's hold is still open
            await ledger.reserve(
                session, tenant.id, PRICE, generation_id=generation_id, ttl=timedelta(hours=1)
            )
        session.add(
            Job(
                id=job_id,
                tenant_id=tenant.id,
                status="running",
                images_total=1,
                request_json=json.dumps({"prompt": "p"}),
                generation_id=generation_id,
                attempts=1,
                locked_until=utcnow() - timedelta(seconds=1),
            )
        )
    return job_id


async def test_restarted_job_whose_generation_finished_is_not_run_again(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    job_id = await _orphaned_job(stack, tenant, "succeeded")
    done = await stack.wait_for_job(tenant, f"/api/v1/jobs/{job_id}")
    assert done["status"] == "succeeded"
    async with stack.sessions() as session:
        generations = await session.scalar(
            select(func.count()).select_from(Generation).where(Generation.tenant_id == tenant.id)
        )
    assert generations == 1  # reused, not generated (or charged) again
    assert await stack.balance(tenant) == 100


async def test_restarted_job_whose_generation_died_runs_once_more(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    job_id = await _orphaned_job(stack, tenant, "pending")
    done = await stack.wait_for_job(tenant, f"/api/v1/jobs/{job_id}")
    assert done["status"] == "succeeded"
    async with stack.sessions() as session:
        job = await session.get(Job, job_id)
    assert job is not None and job.attempts == 2
    # One charge for the new attempt; the dead attempt's hold is still reserved until
    # the sweeper releases it at expiry, so it is not lost either.
    assert await stack.balance(tenant) == 100 - PRICE - PRICE
    assert (await stack.audit(tenant)).ok
