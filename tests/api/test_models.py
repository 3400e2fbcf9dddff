"""The public catalogue (`/api/v1/models`, `/api/v1/presets`, `/v1/models`) as elizaOS
and OpenAI clients read it: OpenAI's list shape, no key needed, no rate limit spent."""

from __future__ import annotations

import uuid

import pytest

from app.providers.catalog import Catalog
from tests.support.gateway import Stack

CATALOGUE = ["/api/v1/models", "/api/v1/presets", "/v1/models"]


async def test_models_add_an_openai_list_beside_the_native_fields(stack: Stack) -> None:
    async with stack.client() as client:
        body = (await client.get("/api/v1/models")).json()
    catalog = Catalog.load()
    assert body["object"] == "list"
    assert body["data"] == [
        {"id": model.id, "object": "model", "created": 0, "owned_by": model.provider}
        for model in catalog
    ]
    # The native fields are still there, listing the same models.
    assert [model["id"] for model in body["models"]] == list(catalog.ids)
    assert body["defaultModel"] and body["aspectRatios"]


@pytest.mark.parametrize("path", CATALOGUE)
async def test_the_catalogue_is_readable_without_a_key(stack: Stack, path: str) -> None:
    async with stack.client() as client:
        response = await client.get(path)
    assert response.status_code == 200, response.text
    assert "x-ratelimit-limit" not in response.headers


async def test_catalogue_reads_do_not_spend_the_generation_rate_limit(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    await stack.set_rate_limit(tenant, per_minute=1)
    async with stack.client() as client:
        # A client's startup checks, with its key, as the elizaOS plugin sends them.
        for path in CATALOGUE * 2:
            response = await client.get(path, headers=tenant.auth)
            assert response.status_code == 200, response.text
            assert "x-ratelimit-limit" not in response.headers
        generated = await client.post(
            "/api/v1/generate-image", json={"prompt": "x"}, headers=tenant.auth
        )
        assert generated.status_code == 200, generated.text
        limited = await client.post(
            "/api/v1/generate-image", json={"prompt": "x"}, headers=tenant.auth
        )
    assert limited.status_code == 429


@pytest.mark.parametrize("path", CATALOGUE)
async def test_an_invalid_key_on_the_catalogue_is_still_a_401(stack: Stack, path: str) -> None:
    """The elizaOS plugin validates its key with GET /models: a wrong key must fail it."""
    wrong = {"X-API-Key": f"ig_{uuid.uuid4().hex}{uuid.uuid4().hex}"}
    async with stack.client() as client:
        response = await client.get(path, headers=wrong)
    assert response.status_code == 401, response.text
    body = response.json()
    code = body["error"]["code"] if path.startswith("/v1") else body["code"]
    assert code in ("unauthorized", "invalid_api_key")


async def test_openapi_marks_the_key_optional_on_the_catalogue_only(stack: Stack) -> None:
    async with stack.client() as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    for path in CATALOGUE:
        assert paths[path]["get"]["security"] == [{"apiKey": []}, {}], path
    assert paths["/api/v1/credits/balance"]["get"]["security"] == [{"apiKey": []}]
