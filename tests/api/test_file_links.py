"""Image links that outlive a chat: `IMAGEGATE_URL_TTL_SECONDS=0` links never expire but
stay unguessable and die with the image, on both stacks (local files; S3, where the
gateway serves them itself); `IMAGEGATE_PUBLIC_BASE_URL` names the links' host."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from app.settings import Settings
from app.storage.signing import UrlSigner
from tests.support.gateway import Stack, TenantHandle, gateway_settings, stack_in_thread

PUBLIC = "https://images.example.org"


@pytest.fixture(params=["embedded", "postgres"])
def forever_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    base: Settings = request.getfixturevalue(f"{request.param}_settings")
    update: dict[str, Any] = {"url_ttl_seconds": 0}
    if request.param == "embedded":  # its own SQLite file and image directory
        update["data_dir"] = tmp_path_factory.mktemp("forever")
    return base.model_copy(update=update)


@pytest_asyncio.fixture
async def forever(forever_settings: Settings) -> AsyncIterator[Stack]:
    async for stack in stack_in_thread(forever_settings, "forever"):
        yield stack


async def _generate(stack: Stack, tenant: TenantHandle) -> dict[str, Any]:
    async with stack.client() as client:
        response = await client.post(
            "/api/v1/generate-image", json={"prompt": "a kite"}, headers=tenant.auth
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_ttl_zero_links_never_expire_and_die_with_the_image(forever: Stack) -> None:
    tenant = await forever.new_tenant(credits=20)
    image = (await _generate(forever, tenant))["images"][0]
    url = urlsplit(image["url"])
    # A gateway link on both backends: S3 cannot presign a link without an expiry.
    assert url.path.startswith("/files/") and url.netloc == urlsplit(forever.base_url).netloc
    query = parse_qs(url.query)
    assert query["expires"] == ["0"]
    signer = UrlSigner(b"test-signing-secret")
    key = url.path.removeprefix("/files/")
    ten_years = time.time() + 10 * 365 * 86400
    assert signer.verify(key, 0, query["signature"][0], now=ten_years)
    async with forever.client() as client:
        served = await client.get(image["url"])
        assert served.status_code == 200 and served.content[:4] == b"RIFF"
        assert served.headers["cache-control"] == "private, max-age=86400"
        # Unguessable: another key, or a signature for another key, is refused.
        other = key[:-6] + ("9" if key[-6] != "9" else "8") + key[-5:]
        assert (await client.get(f"/files/{other}?{url.query}")).status_code == 403
        assert (await client.get(f"/files/{key}?expires=0&signature=x")).status_code == 403
        # The history gives the same never-expiring link.
        listed = await client.get("/api/v1/images", headers=tenant.auth)
        assert parse_qs(urlsplit(listed.json()["items"][0]["url"]).query)["expires"] == ["0"]
        deleted = await client.delete(f"/api/v1/images/{image_id(listed)}", headers=tenant.auth)
        assert deleted.status_code == 204
        gone = await client.get(image["url"])
    assert gone.status_code == 404


def image_id(listed: httpx.Response) -> str:
    item: dict[str, Any] = listed.json()["items"][0]
    return str(item["id"])


@pytest_asyncio.fixture(scope="module")
async def behind_a_proxy(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    settings = gateway_settings(
        data_dir=tmp_path_factory.mktemp("public-base"), public_base_url=PUBLIC
    )
    async for stack in stack_in_thread(settings, "public-base"):
        yield stack


async def test_local_links_name_the_public_base_url_not_the_request_host(
    behind_a_proxy: Stack,
) -> None:
    tenant = await behind_a_proxy.new_tenant(credits=20)
    url = (await _generate(behind_a_proxy, tenant))["images"][0]["url"]
    assert url.startswith(f"{PUBLIC}/files/")
    # The same path and signature work at the gateway (what the public host proxies to).
    parts = urlsplit(url)
    async with behind_a_proxy.client() as client:
        served = await client.get(f"{parts.path}?{parts.query}")
        listed = await client.get("/api/v1/images", headers=tenant.auth)
    assert served.status_code == 200
    assert listed.json()["items"][0]["url"].startswith(f"{PUBLIC}/files/")
