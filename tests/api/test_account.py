"""`GET /api/v1/credits/balance`, and `X-API-Key` accepted wherever a Bearer key is."""

from __future__ import annotations

from tests.support.gateway import Stack

BALANCE = "/api/v1/credits/balance"


async def test_balance_is_the_spendable_balance(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=37)
    async with stack.client() as client:
        response = await client.get(BALANCE, headers=tenant.auth)
        assert response.status_code == 200, response.text
        assert response.json() == {"balance": 37}
        await client.post("/api/v1/generate-image", json={"prompt": "x"}, headers=tenant.auth)
        after = await client.get(BALANCE, headers=tenant.auth)
    assert after.json() == {"balance": await stack.balance(tenant)}
    assert after.json()["balance"] < 37


async def test_balance_needs_a_key(stack: Stack) -> None:
    async with stack.client() as client:
        response = await client.get(BALANCE)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_x_api_key_is_accepted_where_bearer_is(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=20)
    header = {"X-API-Key": tenant.key}
    async with stack.client() as client:
        balance = await client.get(BALANCE, headers=header)
        generated = await client.post(
            "/api/v1/generate-image", json={"prompt": "x"}, headers=header
        )
        altered = tenant.key[:-1] + ("a" if tenant.key[-1] != "a" else "b")
        wrong = await client.get(BALANCE, headers={"X-API-Key": altered})
    assert balance.status_code == 200 and balance.json() == {"balance": 20}
    assert generated.status_code == 200, generated.text
    assert generated.json()["creditsRemaining"] == await stack.balance(tenant)
    assert wrong.status_code == 401
