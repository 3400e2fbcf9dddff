"""One constant-time check of an `Authorization: Bearer <token>` header against a secret."""

from __future__ import annotations

import hashlib
import hmac


def bearer_token(authorization: str) -> str:
    """The token of a Bearer header ("" for another scheme or none)."""
    scheme, _, supplied = authorization.partition(" ")
    return supplied.strip() if scheme.lower() == "bearer" else ""


def bearer_matches(authorization: str, secret: str) -> bool:
    """Whether the header carries exactly `secret`. Digests have one length, so the
    comparison time says nothing about the secret, and any text (non-ASCII too) compares."""
    given = hashlib.sha256(bearer_token(authorization).encode("utf-8", "replace")).digest()
    expected = hashlib.sha256(secret.encode()).digest()
    return hmac.compare_digest(given, expected)
