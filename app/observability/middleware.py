"""One pure-ASGI middleware: request id, the request's trace span, access log, HTTP
metrics, and the headers every answer carries (the emulation marker, no-store on API
answers). Rate-limit headers are not added here: the auth dependency puts them on the
route's answer (app/api/deps.py)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.logging import request_id_var
from app.observability.metrics import Metrics
from app.observability.tracing import rename, server_span

log = logging.getLogger("app.access")

EMULATED_HEADER = "x-imagegate-emulated"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# API answers carry signed URLs, plaintext keys (admin key creation) and tenant data:
# no cache, shared or private, may keep them. A route that sets its own Cache-Control
# keeps it.
_NO_STORE_PREFIXES = ("/api/", "/v1/", "/admin/")
# W3C trace context: a caller's span becomes the request span's parent.
_PROPAGATION_HEADERS = (b"traceparent", b"tracestate")


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, emulated: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.emulated = emulated

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        # Accept a caller's id only if it is safe to echo and log; else make one.
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        no_store = str(scope.get("path", "")).startswith(_NO_STORE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                if b"cache-control" not in present and no_store:
                    headers.append((b"cache-control", b"no-store"))
                headers.append((b"x-request-id", request_id.encode()))
                if self.emulated:
                    headers.append((EMULATED_HEADER.encode(), b"true"))
                message["headers"] = headers
            await send(message)

        method = scope["method"]
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _PROPAGATION_HEADERS
        }
        # Named by the route template once routing has found it (never the raw path).
        attributes = {"http.request.method": method, "imagegate.request_id": request_id}
        with server_span(method, carrier, attributes) as (span, raw):
            try:
                await self.app(scope, receive, send_with_headers)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                rename(raw, f"{method} {route}")
                span.set("http.route", route)
                span.set("http.response.status_code", status)
                if status >= 500:
                    span.fail(str(status))
                self.metrics.http_requests.labels(route, method, str(status)).inc()
                log.info(
                    "request",
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
                request_id_var.reset(token)
