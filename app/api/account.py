"""GET /api/v1/credits: the tenant's balance and its recent ledger entries."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Security

from app.api.deps import AuthDep, SessionDep
from app.api.images import iso_utc
from app.api.query import int_param, int_query, query_parameters
from app.api.schemas.common import API_KEY, error_responses
from app.api.schemas.native import Credits
from app.credits import ledger

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
    changes: a hold is negative, its capture returns what was not spent."""
    limit = int_param(
        request.query_params, "limit", default=DEFAULT_ENTRIES, minimum=1, maximum=MAX_ENTRIES
    )
    balance = await ledger.get_balance(session, auth.tenant_id)
    entries = await ledger.recent_entries(session, auth.tenant_id, limit)
    return {
        "balance": balance,
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
