"""One place that renders errors as `{"error": <message>, "code": <code>, ...}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException

from app.errors import GatewayError

log = logging.getLogger(__name__)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, each the shared Error schema."""
    schema = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {status: schema for status in statuses}


def error_response(status: int, message: str, code: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": message, "code": code, **extra}, status_code=status)


async def _gateway_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    response = error_response(exc.status_code, exc.message, exc.code, **exc.extra)
    response.headers.update(exc.headers)
    return response


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, str(exc.detail), code)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = f"{where}: {first.get('msg', 'invalid value')}" if where else "Invalid request"
    return error_response(400, message, "invalid_request")


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    # Connection-level failures only; details stay in the log, not in the response.
    log.error("database unavailable", extra={"error": type(exc).__name__})
    return error_response(
        503,
        "The database is unavailable; nothing was charged. Retry shortly.",
        "dependency_unavailable",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for error in (OperationalError, InterfaceError):
        app.add_exception_handler(error, _database_error)
