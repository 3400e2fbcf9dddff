"""One pure-ASGI middleware: request id, access log, HTTP metrics, and the headers every
answer carries (the emulation marker, no-store on API answers). Rate-limit headers are
not added here: the auth dependency puts them on the route's answer (app/api/deps.py)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.logging import request_id_var
from app.observability.metrics import Metrics

log = logging.getLogger("app.access")

EMULATED_HEADER = "x-imagegate-emulated"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# API answers carry signed URLs, plaintext keys (admin key creation) and tenant data:
# no cache, shared or private, may keep them. A route that sets its own Cache-Control
# keeps it.
_NO_STORE_PREFIXES = ("/api/", "/v1/", "/admin/")


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

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.http_requests.labels(route, scope["method"], str(status)).inc()
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            request_id_var.reset(token)
