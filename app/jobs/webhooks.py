"""Webhook deliveries of async jobs, in the database so they survive restarts.

A job submitted with a `webhookUrl` gets one delivery row (`next_attempt_at` NULL); when
the job ends (`mark_due`, from `jobs.finish`) it becomes due. A dispatcher on any replica
claims a due delivery with a conditional UPDATE that takes a lease and counts the attempt,
so each attempt of the schedule is made once; it then records the attempt's outcome and
either ends the delivery or sets the next attempt's time. Functions flush; callers own
transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Tenant, WebhookAttempt, WebhookDelivery, utcnow
from app.db.statuses import WebhookStatus
from app.errors import WebhookSecretMissing

MAX_ERROR_CHARS = 200


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """What a submission asks for: where to POST, and the base URL its links use."""

    url: str
    base_url: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt met: a status code, or an error (or both, for a non-2xx), and
    whether trying again could help (a refused address cannot)."""

    status_code: int | None
    error: str | None
    retryable: bool = True

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def require_secret(session: AsyncSession, tenant_id: str) -> None:
    """A 400 `webhook_secret_missing` when the tenant has no signing secret yet."""
    row = (
        await session.execute(
            select(Tenant.name, Tenant.webhook_secret).where(Tenant.id == tenant_id)
        )
    ).one()
    if row.webhook_secret is None:
        raise WebhookSecretMissing(row.name)


async def create_delivery(
    session: AsyncSession, *, job_id: str, tenant_id: str, webhook: WebhookRequest
) -> WebhookDelivery:
    delivery = WebhookDelivery(
        job_id=job_id, tenant_id=tenant_id, url=webhook.url, base_url=webhook.base_url
    )
    session.add(delivery)
    await session.flush()
    return delivery


async def mark_due(session: AsyncSession, job_id: str) -> None:
    """The job ended: its delivery (if any) is due now."""
    now = utcnow()
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.job_id == job_id,
            WebhookDelivery.status == WebhookStatus.PENDING,
            WebhookDelivery.next_attempt_at.is_(None),
        )
        .values(next_attempt_at=now, updated_at=now)
    )


async def claim_next(
    session: AsyncSession, lease: timedelta, max_attempts: int
) -> WebhookDelivery | None:
    """Take the delivery due longest, counting its next attempt; one whose dispatcher
    died mid-attempt (lease expired) is due again, as its next attempt. One that used
    all its attempts without recording them (its body would not render, a dispatcher
    died each time) is failed instead of claimed forever."""
    now = utcnow()
    due = (
        (WebhookDelivery.status == WebhookStatus.PENDING)
        & (WebhookDelivery.next_attempt_at <= now)
        & or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now)
    )
    await session.execute(
        update(WebhookDelivery)
        .where(due, WebhookDelivery.attempts >= max_attempts)
        .values(status=WebhookStatus.FAILED, locked_until=None, updated_at=now)
    )
    claimable = due & (WebhookDelivery.attempts < max_attempts)
    candidate = (
        select(WebhookDelivery.id)
        .where(claimable)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(1)
        .scalar_subquery()
    )
    result = await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == candidate, claimable)
        .values(
            locked_until=now + lease,
            attempts=WebhookDelivery.attempts + 1,
            updated_at=now,
        )
        .returning(WebhookDelivery)
    )
    return result.scalar_one_or_none()


async def tenant_secret(session: AsyncSession, tenant_id: str) -> str | None:
    """The secret as it is now: a rotation signs the next attempt with the new one."""
    secret: str | None = await session.scalar(
        select(Tenant.webhook_secret).where(Tenant.id == tenant_id)
    )
    return secret


def next_attempt_delay(attempt: int, delays: Sequence[float]) -> float:
    """The wait after failed attempt `attempt` (1-based); the last delay repeats."""
    return delays[min(attempt, len(delays)) - 1]


async def record_attempt(
    session: AsyncSession,
    delivery: WebhookDelivery,
    outcome: Outcome,
    *,
    max_attempts: int,
    delays: Sequence[float],
) -> str:
    """Record attempt `delivery.attempts` (as claimed) and move the delivery on: delivered,
    failed (no retry left, or none would help), or pending until the next attempt.
    Returns the new status. A dispatcher whose lease ran out while it was trying still
    records its attempt; the delivery itself moves on only for the current claim."""
    now = utcnow()
    attempt = delivery.attempts
    error = outcome.error[:MAX_ERROR_CHARS] if outcome.error else None
    session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            attempt=attempt,
            at=now,
            status_code=outcome.status_code,
            error=error,
        )
    )
    values: dict[str, Any] = {
        "last_status_code": outcome.status_code,
        "last_error": error,
        "locked_until": None,
        "updated_at": now,
    }
    if outcome.delivered:
        status = WebhookStatus.DELIVERED
        values["next_attempt_at"] = None
    elif not outcome.retryable or attempt >= max_attempts:
        status = WebhookStatus.FAILED
        values["next_attempt_at"] = None
    else:
        status = WebhookStatus.PENDING
        values["next_attempt_at"] = now + timedelta(seconds=next_attempt_delay(attempt, delays))
    values["status"] = status
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id, WebhookDelivery.attempts == attempt)
        .values(**values)
    )
    await session.flush()
    return status


@dataclass(frozen=True, slots=True)
class DeliveryView:
    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


async def delivery_of(session: AsyncSession, job_id: str) -> DeliveryView | None:
    delivery = await session.scalar(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id))
    if delivery is None:
        return None
    attempts = await session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id == delivery.id)
        .order_by(WebhookAttempt.attempt)
    )
    return DeliveryView(delivery, list(attempts))


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
