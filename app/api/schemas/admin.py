"""Request and response models of the admin API under /admin/v1."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas.common import ApiModel
from app.credits.ledger import MAX_GRANT
from app.db.statuses import LimitPeriod
from app.tenants.policy import MAX_CREDIT_LIMIT, MAX_LABEL, MAX_MODELS
from app.tenants.service import MAX_GRACE_SECONDS, MAX_RATE_LIMIT


class _Body(BaseModel):
    """Request bodies: exact JSON types, no unknown fields (parsed by app.api.admin)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CreateTenant(_Body):
    name: str = Field(
        description="1-100 characters of letters, digits, '.', '_' or '-'; unique",
        json_schema_extra={"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"},
    )


_EXPIRES = "ISO 8601 with a time zone, e.g. 2026-12-31T00:00:00Z; null: never"


class KeyPolicyBody(_Body):
    """A key's policies; on PATCH only the fields sent change (null: no limit, every
    model, never expires)."""

    label: str | None = Field(default=None, min_length=1, max_length=MAX_LABEL)
    credit_limit: int | None = Field(
        default=None, alias="creditLimit", ge=0, le=MAX_CREDIT_LIMIT, description="credits"
    )
    limit_period: Literal["total", "day", "month"] | None = Field(default=None, alias="limitPeriod")
    models: list[str] | None = Field(
        default=None, min_length=1, max_length=MAX_MODELS, description="null: every model"
    )
    expires_at: str | None = Field(
        default=None, alias="expiresAt", max_length=40, description=_EXPIRES
    )


class CreateKey(KeyPolicyBody):
    pass


class UpdateKey(KeyPolicyBody):
    pass


class RotateKey(_Body):
    grace_seconds: int = Field(default=0, alias="graceSeconds", ge=0, le=MAX_GRACE_SECONDS)


class GrantCredits(_Body):
    amount: int = Field(gt=0, le=MAX_GRANT)
    note: str | None = Field(default=None, min_length=1, max_length=150)


class WebhookSecretRequest(_Body):
    rotate: bool = Field(
        default=False, description="true: replace the secret now (receivers must switch)"
    )


class RateLimits(_Body):
    """Both limits in requests per minute; null (or absent) restores the gateway default."""

    per_minute: int | None = Field(default=None, alias="perMinute", ge=1, le=MAX_RATE_LIMIT)
    key_per_minute: int | None = Field(default=None, alias="keyPerMinute", ge=1, le=MAX_RATE_LIMIT)


class EffectiveLimits(ApiModel):
    per_minute: int
    key_per_minute: int


class TenantLimits(ApiModel):
    """null: the gateway default applies (shown under `effective`)."""

    per_minute: int | None
    key_per_minute: int | None
    effective: EffectiveLimits


class Tenant(ApiModel):
    id: str
    name: str
    created_at: str
    balance: int
    active_keys: int
    rate_limits: TenantLimits


class TenantList(ApiModel):
    tenants: list[Tenant]
    total: int
    limit: int
    offset: int


class Key(ApiModel):
    """A key as operators see it, never its secret: policies, and `spent` in the current
    period (`remaining` null: no limit; `models` null: every model). A future
    `revokedAt` is a rotation's grace period."""

    prefix: str
    tenant: str
    label: str | None
    credit_limit: int | None
    limit_period: LimitPeriod
    spent: int
    remaining: int | None
    period_start: str | None
    models: list[str] | None
    expires_at: str | None
    active: bool
    created_at: str
    last_used_at: str | None
    revoked_at: str | None
    rotated_from: str | None


class CreatedKey(Key):
    """A new key; `key` is its plaintext, in this response only."""

    key: str
    note: str


class KeyList(ApiModel):
    tenant: str
    keys: list[Key]


class AdminLedgerEntry(ApiModel):
    id: int
    kind: str
    amount: int
    note: str | None
    generation_id: str | None
    api_key_prefix: str | None
    created_at: str


class TenantLedger(ApiModel):
    tenant: str
    entries: list[AdminLedgerEntry]


class AuditStatus(ApiModel):
    ok: bool
    checked_at: str
    problems: list[str]


class WebhookSecret(ApiModel):
    """The tenant's webhook signing secret (`whsec_` + base64); `created`: it is new
    (there was none, or it was rotated)."""

    tenant: str
    secret: str
    created: bool


class Grant(ApiModel):
    tenant: str
    granted: int
    balance: int


class UsageGroup(ApiModel):
    day: str
    tenant: str
    tenant_id: str
    model: str
    generations: int
    failed: int
    images: int
    credits_charged: int


class UsageTotals(ApiModel):
    generations: int
    failed: int
    images: int
    credits_charged: int


class Usage(ApiModel):
    since: str | None = Field(alias="from")
    until: str | None = Field(alias="to")
    rows: list[UsageGroup]
    totals: UsageTotals
