"""Query-string parameters parsed by hand, so a bad one is a 400 that names it and its range."""

from __future__ import annotations

from typing import Any, overload
from urllib.parse import parse_qsl

from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import InvalidRequest

# Offsets beyond this are not a page anyone browses to; keep the database from scanning.
MAX_OFFSET = 100_000
_MAX_TEXT_CHARS = 200


@overload
def int_param(
    params: QueryParams, name: str, *, default: int, minimum: int, maximum: int
) -> int: ...


@overload
def int_param(
    params: QueryParams, name: str, *, default: None, minimum: int, maximum: int
) -> int | None: ...


def int_param(
    params: QueryParams, name: str, *, default: int | None, minimum: int, maximum: int
) -> int | None:
    raw = params.get(name)
    if raw is None:
        return default
    value = parse_int(raw)
    if value is None or not minimum <= value <= maximum:
        raise InvalidRequest(f"{name} must be an integer from {minimum} to {maximum}", field=name)
    return value


def parse_int(raw: str, max_digits: int = 18) -> int | None:
    """A non-negative decimal integer of at most `max_digits` digits, else None."""
    text = raw.strip()
    # isascii: str.isdigit() also accepts digits like "²" that int() rejects. The length
    # cap keeps int() below Python's int-string conversion limit (and out of bignums).
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > max_digits:
        return None
    return int(significant)


def text_param(params: QueryParams, name: str) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not raw or len(raw) > _MAX_TEXT_CHARS:
        raise InvalidRequest(
            f"{name} must be 1 to {_MAX_TEXT_CHARS} characters when given", field=name
        )
    return raw


def choice_param(
    params: QueryParams, name: str, allowed: tuple[str, ...], default: str | None = None
) -> str | None:
    raw = params.get(name)
    if raw is None:
        return default
    if raw not in allowed:
        raise InvalidRequest(
            f"{name} must be one of: {', '.join(allowed)}", field=name, allowed=list(allowed)
        )
    return raw


class NulInUrlGuard:
    """A NUL character (%00) in the URL's path or query is a 400 naming where, before any
    route sees it: Postgres text cannot hold one, so a lookup by it failed in the database
    (SQLite would have answered, so both stacks refuse it here)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        where = _nul_in_url(scope) if scope["type"] == "http" else None
        if where is None:
            await self.app(scope, receive, send)
            return
        message = f"{where} contains the NUL character U+0000 (%00)"
        body: dict[str, object]
        if scope["path"].startswith("/v1/"):  # the OpenAI-compatible routes' error shape
            error = {"message": message, "type": "invalid_request_error", "param": where}
            body = {"error": error | {"code": "invalid_request"}}
        else:
            body = {"error": message, "code": "invalid_request", "field": where}
        await JSONResponse(body, status_code=400)(scope, receive, send)


def _nul_in_url(scope: Scope) -> str | None:
    if "\x00" in scope["path"]:
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" not in query and b"\x00" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "%00")
    return None


# OpenAPI declarations of the parameters above, so the schema states what they accept.
def int_query(
    name: str, *, minimum: int, maximum: int, default: int | None = None, description: str = ""
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if default is not None:
        schema["default"] = default
    return _query(name, schema, description)


def text_query(name: str, description: str = "") -> dict[str, Any]:
    return _query(
        name, {"type": "string", "minLength": 1, "maxLength": _MAX_TEXT_CHARS}, description
    )


def choice_query(
    name: str, allowed: tuple[str, ...], default: str | None = None, description: str = ""
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "enum": list(allowed)}
    if default is not None:
        schema["default"] = default
    return _query(name, schema, description)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    parameter: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


def query_parameters(*parameters: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` for a route that parses these query parameters by hand."""
    return {"parameters": list(parameters)}
