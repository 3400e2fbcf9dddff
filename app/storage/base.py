"""The image store interface, its errors, and the key check every backend applies
(the key layout itself is app/storage/keys.py)."""

from __future__ import annotations

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


def validate_key(key: str) -> str:
    """Reject keys that could escape a prefix or a directory (used by every backend)."""
    if not key or len(key) > 1024 or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError("invalid object key")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError("invalid object key")
    return key
