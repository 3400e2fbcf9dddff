from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.storage.base import ObjectNotFound, StorageUnavailable
from app.storage.s3 import MAX_PRESIGN_SECONDS, S3ImageStore
from app.storage.signing import UrlSigner
from tests.support.servers import free_port
from tests.support.services import S3Service

KEY = "tenant-a/2025/03/gen-1-0.webp"


@pytest.fixture
async def store(s3_endpoint: S3Service) -> AsyncIterator[S3ImageStore]:
    bucket = s3_endpoint.create_bucket()
    store = S3ImageStore(**s3_endpoint.store_kwargs(bucket), ttl_seconds=300)
    yield store
    await store.aclose()


async def test_put_get_delete(store: S3ImageStore) -> None:
    await store.put(KEY, b"webp-bytes", "image/webp")
    assert await store.get(KEY) == b"webp-bytes"
    await store.delete(KEY)
    with pytest.raises(ObjectNotFound):
        await store.get(KEY)
    # S3 deletes are idempotent, and so is ours.
    await store.delete(KEY)


async def test_object_metadata(store: S3ImageStore, s3_endpoint: S3Service) -> None:
    await store.put(KEY, b"webp-bytes", "image/webp")
    head = s3_endpoint.client().head_object(Bucket=store.bucket, Key=KEY)
    assert head["ContentType"] == "image/webp"
    # Private (no shared cache keeps it) and no longer than a presigned URL lives (300 s).
    assert head["CacheControl"] == "private, max-age=300"


async def test_presigned_download_is_not_cacheable_by_shared_caches(store: S3ImageStore) -> None:
    await store.put(KEY, b"webp-bytes", "image/webp")
    async with httpx.AsyncClient() as client:
        response = await client.get(await store.url(KEY, "https://gateway.example.com"))
    assert response.status_code == 200
    directives = {part.strip() for part in response.headers["cache-control"].split(",")}
    assert "private" in directives and "public" not in directives and "immutable" not in directives
    max_age = next(int(d.split("=", 1)[1]) for d in directives if d.startswith("max-age="))
    assert 0 < max_age <= 300


async def test_missing_object(store: S3ImageStore) -> None:
    with pytest.raises(ObjectNotFound):
        await store.get("tenant-a/2025/03/missing-0.webp")


async def test_list_keys(store: S3ImageStore) -> None:
    keys = [
        "tenant-a/2025/03/g1-0.webp",
        "tenant-a/2025/04/g2-0.webp",
        "tenant-b/2025/03/g3-0.webp",
    ]
    await asyncio.gather(*(store.put(k, b"x", "image/webp") for k in keys))
    assert await store.list_keys() == sorted(keys)
    assert await store.list_keys("tenant-a/") == keys[:2]
    assert await store.list_keys("tenant-c/") == []


async def test_concurrent_puts_share_one_client(store: S3ImageStore) -> None:
    keys = [f"tenant-a/2025/03/gen-{i}-0.webp" for i in range(30)]
    await asyncio.gather(*(store.put(k, k.encode(), "image/webp") for k in keys))
    results = await asyncio.gather(*(store.get(k) for k in keys))
    assert results == [k.encode() for k in keys]


async def test_presigned_url_serves_the_bytes(store: S3ImageStore) -> None:
    await store.put(KEY, b"presigned-bytes", "image/webp")
    url = await store.url(KEY, "https://gateway.example.com")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        assert response.status_code == 200
        assert response.content == b"presigned-bytes"
        assert response.headers["content-type"] == "image/webp"
        # Without the signature the bucket is private.
        unsigned = await client.get(url.split("?", 1)[0])
        assert unsigned.status_code == 403


async def test_presign_endpoint_signs_for_the_name_clients_use(s3_endpoint: S3Service) -> None:
    # The gateway reaches the store as one host (e.g. http://minio:9000 inside compose);
    # browsers reach it as another. The URL must be signed for the second.
    bucket = s3_endpoint.create_bucket()
    port = httpx.URL(s3_endpoint.endpoint_url).port
    public = f"http://s3.public.example:{port}"
    store = S3ImageStore(**s3_endpoint.store_kwargs(bucket), presign_endpoint_url=public)
    try:
        await store.put(KEY, b"signed-for-the-public-name", "image/webp")
        url = httpx.URL(await store.url(KEY, "https://gateway.example.com"))
        assert (url.host, url.port) == ("s3.public.example", port)
        # Deliver it to the real server under the public name it was signed for.
        async with httpx.AsyncClient() as client:
            via_public_name = await client.get(
                url.copy_with(host="127.0.0.1"), headers={"Host": f"s3.public.example:{port}"}
            )
            via_internal_name = await client.get(url.copy_with(host="127.0.0.1"))
        assert via_public_name.status_code == 200
        assert via_public_name.content == b"signed-for-the-public-name"
        # The signature covers the host: it is not valid for the internal name.
        assert via_internal_name.status_code == 403
    finally:
        await store.aclose()


