"""Images in an S3-compatible bucket (AWS, MinIO, SeaweedFS, R2...) via boto3.

boto3 is synchronous: one client (thread-safe, with its own connection pool) is shared,
and every call runs in a worker thread. botocore errors are translated here, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.storage.base import ObjectNotFound, StorageUnavailable, validate_key
from app.storage.signing import UrlSigner, cache_control

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger(__name__)

T = TypeVar("T")


# S3 refuses presigned URLs that live longer than a week.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600


_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3ImageStore:
    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        public_base_url: str | None = None,
        ttl_seconds: int = 3600,
        *,
        presign_endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_pool_connections: int = 50,
        signer: UrlSigner | None = None,
    ) -> None:
        self._bucket = bucket
        self._public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self._ttl = ttl_seconds
        # Links S3 cannot presign (no expiry, or past its week) are the gateway's own
        # /files URLs, signed here and read from the bucket by that route.
        gateway_links = ttl_seconds == 0 or ttl_seconds > MAX_PRESIGN_SECONDS
        if gateway_links and signer is None and not public_base_url:
            raise ValueError("a URL TTL of 0 or over 7 days needs the gateway's URL signer")
        self._signer = signer if gateway_links else None
        config = Config(
            signature_version="s3v4",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # The caller has its own deadline; a couple of quick retries cover blips only.
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=max_pool_connections,
            # Self-hosted S3 servers rarely have per-bucket DNS names.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        # A private session: the default one is shared global state and not thread-safe.
        session = boto3.session.Session()

        def client(endpoint: str | None) -> S3Client:
            return session.client(
                "s3",
                endpoint_url=endpoint,
                # SigV4 needs a region; S3-compatible servers accept us-east-1.
                region_name=region or "us-east-1",
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=config,
            )

        self._client = client(endpoint_url)
        # A signature covers the host, so URLs for clients that reach the store under
        # another name are signed by a client for that name (it never connects).
        self._presigner = client(presign_endpoint_url) if presign_endpoint_url else self._client

    @property
    def bucket(self) -> str:
        return self._bucket

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        validate_key(key)
        await self._call(
            lambda: self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                # Stored on the object for direct (presigned, CDN) reads: never public.
                CacheControl=cache_control(self._ttl or None),
            ),
            key,
        )

    async def get(self, key: str) -> bytes:
        validate_key(key)

        def read() -> bytes:
            # The body streams from the same connection, so read it in this thread too.
            response = self._client.get_object(Bucket=self._bucket, Key=key)
            with response["Body"] as body:
                return body.read()

        return await self._call(read, key)

    async def delete(self, key: str) -> None:
        validate_key(key)
        # S3 DeleteObject succeeds for missing keys, which makes this idempotent.
        await self._call(lambda: self._client.delete_object(Bucket=self._bucket, Key=key), key)

    async def url(self, key: str, base_url: str) -> str:
        validate_key(key)
        if self._public_base_url:
            return f"{self._public_base_url}/{quote(key, safe='/')}"
        if self._signer is not None:
            return self._signer.file_url(key, base_url, self._ttl)
        # Presigning is local, but resolving credentials may touch the network (IMDS).
        return await self._call(
            lambda: self._presigner.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": key},
                ExpiresIn=self._ttl,
            ),
            key,
        )

    async def list_keys(self, prefix: str = "") -> list[str]:
        def collect() -> list[str]:
            keys: list[str] = []
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []) if "Key" in item)
            return keys

        return sorted(await self._call(collect))

    async def check(self) -> None:
        """Raise StorageUnavailable unless the bucket is reachable (for readiness probes)."""
        await self._call(lambda: self._client.head_bucket(Bucket=self._bucket))

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.close)
        if self._presigner is not self._client:
            await asyncio.to_thread(self._presigner.close)

    async def _call(self, fn: Callable[[], T], key: str | None = None) -> T:
        """Run a boto3 call in a thread; `key` marks calls about one object."""
        try:
            return await asyncio.to_thread(fn)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            # A bare 404 (HEAD has no body) means a missing object only for object calls;
            # for bucket calls it means the configured bucket does not exist.
            if key is not None and code in _NOT_FOUND_CODES:
                raise ObjectNotFound(key) from None
            # Anything else (AccessDenied, NoSuchBucket, SlowDown, 5xx) means the store
            # cannot do its job right now; the client gets a 503, the log gets the code.
            log.warning("S3 %s error on bucket %s", code or "unknown", self._bucket)
            raise StorageUnavailable(f"Image storage error: {code or 'unknown'}") from exc
        except BotoCoreError as exc:
            # Connection refused, timeouts, DNS, missing credentials.
            log.warning("S3 unreachable: %s", type(exc).__name__)
            raise StorageUnavailable("Image storage is unreachable") from exc
