"""Shared pieces of the contract: the error bodies and the base of every response model."""

from __future__ import annotations

from typing import Any

from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

# Statuses a client may see, with what each means on these routes.
_DESCRIPTIONS = {
    400: "Invalid input; the message names the field (and the allowed values)",
    401: "Missing, unknown, revoked or expired credentials",
    402: "Insufficient credits (the tenant's, or the key's own limit); nothing was charged",
    403: "The API key may not do this (e.g. a model outside its allow-list)",
    404: "Not found",
    409: "Idempotency-Key conflict: in progress, or reused with a different body",
    413: "Request body too large",
    415: "Unsupported Content-Type",
    429: "Rate limited; see Retry-After and X-RateLimit-* headers",
    500: "Generation failed (credits refunded) or an internal error",
    503: "Provider not configured or a dependency (database, storage) unavailable",
}


class ApiModel(BaseModel):
    """A response body: camelCase on the wire; a field the route does not send is omitted
    (the routes use `response_model_exclude_unset`), one it sends as null stays null.
    Extra keys are refused, so a body that drifts from its model fails loudly in tests."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Error(BaseModel):
    """The native error: a human message under `error` and a machine `code`, plus
    details that depend on the error (`field`, `allowed`, `limit`, `required`,
    `available`, `requestId`, ...)."""

    model_config = ConfigDict(extra="allow")

    error: str
    code: str
    field: str | None = None


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error envelope, which the OpenAI SDK turns into its typed exceptions."""

    error: OpenAIErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, each the native Error model."""
    return {status: {"model": Error, "description": _DESCRIPTIONS[status]} for status in statuses}


def openai_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, each in OpenAI's error shape."""
    return {
        status: {"model": OpenAIError, "description": _DESCRIPTIONS[status]} for status in statuses
    }


# Declared for the schema only: they never refuse (auto_error=False); the routes'
# dependencies (app.api.deps.authenticated, app.api.admin.require_admin) decide, with
# the contract's 401.
API_KEY = HTTPBearer(
    auto_error=False, scheme_name="apiKey", description="A tenant's API key: `Bearer ig_...`"
)
ADMIN_TOKEN = HTTPBearer(
    auto_error=False, scheme_name="adminToken", description="`Bearer <IMAGEGATE_ADMIN_TOKEN>`"
)
