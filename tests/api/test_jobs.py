"""Prefer: respond-async: 202 + job, then status, progress and the contract's body."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from importlib import resources
from typing import Any

import httpx
import pytest
import pytest_asyncio
from PIL import Image
from sqlalchemy import func, select

from app.credits import ledger
from app.db.models import CreditHold, Generation, Job, new_id, utcnow
from app.providers.catalog import Catalog
from app.storage.base import ObjectNotFound
from app.storage.factory import create_image_store
from app.storage.keys import job_source_key
from tests.support.gateway import Stack, TenantHandle, gateway_settings, stack_in_thread
from tests.support.ledger import generation_row

PATH = "/api/v1/generate-image"
ASYNC = {"Prefer": "respond-async"}
PRICE = 4
MAX_ATTEMPTS = 3  # IMAGEGATE_JOB_MAX_ATTEMPTS, the default


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


# A catalog where a model's fallback is dearer than the model: the hold covers the fallback.
CHEAP, DEAR = "google/gemini-3.1-flash-image-preview", "google/gemini-3-pro-image"


@pytest_asyncio.fixture(scope="module")
async def dear_fallback(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data_dir = tmp_path_factory.mktemp("dear-fallback")
    packaged = json.loads(resources.files("app.providers").joinpath("catalog.json").read_text())
    for model in packaged["models"]:
        if model["id"] == CHEAP:
            model["fallbacks"] = [DEAR]
    catalog = data_dir / "catalog.json"
    catalog.write_text(json.dumps(packaged))
    async for stack in stack_in_thread(
        gateway_settings(data_dir=data_dir, catalog=catalog), "dear-fallback"
    ):
        yield stack


async def test_async_submit_prices_the_fallback_chain_like_the_sync_route(
    dear_fallback: Stack,
) -> None:
    catalog = Catalog.load(dear_fallback.settings.catalog)
    cheap, dear = catalog.get(CHEAP), catalog.get(DEAR)
    assert cheap is not None and dear is not None and cheap.price < dear.price
    # Enough for the model asked for, not for the dearest model that may serve it.
    tenant = await dear_fallback.new_tenant(credits=dear.price - 1)
    async with dear_fallback.client() as client:
        sync = await client.post(PATH, json={"prompt": "x", "model": CHEAP}, headers=tenant.auth)
    submitted = await _submit(dear_fallback, tenant, model=CHEAP)
    assert sync.status_code == 402, sync.text
    assert submitted.status_code == 402, submitted.text
    assert submitted.json()["required"] == sync.json()["required"] == dear.price
    async with dear_fallback.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Job).where(Job.tenant_id == tenant.id)
        )
    assert count == 0
    assert await dear_fallback.balance(tenant) == dear.price - 1


async def test_other_tenants_job_is_404(stack: Stack) -> None:
    owner, other = await stack.new_tenant(credits=10), await stack.new_tenant()
    submitted = await _submit(stack, owner)
    async with stack.client() as client:
        response = await client.get(submitted.headers["location"], headers=other.auth)
    assert response.status_code == 404
    await stack.wait_for_job(owner, submitted.headers["location"])


def _job_row(job_id: str, tenant: TenantHandle, **fields: Any) -> Job:
    """A one-image job row (a running one with a readable request unless `fields` say)."""
    defaults: dict[str, Any] = {
        "status": "running",
        "images_total": 1,
        "request_json": json.dumps({"prompt": "p"}),
    }
    return Job(id=job_id, tenant_id=tenant.id, **(defaults | fields))


async def _orphaned_job(
    stack: Stack, tenant: TenantHandle, generation_status: str, attempts: int = 1
) -> str:
    """A job whose runner died mid-attempt (its `attempts`th): running, lease expired,
    with a generation."""
    job_id, generation_id = new_id(), new_id()
    async with stack.sessions() as session, session.begin():
        session.add(generation_row(generation_id, tenant.id, generation_status))
        await session.flush()
        if generation_status == "pending":  # the dead attempt's hold is still open
            await ledger.reserve(
                session, tenant.id, PRICE, generation_id=generation_id, ttl=timedelta(hours=1)
            )
        session.add(
            _job_row(
                job_id,
                tenant,
                generation_id=generation_id,
                attempts=attempts,
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


@pytest.mark.parametrize("died_on", [1, MAX_ATTEMPTS - 1])
async def test_restarted_job_whose_generation_died_runs_once_more(
    stack: Stack, died_on: int
) -> None:
    tenant = await stack.new_tenant(credits=100)
    job_id = await _orphaned_job(stack, tenant, "pending", attempts=died_on)
    done = await stack.wait_for_job(tenant, f"/api/v1/jobs/{job_id}")
    # Up to the last allowed attempt, a killed runner's job completes, once.
    assert done["status"] == "succeeded"
    async with stack.sessions() as session:
        job = await session.get(Job, job_id)
    assert job is not None and job.attempts == died_on + 1
    # One charge for the new attempt; the dead attempt's hold is still reserved until
    # the sweeper releases it at expiry, so it is not lost either.
    assert await stack.balance(tenant) == 100 - PRICE - PRICE
    assert (await stack.audit(tenant)).ok


async def test_job_past_its_attempts_fails_and_its_dead_attempts_hold_is_released(
    stack: Stack,
) -> None:
    tenant = await stack.new_tenant(credits=100)
    # Its runner died on the last allowed attempt (e.g. the job kills every process).
    job_id = await _orphaned_job(stack, tenant, "pending", attempts=MAX_ATTEMPTS)
    done = await stack.wait_for_job(tenant, f"/api/v1/jobs/{job_id}")
    assert done["status"] == "failed"
    assert (done["error"]["status"], done["error"]["code"]) == (500, "internal_error")
    async with stack.sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None and job.generation_id is not None
        generation = await session.get(Generation, job.generation_id)
        holds = list(
            await session.scalars(
                select(CreditHold.status).where(CreditHold.generation_id == job.generation_id)
            )
        )
    assert job.attempts == MAX_ATTEMPTS + 1  # claimed, counted, not run
    assert generation is not None and generation.status == "abandoned"
    assert holds == ["released"]  # now, not when the hold expires
    assert await stack.balance(tenant) == 100
    assert (await stack.audit(tenant)).ok


async def test_job_failing_unexpectedly_on_every_attempt_fails_after_the_bound(
    stack: Stack,
) -> None:
    """A job whose stored request cannot be read (a row another version wrote, or one
    edited by hand) raises an error no handler expects, on every attempt."""
    tenant = await stack.new_tenant(credits=100)
    job_id = new_id()
    source_key = job_source_key(tenant.id, job_id)
    store = create_image_store(stack.settings)
    try:
        await store.put(source_key, b"\x89PNG source bytes", "image/png")
        async with stack.sessions() as session, session.begin():
            cut_short = '{"prompt": "p", "sourceMimeType": "image/png"'
            session.add(
                _job_row(
                    job_id, tenant, status="queued", request_json=cut_short, source_key=source_key
                )
            )
        done = await stack.wait_for_job(tenant, f"/api/v1/jobs/{job_id}")
        assert done["status"] == "failed"
        assert (done["error"]["status"], done["error"]["code"]) == (500, "internal_error")
        async with stack.sessions() as session:
            job = await session.get(Job, job_id)
            open_holds = await session.scalar(
                select(func.count())
                .select_from(CreditHold)
                .where(CreditHold.tenant_id == tenant.id, CreditHold.status == "open")
            )
        assert job is not None and job.attempts == MAX_ATTEMPTS
        assert open_holds == 0
        with pytest.raises(ObjectNotFound):
            await store.get(source_key)
    finally:
        await store.aclose()
    assert await stack.balance(tenant) == 100
    assert (await stack.audit(tenant)).ok
