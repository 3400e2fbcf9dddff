"""Cache-Control over HTTP: nothing that carries a signed URL or a key may be stored by a
cache, and a stored image may be cached privately for no longer than its URL lives."""

from __future__ import annotations

import asyncio

import httpx

from tests.support.gateway import Stack

PATH = "/api/v1/generate-image"


def _no_store(response: httpx.Response) -> None:
    assert response.headers.get("cache-control") == "no-store", (
        response.request.url,
        response.status_code,
        response.headers.get("cache-control"),
    )


async def test_responses_with_signed_urls_or_keys_are_no_store(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    token = stack.settings.admin_token
    assert token is not None
    admin = {"Authorization": f"Bearer {token.get_secret_value()}"}
    async with stack.client() as client:
        generated = await client.post(PATH, json={"prompt": "a lighthouse"}, headers=tenant.auth)
        assert generated.status_code == 200, generated.text
        _no_store(generated)

        openai = await client.post(
            "/v1/images/generations",
            # A signed URL on request: /v1 answers b64_json by default, as OpenAI does.
            json={
                "model": "gemini-2.5-flash-image",
                "prompt": "a harbour",
                "response_format": "url",
            },
            headers=tenant.auth,
        )
        assert openai.status_code == 200, openai.text
        assert openai.json()["data"][0]["url"]
        _no_store(openai)

        submitted = await client.post(
            PATH,
            json={"prompt": "a slow harbour"},
            headers={**tenant.auth, "Prefer": "respond-async"},
        )
        assert submitted.status_code == 202, submitted.text
        _no_store(submitted)
        for _ in range(200):
            job = await client.get(submitted.headers["location"], headers=tenant.auth)
            if job.json()["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.25)
        assert job.json()["status"] == "succeeded", job.text
        assert job.json()["images"][0]["url"]
        _no_store(job)

        listed = await client.get("/api/v1/images", headers=tenant.auth)
        assert listed.json()["items"][0]["url"]
        _no_store(listed)
        image_id = listed.json()["items"][0]["id"]
        one = await client.get(f"/api/v1/images/{image_id}", headers=tenant.auth)
        assert one.status_code == 200 and one.json()["url"]
        _no_store(one)
        gallery = await client.get("/api/v1/gallery", headers=tenant.auth)
        assert gallery.json()["items"][0]["url"]
        _no_store(gallery)

        key = await client.post(f"/admin/v1/tenants/{tenant.name}/keys", headers=admin)
        assert key.status_code == 201 and key.json()["key"]
        _no_store(key)

        # Errors of these routes too (a 401 may echo nothing, but is not for caches).
        _no_store(await client.get("/api/v1/images"))

        # The image itself: private, and no longer than the URL lives.
        fetched = await client.get(generated.json()["images"][0]["url"])
    assert fetched.status_code == 200
    directives = {part.strip() for part in fetched.headers["cache-control"].split(",")}
    assert "private" in directives and "public" not in directives, directives
    max_age = next(int(d.split("=", 1)[1]) for d in directives if d.startswith("max-age="))
    assert 0 < max_age <= stack.settings.url_ttl_seconds
