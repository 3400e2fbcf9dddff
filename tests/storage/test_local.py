from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from app.settings import Settings
from app.storage.base import ObjectNotFound
from app.storage.factory import create_image_store
from app.storage.local import LocalImageStore
from app.storage.signing import UrlSigner

KEY = "tenant-a/2025/03/gen-1-0.webp"


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(b"local-store-test-secret-0123456789")


@pytest.fixture
def store(tmp_path: Path, signer: UrlSigner) -> LocalImageStore:
    return LocalImageStore(tmp_path / "images", signer, ttl_seconds=600)


async def test_put_get_delete(store: LocalImageStore) -> None:
    await store.put(KEY, b"webp-bytes", "image/webp")
    assert await store.get(KEY) == b"webp-bytes"
    assert (store.root / KEY).read_bytes() == b"webp-bytes"
    await store.delete(KEY)
    with pytest.raises(ObjectNotFound):
        await store.get(KEY)
    # Deleting again is not an error.
    await store.delete(KEY)


async def test_put_overwrites_atomically(store: LocalImageStore) -> None:
    await store.put(KEY, b"first", "image/webp")
    await store.put(KEY, b"second", "image/webp")
    assert await store.get(KEY) == b"second"
    # No temp files left behind next to the object.
    assert [p.name for p in (store.root / KEY).parent.iterdir()] == ["gen-1-0.webp"]


async def test_concurrent_puts(store: LocalImageStore) -> None:
    keys = [f"tenant-a/2025/03/gen-{i}-0.webp" for i in range(20)]
    await asyncio.gather(*(store.put(k, k.encode(), "image/webp") for k in keys))
    assert await store.list_keys() == sorted(keys)
    assert await store.get(keys[7]) == keys[7].encode()


async def test_missing_object(store: LocalImageStore) -> None:
    with pytest.raises(ObjectNotFound) as info:
        await store.get("tenant-a/2025/03/nope-0.webp")
    assert info.value.status_code == 404
    # The message a client could see does not echo the tenant-scoped key.
    assert "tenant-a" not in info.value.message


async def test_list_keys_by_prefix(store: LocalImageStore) -> None:
    keys = [
        "tenant-a/2025/03/g1-0.webp",
        "tenant-a/2025/04/g2-0.webp",
        "tenant-ab/2025/03/g3-0.webp",
        "tenant-b/2025/03/g4-0.webp",
    ]
    for key in keys:
        await store.put(key, b"x", "image/webp")
    assert await store.list_keys() == sorted(keys)
    assert await store.list_keys("tenant-a/") == keys[:2]
    assert await store.list_keys("tenant-a") == keys[:3]
    assert await store.list_keys("tenant-a/2025/04/") == [keys[1]]
    assert await store.list_keys("tenant-c/") == []


async def test_list_keys_on_missing_root(tmp_path: Path, signer: UrlSigner) -> None:
    store = LocalImageStore(tmp_path / "never-created", signer, ttl_seconds=60)
    assert await store.list_keys() == []


@pytest.mark.parametrize(
    "key",
    ["../escape.webp", "a/../../escape.webp", "/etc/passwd", "a//b.webp", "a/./b", "", "a\\b"],
)
async def test_traversal_is_impossible(store: LocalImageStore, key: str) -> None:
    with pytest.raises(ValueError):
        await store.put(key, b"x", "image/webp")
    with pytest.raises(ValueError):
        await store.get(key)


async def test_symlink_out_of_root_is_refused(store: LocalImageStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.webp").write_bytes(b"secret")
    store.root.mkdir(parents=True)
    (store.root / "tenant-x").symlink_to(outside)
    with pytest.raises(ValueError):
        await store.get("tenant-x/secret.webp")


async def test_url_is_signed_and_expires(store: LocalImageStore, signer: UrlSigner) -> None:
    url = await store.url(KEY, "https://img.example.com/")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"https://img.example.com/files/{KEY}"
    query = parse_qs(parts.query)
    expires = int(query["expires"][0])
    now = datetime.now(UTC).timestamp()
    assert now + 590 <= expires <= now + 610
    assert signer.verify(KEY, expires, query["signature"][0], now=now)


def test_factory_builds_local_store_by_default(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = create_image_store(settings)
    assert isinstance(store, LocalImageStore)
    assert store.root == (tmp_path / "images").resolve()


def test_factory_builds_s3_store_for_a_bucket(tmp_path: Path) -> None:
    from app.storage.s3 import S3ImageStore

    settings = Settings(data_dir=tmp_path, s3_bucket="images", s3_endpoint_url="http://127.0.0.1:1")
    store = create_image_store(settings)
    assert isinstance(store, S3ImageStore)
    assert store.bucket == "images"


async def test_ttl_zero_urls_never_expire(tmp_path: Path, signer: UrlSigner) -> None:
    store = LocalImageStore(tmp_path / "images", signer, ttl_seconds=0)
    query = parse_qs(urlsplit(await store.url(KEY, "https://img.example.com")).query)
    assert query["expires"] == ["0"]
    far_future = datetime.now(UTC).timestamp() + 10 * 365 * 86400
    assert signer.verify(KEY, 0, query["signature"][0], now=far_future)


async def test_public_base_url_names_the_links_host(tmp_path: Path, signer: UrlSigner) -> None:
    store = LocalImageStore(
        tmp_path / "images", signer, ttl_seconds=600, public_base_url="https://images.example.org/"
    )
    url = await store.url(KEY, "http://10.0.0.5:8000")
    assert url.startswith(f"https://images.example.org/files/{KEY}?")


async def test_factory_gives_the_local_store_the_public_base_url(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, public_base_url="https://images.example.org")
    store = create_image_store(settings)
    assert isinstance(store, LocalImageStore)
    assert (await store.url(KEY, "http://127.0.0.1:8000")).startswith(
        "https://images.example.org/files/"
    )
