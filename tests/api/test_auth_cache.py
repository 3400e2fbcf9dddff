"""Keys are remembered for a few seconds; revocation still takes effect within that bound."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.tenants.service import revoke_key
from tests.support.gateway import Stack

CREDITS = "/api/v1/credits"


@pytest.mark.slow  # waits out the auth cache bound
async def test_a_key_revoked_elsewhere_is_refused_within_the_cache_bound(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=10)
    async with stack.client() as client:
        assert (await client.get(CREDITS, headers=tenant.auth)).status_code == 200
        # Revoked straight in the database, as the CLI or another replica would.
        async with stack.sessions() as session, session.begin():
            await revoke_key(session, tenant.key[:11])
        revoked_at = time.monotonic()
        bound = stack.settings.auth_cache_seconds + 1.0
        while True:
            response = await client.get(CREDITS, headers=tenant.auth)
            if response.status_code == 401:
                break
            assert response.status_code == 200
            assert time.monotonic() - revoked_at < bound, "revocation outlived the cache bound"
            await asyncio.sleep(0.2)
    assert "revoked" in response.json()["error"]


async def test_a_key_revoked_through_the_admin_api_is_refused_at_once(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=10)
    assert stack.settings.admin_token is not None
    admin = {"Authorization": f"Bearer {stack.settings.admin_token.get_secret_value()}"}
    async with stack.client() as client:
        assert (await client.get(CREDITS, headers=tenant.auth)).status_code == 200
        revoked = await client.post(f"/admin/v1/keys/{tenant.key[:11]}/revoke", headers=admin)
        assert revoked.status_code == 200, revoked.text
        assert (await client.get(CREDITS, headers=tenant.auth)).status_code == 401
