"""Objects without records: found by the scan, and removed by the hold sweeper."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from app.credits import ledger
from app.db.models import Generation, new_id, utcnow
from app.housekeeping.orphans import find_orphans, remove_orphans
from app.housekeeping.sweeper import release_expired_holds
from app.storage.base import ObjectNotFound
from app.storage.factory import create_image_store
from app.storage.keys import object_key
from tests.support.gateway import Stack
from tests.support.ledger import generation_row

WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 "  # content is irrelevant to the scan


async def _generation(stack: Stack, tenant_id: str, status: str, hold_ttl: float | None) -> str:
    generation_id = new_id()
    async with stack.sessions() as session, session.begin():
        session.add(generation_row(generation_id, tenant_id, status, num_images=2))
        await session.flush()
        if hold_ttl is not None:
            await ledger.reserve(
                session,
                tenant_id,
                4,
                generation_id=generation_id,
                ttl=timedelta(seconds=hold_ttl),
            )
    return generation_id


async def test_scan_finds_unrecorded_objects_but_not_in_flight_ones(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=10)
    store = create_image_store(stack.settings)
    pending = await _generation(stack, tenant.id, "pending", hold_ttl=600)
    failed = await _generation(stack, tenant.id, "failed", hold_ttl=None)
    now = utcnow()
    in_flight = object_key(tenant.id, pending, 0, now)
    left_behind = object_key(tenant.id, failed, 0, now)
    unknown = object_key(tenant.id, str(uuid.uuid4()), 0, now)
    for key in (in_flight, left_behind, unknown):
        await store.put(key, WEBP, "image/webp")
    try:
        report = await find_orphans(store, stack.sessions)
        mine = {key for key in report.orphans if key.startswith(tenant.id)}
        assert mine == {left_behind, unknown}
        removed = await remove_orphans(store, report)
        assert removed == len(report.orphans)
        with pytest.raises(ObjectNotFound):
            await store.get(unknown)
        assert await store.get(in_flight) == WEBP
    finally:
        await store.delete(in_flight)
        await store.aclose()


async def test_sweeper_removes_what_an_abandoned_generation_stored(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=10)
    store = create_image_store(stack.settings)
    generation_id = await _generation(stack, tenant.id, "pending", hold_ttl=-1)
    async with stack.sessions() as session:
        generation = await session.get(Generation, generation_id)
    assert generation is not None
    key = object_key(tenant.id, generation_id, 1, generation.created_at)
    await store.put(key, WEBP, "image/webp")
    try:
        assert await release_expired_holds(stack.sessions, store) >= 1
        with pytest.raises(ObjectNotFound):
            await store.get(key)
        assert await stack.balance(tenant) == 10
        async with stack.sessions() as session:
            row = await session.get(Generation, generation_id)
        assert row is not None and row.status == "abandoned"
        assert (await stack.audit(tenant)).ok
    finally:
        await store.aclose()
