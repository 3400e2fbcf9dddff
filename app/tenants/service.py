"""Tenants and API keys. Keys are shown once; only their SHA-256 and a display prefix are kept."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.credits.ledger import ensure_account
from app.db.models import ApiKey, Tenant, new_id, utcnow
from app.errors import InvalidRequest, KeyExpired, ModelNotAllowed, NotFound, Unauthorized
from app.tenants.policy import KeyChanges, apply_changes, key_models

KEY_SCHEME = "ig_"
# The prefix (scheme + 8 random chars) identifies a key for lookup and display; the
# rest is secret. 8 chars of the URL-safe alphabet: collisions are retried below.
PREFIX_LENGTH = len(KEY_SCHEME) + 8
_KEY_SHAPE = re.compile(r"ig_[A-Za-z0-9_-]{40,100}")
_TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Write last_used_at at most this often, so each request is not a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Requests per minute a tenant or key limit may be set to (admin API and CLI alike).
MAX_RATE_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a generation is for and is charged to: all the generation service needs."""

    tenant_id: str
    api_key_id: str | None  # None: not made with a key (e.g. a job whose key is gone)
    # The key's allow-list (None: every model); fallbacks outside it never serve.
    models: frozenset[str] | None = None

    def allows(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models


@dataclass(frozen=True, slots=True)
class AuthContext:
    tenant_id: str
    api_key_id: str
    key_prefix: str
    tenant_rate_limit: int | None = None  # per minute; None: the gateway default
    key_rate_limit: int | None = None
    models: frozenset[str] | None = None  # the models the key may use; None: every model
    # When the key stops working (expiry, or a rotation's revocation); the auth cache
    # forgets it then, not when its entry would age out.
    valid_until: datetime | None = None

    def allows(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models

    def require_model(self, model_id: str) -> None:
        """ModelNotAllowed (403) unless the key may use `model_id`."""
        if not self.allows(model_id):
            raise ModelNotAllowed(model_id, sorted(self.models or ()))

    @property
    def caller(self) -> Caller:
        return Caller(self.tenant_id, self.api_key_id or None, self.models)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    plaintext: str
    key: ApiKey


def hash_key(plaintext: str) -> str:
    # Keys carry 256 random bits, so a fast hash is safe; no salt or KDF needed.
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


async def create_tenant(session: AsyncSession, name: str) -> Tenant:
    if not _TENANT_NAME.fullmatch(name):  # fullmatch: "$" would admit a trailing newline
        raise InvalidRequest(
            "tenant name must be 1-100 characters of letters, digits, '.', '_' or '-'"
        )
    if await session.scalar(select(Tenant.id).where(Tenant.name == name)):
        raise InvalidRequest(f"tenant {name!r} already exists")
    tenant = Tenant(name=name)
    session.add(tenant)
    await session.flush()
    await ensure_account(session, tenant.id)
    return tenant


async def get_tenant(session: AsyncSession, name: str) -> Tenant:
    tenant = await session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NotFound(f"no tenant named {name!r}")
    return tenant


async def create_key(
    session: AsyncSession,
    tenant: Tenant,
    label: str | None = None,
    *,
    policy: KeyChanges | None = None,
    known_models: frozenset[str] = frozenset(),
) -> CreatedKey:
    """A new key; `policy` (validated against `known_models`) sets its limit and rules."""
    new = await _new_key(session, tenant.id, label)
    if policy:
        await apply_changes(session, new.row, policy, known_models, creating=True)
    session.add(new.row)
    await session.flush()
    return CreatedKey(plaintext=new.plaintext, key=new.row)


@dataclass(frozen=True, slots=True)
class _NewKey:
    plaintext: str
    row: ApiKey


async def _new_key(session: AsyncSession, tenant_id: str, label: str | None) -> _NewKey:
    for _ in range(5):
        plaintext = KEY_SCHEME + secrets.token_urlsafe(32)
        prefix = plaintext[:PREFIX_LENGTH]
        if await session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            break
    else:  # pragma: no cover - 64^8 prefixes make this practically unreachable
        raise RuntimeError("could not find a free key prefix")
    key_id = new_id()
    row = ApiKey(
        id=key_id,
        tenant_id=tenant_id,
        prefix=prefix,
        key_hash=hash_key(plaintext),
        label=label,
        spend_key_id=key_id,
        limit_period="total",
    )
    return _NewKey(plaintext, row)


async def get_key(session: AsyncSession, prefix: str) -> ApiKey:
    key = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None:
        raise NotFound(f"no API key with prefix {prefix!r}")
    return key


async def revoke_key(session: AsyncSession, prefix: str) -> ApiKey:
    """Revoke now (also a key whose rotation grace period is still running)."""
    key = await get_key(session, prefix)
    now = utcnow()
    if key.revoked_at is None or key.revoked_at > now:
        key.revoked_at = now
        await session.flush()
    return key


def presented_credential(authorization: str | None, x_api_key: str | None) -> str | None:
    """The credential as one `Authorization` value, from `Authorization: Bearer <key>` or
    `X-API-Key: <key>` (elizaOS clients send either), so the auth cache, the lookup and the
    failed-auth count treat both headers the same. When both are sent, `Authorization`
    is the one used."""
    if authorization or not x_api_key or not x_api_key.strip():
        return authorization
    return f"Bearer {x_api_key.strip()}"


async def update_key(
    session: AsyncSession, prefix: str, changes: KeyChanges, known_models: frozenset[str]
) -> ApiKey:
    """Change a key's label or policies; a limit or period change applies to every key
    sharing its spend (a rotation's old and new key)."""
    key = await get_key(session, prefix)
    await apply_changes(session, key, changes, known_models, creating=False)
    await session.flush()
    return key


# A rotation's grace period: long enough to roll a key out, short enough to end.
MAX_GRACE_SECONDS = 30 * 24 * 3600


async def rotate_key(session: AsyncSession, prefix: str, grace_seconds: int = 0) -> CreatedKey:
    """A new key with the old one's label, policies and spend (the same spend rows); the
    old key is revoked now, or when `grace_seconds` have passed."""
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise InvalidRequest(
            f"graceSeconds must be an integer from 0 to {MAX_GRACE_SECONDS}", field="graceSeconds"
        )
    old = await get_key(session, prefix)
    now = utcnow()
    if old.revoked_at is not None and old.revoked_at <= now:
        raise InvalidRequest(f"key {prefix} is revoked; create a new key instead")
    if old.expires_at is not None and old.expires_at <= now:
        raise InvalidRequest(
            f"key {prefix} has expired; change its expiry first or create a new key"
        )
    new = await _new_key(session, old.tenant_id, old.label)
    for field in ("credit_limit", "limit_period", "models", "expires_at", "spend_key_id"):
        setattr(new.row, field, getattr(old, field))
    new.row.rotated_from_id = old.id
    session.add(new.row)
    revoke_at = now + timedelta(seconds=grace_seconds)
    if old.revoked_at is None or old.revoked_at > revoke_at:
        old.revoked_at = revoke_at
    await session.flush()
    return CreatedKey(plaintext=new.plaintext, key=new.row)


def bearer_token(authorization: str | None) -> str:
    """The key in `Authorization: Bearer <key>` if it has a key's shape, or Unauthorized."""
    if not authorization:
        raise Unauthorized(
            "Missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Malformed Authorization header: expected 'Bearer <key>'")
    if not _KEY_SHAPE.fullmatch(token):
        raise Unauthorized("Invalid API key")
    return token


async def authenticate(session: AsyncSession, authorization: str | None) -> AuthContext:
    """Resolve `Authorization: Bearer <key>` to a tenant, or raise Unauthorized."""
    token = bearer_token(authorization)
    row = (
        await session.execute(
            select(ApiKey, Tenant.rate_limit_per_minute, Tenant.key_rate_limit_per_minute)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.prefix == token[:PREFIX_LENGTH])
        )
    ).one_or_none()
    # Compare hashes in constant time so timing says nothing about how much matched.
    if row is None or not hmac.compare_digest(row[0].key_hash, hash_key(token)):
        raise Unauthorized("Invalid API key")
    key, tenant_limit, key_limit = row
    now = utcnow()
    if key.revoked_at is not None and key.revoked_at <= now:
        raise Unauthorized("This API key has been revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise KeyExpired(f"This API key expired at {key.expires_at.isoformat()}")
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    return AuthContext(
        tenant_id=key.tenant_id,
        api_key_id=key.id,
        key_prefix=key.prefix,
        tenant_rate_limit=tenant_limit,
        key_rate_limit=key_limit,
        models=key_models(key),
        valid_until=min(
            (at for at in (key.expires_at, key.revoked_at) if at is not None), default=None
        ),
    )


async def set_rate_limits(
    session: AsyncSession, tenant: Tenant, *, per_minute: int | None, key_per_minute: int | None
) -> Tenant:
    """Set a tenant's own limits (requests per minute); None restores the default."""
    for value in (per_minute, key_per_minute):
        if value is not None and not 1 <= value <= MAX_RATE_LIMIT:
            raise InvalidRequest(
                f"rate limits must be integers from 1 to {MAX_RATE_LIMIT} (requests per minute)"
            )
    tenant.rate_limit_per_minute = per_minute
    tenant.key_rate_limit_per_minute = key_per_minute
    await session.flush()
    return tenant
