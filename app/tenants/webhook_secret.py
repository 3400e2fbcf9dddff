"""A tenant's webhook signing secret, in the Standard Webhooks form: `whsec_` + base64 of
32 random bytes. Stored as it is (signing needs it; README: security), shown to operators
only, and replaced at once by a rotation (receivers must switch to the new one)."""

from __future__ import annotations

import base64
import binascii
import secrets

from sqlalchemy.ext.asyncio import AsyncSession

from app.tenants.service import get_tenant

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret: the base64 after the prefix, decoded."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret is whsec_ + base64") from exc
    if len(key) < 24:
        raise ValueError("a webhook secret carries at least 24 bytes")
    return key


async def webhook_secret(session: AsyncSession, name: str, *, rotate: bool) -> tuple[str, bool]:
    """The tenant's secret and whether it is new: the existing one, or (none yet, or
    `rotate`) a new one. The caller commits."""
    tenant = await get_tenant(session, name)
    if tenant.webhook_secret is not None and not rotate:
        return tenant.webhook_secret, False
    tenant.webhook_secret = new_secret()
    await session.flush()
    return tenant.webhook_secret, True
