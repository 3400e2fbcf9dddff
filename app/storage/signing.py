"""HMAC-signed URLs for images the gateway serves itself at /files (the local backend, and
S3 when links must not expire): expiring, or with `expires=0` never expiring."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from app.settings import Settings

log = logging.getLogger(__name__)

SIGNING_KEY_FILE = "url-signing.key"
_MIN_SECRET_BYTES = 16
# `expires` of a URL that never expires (IMAGEGATE_URL_TTL_SECONDS=0); it stays tied to
# its key by the signature and dies with the object.
NEVER_EXPIRES = 0
# What a private cache may keep of such an image: a day, not forever, so a deleted image
# also leaves browsers' caches (the URL itself dies at once: a 404 once the object is gone).
_FOREVER = "private, max-age=86400"


class UrlSigner:
    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the URL signing secret must not be empty")
        self._secret = secret

    def sign(self, key: str, expires: int) -> str:
        """A url-safe signature binding this key to this expiry (unix seconds)."""
        return base64.urlsafe_b64encode(self._digest(key, expires)).rstrip(b"=").decode("ascii")

    def signature_matches(self, key: str, expires: int, signature: str) -> bool:
        """True when `signature` was made by this secret for exactly this key and expiry."""
        try:
            given = signature.encode("ascii")
        except UnicodeEncodeError:
            return False
        expected = self.sign(key, expires).encode("ascii")
        return hmac.compare_digest(expected, given)

    def verify(self, key: str, expires: int, signature: str, now: float) -> bool:
        """Valid signature and not yet expired (a non-expiring URL never is)."""
        return self.signature_matches(key, expires, signature) and (
            expires == NEVER_EXPIRES or now <= expires
        )

    def file_url(self, key: str, base_url: str, ttl_seconds: int) -> str:
        """The gateway's `/files` URL for `key`; a TTL of 0 makes it never expire."""
        expires = NEVER_EXPIRES if ttl_seconds == 0 else int(time.time()) + ttl_seconds
        query = urlencode({"expires": expires, "signature": self.sign(key, expires)})
        return f"{base_url.rstrip('/')}/files/{quote(key, safe='/')}?{query}"

    def _digest(self, key: str, expires: int) -> bytes:
        # The expiry is digits ending at the first ':', so "expires:key" is unambiguous:
        # no (key, expires) pair produces another pair's message.
        message = f"{int(expires)}:{key}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()


def cache_control(max_age: int | None) -> str:
    """Cache-Control of a private image: `max_age` seconds, or None for a link that never
    expires. Never public: a shared cache must not keep a tenant's image past its URL."""
    return _FOREVER if max_age is None else f"private, max-age={max_age}"


def load_or_create_secret(settings: Settings) -> bytes:
    """The configured secret, else one generated once and kept in the data directory.

    Persisting it keeps URLs handed out before a restart valid until they expire.
    """
    if settings.url_signing_secret:
        secret = settings.url_signing_secret.encode()
        if len(secret) < _MIN_SECRET_BYTES:
            log.warning(
                "IMAGEGATE_URL_SIGNING_SECRET is shorter than %d bytes; use a longer one",
                _MIN_SECRET_BYTES,
            )
        return secret
    path = settings.data_dir / SIGNING_KEY_FILE
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    return _create_secret(path)


def _read_secret(path: Path) -> bytes:
    text = path.read_text(encoding="ascii").strip()
    if len(text) < 2 * _MIN_SECRET_BYTES:
        raise RuntimeError(f"{path} does not hold a usable URL signing secret; delete it")
    return text.encode("ascii")


def _create_secret(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secret + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if the file exists, so when two processes start at once both end
        # up with whichever secret was linked first, never a half-written file.
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_secret(path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("created a new URL signing secret at %s", path)
    return secret.encode("ascii")
