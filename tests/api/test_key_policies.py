"""Per-key limits and policies over real HTTP (#14 items 1-3): the key's 402, the model
allow-list, expiry (auth cache included), rotation, and the admin API's key routes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.db.models import utcnow
from tests.support.gateway import Stack

ADMIN = "/admin/v1"
GENERATE = "/api/v1/generate-image"
MODEL = "google/gemini-2.5-flash-image"
PRICE = 4  # MODEL's price in the packaged catalog
OTHER = "openai/gpt-image-1"


def _admin_headers(stack: Stack) -> dict[str, str]:
    assert stack.settings.admin_token is not None
    return {"Authorization": f"Bearer {stack.settings.admin_token.get_secret_value()}"}


async def _admin(stack: Stack, method: str, path: str, json: Any = None) -> httpx.Response:
    async with stack.client() as client:
        return await client.request(method, ADMIN + path, json=json, headers=_admin_headers(stack))


async def _tenant_with_key(stack: Stack, credits: int, **policy: Any) -> tuple[str, str, str]:
    """(tenant name, key, prefix) for a new tenant granted `credits`."""
    name = f"kp-{uuid.uuid4().hex[:10]}"
    assert (await _admin(stack, "POST", "/tenants", {"name": name})).status_code == 201
    if credits:
        granted = await _admin(stack, "POST", f"/tenants/{name}/credits", {"amount": credits})
        assert granted.status_code == 200
    created = await _admin(stack, "POST", f"/tenants/{name}/keys", policy)
    assert created.status_code == 201, created.text
    return name, created.json()["key"], created.json()["prefix"]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _generate(stack: Stack, key: str, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "A lighthouse on a cliff at dawn")
    async with stack.client() as client:
        return await client.post(GENERATE, json=body, headers=_auth(key))


async def test_thirty_racing_requests_spend_exactly_the_keys_limit_on_postgres(
    postgres_stack: Stack,
) -> None:
    stack = postgres_stack
    limit = 10 * PRICE
    name, key, prefix = await _tenant_with_key(stack, 1000, creditLimit=limit)
    async with stack.client(timeout=120) as client:
        responses = await asyncio.gather(
            *(
                client.post(GENERATE, json={"prompt": f"race {i}"}, headers=_auth(key))
                for i in range(30)
            )
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 10, statuses
    assert statuses.count(402) == 20, statuses
    refused = next(r.json() for r in responses if r.status_code == 402)
    assert refused["code"] == "key_credit_limit"
    assert (refused["required"], refused["available"]) == (PRICE, 0)
    assert (refused["requiredCredits"], refused["availableCredits"]) == (PRICE, 0)
    assert "key's own limit, not the tenant's balance" in refused["error"]
    detail = (await _admin(stack, "GET", f"/keys/{prefix}")).json()
    assert (detail["spent"], detail["remaining"]) == (limit, 0)
    tenant = (await _admin(stack, "GET", f"/tenants/{name}")).json()
    assert tenant["balance"] == 1000 - limit
    assert (await stack.audit(name)).ok
    audit = (await _admin(stack, "GET", "/audit")).json()
    assert not [p for p in audit["problems"] if p.startswith(f"{name}:")]


async def test_the_keys_402_names_whats_left_and_charges_nothing(stack: Stack) -> None:
    name, key, prefix = await _tenant_with_key(stack, 100, creditLimit=PRICE + 1)
    assert (await _generate(stack, key)).status_code == 200
    refused = await _generate(stack, key)
    assert refused.status_code == 402, refused.text
    body = refused.json()
    assert (body["code"], body["required"], body["available"]) == ("key_credit_limit", PRICE, 1)
    # The async pre-check answers the same, and queues nothing.
    async with stack.client() as client:
        queued = await client.post(
            GENERATE,
            json={"prompt": "later"},
            headers={**_auth(key), "Prefer": "respond-async"},
        )
        credits = await client.get("/api/v1/credits", headers=_auth(key))
    assert queued.status_code == 402 and queued.json()["code"] == "key_credit_limit"
    assert credits.status_code == 200
    assert credits.json()["balance"] == 100 - PRICE
    assert credits.json()["key"] == {
        "prefix": prefix,
        "creditLimit": PRICE + 1,
        "limitPeriod": "total",
        "periodStart": "1970-01-01T00:00:00.000Z",
        "spent": PRICE,
        "remaining": 1,
    }
    # Raising the limit lets it spend again at once (the limit is read per request).
    raised = await _admin(stack, "PATCH", f"/keys/{prefix}", {"creditLimit": 2 * PRICE})
    assert raised.status_code == 200 and raised.json()["remaining"] == PRICE
    assert (await _generate(stack, key)).status_code == 200
    assert (await stack.audit(name)).ok


async def test_a_key_limited_to_some_models_sees_and_uses_only_those(stack: Stack) -> None:
    name, key, _ = await _tenant_with_key(stack, 100, models=[MODEL, "bfl/flux-kontext-pro"])
    refused = await _generate(stack, key, model=OTHER)
    assert refused.status_code == 403, refused.text
    body = refused.json()
    assert body["code"] == "model_not_allowed" and body["field"] == "model"
    assert body["allowed"] == ["bfl/flux-kontext-pro", MODEL]
    assert MODEL in body["error"]
    async with stack.client() as client:
        openai = await client.post(
            "/v1/images/generations", json={"prompt": "x", "model": OTHER}, headers=_auth(key)
        )
        native_models = await client.get("/api/v1/models", headers=_auth(key))
        openai_models = await client.get("/v1/models", headers=_auth(key))
    assert openai.status_code == 403 and openai.json()["error"]["code"] == "model_not_allowed"
    listed = {model["id"] for model in native_models.json()["models"]}
    assert listed == {MODEL, "bfl/flux-kontext-pro"}
    assert {model["id"] for model in openai_models.json()["data"]} == listed
    assert (await _generate(stack, key, model=MODEL)).status_code == 200
    tenant = (await _admin(stack, "GET", f"/tenants/{name}")).json()
    assert tenant["balance"] == 100 - PRICE  # the refused ones charged nothing


async def test_a_fallback_outside_the_keys_models_never_serves(stack: Stack) -> None:
    """gemini-3.1-flash falls back to 2.5-flash (test_generate): not for a key without it."""
    preview = "google/gemini-3.1-flash-image-preview"
    name, key, _ = await _tenant_with_key(stack, 100, models=[preview])
    attempts = stack.settings.upstream_max_attempts
    await stack.set_faults({"kind": "error", "status": 503, "count": attempts})
    try:
        response = await _generate(stack, key, model=preview)
    finally:
        await stack.set_faults()
    assert response.status_code == 500, response.text  # failed, not served by 2.5-flash
    assert response.json()["code"] == "generation_failed"
    tenant = (await _admin(stack, "GET", f"/tenants/{name}")).json()
    assert tenant["balance"] == 100  # refunded; and the hold was the 3.1 price alone


async def test_an_expired_key_stops_at_its_expiry_even_while_cached(stack: Stack) -> None:
    """The auth cache (5 s by default) must not keep a key alive past its expiry."""
    assert stack.settings.auth_cache_seconds >= 4
    expires = utcnow() + timedelta(seconds=2)
    _, key, _ = await _tenant_with_key(stack, 10, expiresAt=expires.isoformat())
    async with stack.client() as client:
        assert (await client.get("/api/v1/credits", headers=_auth(key))).status_code == 200
        await asyncio.sleep(max((expires - utcnow()).total_seconds(), 0) + 0.3)
        response = await client.get("/api/v1/credits", headers=_auth(key))
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "key_expired"


async def test_rotation_keeps_policies_and_spend_and_ends_the_old_key(stack: Stack) -> None:
    name, key, prefix = await _tenant_with_key(
        stack, 100, label="app", creditLimit=3 * PRICE, limitPeriod="month", models=[MODEL]
    )
    assert (await _generate(stack, key)).status_code == 200
    rotated = await _admin(stack, "POST", f"/keys/{prefix}/rotate", {"graceSeconds": 600})
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["rotatedFrom"] == prefix and new["key"].startswith(new["prefix"])
    assert (new["label"], new["creditLimit"], new["limitPeriod"]) == ("app", 3 * PRICE, "month")
    assert (new["models"], new["spent"], new["remaining"]) == ([MODEL], PRICE, 2 * PRICE)
    # In the grace period both keys work, against one spend.
    assert (await _generate(stack, key)).status_code == 200
    assert (await _generate(stack, new["key"])).status_code == 200
    assert (await _generate(stack, new["key"])).json()["code"] == "key_credit_limit"
    # Rotating the new key with no grace ends it at once.
    again = await _admin(stack, "POST", f"/keys/{new['prefix']}/rotate")
    assert again.status_code == 201
    assert (await _generate(stack, new["key"])).status_code == 401
    assert (await _admin(stack, "GET", f"/keys/{new['prefix']}")).json()["active"] is False
    listing = (await _admin(stack, "GET", f"/tenants/{name}/keys")).json()["keys"]
    assert [k["prefix"] for k in listing] == [again.json()["prefix"], new["prefix"], prefix]
    ledger = (await _admin(stack, "GET", f"/tenants/{name}/ledger?limit=50")).json()
    used = {entry["apiKeyPrefix"] for entry in ledger["entries"] if entry["generationId"]}
    assert used == {prefix, new["prefix"]}
    for used_prefix, generations in ((prefix, 2), (new["prefix"], 1)):
        usage = (await _admin(stack, "GET", f"/usage?apiKey={used_prefix}")).json()
        assert usage["totals"]["generations"] == generations, usage
        assert usage["totals"]["creditsCharged"] == generations * PRICE
    assert (await stack.audit(name)).ok


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"creditLimit": -1}, "creditLimit"),
        ({"creditLimit": "10"}, "creditLimit"),
        ({"limitPeriod": "week"}, "limitPeriod"),
        ({"models": []}, "models"),
        ({"models": ["no/such-model"]}, "models"),
        ({"expiresAt": "tomorrow"}, "expiresAt"),
        ({"expiresAt": "2099-01-01T00:00:00"}, "expiresAt"),
        ({"expiresAt": "0001-01-01T00:00:00+14:00"}, "expiresAt"),  # before datetime.min in UTC
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_key_policies_are_400_naming_the_field(
    embedded_stack: Stack, body: dict[str, Any], field: str
) -> None:
    _, _, prefix = await _tenant_with_key(embedded_stack, 0)
    response = await _admin(embedded_stack, "PATCH", f"/keys/{prefix}", body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert (await _admin(embedded_stack, "GET", f"/keys/{prefix}")).json()["models"] is None


async def test_unknown_prefixes_are_404(embedded_stack: Stack) -> None:
    for method, path in (
        ("GET", "/keys/ig_missing1"),
        ("POST", "/keys/ig_missing1/rotate"),
        ("GET", "/usage?apiKey=ig_missing1"),
    ):
        response = await _admin(embedded_stack, method, path)
        assert response.status_code == 404 and response.json()["code"] == "not_found"


async def test_a_failed_generation_gives_the_hold_back_to_the_key(stack: Stack) -> None:
    name, key, prefix = await _tenant_with_key(stack, 100, creditLimit=PRICE)
    attempts = stack.settings.upstream_max_attempts
    await stack.set_faults({"kind": "error", "status": 503, "count": attempts})
    try:
        failed = await _generate(stack, key)
    finally:
        await stack.set_faults()
    assert failed.status_code == 500, failed.text
    detail = (await _admin(stack, "GET", f"/keys/{prefix}")).json()
    assert (detail["spent"], detail["remaining"]) == (0, PRICE)
    assert (await _generate(stack, key)).status_code == 200  # the limit was free again
    assert (await stack.audit(name)).ok


async def test_an_async_job_spends_from_its_key(stack: Stack) -> None:
    name, key, prefix = await _tenant_with_key(stack, 100, creditLimit=PRICE)
    async with stack.client() as client:
        accepted = await client.post(
            GENERATE, json={"prompt": "later"}, headers={**_auth(key), "Prefer": "respond-async"}
        )
        assert accepted.status_code == 202, accepted.text
        for _ in range(200):
            job = (await client.get(accepted.json()["statusUrl"], headers=_auth(key))).json()
            if job["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.1)
    assert job["status"] == "succeeded", job
    detail = (await _admin(stack, "GET", f"/keys/{prefix}")).json()
    assert (detail["spent"], detail["remaining"]) == (PRICE, 0)
    assert (await stack.audit(name)).ok
