from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from app.api.deps import get_image_store, get_url_signer
from app.api.files import router
from app.storage.local import LocalImageStore
from app.storage.signing import UrlSigner
from tests.support.servers import serve_in_thread

KEY = "tenant-a/2025/03/gen-1-0.webp"
OTHER_KEY = "tenant-b/2025/03/gen-2-0.webp"
SIGNER = UrlSigner(b"files-route-test-secret-0123456789")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalImageStore:
    return LocalImageStore(tmp_path_factory.mktemp("files"), SIGNER, ttl_seconds=600)


@pytest.fixture(scope="module")
def base_url(store: LocalImageStore) -> Iterator[str]:
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_url_signer] = lambda: SIGNER
    app.dependency_overrides[get_image_store] = lambda: store
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url) as client:
        yield client


@pytest.fixture(scope="module", autouse=True)
def stored_objects(store: LocalImageStore) -> None:
    for key, data in ((KEY, b"RIFF-tenant-a"), (OTHER_KEY, b"RIFF-tenant-b")):
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def signed_path(key: str, expires: int, signature: str | None = None) -> str:
    signature = signature if signature is not None else SIGNER.sign(key, expires)
    return f"/files/{quote(key)}?expires={expires}&signature={signature}"


async def test_valid_url_serves_the_bytes(
    client: httpx.AsyncClient, store: LocalImageStore, base_url: str
) -> None:
    url = await store.url(KEY, base_url)
    response = await client.get(url)
    assert response.status_code == 200
    assert response.content == b"RIFF-tenant-a"
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["x-content-type-options"] == "nosniff"
    cache = response.headers["cache-control"]
    assert cache.startswith("private, max-age=")
    assert 590 <= int(cache.rsplit("=", 1)[1]) <= 600


async def test_url_from_store_round_trips_through_route(
    client: httpx.AsyncClient, store: LocalImageStore, base_url: str
) -> None:
    url = await store.url(OTHER_KEY, base_url + "/")
    assert url.startswith(f"{base_url}/files/{OTHER_KEY}?")
    assert (await client.get(url)).content == b"RIFF-tenant-b"


async def test_signature_for_another_key_is_refused(client: httpx.AsyncClient) -> None:
    expires = int(time.time()) + 60
    signature = SIGNER.sign(OTHER_KEY, expires)
    response = await client.get(signed_path(KEY, expires, signature))
    assert response.status_code == 403
    assert response.json()["code"] == "invalid_signature"
    assert isinstance(response.json()["error"], str)


async def test_tampered_expiry_is_refused(client: httpx.AsyncClient) -> None:
    expires = int(time.time()) + 60
    signature = SIGNER.sign(KEY, expires)
    response = await client.get(signed_path(KEY, expires + 3600, signature))
    assert response.status_code == 403
    assert response.json()["code"] == "invalid_signature"


async def test_tampered_signature_is_refused(client: httpx.AsyncClient) -> None:
    expires = int(time.time()) + 60
    signature = SIGNER.sign(KEY, expires)
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    response = await client.get(signed_path(KEY, expires, flipped))
    assert response.status_code == 403
    assert response.json()["code"] == "invalid_signature"


async def test_tampered_key_is_refused(client: httpx.AsyncClient) -> None:
    expires = int(time.time()) + 60
    signature = SIGNER.sign(KEY, expires)
    response = await client.get(signed_path(KEY.replace("gen-1", "gen-9"), expires, signature))
    assert response.status_code == 403


async def test_other_secret_is_refused(client: httpx.AsyncClient) -> None:
    expires = int(time.time()) + 60
    forged = UrlSigner(b"attacker-secret-0123456789abcdef").sign(KEY, expires)
    response = await client.get(signed_path(KEY, expires, forged))
    assert response.status_code == 403


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?expires=9999999999",
        "?signature=abc",
        "?expires=soon&signature=abc",
        "?expires=-5&signature=abc",
        "?expires=%C2%B2&signature=abc",
    ],
)
async def test_missing_or_malformed_parameters_are_refused(
    client: httpx.AsyncClient, query: str
) -> None:
    response = await client.get(f"/files/{KEY}{query}")
    assert response.status_code == 403
    assert response.json()["code"] == "invalid_signature"


async def test_expired_url_is_refused(client: httpx.AsyncClient) -> None:
    expires = int(time.time()) - 1
    response = await client.get(signed_path(KEY, expires))
    assert response.status_code == 403
    assert response.json()["code"] == "url_expired"
    assert response.headers["cache-control"] == "no-store"


async def test_missing_object_is_404(client: httpx.AsyncClient) -> None:
    expires = int(time.time()) + 60
    response = await client.get(signed_path("tenant-a/2025/03/missing-0.webp", expires))
    assert response.status_code == 404
    assert response.json() == {"error": "File not found", "code": "not_found"}


async def test_traversal_key_even_if_signed_is_404(client: httpx.AsyncClient) -> None:
    # Starlette normalises raw "../" out of paths; an encoded one reaches the route as a key.
    expires = int(time.time()) + 60
    key = "tenant-a/../../../etc/passwd"
    response = await client.get(
        f"/files/{quote(key, safe='')}?expires={expires}&signature={SIGNER.sign(key, expires)}"
    )
    assert response.status_code == 404
    assert b"root:" not in response.content


async def test_signed_url_query_is_what_the_store_produces(store: LocalImageStore) -> None:
    url = await store.url(KEY, "http://gateway")
    query = parse_qs(urlsplit(url).query)
    assert set(query) == {"expires", "signature"}
