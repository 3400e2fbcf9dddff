"""Idempotency-Key: the same key and body replay the first response, with no new
generation and no new charge; another body is a 409; a duplicate of a request still
running gets 409 with Retry-After. Only successes are kept (errors charge nothing, so a
retry may run again); keys expire after 24 hours.

With `Prefer: respond-async` the response is the accepted job, so the claim, the job and
the completed record commit in one transaction (`on_claim`): a retry, however soon and
however many at once, finds the job, never a record still in progress, and no second job
can exist for the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import IdempotencyRecord, utcnow
from app.db.statuses import IdempotencyStatus
from app.errors import GatewayError, InvalidRequest
from app.settings import Settings

KEY_TTL = timedelta(hours=24)
_KEY_SHAPE = re.compile(r"^[\x21-\x7e]{1,255}$")


class IdempotencyConflict(GatewayError):
    status_code = 409
    code = "idempotency_conflict"


@dataclass(frozen=True, slots=True)
class Claim:
    """Either ours to run (`replay` is None) or a finished response to send again."""

    record_id: str
    replay: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Once:
    """What `run_once` answers: the response it just ran and remembered, or (`replayed`)
    the key's stored response from an earlier request."""

    response: dict[str, Any]
    replayed: bool


def lock_duration(settings: Settings) -> timedelta:
    """How long a claimed key stays in progress before another request may take it over."""
    return timedelta(seconds=settings.upstream_deadline_seconds + 60)


def validate_key(value: str) -> str:
    if not _KEY_SHAPE.match(value):
        raise InvalidRequest(
            "Idempotency-Key must be 1-255 visible ASCII characters", field="Idempotency-Key"
        )
    return value


def request_hash(payload: Any) -> str:
    # app.api.body refuses lone surrogates, so every string here encodes as UTF-8.
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def claim(
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: str,
    key: str,
    body_hash: str,
    lock_for: timedelta,
    *,
    on_claim: Callable[[AsyncSession], Awaitable[dict[str, Any]]] | None = None,
) -> Claim:
    """Claim `key` for this request, or raise/replay as the module says.

    With `on_claim`, a won claim runs it in the claiming transaction and stores what it
    returns as the completed response, so the claim is never seen in progress.
    """
    now = utcnow()
    async with sessions() as session, session.begin():
        insert = _insert(session).values(
            tenant_id=tenant_id,
            key=key,
            request_hash=body_hash,
            status=IdempotencyStatus.IN_PROGRESS,
            created_at=now,
            locked_until=now + lock_for,
            expires_at=now + KEY_TTL,
        )
        result = await session.execute(
            insert.on_conflict_do_nothing(index_elements=["tenant_id", "key"]).returning(
                IdempotencyRecord.id
            )
        )
        inserted = result.scalar_one_or_none()
        if inserted is not None:
            return await _won(session, inserted, on_claim)
        # Someone holds the key: take it over only if it expired or its holder died.
        taken = await session.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.tenant_id == tenant_id,
                IdempotencyRecord.key == key,
                or_(
                    IdempotencyRecord.expires_at < now,
                    (IdempotencyRecord.status == IdempotencyStatus.IN_PROGRESS)
                    & (IdempotencyRecord.locked_until < now),
                ),
            )
            .values(
                request_hash=body_hash,
                status=IdempotencyStatus.IN_PROGRESS,
                response_body=None,
                created_at=now,
                locked_until=now + lock_for,
                expires_at=now + KEY_TTL,
            )
            .returning(IdempotencyRecord.id)
        )
        taken_id = taken.scalar_one_or_none()
        if taken_id is not None:
            return await _won(session, taken_id, on_claim)
        record = await session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.tenant_id == tenant_id, IdempotencyRecord.key == key
            )
        )
    if record is None:  # deleted between our statements: the caller may simply retry
        raise IdempotencyConflict("Idempotency-Key changed state; retry the request")
    if record.request_hash != body_hash:
        raise IdempotencyConflict(
            "Idempotency-Key was already used with a different request body; use a new key"
        )
    if record.status == IdempotencyStatus.IN_PROGRESS:
        error = IdempotencyConflict(
            "A request with this Idempotency-Key is still running; retry shortly"
        )
        error.headers = {"Retry-After": "2"}
        raise error
    assert record.response_body is not None
    return Claim(record.id, replay=json.loads(record.response_body))


async def run_once(
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: str,
    key: str,
    body_hash: str,
    *,
    lock_for: timedelta,
    run: Callable[[], Awaitable[dict[str, Any]]],
) -> Once:
    """Run `run` at most once for this key and body, outside any transaction.

    A won claim runs it and remembers what it returns; if it raises (or is cancelled) the
    claim is released, so only successes are remembered and a retry runs again. A
    finished earlier request's response comes back with `replayed`; one still running or
    with another body raises `IdempotencyConflict` (409).
    """
    claimed = await claim(sessions, tenant_id, key, body_hash, lock_for)
    if claimed.replay is not None:
        return Once(claimed.replay, replayed=True)
    try:
        response = await run()
    except BaseException:
        await asyncio.shield(release(sessions, claimed.record_id))
        raise
    await complete(sessions, claimed.record_id, response)
    return Once(response, replayed=False)


async def _won(
    session: AsyncSession,
    record_id: str,
    on_claim: Callable[[AsyncSession], Awaitable[dict[str, Any]]] | None,
) -> Claim:
    if on_claim is not None:
        await _complete(session, record_id, await on_claim(session))
    return Claim(record_id)


async def complete(
    sessions: async_sessionmaker[AsyncSession], record_id: str, body: dict[str, Any]
) -> None:
    async with sessions() as session, session.begin():
        await _complete(session, record_id, body)


async def _complete(session: AsyncSession, record_id: str, body: dict[str, Any]) -> None:
    await session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.id == record_id)
        .values(status=IdempotencyStatus.COMPLETED, response_body=json.dumps(body))
    )


async def release(sessions: async_sessionmaker[AsyncSession], record_id: str) -> None:
    """Forget a claim whose request failed, so the client's retry runs again."""
    async with sessions() as session, session.begin():
        await session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.id == record_id,
                IdempotencyRecord.status == IdempotencyStatus.IN_PROGRESS,
            )
        )


async def purge_expired(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session, session.begin():
        result = await session.execute(
            delete(IdempotencyRecord)
            .where(IdempotencyRecord.expires_at < utcnow())
            .returning(IdempotencyRecord.id)
        )
        return len(result.all())


def _insert(session: AsyncSession) -> Any:
    # ON CONFLICT DO NOTHING is spelt the same on both, but lives in each dialect.
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(IdempotencyRecord)
    return sqlite.insert(IdempotencyRecord)
