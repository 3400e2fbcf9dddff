"""The image store interface, its errors, and the object key layout."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Protocol

from app.errors import DependencyUnavailable, NotFound


class ObjectNotFound(NotFound):
    """No object under this key. A NotFound, so the API's error handler renders a 404."""

    def __init__(self, key: str) -> None:
        # The key names a tenant; keep it off the client-facing message.
        super().__init__("Image not found")
        self.key = key


class StorageUnavailable(DependencyUnavailable):
    """The backend could not be reached or refused to work (renders as a 503)."""

    def __init__(self, message: str = "Image storage is unavailable") -> None:
        super().__init__(message)


class ImageStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes:
        """The object's bytes; raises ObjectNotFound."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        ...

    async def url(self, key: str, base_url: str) -> str:
        """A URL a client can fetch the object from.

        `base_url` is the gateway's external base URL; only the local backend uses it.
        """
        ...

    async def list_keys(self, prefix: str = "") -> list[str]: ...

    async def check(self) -> None:
        """Raise StorageUnavailable unless the backend can serve (readiness)."""
        ...

    async def aclose(self) -> None: ...


# One path component: no separators, no dot-segments, nothing a filesystem or URL mangles.
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def object_key(tenant_id: str, generation_id: str, index: int, created: datetime) -> str:
    """`<tenant>/<yyyy>/<mm>/<generation>-<index>.webp`, scoped by tenant, dated in UTC."""
    for name, value in (("tenant_id", tenant_id), ("generation_id", generation_id)):
        if not _COMPONENT.fullmatch(value) or ".." in value:
            raise ValueError(f"{name} is not a safe object key component: {value!r}")
    if index < 0:
        raise ValueError("index must be >= 0")
    # Naive datetimes are taken to be UTC, the only timezone the gateway stores.
    when = created.astimezone(UTC) if created.tzinfo else created
    return f"{tenant_id}/{when:%Y}/{when:%m}/{generation_id}-{index}.webp"


def validate_key(key: str) -> str:
    """Reject keys that could escape a prefix or a directory (used by every backend)."""
    if not key or len(key) > 1024 or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError("invalid object key")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError("invalid object key")
    return key
