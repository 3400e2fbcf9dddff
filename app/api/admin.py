"""The admin HTTP API under /admin/v1, for operators.

Mounted only when IMAGEGATE_ADMIN_TOKEN is set (otherwise every path here is a plain
404), and every request must carry `Authorization: Bearer <admin token>`, compared in
constant time. Tenants, keys (the plaintext is in the create response only), credit
grants, per-tenant rate limits and usage by tenant/model/day as JSON or CSV.
"""

from __future__ import annotations

import csv
import io
import logging
from datetime import date, datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response, Security
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.admin import service as admin
from app.admin.service import TenantSummary, UsageQuery, UsageRow
from app.api.body import read_json_body
from app.api.deps import AuthCacheDep, CatalogDep, SessionDep, SettingsDep
from app.api.images import iso_utc
from app.api.query import (
    MAX_OFFSET,
    choice_param,
    choice_query,
    int_param,
    int_query,
    query_parameters,
    text_param,
    text_query,
)
from app.api.schemas import admin as schemas
from app.api.schemas.admin import (
    CreateKey,
    CreateTenant,
    KeyPolicyBody,
    RateLimits,
    RotateKey,
    UpdateKey,
    WebhookSecretRequest,
)
from app.api.schemas.admin import GrantCredits as GrantCredits  # re-exported: one bound, CLI too
from app.api.schemas.common import ADMIN_TOKEN, error_responses
from app.bearer import bearer_matches, bearer_token
from app.credits import ledger
from app.credits.audit import audit_ledger
from app.db.models import ApiKey, utcnow
from app.errors import InvalidRequest, Unauthorized
from app.providers.catalog import Catalog
from app.settings import Settings
from app.tenants import service as tenants
from app.tenants.policy import KeyChanges
from app.tenants.webhook_secret import webhook_secret

log = logging.getLogger(__name__)

PREFIX = "/admin/v1"
# Admin bodies are a few small fields.
BODY_LIMIT = 16 * 1024
DEFAULT_PAGE = 100
LEDGER_PAGE = 50
MAX_PAGE = 1000
USAGE_FORMATS = ("json", "csv")
CSV_COLUMNS = (
    "day",
    "tenant",
    "tenant_id",
    "model",
    "generations",
    "failed",
    "images",
    "credits_charged",
)

B = TypeVar("B", bound=BaseModel)


async def require_admin(request: Request, settings: SettingsDep) -> None:
    """`Authorization: Bearer <IMAGEGATE_ADMIN_TOKEN>`, or 401."""
    token = settings.admin_token
    authorization = request.headers.get("authorization", "")
    if token is None or not bearer_matches(authorization, token.get_secret_value()):
        error = Unauthorized(
            "Admin API: send 'Authorization: Bearer <IMAGEGATE_ADMIN_TOKEN>'"
            if not bearer_token(authorization)
            else "Admin API: invalid admin token"
        )
        error.headers = {"WWW-Authenticate": 'Bearer realm="imagegate-admin"'}
        raise error


router = APIRouter(
    prefix=PREFIX,
    tags=["admin"],
    dependencies=[Security(ADMIN_TOKEN), Depends(require_admin)],
    # 400 on every route: a NUL in the URL (app.api.query.NulInUrlGuard).
    responses=error_responses(400, 401, 503),
)


