"""app.main: repeated slashes in a path collapse, without opening `/files` to traversal."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx

from app.storage.signing import UrlSigner
from tests.support.gateway import Stack


async def _raw_get(base_url: str, target: str) -> int:
    """The status of GET `target` sent byte for byte (httpx would resolve dot segments)."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await reader.readline()
    finally:
        writer.close()
    return int(status_line.split()[1])


async def test_a_base_url_with_a_trailing_slash_reaches_the_routes(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=10)
    async with stack.client() as client:
        generated = await client.post(
            "/api/v1//generate-image", json={"prompt": "x"}, headers=tenant.auth
        )
        models = await client.get("/api//v1///models")
    assert generated.status_code == 200, generated.text
    assert models.status_code == 200 and models.json()["object"] == "list"


async def test_doubled_slashes_in_a_file_url_serve_the_same_file(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=10)
    async with stack.client() as client:
        generated = await client.post(
            "/api/v1/generate-image", json={"prompt": "x"}, headers=tenant.auth
        )
        url = generated.json()["images"][0]["url"]
        direct = await client.get(url)
        if "/files/" not in url:
            return  # an S3 presigned URL: the gateway is not in the path
        parts = urlsplit(url)
        doubled_path = "/" + parts.path.lstrip("/").replace("/", "//")
        doubled = await client.get(f"{doubled_path}?{parts.query}")
    assert doubled.status_code == 200
    assert doubled.content == direct.content


async def test_collapsing_does_not_open_files_to_traversal(stack: Stack) -> None:
    # Signed with the test gateway's own secret, so only the key check can refuse them.
    signer = UrlSigner(b"test-signing-secret")
    for key in ("../../etc/passwd", "..//..//etc/passwd", "a/../../x", "/etc/passwd", ".."):
        collapsed = "/".join(part for part in key.split("/") if part)
        for signed in {key, collapsed}:
            query = f"expires=9999999999&signature={signer.sign(signed, 9999999999)}"
            status = await _raw_get(stack.base_url, f"/files//{key}?{query}")
            assert status in (403, 404), (key, signed, status)
    # Nothing in the data directory outside the image root is reachable either.
    secret_file = "../url-signing.key"
    query = f"expires=9999999999&signature={signer.sign(secret_file, 9999999999)}"
    assert await _raw_get(stack.base_url, f"/files//{secret_file}?{query}") in (403, 404)
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        assert (await client.get("/files//x")).status_code == 403
