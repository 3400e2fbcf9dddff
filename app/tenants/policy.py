"""A key's policies: label, credit limit and its period, model allow-list, expiry.

One validation for the admin API and the CLI. Errors name the admin API's fields
(`creditLimit`, `models`, ...); the CLI checks the shape of its flags before this.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import Enum

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.credits.key_spend import key_spend
from app.db.models import ApiKey, utcnow
from app.db.statuses import LimitPeriod
from app.errors import InvalidRequest

# Far above any real budget, and well inside a 64-bit integer on every backend.
MAX_CREDIT_LIMIT = 10**15
MAX_MODELS = 100
MAX_LABEL = 100


class Unset(Enum):
    UNSET = "unset"


UNSET = Unset.UNSET


@dataclass(frozen=True, slots=True)
class KeyChanges:
    """Fields to set on a key; UNSET ones stay as they are. None: no limit, every model,
    no expiry (or no label)."""

    label: str | Unset | None = UNSET
    credit_limit: int | Unset | None = UNSET
    limit_period: str | Unset = UNSET
    models: Sequence[str] | Unset | None = UNSET
    expires_at: datetime | Unset | None = UNSET

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not UNSET for f in fields(self))


def key_models(key: ApiKey) -> frozenset[str] | None:
    models = key.model_list()
    return None if models is None else frozenset(models)


async def apply_changes(
    session: AsyncSession,
    key: ApiKey,
    changes: KeyChanges,
    known_models: frozenset[str],
    *,
    creating: bool,
) -> None:
    now = utcnow()
    if not isinstance(changes.label, Unset):
        if changes.label is not None and not 1 <= len(changes.label) <= MAX_LABEL:
            raise InvalidRequest(f"label must be 1 to {MAX_LABEL} characters", field="label")
        key.label = changes.label
    if not isinstance(changes.models, Unset):
        key.models = _models(changes.models, known_models)
    if not isinstance(changes.expires_at, Unset):
        expires = changes.expires_at
        if expires is not None and expires.tzinfo is None:
            raise InvalidRequest(
                "expiresAt must carry a time zone, e.g. 2026-12-31T00:00:00Z", field="expiresAt"
            )
        if expires is not None:
            try:  # a far-off year with an offset leaves the range of datetime in UTC
                expires = expires.astimezone(UTC)
            except (OverflowError, ValueError):
                raise InvalidRequest("expiresAt is out of range", field="expiresAt") from None
        if creating and expires is not None and expires <= now:
            raise InvalidRequest("expiresAt must be in the future", field="expiresAt")
        key.expires_at = expires
    limit_changed = not isinstance(changes.credit_limit, Unset) or not isinstance(
        changes.limit_period, Unset
    )
    if not isinstance(changes.credit_limit, Unset):
        limit = changes.credit_limit
        if limit is not None and (isinstance(limit, bool) or not 0 <= limit <= MAX_CREDIT_LIMIT):
            raise InvalidRequest(
                f"creditLimit must be an integer from 0 to {MAX_CREDIT_LIMIT}, or null for none",
                field="creditLimit",
            )
        key.credit_limit = limit
    if not isinstance(changes.limit_period, Unset):
        if changes.limit_period not in tuple(LimitPeriod):
            allowed = ", ".join(LimitPeriod)
            raise InvalidRequest(f"limitPeriod must be one of {allowed}", field="limitPeriod")
        key.limit_period = LimitPeriod(changes.limit_period)
    if limit_changed and not creating:
        await _share_limit(session, key, now)


def _models(models: Sequence[str] | None, known: frozenset[str]) -> str | None:
    if models is None:
        return None
    if isinstance(models, str) or not models or len(models) > MAX_MODELS:
        raise InvalidRequest(
            f"models must be a list of 1 to {MAX_MODELS} model ids, or null for every model",
            field="models",
        )
    unknown = [model for model in models if model not in known]
    if unknown:
        raise InvalidRequest(
            f"models: unknown model id {unknown[0]!r} (see GET /api/v1/models)", field="models"
        )
    return json.dumps(list(dict.fromkeys(models)))


async def _share_limit(session: AsyncSession, key: ApiKey, now: datetime) -> None:
    """Refuse a limit below what is already spent this period (the audit holds keys to
    never being above their limit; a limit equal to the spend stops the key), then give
    every key of the spend key the same limit."""
    spend = await key_spend(session, key, now)
    if spend.credit_limit is not None and spend.spent > spend.credit_limit:
        raise InvalidRequest(
            f"creditLimit {spend.credit_limit} is below the {spend.spent} credits this key has "
            f"already spent this period; set at least {spend.spent} (that stops it now) or "
            "revoke the key",
            field="creditLimit",
        )
    await session.execute(
        update(ApiKey)
        .where(ApiKey.spend_key_id == key.spend_key_id, ApiKey.id != key.id)
        .values(credit_limit=key.credit_limit, limit_period=key.limit_period)
    )