def _json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` declaring the JSON body that `_body` parses by hand (so a bad one
    is the native 400 naming the field, after the size cap and the guards in app.api.body)."""
    schema = model.model_json_schema(by_alias=True)
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }


def _date_query(name: str) -> dict[str, Any]:
    schema = {"type": "string", "format": "date", "minLength": 10, "maxLength": 10}
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": "A UTC day, YYYY-MM-DD (inclusive)",
    }


@router.get(
    "/tenants",
    response_model=schemas.TenantList,
    openapi_extra=query_parameters(
        int_query("limit", minimum=1, maximum=MAX_PAGE, default=DEFAULT_PAGE),
        int_query("offset", minimum=0, maximum=MAX_OFFSET, default=0),
    ),
)
async def list_tenants(
    request: Request, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """Tenants by name with balance, limits and active keys; `limit` 1..1000 (100), `offset`."""
    params = request.query_params
    limit = int_param(params, "limit", default=DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE)
    offset = int_param(params, "offset", default=0, minimum=0, maximum=MAX_OFFSET)
    page = await admin.list_tenants(session, limit=limit, offset=offset)
    total = await admin.count_tenants(session)
    return {
        "tenants": [_tenant(summary, settings) for summary in page],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.post(
    "/tenants",
    status_code=201,
    response_model=schemas.Tenant,
    responses=error_responses(413, 415),
    openapi_extra=_json_body(CreateTenant),
)
async def create_tenant(
    request: Request, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    body = await _body(request, CreateTenant)
    tenant = await tenants.create_tenant(session, body.name)
    summary = await admin.tenant_summary(session, tenant)
    log.info("admin: tenant created", extra={"tenant": tenant.name})
    return _tenant(summary, settings)


@router.get("/tenants/{name}", response_model=schemas.Tenant, responses=error_responses(404))
async def get_tenant(name: str, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    tenant = await tenants.get_tenant(session, name)
    summary = await admin.tenant_summary(session, tenant)
    return _tenant(summary, settings)


@router.post(
    "/tenants/{name}/keys",
    status_code=201,
    response_model=schemas.CreatedKey,
    responses=error_responses(404, 413, 415),
    openapi_extra=_json_body(CreateKey, required=False),
)
async def create_key(
    name: str, request: Request, session: SessionDep, catalog: CatalogDep
) -> dict[str, Any]:
    """A new key with optional policies. Its plaintext is in this response only; the
    gateway keeps a hash."""
    body = await _body(request, CreateKey, optional=True)
    tenant = await tenants.get_tenant(session, name)
    created = await tenants.create_key(
        session,
        tenant,
        body.label,
        policy=key_changes(body),
        known_models=_model_ids(catalog),
    )
    log.info("admin: key created", extra={"tenant": tenant.name, "prefix": created.key.prefix})
    return await _created(session, created)


@router.get("/tenants/{name}/keys", response_model=schemas.KeyList, responses=error_responses(404))
async def list_keys(name: str, session: SessionDep) -> dict[str, Any]:
    """The tenant's keys, newest first, revoked ones included; never a secret."""
    tenant = await tenants.get_tenant(session, name)
    keys = await admin.list_keys(session, tenant.id)
    return {"tenant": tenant.name, "keys": await admin.key_details(session, keys)}


@router.get("/keys/{prefix}", response_model=schemas.Key, responses=error_responses(404))
async def get_key(prefix: str, session: SessionDep) -> dict[str, Any]:
    return await _detail(session, await tenants.get_key(session, prefix))


@router.patch(
    "/keys/{prefix}",
    response_model=schemas.Key,
    responses=error_responses(404, 413, 415),
    openapi_extra=_json_body(UpdateKey),
)
async def update_key(
    prefix: str,
    request: Request,
    session: SessionDep,
    catalog: CatalogDep,
    auth_cache: AuthCacheDep,
) -> dict[str, Any]:
    """Change the fields sent: `label`, `creditLimit` (null: none), `limitPeriod`,
    `models` (null: every model), `expiresAt` (null: never). A limit applies to the
    keys a rotation links too."""
    body = await _body(request, UpdateKey)
    key = await tenants.update_key(session, prefix, key_changes(body), _model_ids(catalog))
    detail = await _detail(session, key)
    await session.commit()  # before the cache is emptied, as in revoke_key
    auth_cache.clear()  # cached keys carry their models and expiry
    log.info("admin: key updated", extra={"prefix": key.prefix})
    return detail


@router.post("/keys/{prefix}/revoke", response_model=schemas.Key, responses=error_responses(404))
async def revoke_key(prefix: str, session: SessionDep, auth_cache: AuthCacheDep) -> dict[str, Any]:
    """Revoke a key by its prefix now; revoking a revoked key changes nothing."""
    key = await tenants.revoke_key(session, prefix)
    detail = await _detail(session, key)
    # Committed before the cache is emptied, so no request can cache the key again.
    await session.commit()
    auth_cache.clear()  # refused from now on, not after the cache's few seconds
    log.info("admin: key revoked", extra={"prefix": key.prefix})
    return detail


@router.post(
    "/keys/{prefix}/rotate",
    status_code=201,
    response_model=schemas.CreatedKey,
    responses=error_responses(404, 413, 415),
    openapi_extra=_json_body(RotateKey, required=False),
)
async def rotate_key(
    prefix: str, request: Request, session: SessionDep, auth_cache: AuthCacheDep
) -> dict[str, Any]:
    """A new key with this one's label, policies and spend; this one is revoked now, or
    after `graceSeconds`. The answer is the new key, its plaintext shown once."""
    body = await _body(request, RotateKey, optional=True)
    created = await tenants.rotate_key(session, prefix, body.grace_seconds)
    detail = await _created(session, created)
    await session.commit()
    auth_cache.clear()  # the old key's cached entry must learn its revocation time
    log.info("admin: key rotated", extra={"prefix": prefix, "new_prefix": created.key.prefix})
    return detail


@router.get(
    "/tenants/{name}/ledger",
    response_model=schemas.TenantLedger,
    responses=error_responses(404),
    openapi_extra=query_parameters(
        int_query("limit", minimum=1, maximum=MAX_PAGE, default=LEDGER_PAGE)
    ),
)
async def tenant_ledger(name: str, request: Request, session: SessionDep) -> dict[str, Any]:
    """The tenant's newest ledger entries (`limit` 1..1000, default 50), each with the key
    its generation used."""
    limit = int_param(
        request.query_params, "limit", default=LEDGER_PAGE, minimum=1, maximum=MAX_PAGE
    )
    tenant = await tenants.get_tenant(session, name)
    return {"tenant": tenant.name, "entries": await admin.ledger_entries(session, tenant.id, limit)}


@router.get("/audit", response_model=schemas.AuditStatus)
async def audit(session: SessionDep) -> dict[str, Any]:
    """`imagegate credits audit`: every tenant's balance against its entries, every hold
    settled once, every key's spend against its holds and its limit."""
    report = await audit_ledger(session)
    return {
        "ok": report.ok,
        "checkedAt": iso_utc(utcnow()),
        "problems": [f"{p.tenant}: {p.problem}" for p in report.problems],
    }


@router.post(
    "/tenants/{name}/credits",
    response_model=schemas.Grant,
    responses=error_responses(404, 413, 415),
    openapi_extra=_json_body(GrantCredits),
)
async def grant_credits(name: str, request: Request, session: SessionDep) -> dict[str, Any]:
    body = await _body(request, GrantCredits)
    tenant = await tenants.get_tenant(session, name)
    balance = await ledger.grant(
        session, tenant.id, body.amount, note=f"admin API: {body.note or 'grant'}"
    )
    log.info("admin: credits granted", extra={"tenant": tenant.name, "amount": body.amount})
    return {"tenant": tenant.name, "granted": body.amount, "balance": balance}


@router.post(
    "/tenants/{name}/webhook-secret",
    response_model=schemas.WebhookSecret,
    responses=error_responses(404, 413, 415),
    openapi_extra=_json_body(WebhookSecretRequest, required=False),
)
async def tenant_webhook_secret(name: str, request: Request, session: SessionDep) -> dict[str, Any]:
    """The secret the tenant's webhooks are signed with, created if it has none; with
    `{"rotate": true}` a new one, used from the next attempt on."""
    body = await _body(request, WebhookSecretRequest, optional=True)
    secret, created = await webhook_secret(session, name, rotate=body.rotate)
    await session.commit()
    if created:
        log.info("admin: webhook secret set", extra={"tenant": name, "rotated": body.rotate})
    return {"tenant": name, "secret": secret, "created": created}


@router.put(
    "/tenants/{name}/rate-limits",
    response_model=schemas.Tenant,
    responses=error_responses(404, 413, 415),
    openapi_extra=_json_body(RateLimits),
)
async def set_rate_limits(
    name: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    auth_cache: AuthCacheDep,
) -> dict[str, Any]:
    """Replace both limits (requests per minute); a null or absent one means the default."""
    body = await _body(request, RateLimits)
    tenant = await tenants.get_tenant(session, name)
    await tenants.set_rate_limits(
        session, tenant, per_minute=body.per_minute, key_per_minute=body.key_per_minute
    )
    summary = await admin.tenant_summary(session, tenant)
    await session.commit()  # before the cache is emptied, as in revoke_key
    auth_cache.clear()  # cached keys carry the tenant's limits
    log.info("admin: rate limits set", extra={"tenant": tenant.name})
    return _tenant(summary, settings)


@router.get(
    "/usage",
    response_model=schemas.Usage,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **error_responses(404),
    },
    openapi_extra=query_parameters(
        choice_query("format", USAGE_FORMATS, default="json"),
        text_query("tenant", "A tenant name"),
        text_query("model", "A catalog model id"),
        text_query("apiKey", "A key's prefix: only its generations"),
        _date_query("from"),
        _date_query("to"),
    ),
)
async def usage(request: Request, session: SessionDep) -> dict[str, Any] | Response:
    """Generations per UTC day, tenant and model: `generations`, `failed`, `images`
    (delivered) and `creditsCharged`. Filters: `tenant` (name), `model`, `apiKey` (a
    key's prefix), `from` and `to`
    (inclusive, YYYY-MM-DD). `format=csv` answers text/csv with one row per group."""
    params = request.query_params
    fmt = choice_param(params, "format", USAGE_FORMATS, default="json")
    since, until = _date_param(params.get("from"), "from"), _date_param(params.get("to"), "to")
    if since and until and since > until:
        raise InvalidRequest("from must not be after to", field="from")
    tenant_name = text_param(params, "tenant")
    tenant_id = (await tenants.get_tenant(session, tenant_name)).id if tenant_name else None
    key_prefix = text_param(params, "apiKey")
    key_id = (await tenants.get_key(session, key_prefix)).id if key_prefix else None
    rows = await admin.usage(
        session,
        UsageQuery(
            tenant_id=tenant_id,
            model=text_param(params, "model"),
            api_key_id=key_id,
            since=since,
            until=until,
        ),
    )
    if fmt == "csv":
        return Response(
            _csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="imagegate-usage.csv"'},
        )
    return {
        "from": since.isoformat() if since else None,
        "to": until.isoformat() if until else None,
        "rows": [_usage_row(row) for row in rows],
        "totals": {
            "generations": sum(row.generations for row in rows),
            "failed": sum(row.failed for row in rows),
            "images": sum(row.images for row in rows),
            "creditsCharged": sum(row.credits_charged for row in rows),
        },
    }


async def _body(request: Request, model: type[B], *, optional: bool = False) -> B:
    """The JSON body as `model`; a 400 that names the first bad field otherwise."""
    empty = request.headers.get("content-length") in (None, "0") and (
        "transfer-encoding" not in request.headers
    )
    data = {} if optional and empty else await read_json_body(request, BODY_LIMIT)
    if not isinstance(data, dict):
        raise InvalidRequest("Request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"{field}: {first['msg']}", field=field) from None


def _date_param(raw: str | None, name: str) -> date | None:
    if raw is None:
        return None
    try:
        if len(raw) == 10:
            return date.fromisoformat(raw)
    except ValueError:
        pass
    raise InvalidRequest(f"{name} must be a date as YYYY-MM-DD (UTC)", field=name)


def _tenant(summary: TenantSummary, settings: Settings) -> dict[str, Any]:
    return {
        "id": summary.id,
        "name": summary.name,
        "createdAt": iso_utc(summary.created_at),
        "balance": summary.balance,
        "activeKeys": summary.active_keys,
        "rateLimits": {
            # null: the gateway default applies (shown under `effective`).
            "perMinute": summary.rate_limit_per_minute,
            "keyPerMinute": summary.key_rate_limit_per_minute,
            "effective": {
                "perMinute": summary.rate_limit_per_minute or settings.rate_limit_tenant_per_minute,
                "keyPerMinute": summary.key_rate_limit_per_minute
                or settings.rate_limit_key_per_minute,
            },
        },
    }


def key_changes(body: KeyPolicyBody) -> KeyChanges:
    """The fields the body sent, as policy changes (an absent one stays; null clears)."""
    sent = body.model_fields_set
    values: dict[str, Any] = {name: getattr(body, name) for name in sent}
    if "expires_at" in values:
        values["expires_at"] = _instant(values["expires_at"])
    return KeyChanges(**values)


def _instant(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise InvalidRequest(
            "expiresAt must be ISO 8601 with a time zone, e.g. 2026-12-31T00:00:00Z",
            field="expiresAt",
        )
    return value


def _model_ids(catalog: Catalog) -> frozenset[str]:
    return frozenset(model.id for model in catalog)


async def _detail(session: AsyncSession, key: ApiKey) -> dict[str, Any]:
    return (await admin.key_details(session, [key]))[0]


async def _created(session: AsyncSession, created: tenants.CreatedKey) -> dict[str, Any]:
    return {
        **await _detail(session, created.key),
        "key": created.plaintext,
        "note": "the key is shown once; store it now",
    }


def _usage_row(row: UsageRow) -> dict[str, Any]:
    return {
        "day": row.day,
        "tenant": row.tenant,
        "tenantId": row.tenant_id,
        "model": row.model,
        "generations": row.generations,
        "failed": row.failed,
        "images": row.images,
        "creditsCharged": row.credits_charged,
    }


def _csv(rows: list[UsageRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            (
                row.day,
                row.tenant,
                row.tenant_id,
                row.model,
                row.generations,
                row.failed,
                row.images,
                row.credits_charged,
            )
        )
    return out.getvalue()
