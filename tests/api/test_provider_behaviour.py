"""Provider behaviour seen through the gateway: moderation is free, 429 storms refund,
and the kontext-max cap queues tasks instead of failing them."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.gateway import Stack

PATH = "/api/v1/generate-image"
PRICES = {"google/gemini-2.5-flash-image": 4, "openai/gpt-image-1": 10, "bfl/flux-kontext-max": 8}


async def _faults(stack: Stack, provider: str, *faults: dict[str, object]) -> None:
    async with stack.control_client() as client:
        await client.delete(f"/emulators/{provider}/_emulator/state")
        if faults:
            response = await client.post(
                f"/emulators/{provider}/_emulator/faults", json={"faults": list(faults)}
            )
            response.raise_for_status()


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("google/gemini-2.5-flash-image", "gemini"),
        ("openai/gpt-image-1", "openai"),
        ("bfl/flux-kontext-max", "bfl"),
    ],
)
async def test_moderation_is_400_and_free(embedded_stack: Stack, model: str, provider: str) -> None:
    tenant = await embedded_stack.new_tenant(credits=PRICES[model])
    await _faults(embedded_stack, provider, {"kind": "blocked", "reason": "SAFETY"})
    try:
        async with embedded_stack.client() as client:
            response = await client.post(
                PATH, json={"prompt": "x", "model": model}, headers=tenant.auth
            )
    finally:
        await _faults(embedded_stack, provider)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "content_rejected"
    assert await embedded_stack.balance(tenant) == PRICES[model]


async def test_429_storm_is_retried_then_refunded(embedded_stack: Stack) -> None:
    tenant = await embedded_stack.new_tenant(credits=8)
    await _faults(
        embedded_stack,
        "gemini",
        {"kind": "error", "status": 429, "retry_after": 0.01, "count": 1000},
    )
    try:
        async with embedded_stack.client() as client:
            response = await client.post(
                PATH, json={"prompt": "storm", "numImages": 2}, headers=tenant.auth
            )
        async with embedded_stack.control_client() as control:
            state = (await control.get("/emulators/gemini/_emulator/state")).json()
    finally:
        await _faults(embedded_stack, "gemini")
    assert response.status_code == 500
    assert "refunded" in response.json()["error"]
    attempts = embedded_stack.settings.upstream_max_attempts
    assert state["calls"] == 2 * attempts  # each image retried to the bound, not beyond
    assert await embedded_stack.balance(tenant) == 8
    assert (await embedded_stack.audit(tenant)).ok


async def test_kontext_max_cap_queues_the_seventh_task(embedded_stack: Stack) -> None:
    """7 concurrent images against BFL's 6-active-task limit: all succeed, the emulator
    never had more than 6 active and never answered 429 (exactly 7 submits)."""
    tenant = await embedded_stack.new_tenant(credits=7 * 8)
    await _faults(embedded_stack, "bfl", {"kind": "delay", "seconds": 0.6, "count": 7})
    async with embedded_stack.control_client() as control:
        (await control.delete("/emulators/bfl/_emulator/bfl")).raise_for_status()
    try:
        async with embedded_stack.client() as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        PATH,
                        json={"prompt": f"task {i}", "model": "bfl/flux-kontext-max"},
                        headers=tenant.auth,
                    )
                    for i in range(7)
                )
            )
        async with embedded_stack.control_client() as control:
            tasks = (await control.get("/emulators/bfl/_emulator/bfl")).json()
            state = (await control.get("/emulators/bfl/_emulator/state")).json()
    finally:
        await _faults(embedded_stack, "bfl")
    assert [r.status_code for r in responses] == [200] * 7
    assert tasks["max_active"]["flux-kontext-max"] == 6
    assert state["calls"] == 7
    assert await embedded_stack.balance(tenant) == 0
