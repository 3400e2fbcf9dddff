"""Emulator fault control: open on a standalone emulator, admin-only inside a gateway."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.emulators.bfl import create_bfl_emulator
from app.main import create_app
from tests.support.gateway import Stack, gateway_settings
from tests.support.servers import serve_in_thread

PATH = "/api/v1/generate-image"
TOKEN = "control-token-of-at-least-24-chars"


@pytest.mark.parametrize("provider", ["gemini", "openai", "bfl", "automatic1111"])
async def test_unauthenticated_fault_injection_on_a_gateway_is_refused(
    embedded_stack: Stack, provider: str
) -> None:
    tenant = await embedded_stack.new_tenant(credits=20)
    faults = {"faults": [{"kind": "error", "status": 500, "count": 50}]}
    url = f"/emulators/{provider}/_emulator/faults"
    async with embedded_stack.client() as client:
        refused = [
            await client.post(url, json=faults),
            await client.post(url, json=faults, headers=tenant.auth),  # a tenant key is no admin
            await client.post(url, json=faults, headers={"Authorization": "Bearer wrong"}),
        ]
        state = await client.get(f"/emulators/{provider}/_emulator/state")
        cleared = await client.delete(url)
    assert [r.status_code for r in refused] == [401, 401, 401]
    assert state.status_code == 401
    assert cleared.status_code == 401
    async with embedded_stack.control_client() as control:
        pending = (await control.get(f"/emulators/{provider}/_emulator/state")).json()
    assert pending["pending"] == []  # nothing was queued


async def test_the_admin_token_controls_the_emulators(embedded_stack: Stack) -> None:
    tenant = await embedded_stack.new_tenant(credits=4)
    await embedded_stack.set_faults({"kind": "blocked"})
    try:
        async with embedded_stack.client() as client:
            response = await client.post(PATH, json={"prompt": "x"}, headers=tenant.auth)
    finally:
        await embedded_stack.set_faults()
    assert response.status_code == 400
    assert response.json()["code"] == "content_rejected"


async def test_bfl_task_board_routes_need_the_token_too(embedded_stack: Stack) -> None:
    async with embedded_stack.client() as client:
        assert (await client.get("/emulators/bfl/_emulator/bfl")).status_code == 401
        assert (await client.delete("/emulators/bfl/_emulator/bfl")).status_code == 401


async def test_automatic1111_recorded_calls_need_the_token_too(embedded_stack: Stack) -> None:
    """They carry prompts other tenants sent."""
    path = "/emulators/automatic1111/_emulator/automatic1111/calls"
    async with embedded_stack.client() as client:
        assert (await client.get(path)).status_code == 401
    async with embedded_stack.control_client() as control:
        assert (await control.get(path)).status_code == 200


def test_without_an_admin_token_an_emulated_gateway_has_no_fault_control(
    tmp_path: Path,
) -> None:
    settings = gateway_settings(data_dir=tmp_path, admin_token=None)
    with serve_in_thread(create_app(settings)) as base_url, httpx.Client(base_url=base_url) as http:
        added = http.post(
            "/emulators/gemini/_emulator/faults",
            json={"faults": [{"kind": "error", "status": 500}]},
        )
        generate = http.post("/emulators/gemini/v1beta/models/m:generateContent")
    assert added.status_code == 404
    assert generate.status_code != 404  # the emulator itself is still served


async def test_a_token_guarded_standalone_emulator() -> None:
    app = create_bfl_emulator(control_token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bfl") as http:
        assert (await http.get("/_emulator/state")).status_code == 401
        ok = await http.get("/_emulator/state", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
