"""Streamed /v1 answers over the real network: a gateway process streaming from the OpenAI
emulator process, and clients that hang up mid-stream.

A client charged must have received the completed event; one that leaves before it is
charged nothing, its image is not kept, and the ledger audit of its tenant is clean.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from sqlalchemy import select

from app.credits.audit import audit_ledger
from app.db.models import Generation
from tests.support.gateway import TenantHandle
from tests.support.process import run_in_session
from tests.support.upstreams import MODELS, NetworkGateway

pytestmark = pytest.mark.network

MODEL, PRICE = MODELS["openai"]
PATH = "/v1/images/generations"
# The emulator drips its event stream (~85 KB of WebP events) over about two seconds, so
# a client leaving after the first preview leaves long before the final image exists.
DRIP = {"kind": "slow_body", "chunk_bytes": 8 * 1024, "interval_seconds": 0.2}


@pytest.fixture(scope="module")
def gateway(network_gateway_factory: Callable[..., NetworkGateway]) -> NetworkGateway:
    # Room for a dripped stream inside one attempt.
    return network_gateway_factory(
        upstream_attempt_timeout_seconds=15, upstream_deadline_seconds=20
    )


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "a lighthouse", "stream": True, **extra}


def generation(gateway: NetworkGateway, tenant: TenantHandle) -> Generation:
    """The tenant's one generation, once the gateway has finished it."""

    async def work(session: Any) -> Generation | None:
        rows = await session.scalars(select(Generation).where(Generation.tenant_id == tenant.id))
        found = list(rows)
        return found[0] if found and found[0].status != "pending" else None

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = run_in_session(gateway.database_url, work)
        if row is not None:
            return row
        time.sleep(0.1)
    raise AssertionError("the generation did not finish")


def audit_ok(gateway: NetworkGateway, tenant: TenantHandle) -> bool:
    async def work(session: Any) -> bool:
        return (await audit_ledger(session, tenant_ids=[tenant.id])).ok

    return run_in_session(gateway.database_url, work)


def stored(gateway: NetworkGateway, row: Generation) -> list[str]:
    return [p.name for p in gateway.stored_files() if p.name.startswith(row.id)]


async def read_until(gateway: NetworkGateway, tenant: TenantHandle, marker: str) -> list[str]:
    """POST a stream, read lines until a `data:` line follows `event: <marker>`, hang up."""
    lines: list[str] = []
    async with (
        gateway.client() as client,
        client.stream("POST", PATH, json=body(partial_images=3), headers=tenant.auth) as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        async for line in answer.aiter_lines():
            lines.append(line)
            if line.startswith("data:") and lines[-2:-1] == [f"event: {marker}"]:
                break
    return lines


async def test_leaving_after_the_first_preview_is_charged_nothing(
    gateway: NetworkGateway,
) -> None:
    tenant = gateway.new_tenant(credits=100)
    gateway.emulators["openai"].set_faults(DRIP)
    try:
        lines = await read_until(gateway, tenant, "image_generation.partial_image")
        row = await asyncio.to_thread(generation, gateway, tenant)
    finally:
        gateway.emulators["openai"].set_faults()

    assert "event: image_generation.completed" not in lines
    assert row.status == "failed" and row.credits_charged == 0
    assert gateway.balance(tenant) == 100
    assert audit_ok(gateway, tenant)
    assert stored(gateway, row) == []


async def test_leaving_after_the_completed_event_is_charged_once(gateway: NetworkGateway) -> None:
    tenant = gateway.new_tenant(credits=100)
    lines = await read_until(gateway, tenant, "image_generation.completed")
    row = await asyncio.to_thread(generation, gateway, tenant)

    assert lines.count("event: image_generation.partial_image") == 3
    assert row.status == "succeeded" and row.credits_charged == PRICE
    assert gateway.balance(tenant) == 100 - PRICE
    assert audit_ok(gateway, tenant)
    assert len(stored(gateway, row)) == 1


async def test_previews_arrive_before_the_upstream_has_finished(gateway: NetworkGateway) -> None:
    tenant = gateway.new_tenant(credits=100)
    gateway.emulators["openai"].set_faults(DRIP)
    sdk = openai.AsyncOpenAI(api_key=tenant.key, base_url=f"{gateway.base_url}/v1", max_retries=0)
    arrivals: list[tuple[str, float]] = []
    try:
        stream = await sdk.images.generate(**body(partial_images=3))
        async for event in stream:
            arrivals.append((event.type, time.monotonic()))
    finally:
        gateway.emulators["openai"].set_faults()
        await sdk.close()

    assert [kind for kind, _ in arrivals] == ["image_generation.partial_image"] * 3 + [
        "image_generation.completed"
    ]
    # Streamed, not buffered: the first preview came well before the final image.
    assert arrivals[-1][1] - arrivals[0][1] > 0.5
    assert gateway.balance(tenant) == 100 - PRICE


async def test_a_failure_after_the_previews_is_an_error_event_and_free(
    gateway: NetworkGateway,
) -> None:
    """Every attempt streams some previews, then the upstream connection dies."""
    tenant = gateway.new_tenant(credits=100)
    gateway.emulators["openai"].set_faults({"kind": "reset", "after_bytes": 10**9, "count": 5})
    calls_before = gateway.emulators["openai"].calls()
    sdk = openai.AsyncOpenAI(api_key=tenant.key, base_url=f"{gateway.base_url}/v1", max_retries=0)
    seen: list[str] = []
    try:
        stream = await sdk.images.generate(**body(partial_images=3))
        with pytest.raises(openai.APIError) as raised:
            async for event in stream:
                seen.append(event.type)
    finally:
        gateway.emulators["openai"].set_faults()
        await sdk.close()

    # Retried upstream calls start their previews again; none reaches the client twice.
    assert gateway.emulators["openai"].calls() - calls_before >= 2
    assert 1 <= len(seen) <= 3 and set(seen) == {"image_generation.partial_image"}
    assert "refunded" in raised.value.message
    row = await asyncio.to_thread(generation, gateway, tenant)
    assert row.credits_charged == 0 and gateway.balance(tenant) == 100
    assert audit_ok(gateway, tenant)


async def test_leaving_before_any_event_cancels_the_generation(gateway: NetworkGateway) -> None:
    """A model without previews sends nothing until its image exists: a client that gives
    up first is charged nothing and the gateway stops waiting for that image."""
    tenant = gateway.new_tenant(credits=100)
    gemini, _ = MODELS["gemini"]
    gateway.emulators["gemini"].set_faults({"kind": "delay", "seconds": 4})
    started = time.monotonic()
    try:
        async with gateway.client() as client:
            request = client.post(PATH, json={**body(), "model": gemini}, headers=tenant.auth)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(request, 0.5)  # hangs up: the connection is closed
        row = await asyncio.to_thread(generation, gateway, tenant)
    finally:
        gateway.emulators["gemini"].set_faults()

    assert row.status == "failed" and row.credits_charged == 0
    assert time.monotonic() - started < 3  # settled at the hang-up, not after the upstream
    assert gateway.balance(tenant) == 100
    assert audit_ok(gateway, tenant)
