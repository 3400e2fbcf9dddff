"""Request and response models of the admin API under /admin/v1."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas.common import ApiModel
from app.credits.ledger import MAX_GRANT
from app.tenants.service import MAX_RATE_LIMIT


class _Body(BaseModel):
    """Request bodies: exact JSON types, no unknown fields (parsed by app.api.admin)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CreateTenant(_Body):
    name: str = Field(
        description="1-100 characters of letters, digits, '.', '_' or '-'; unique",
        json_schema_extra={"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"},
    )


class CreateKey(_Body):
    label: str | None = Field(default=None, min_length=1, max_length=100)


class GrantCredits(_Body):
    amount: int = Field(gt=0, le=MAX_GRANT)
    note: str | None = Field(default=None, min_length=1, max_length=150)


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
    """A key as operators see it: never its secret."""

    prefix: str
    label: str | None
    created_at: str
    last_used_at: str | None
    revoked_at: str | None
    active: bool


class CreatedKey(Key):
    """A new key; `key` is its plaintext, in this response only."""

    key: str
    tenant: str
    note: str


class KeyList(ApiModel):
    tenant: str
    keys: list[Key]


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
