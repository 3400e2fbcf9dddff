"""Images in a local directory, served by the gateway through signed URLs."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from app.storage.base import ObjectNotFound, StorageUnavailable, validate_key
from app.storage.signing import UrlSigner

_TEMP_PREFIX = ".tmp-"


class LocalImageStore:
    def __init__(
        self,
        root: Path,
        signer: UrlSigner,
        ttl_seconds: int,
        public_base_url: str | None = None,
    ) -> None:
        self._root = root.resolve()
        self._signer = signer
        self._ttl = ttl_seconds  # 0: links never expire
        # Links name this host, not whichever address the caller used to reach us.
        self._public_base_url = public_base_url

    @property
    def root(self) -> Path:
        return self._root

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        # The directory holds only images; the content type is implied by the key.
        validate_key(key)
        try:
            # Resolving the path stats every component: that belongs in the thread too.
            await asyncio.to_thread(self._put, key, data)
        except OSError as exc:
            raise StorageUnavailable(f"Image storage write failed: {exc.strerror}") from exc

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageUnavailable(f"Image storage read failed: {exc.strerror}") from exc

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except NotADirectoryError:
            return
        except OSError as exc:
            raise StorageUnavailable(f"Image storage delete failed: {exc.strerror}") from exc

    async def url(self, key: str, base_url: str) -> str:
        validate_key(key)
        return self._signer.file_url(key, self._public_base_url or base_url, self._ttl)

    async def list_keys(self, prefix: str = "") -> list[str]:
        return await asyncio.to_thread(self._list, prefix)

    async def check(self) -> None:
        await asyncio.to_thread(self._check_writable)

    def _check_writable(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        if not os.access(self._root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"image directory {self._root} is not writable")

    async def aclose(self) -> None:
        return None

    def _path(self, key: str) -> Path:
        validate_key(key)
        path = (self._root / key).resolve()
        # Belt and braces after validate_key: symlinks must not lead outside the root.
        if not path.is_relative_to(self._root) or path == self._root:
            raise ValueError("invalid object key")
        return path

    def _put(self, key: str, data: bytes) -> None:
        self._write_atomic(self._path(key), data)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Same directory as the target so os.replace is an atomic rename: readers see the
        # old file or the whole new one, never a partial write.
        fd, tmp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _list(self, prefix: str) -> list[str]:
        # Walk only the directory the prefix pins down, not the whole tree.
        directory, _, _ = prefix.rpartition("/")
        start = self._root / directory if directory else self._root
        if not start.resolve().is_relative_to(self._root) or not start.is_dir():
            return []
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [name for name in dirnames if not name.startswith(".")]
            relative = Path(dirpath).relative_to(self._root).as_posix()
            for name in filenames:
                if name.startswith(_TEMP_PREFIX):
                    continue
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()
        return keys
