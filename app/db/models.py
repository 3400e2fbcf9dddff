"""SQLAlchemy models. No image bytes, base64 or plaintext keys are ever stored here."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.db.statuses import (
    GenerationStatus,
    HoldStatus,
    IdempotencyStatus,
    JobStatus,
    LedgerKind,
    LimitPeriod,
    WebhookStatus,
    in_check,
)

# SQLite only auto-increments an INTEGER PRIMARY KEY; Postgres gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite would hand back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC-aware values")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Requests per minute; NULL means the gateway's default.
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    key_rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    # What the gateway signs its webhooks with (`whsec_` + base64). Kept as it is, not
    # hashed: signing needs it (README: security).
    webhook_secret: Mapped[str | None] = mapped_column(String(64))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # A future revoked_at is a rotation's grace period: the key works until then.
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Policies. NULL credit_limit: only the tenant's balance limits the key; NULL models:
    # every model (else a JSON array of catalog ids); NULL expires_at: never expires.
    credit_limit: Mapped[int | None] = mapped_column(BigInteger)
    limit_period: Mapped[str] = mapped_column(String(8), default=LimitPeriod.TOTAL)
    models: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The key whose spend rows this key adds to: itself, or the key it was rotated from
    # (so a rotation keeps the spend). Limits are kept equal across one spend key's keys.
    spend_key_id: Mapped[str] = mapped_column(String(36))
    rotated_from_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"))

    def model_list(self) -> list[str] | None:
        """The allow-list in the order it was given (None: every model)."""
        return None if self.models is None else list(json.loads(self.models))

    __table_args__ = (
        CheckConstraint(
            "credit_limit IS NULL OR credit_limit >= 0", name="ck_api_keys_credit_limit"
        ),
        CheckConstraint(in_check("limit_period", LimitPeriod), name="ck_api_keys_limit_period"),
        Index("ix_api_keys_tenant_id", "tenant_id"),
        Index("ix_api_keys_spend_key_id", "spend_key_id"),
    )


class ApiKeySpend(Base):
    """What a spend key's keys hold or have captured in one UTC period (`period_start`:
    1970-01-01 for `total`, the day's or the month's first instant otherwise). Changed
    only by the ledger, in the transaction that changes the tenant's balance."""

    __tablename__ = "api_key_spend"

    spend_key_id: Mapped[str] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    spent: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (CheckConstraint("spent >= 0", name="ck_api_key_spend_spent"),)


class CreditAccount(Base):
    __tablename__ = "credit_accounts"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (CheckConstraint("balance >= 0", name="ck_credit_accounts_balance"),)


class CreditHold(Base):
    __tablename__ = "credit_holds"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("credit_accounts.tenant_id"))
    generation_id: Mapped[str | None] = mapped_column(String(36))
    amount: Mapped[int] = mapped_column(BigInteger)
    captured: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default=HoldStatus.OPEN)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The api_key_spend row the hold was also taken from (NULL: no key), given back to on
    # settlement even when a later period has begun.
    spend_key_id: Mapped[str | None] = mapped_column(String(36))
    spend_period: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        CheckConstraint("amount > 0", name="ck_credit_holds_amount"),
        CheckConstraint("captured >= 0 AND captured <= amount", name="ck_credit_holds_captured"),
        CheckConstraint(in_check("status", HoldStatus), name="ck_credit_holds_status"),
        Index("ix_credit_holds_status_expires", "status", "expires_at"),
    )


class LedgerEntry(Base):
    """Append-only. `amount` is the signed change to the account balance."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("credit_accounts.tenant_id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    hold_id: Mapped[str | None] = mapped_column(ForeignKey("credit_holds.id"))
    generation_id: Mapped[str | None] = mapped_column(String(36))
    note: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (
        CheckConstraint(in_check("kind", LedgerKind), name="ck_ledger_entries_kind"),
        Index("ix_ledger_entries_tenant_id", "tenant_id", "id"),
        Index("ix_ledger_entries_hold_id", "hold_id"),
    )


class Generation(Base):
    __tablename__ = "generations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"))
    model: Mapped[str] = mapped_column(String(100))
    provider: Mapped[str] = mapped_column(String(50))
    prompt: Mapped[str] = mapped_column(Text)
    style_preset: Mapped[str] = mapped_column(String(50))
    aspect_ratio: Mapped[str] = mapped_column(String(10))
    num_images: Mapped[int] = mapped_column(Integer)
    image_to_image: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), default=GenerationStatus.PENDING)
    credits_charged: Mapped[int] = mapped_column(BigInteger, default=0)
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    upstream_ms: Mapped[int | None] = mapped_column(Integer)
    total_ms: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint(in_check("status", GenerationStatus), name="ck_generations_status"),
        Index("ix_generations_tenant_created", "tenant_id", "created_at"),
    )


class Image(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    index: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(100))
    storage_key: Mapped[str] = mapped_column(String(300), unique=True)
    mime_type: Mapped[str] = mapped_column(String(50))
    bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_images_generation_id", "generation_id"),
        Index("ix_images_tenant_created", "tenant_id", "created_at"),
    )


class IdempotencyRecord(Base):
    """A client's Idempotency-Key: the body it came with and, once done, the response.

    The stored response holds storage keys, not URLs (re-signed on replay) and never
    image bytes.
    """

    __tablename__ = "idempotency_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=IdempotencyStatus.IN_PROGRESS)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # An in-progress claim whose process died is taken over after this.
    locked_until: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("tenant_id", "key", name="uq_idempotency_keys_tenant_key"),
        CheckConstraint(in_check("status", IdempotencyStatus), name="ck_idempotency_keys_status"),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )


class Job(Base):
    """An asynchronous generation (Prefer: respond-async). The request is kept without its
    source image, which waits in the image store under `source_key` until the job ends."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    request_json: Mapped[str] = mapped_column(Text)
    source_key: Mapped[str | None] = mapped_column(String(300))
    # The current attempt's generation: after a crash it tells whether the work (and the
    # charge) already happened, so a job is charged exactly once.
    generation_id: Mapped[str | None] = mapped_column(String(36))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    images_done: Mapped[int] = mapped_column(Integer, default=0)
    images_total: Mapped[int] = mapped_column(Integer)
    error_status: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        CheckConstraint(in_check("status", JobStatus), name="ck_jobs_status"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at"),
    )


class WebhookDelivery(Base):
    """The webhook of one job: its URL, and where its attempts stand. `next_attempt_at` is
    NULL until the job ends; a dispatcher claims a due delivery with a lease
    (`locked_until`) so each attempt is made by one replica. Never stores the body."""

    __tablename__ = "webhook_deliveries"

    # Also the `webhook-id` every attempt sends, so receivers can drop duplicates.
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    # The submitting request's base URL: the job body's image links, as polling shows them.
    base_url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16), default=WebhookStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (
        CheckConstraint(in_check("status", WebhookStatus), name="ck_webhook_deliveries_status"),
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
    )


class WebhookAttempt(Base):
    """One POST of a delivery: when, and what came back (a status code or a short error)."""

    __tablename__ = "webhook_attempts"

    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    # The primary key makes a second record of the same attempt fail: one per attempt.
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(200))
