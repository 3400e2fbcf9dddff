"""The admin HTTP API (/admin/v1) over real HTTP, on the embedded and the Postgres+S3 stack."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from tests.support.gateway import Stack, gateway_settings
from tests.support.servers import serve_in_thread

ADMIN = "/admin/v1"
GENERATE = "/api/v1/generate-image"
PRICE = 4  # google/gemini-2.5-flash-image in the packaged catalog


def _admin_headers(stack: Stack) -> dict[str, str]:
    assert stack.settings.admin_token is not None
    return {"Authorization": f"Bearer {stack.settings.admin_token.get_secret_value()}"}


async def _admin(
    stack: Stack, method: str, path: str, json: Any = None, **kwargs: Any
) -> httpx.Response:
    async with stack.client() as client:
        return await client.request(
            method, ADMIN + path, json=json, headers=_admin_headers(stack), **kwargs
        )


async def _new_tenant(stack: Stack) -> str:
    name = f"adm-{uuid.uuid4().hex[:10]}"
    response = await _admin(stack, "POST", "/tenants", {"name": name})
    assert response.status_code == 201, response.text
    return name


async def _generate(stack: Stack, key: str, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "A lighthouse on a cliff at dawn")
    async with stack.client() as client:
        return await client.post(GENERATE, json=body, headers={"Authorization": f"Bearer {key}"})


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token-wrong-token-wrong",
        "Bearer",
        "Basic dGVzdC1hZG1pbi10b2tlbi1mb3ItYm90aC1zdGFja3M=",
        "test-admin-token-for-both-stacks",  # the right token without the scheme
        "Bearer test-admin-token-for-both-stacks-and-more",
        "Bearer tëst".encode(),  # not ASCII: a 401, not a 500
    ],
)
async def test_without_the_admin_token_it_is_401(
    stack: Stack, authorization: str | bytes | None
) -> None:
    value = authorization.encode() if isinstance(authorization, str) else authorization
    headers = [] if value is None else [(b"Authorization", value)]
    async with stack.client() as client:
        listing = await client.get(f"{ADMIN}/tenants", headers=headers)
        created = await client.post(f"{ADMIN}/tenants", json={"name": "intruder"}, headers=headers)
    for response in (listing, created):
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "unauthorized"
        assert isinstance(response.json()["error"], str)
        assert response.headers["www-authenticate"].startswith("Bearer")
    # Nothing was created by the refused request.
    assert (await _admin(stack, "GET", "/tenants/intruder")).status_code == 404


async def test_a_tenant_api_key_is_not_an_admin_token(stack: Stack) -> None:
    tenant = await stack.new_tenant()
    async with stack.client() as client:
        response = await client.get(f"{ADMIN}/tenants", headers=tenant.auth)
    assert response.status_code == 401


def test_absent_when_no_admin_token_is_set(tmp_path: Path) -> None:
    settings = gateway_settings(data_dir=tmp_path, admin_token=None)
    assert settings.admin_token is None
    with serve_in_thread(create_app(settings)) as base_url, httpx.Client(base_url=base_url) as c:
        for method, path in (("GET", "/tenants"), ("POST", "/tenants"), ("GET", "/usage")):
            response = c.request(
                method, ADMIN + path, headers={"Authorization": "Bearer anything-at-all-1234567"}
            )
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["code"] == "not_found"
        assert not [p for p in c.get("/openapi.json").json()["paths"] if p.startswith(ADMIN)]
        assert c.get("/healthz").status_code == 200


def test_an_empty_admin_token_leaves_it_off_and_a_short_one_is_refused() -> None:
    assert gateway_settings(admin_token="").admin_token is None
    with pytest.raises(ValueError, match="at least 24 characters") as caught:
        gateway_settings(admin_token="short-token")
    assert "short-token" not in str(caught.value)  # the secret is not echoed


async def test_key_created_by_the_admin_api_generates_and_revokes(stack: Stack) -> None:
    name = await _new_tenant(stack)
    created = await _admin(stack, "POST", f"/tenants/{name}/keys", {"label": "ci"})
    assert created.status_code == 201, created.text
    key_body = created.json()
    key, prefix = key_body["key"], key_body["prefix"]
    assert key.startswith(prefix) and key_body["label"] == "ci" and key_body["active"] is True

    granted = await _admin(stack, "POST", f"/tenants/{name}/credits", {"amount": 10})
    assert granted.json() == {"tenant": name, "granted": 10, "balance": 10}

    response = await _generate(stack, key)
    assert response.status_code == 200, response.text
    assert response.json()["creditsRemaining"] == 10 - PRICE

    summary = (await _admin(stack, "GET", f"/tenants/{name}")).json()
    assert summary["balance"] == 10 - PRICE and summary["activeKeys"] == 1

    # Listing shows keys without any secret.
    listing = await _admin(stack, "GET", f"/tenants/{name}/keys")
    assert listing.status_code == 200
    (listed,) = listing.json()["keys"]
    assert listed["prefix"] == prefix and listed["lastUsedAt"] is not None
    assert key not in listing.text and key[len(prefix) :] not in listing.text
    assert set(listed) == {
        "prefix",
        "tenant",
        "label",
        "creditLimit",
        "limitPeriod",
        "spent",
        "remaining",
        "periodStart",
        "models",
        "expiresAt",
        "active",
        "createdAt",
        "lastUsedAt",
        "revokedAt",
        "rotatedFrom",
    }
    assert (listed["spent"], listed["creditLimit"], listed["remaining"]) == (PRICE, None, None)

    revoked = await _admin(stack, "POST", f"/keys/{prefix}/revoke")
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False and revoked.json()["revokedAt"]
    again = await _admin(stack, "POST", f"/keys/{prefix}/revoke")
    assert again.json()["revokedAt"] == revoked.json()["revokedAt"]
    refused = await _generate(stack, key)
    assert refused.status_code == 401
    assert (await _admin(stack, "GET", f"/tenants/{name}")).json()["activeKeys"] == 0
    assert (await stack.audit(name)).ok


async def test_a_key_without_a_body_or_label(stack: Stack) -> None:
    name = await _new_tenant(stack)
    async with stack.client() as client:
        response = await client.post(f"{ADMIN}/tenants/{name}/keys", headers=_admin_headers(stack))
    assert response.status_code == 201, response.text
    assert response.json()["label"] is None


async def test_tenant_listing_pages(stack: Stack) -> None:
    names = sorted([await _new_tenant(stack) for _ in range(3)])
    first = (await _admin(stack, "GET", "/tenants", params={"limit": 1})).json()
    assert len(first["tenants"]) == 1 and first["limit"] == 1 and first["total"] >= 3
    everything = (await _admin(stack, "GET", "/tenants", params={"limit": 1000})).json()
    listed = [tenant["name"] for tenant in everything["tenants"]]
    assert listed == sorted(listed)
    assert set(names) <= set(listed)
    one = next(tenant for tenant in everything["tenants"] if tenant["name"] == names[0])
    assert one["balance"] == 0 and one["activeKeys"] == 0
    bad = await _admin(stack, "GET", "/tenants", params={"limit": 0})
    assert bad.status_code == 400 and "limit" in bad.json()["error"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/tenants", {"name": "has space"}, None),
        ("/tenants", {}, "name"),
        ("/tenants", {"name": "ok", "extra": 1}, "extra"),
        ("/tenants/{tenant}/credits", {"amount": 0}, "amount"),
        ("/tenants/{tenant}/credits", {"amount": "5"}, "amount"),
        ("/tenants/{tenant}/credits", {"amount": 2.5}, "amount"),
        ("/tenants/{tenant}/credits", {"amount": 10**12}, "amount"),
        ("/tenants/{tenant}/keys", {"label": ""}, "label"),
        ("/tenants/{tenant}/credits", [1, 2], None),
    ],
)
async def test_invalid_bodies_are_400_naming_the_field(
    stack: Stack, path: str, body: Any, field: str | None
) -> None:
    tenant = await _new_tenant(stack)
    response = await _admin(stack, "POST", path.format(tenant=tenant), body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"
    if field:
        assert response.json()["error"].startswith(f"{field}:")


async def test_other_errors_use_the_error_shape(stack: Stack) -> None:
    name = await _new_tenant(stack)
    duplicate = await _admin(stack, "POST", "/tenants", {"name": name})
    assert duplicate.status_code == 400 and "already exists" in duplicate.json()["error"]
    for method, path in (
        ("GET", "/tenants/nobody-here"),
        ("GET", "/tenants/nobody-here/keys"),
        ("POST", "/keys/ig_nothing1/revoke"),
        ("GET", "/usage?tenant=nobody-here"),
    ):
        response = await _admin(stack, method, path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["code"] == "not_found"
    async with stack.client() as client:
        wrong_type = await client.post(
            f"{ADMIN}/tenants",
            content=b"name=x",
            headers={**_admin_headers(stack), "Content-Type": "application/x-www-form-urlencoded"},
        )
    assert wrong_type.status_code == 415


async def test_rate_limits_are_set_applied_and_reset(stack: Stack) -> None:
    name = await _new_tenant(stack)
    key = (await _admin(stack, "POST", f"/tenants/{name}/keys")).json()["key"]
    limited = await _admin(
        stack, "PUT", f"/tenants/{name}/rate-limits", {"perMinute": 500, "keyPerMinute": 2}
    )
    assert limited.status_code == 200, limited.text
    assert limited.json()["rateLimits"] == {
        "perMinute": 500,
        "keyPerMinute": 2,
        "effective": {"perMinute": 500, "keyPerMinute": 2},
    }
    async with stack.client() as client:
        auth = {"Authorization": f"Bearer {key}"}
        statuses = [(await client.get("/api/v1/credits", headers=auth)).status_code for _ in "abc"]
    assert statuses == [200, 200, 429]

    bad = await _admin(stack, "PUT", f"/tenants/{name}/rate-limits", {"perMinute": 0})
    assert bad.status_code == 400 and bad.json()["error"].startswith("perMinute:")
    reset = await _admin(stack, "PUT", f"/tenants/{name}/rate-limits", {})
    assert reset.json()["rateLimits"] == {
        "perMinute": None,
        "keyPerMinute": None,
        "effective": {
            "perMinute": stack.settings.rate_limit_tenant_per_minute,
            "keyPerMinute": stack.settings.rate_limit_key_per_minute,
        },
    }


async def test_usage_by_tenant_model_and_day_as_json_and_csv(stack: Stack) -> None:
    name = await _new_tenant(stack)
    key = (await _admin(stack, "POST", f"/tenants/{name}/keys")).json()["key"]
    await _admin(stack, "POST", f"/tenants/{name}/credits", {"amount": 100})
    assert (await _generate(stack, key, numImages=2)).status_code == 200
    assert (await _generate(stack, key)).status_code == 200
    other = await _generate(stack, key, model="google/gemini-3-pro-image")
    assert other.status_code == 200, other.text
    await stack.set_faults({"kind": "error", "status": 500, "count": 1000})
    try:
        assert (await _generate(stack, key)).status_code == 500
    finally:
        await stack.set_faults()

    today = datetime.now(UTC).date().isoformat()
    response = await _admin(stack, "GET", "/usage", params={"tenant": name})
    assert response.status_code == 200, response.text
    body = response.json()
    rows = {row["model"]: row for row in body["rows"]}
    assert set(rows) == {"google/gemini-2.5-flash-image", "google/gemini-3-pro-image"}
    flash = rows["google/gemini-2.5-flash-image"]
    assert flash["day"] == today and flash["tenant"] == name
    assert (flash["generations"], flash["failed"], flash["images"]) == (3, 1, 3)
    assert flash["creditsCharged"] == 3 * PRICE
    pro = rows["google/gemini-3-pro-image"]
    assert (pro["generations"], pro["failed"], pro["images"]) == (1, 0, 1)
    assert body["totals"]["creditsCharged"] == flash["creditsCharged"] + pro["creditsCharged"]
    # The credits charged agree with the ledger.
    assert (
        100 - body["totals"]["creditsCharged"]
        == (await _admin(stack, "GET", f"/tenants/{name}")).json()["balance"]
    )

    as_csv = await _admin(stack, "GET", "/usage", params={"tenant": name, "format": "csv"})
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in as_csv.headers["content-disposition"]
    parsed = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [row["model"] for row in parsed] == sorted(rows)
    for row in parsed:
        json_row = rows[row["model"]]
        assert row["day"] == today and row["tenant"] == name
        assert row["tenant_id"] == json_row["tenantId"]
        assert int(row["generations"]) == json_row["generations"]
        assert int(row["failed"]) == json_row["failed"]
        assert int(row["images"]) == json_row["images"]
        assert int(row["credits_charged"]) == json_row["creditsCharged"]

    only_pro = await _admin(
        stack, "GET", "/usage", params={"tenant": name, "model": "google/gemini-3-pro-image"}
    )
    assert [row["model"] for row in only_pro.json()["rows"]] == ["google/gemini-3-pro-image"]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    later = await _admin(stack, "GET", "/usage", params={"tenant": name, "from": tomorrow})
    assert later.json()["rows"] == []
    up_to_today = await _admin(
        stack, "GET", "/usage", params={"tenant": name, "from": today, "to": today}
    )
    assert len(up_to_today.json()["rows"]) == 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"format": "xml"}, "format"),
        ({"from": "2026-13-01"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"from": "20260101"}, "from"),
        ({"from": "2026-02-02", "to": "2026-02-01"}, "from"),
    ],
)
async def test_usage_rejects_bad_parameters(
    stack: Stack, params: dict[str, str], field: str
) -> None:
    response = await _admin(stack, "GET", "/usage", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"
    assert field in response.json()["error"]
