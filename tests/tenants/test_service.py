"""Tenants and API keys on SQLite and Postgres."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import ApiKey
from app.errors import InvalidRequest, NotFound, Unauthorized
from app.tenants import service

Sessions = async_sessionmaker[AsyncSession]


async def _key(sessions: Sessions) -> service.CreatedKey:
    async with sessions() as session, session.begin():
        tenant = await service.create_tenant(session, f"k-{uuid.uuid4().hex[:12]}")
        return await service.create_key(session, tenant, "label")


async def test_key_is_stored_as_hash_and_prefix_only(sessions: Sessions) -> None:
    created = await _key(sessions)
    async with sessions() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.id == created.key.id))
    assert row is not None
    assert row.key_hash == hashlib.sha256(created.plaintext.encode()).hexdigest()
    assert created.plaintext.startswith(row.prefix)
    assert created.plaintext not in (row.key_hash, row.prefix, row.label)


async def test_authenticate_resolves_the_tenant_and_marks_use(sessions: Sessions) -> None:
    created = await _key(sessions)
    async with sessions() as session, session.begin():
        auth = await service.authenticate(session, f"Bearer {created.plaintext}")
    assert (auth.tenant_id, auth.api_key_id) == (created.key.tenant_id, created.key.id)
    async with sessions() as session:
        used = await session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == auth.api_key_id))
    assert used is not None


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer ", "Token abc", "Bearer not-a-key", "Bearer ig_" + "A" * 43],
)
async def test_bad_headers_are_unauthorized(sessions: Sessions, header: str | None) -> None:
    async with sessions() as session:
        with pytest.raises(Unauthorized):
            await service.authenticate(session, header)


async def test_right_prefix_wrong_secret_is_unauthorized(sessions: Sessions) -> None:
    created = await _key(sessions)
    forged = created.plaintext[:-4] + ("AAAA" if not created.plaintext.endswith("AAAA") else "BBBB")
    async with sessions() as session:
        with pytest.raises(Unauthorized, match="Invalid"):
            await service.authenticate(session, f"Bearer {forged}")


async def test_revoked_key_is_refused(sessions: Sessions) -> None:
    created = await _key(sessions)
    async with sessions() as session, session.begin():
        await service.revoke_key(session, created.key.prefix)
    async with sessions() as session:
        with pytest.raises(Unauthorized, match="revoked"):
            await service.authenticate(session, f"Bearer {created.plaintext}")


async def test_revoke_unknown_prefix_is_not_found(sessions: Sessions) -> None:
    async with sessions() as session:
        with pytest.raises(NotFound):
            await service.revoke_key(session, "ig_nothere")


@pytest.mark.parametrize(
    "name", ["", "has space", "-leading", "x" * 101, "semi;colon", "trailing-newline\n"]
)
async def test_tenant_names_are_validated(sessions: Sessions, name: str) -> None:
    async with sessions() as session:
        with pytest.raises(InvalidRequest):
            await service.create_tenant(session, name)


async def test_last_used_is_written_at_most_once_a_minute(sessions: Sessions) -> None:
    created = await _key(sessions)
    header = f"Bearer {created.plaintext}"
    async with sessions() as session, session.begin():
        await service.authenticate(session, header)
    async with sessions() as session:
        first = await session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == created.key.id))
    async with sessions() as session, session.begin():
        await service.authenticate(session, header)
    async with sessions() as session:
        second = await session.scalar(
            select(ApiKey.last_used_at).where(ApiKey.id == created.key.id)
        )
    assert first == second
    async with sessions() as session, session.begin():
        assert first is not None
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == created.key.id)
            .values(last_used_at=first - service.LAST_USED_RESOLUTION * 2)
        )
    async with sessions() as session, session.begin():
        await service.authenticate(session, header)
    async with sessions() as session:
        third = await session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == created.key.id))
    assert third is not None and third > first


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        (None, None, None),
        (None, "ig_abc", "Bearer ig_abc"),
        (None, "  ig_abc ", "Bearer ig_abc"),
        (None, "   ", None),
        ("Bearer ig_abc", None, "Bearer ig_abc"),
        # Both sent: Authorization is the one used, whatever X-API-Key says.
        ("Bearer ig_abc", "ig_other", "Bearer ig_abc"),
        ("Basic xyz", "ig_abc", "Basic xyz"),
    ],
)
def test_presented_credential_takes_either_header(
    authorization: str | None, x_api_key: str | None, expected: str | None
) -> None:
    assert service.presented_credential(authorization, x_api_key) == expected