async def test_public_base_url_mode(s3_endpoint: S3Service) -> None:
    bucket = s3_endpoint.create_bucket()
    store = S3ImageStore(
        **s3_endpoint.store_kwargs(bucket), public_base_url="https://cdn.example.com/images/"
    )
    try:
        url = await store.url(KEY, "https://gateway.example.com")
        assert url == f"https://cdn.example.com/images/{KEY}"
    finally:
        await store.aclose()


async def test_invalid_key_is_refused(store: S3ImageStore) -> None:
    with pytest.raises(ValueError):
        await store.put("../escape.webp", b"x", "image/webp")


async def test_missing_bucket_is_unavailable(s3_endpoint: S3Service) -> None:
    # A misconfigured bucket is the store's problem (503), not a missing image (404).
    store = S3ImageStore(**s3_endpoint.store_kwargs("no-such-bucket-for-imagegate"))
    try:
        with pytest.raises(StorageUnavailable):
            await store.get(KEY)
        with pytest.raises(StorageUnavailable):
            await store.check()
    finally:
        await store.aclose()


async def test_wrong_credentials_are_unavailable(
    s3_endpoint: S3Service, store: S3ImageStore
) -> None:
    kwargs = s3_endpoint.store_kwargs(store.bucket) | {"secret_key": "wrong-secret"}
    bad = S3ImageStore(**kwargs)
    try:
        with pytest.raises(StorageUnavailable):
            await bad.put(KEY, b"x", "image/webp")
    finally:
        await bad.aclose()


async def test_closed_port_is_unavailable() -> None:
    store = S3ImageStore(
        bucket="images",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key="k",
        secret_key="s",
        connect_timeout=1,
        read_timeout=1,
    )
    try:
        with pytest.raises(StorageUnavailable) as info:
            await store.put(KEY, b"x", "image/webp")
        assert info.value.status_code == 503
        with pytest.raises(StorageUnavailable):
            await store.get(KEY)
        with pytest.raises(StorageUnavailable):
            await store.list_keys()
        with pytest.raises(StorageUnavailable):
            await store.check()
    finally:
        await store.aclose()


async def test_check_passes_for_a_reachable_bucket(store: S3ImageStore) -> None:
    await store.check()


async def test_server_outage_is_unavailable_and_recovers(
    s3_endpoint: S3Service, store: S3ImageStore
) -> None:
    if not s3_endpoint.can_stop:
        pytest.skip("external S3 endpoint")
    await store.put(KEY, b"before-outage", "image/webp")
    with s3_endpoint.stopped():
        with pytest.raises(StorageUnavailable):
            await store.get(KEY)
        with pytest.raises(StorageUnavailable):
            await store.put(KEY, b"x", "image/webp")
    # The same client reconnects once the server is back, and the data survived.
    assert await store.get(KEY) == b"before-outage"


@pytest.mark.parametrize("ttl", [0, MAX_PRESIGN_SECONDS + 1])
async def test_links_s3_cannot_presign_are_gateway_file_urls(
    s3_endpoint: S3Service, ttl: int
) -> None:
    signer = UrlSigner(b"s3-gateway-links-secret-0123456789")
    store = S3ImageStore(
        **s3_endpoint.store_kwargs(s3_endpoint.create_bucket()), ttl_seconds=ttl, signer=signer
    )
    try:
        await store.put(KEY, b"webp-bytes", "image/webp")
        url = urlsplit(await store.url(KEY, "https://gw.example.com/"))
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"https://gw.example.com/files/{KEY}"
        query = parse_qs(url.query)
        expires = int(query["expires"][0])
        assert (expires == 0) == (ttl == 0)
        assert signer.verify(KEY, expires, query["signature"][0], now=time.time())
        head = s3_endpoint.client().head_object(Bucket=store.bucket, Key=KEY)
        expected = "private, max-age=86400" if ttl == 0 else f"private, max-age={ttl}"
        assert head["CacheControl"] == expected
    finally:
        await store.aclose()


def test_a_ttl_s3_cannot_presign_needs_the_signer(s3_endpoint: S3Service) -> None:
    with pytest.raises(ValueError, match="signer"):
        S3ImageStore(**s3_endpoint.store_kwargs("any-bucket"), ttl_seconds=0)
