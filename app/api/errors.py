"""One place that renders errors as `{"error": <message>, "code": <code>, ...}`, and a
safety net that makes anything unexpected a JSON 500 with the request id."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.openai.shape import is_openai_path, openai_error
from app.api.query import NulInUrlGuard
from app.errors import GatewayError
from app.observability.logging import request_id_var

log = logging.getLogger(__name__)

# Connection-level database failures (app/db/engine.py gives every disconnect the
# OperationalError class) and a pool with no connection to give within its timeout.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(status: int, message: str, code: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": message, "code": code, **extra}, status_code=status)


async def _gateway_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    if is_openai_path(request.url.path):  # /v1: OpenAI's shape, whatever raised it
        field = exc.extra.get("field")
        return openai_error(
            exc.status_code,
            exc.message,
            exc.code,
            field if isinstance(field, str) else None,
            exc.headers,
        )
    response = error_response(exc.status_code, exc.message, exc.code, **exc.extra)
    response.headers.update(exc.headers)
    return response


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if is_openai_path(request.url.path):  # unknown /v1 paths and methods, multipart errors
        code = _HTTP_CODES.get(exc.status_code, "invalid_request")
        return openai_error(exc.status_code, str(exc.detail), code, headers=exc.headers)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, str(exc.detail), code)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = f"{where}: {first.get('msg', 'invalid value')}" if where else "Invalid request"
    if is_openai_path(request.url.path):
        return openai_error(400, message, "invalid_value", where or None)
    return error_response(400, message, "invalid_request")


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # Connection-level failures only; details stay in the log, not in the response.
    log.error("database unavailable", extra={"error": type(exc).__name__})
    message = "The database is unavailable; nothing was charged. Retry shortly."
    if is_openai_path(request.url.path):
        return openai_error(503, message, "dependency_unavailable")
    return error_response(503, message, "dependency_unavailable")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, _database_error)
    # Added before the observability middleware, so it runs inside it: the request id is
    # still set and the 500 goes out with its X-Request-ID and access-log line.
    app.add_middleware(InternalErrorNet)
    app.add_middleware(NulInUrlGuard)


class InternalErrorNet:
    """Any exception no handler claimed: a JSON 500 naming the request id, instead of
    Starlette's text/plain one; the traceback goes to the log (never the request body,
    which a traceback does not carry). Inputs must be refused by validation long before
    this: it is a net, not a validator."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            raise  # nobody to answer: app.server_limits.QuietDisconnects logs one line
        except Exception:  # the one catch-all: whatever it is, the client gets JSON
            request_id = request_id_var.get()
            log.exception("unhandled error", extra={"path": scope.get("path")})
            if started:
                raise  # too late for a response of our own; the server closes it
            message = (
                f"Internal error; if it persists, report request id {request_id} to the operator"
            )
            if is_openai_path(scope.get("path", "")):
                response = openai_error(500, message, "internal_error")
            else:
                response = error_response(500, message, "internal_error", requestId=request_id)
            await response(scope, receive, send)
