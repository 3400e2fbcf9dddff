"""Key policies at the service level on SQLite and Postgres: expiry, the model list on
the AuthContext, rotation and its grace period (#14 item 2)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import utcnow
from app.errors import InvalidRequest, KeyExpired, ModelNotAllowed, Unauthorized
from app.tenants import service
from app.tenants.policy import KeyChanges

Sessions = async_sessionmaker[AsyncSession]
MODELS = frozenset({"google/gemini-2.5-flash-image", "openai/gpt-image-1"})


async def _key(sessions: Sessions, policy: KeyChanges | None = None) -> service.CreatedKey:
    async with sessions() as session, session.begin():
        tenant = await service.create_tenant(session, f"p-{uuid.uuid4().hex[:12]}")
        return await service.create_key(
            session, tenant, "label", policy=policy, known_models=MODELS
        )


async def _authenticate(sessions: Sessions, plaintext: str) -> service.AuthContext:
    async with sessions() as session, session.begin():
        return await service.authenticate(session, f"Bearer {plaintext}")


async def test_the_auth_context_carries_the_models_and_when_the_key_ends(
    sessions: Sessions,
) -> None:
    expires = utcnow() + timedelta(hours=1)
    created = await _key(sessions, KeyChanges(models=["openai/gpt-image-1"], expires_at=expires))
    auth = await _authenticate(sessions, created.plaintext)
    assert auth.models == frozenset({"openai/gpt-image-1"})
    assert auth.valid_until == expires
    auth.require_model("openai/gpt-image-1")
    with pytest.raises(ModelNotAllowed) as refused:
        auth.require_model("google/gemini-2.5-flash-image")
    assert refused.value.status_code == 403
    assert refused.value.extra["allowed"] == ["openai/gpt-image-1"]


async def test_an_expired_key_is_key_expired(sessions: Sessions) -> None:
    created = await _key(sessions)
    async with sessions() as session, session.begin():
        await service.update_key(
            session,
            created.key.prefix,
            KeyChanges(expires_at=utcnow() - timedelta(seconds=1)),
            MODELS,
        )
    with pytest.raises(KeyExpired) as expired:
        await _authenticate(sessions, created.plaintext)
    assert (expired.value.status_code, expired.value.code) == (401, "key_expired")


async def test_rotation_with_a_grace_period_then_the_old_key_stops(sessions: Sessions) -> None:
    created = await _key(sessions, KeyChanges(credit_limit=50, limit_period="month"))
    async with sessions() as session, session.begin():
        rotated = await service.rotate_key(session, created.key.prefix, grace_seconds=1)
    assert rotated.key.spend_key_id == created.key.id
    assert rotated.key.rotated_from_id == created.key.id
    assert (rotated.key.credit_limit, rotated.key.limit_period) == (50, "month")
    old = await _authenticate(sessions, created.plaintext)  # still in its grace period
    assert old.valid_until is not None and old.valid_until <= utcnow() + timedelta(seconds=1)
    await _authenticate(sessions, rotated.plaintext)
    await asyncio.sleep(max((old.valid_until - utcnow()).total_seconds(), 0) + 0.05)
    with pytest.raises(Unauthorized, match="revoked"):
        await _authenticate(sessions, created.plaintext)
    await _authenticate(sessions, rotated.plaintext)
    async with sessions() as session:
        with pytest.raises(InvalidRequest, match="revoked"):
            await service.rotate_key(session, created.key.prefix)


async def test_revoking_a_key_in_its_grace_period_ends_it_now(sessions: Sessions) -> None:
    created = await _key(sessions)
    async with sessions() as session, session.begin():
        await service.rotate_key(session, created.key.prefix, grace_seconds=3600)
    await _authenticate(sessions, created.plaintext)
    async with sessions() as session, session.begin():
        await service.revoke_key(session, created.key.prefix)
    with pytest.raises(Unauthorized, match="revoked"):
        await _authenticate(sessions, created.plaintext)


@pytest.mark.parametrize("grace", [-1, service.MAX_GRACE_SECONDS + 1])
async def test_the_grace_period_is_bounded(sessions: Sessions, grace: int) -> None:
    created = await _key(sessions)
    async with sessions() as session:
        with pytest.raises(InvalidRequest) as refused:
            await service.rotate_key(session, created.key.prefix, grace_seconds=grace)
    assert refused.value.extra["field"] == "graceSeconds"


async def test_a_limit_change_applies_to_the_whole_rotation_chain(sessions: Sessions) -> None:
    created = await _key(sessions, KeyChanges(credit_limit=50))
    async with sessions() as session, session.begin():
        rotated = await service.rotate_key(session, created.key.prefix, grace_seconds=60)
    async with sessions() as session, session.begin():
        await service.update_key(
            session, rotated.key.prefix, KeyChanges(credit_limit=80, limit_period="day"), MODELS
        )
    async with sessions() as session:
        old = await service.get_key(session, created.key.prefix)
    assert (old.credit_limit, old.limit_period) == (80, "day")
