"""GET /api/v1/credits: the tenant's balance, its recent ledger entries and the calling
key's own limit and spend."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Security
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import AuthDep, SessionDep
from app.api.images import iso_utc
from app.api.query import int_param, int_query, query_parameters
from app.api.schemas.common import API_KEY, error_responses
from app.api.schemas.native import Credits
from app.credits import ledger
from app.credits.key_spend import key_spend
from app.db.models import ApiKey, utcnow

router = APIRouter(tags=["account"], dependencies=[Security(API_KEY)])

DEFAULT_ENTRIES = 20
MAX_ENTRIES = 100


@router.get(
    "/api/v1/credits",
    response_model=Credits,
    responses=error_responses(400, 401, 429, 503),
    openapi_extra=query_parameters(
        int_query("limit", minimum=1, maximum=MAX_ENTRIES, default=DEFAULT_ENTRIES)
    ),
)
async def credits(
    request: Request,
    auth: AuthDep,
    session: SessionDep,
) -> dict[str, Any]:
    """`limit` (1..100, default 20) entries, newest first. Amounts are signed balance
    changes: a hold is negative, its capture returns what was not spent. `key` is the
    calling key's own limit and what it spent in the limit's current period."""
    limit = int_param(
        request.query_params, "limit", default=DEFAULT_ENTRIES, minimum=1, maximum=MAX_ENTRIES
    )
    balance = await ledger.get_balance(session, auth.tenant_id)
    entries = await ledger.recent_entries(session, auth.tenant_id, limit)
    key = await session.get(ApiKey, auth.api_key_id)
    return {
        "balance": balance,
        "key": await _key_credits(session, key) if key else None,
        "entries": [
            {
                "id": entry.id,
                "kind": entry.kind,
                "amount": entry.amount,
                "note": entry.note,
                "generationId": entry.generation_id,
                "createdAt": iso_utc(entry.created_at),
            }
            for entry in entries
        ],
    }


async def _key_credits(session: AsyncSession, key: ApiKey) -> dict[str, Any]:
    spend = await key_spend(session, key, utcnow())
    return {
        "prefix": key.prefix,
        "creditLimit": spend.credit_limit,
        "limitPeriod": spend.limit_period,
        "periodStart": iso_utc(spend.period_start),
        "spent": spend.spent,
        "remaining": spend.remaining,
    }
