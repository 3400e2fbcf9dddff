"""Graceful drain on SIGTERM, for rolling deploys (`imagegate serve`).

On the first SIGTERM the gateway starts draining at once: `/readyz` answers 503 (the load
balancer stops sending), every new request is refused with 503 `draining` and a
`Retry-After` (on connections kept alive from before, which uvicorn keeps reading), and
the drain callbacks run (the job runner hands its running jobs back to the queue so
another replica claims them now). After `IMAGEGATE_DRAIN_DELAY_SECONDS` (the time a load
balancer or Kubernetes' endpoints take to notice) uvicorn's own shutdown proceeds: it
stops accepting connections and gives requests in flight up to
`IMAGEGATE_DRAIN_SECONDS` to finish. A second SIGTERM skips the delay. SIGINT (Ctrl-C)
is uvicorn's as before: no delay.

uvicorn (0.54) installs its signal handlers with signal.signal when it starts serving;
the handler here wraps uvicorn's from the lifespan, which runs after that, in each
worker process, so one mechanism serves one worker and many.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response
from app.api.openai.shape import is_openai_path, openai_error

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2
# Still answered while draining: liveness (a draining process is alive; failing it would
# get it killed before its requests finish) and metrics.
_PASS = frozenset({"/healthz", "/metrics"})


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self._started = False
        self._callbacks: list[Callable[[], None]] = []

    def on_start(self, callback: Callable[[], None]) -> None:
        """Run `callback` (on the event loop) when draining starts."""
        self._callbacks.append(callback)

    def start(self) -> None:
        """Start draining (idempotent); call it on the event loop."""
        if not self._started:
            log.warning("draining: refusing new requests, finishing those in flight")
        self.draining = self._started = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def install_sigterm(self, delay: float) -> Callable[[], None]:
        """Wrap the current SIGTERM handler (uvicorn's): drain first, pass the signal on
        after `delay` seconds (at once on a second SIGTERM). Returns the undo. Only in the
        main thread, where signal handlers live; elsewhere nothing is installed."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)

        def pass_on(sig: int, frame: FrameType | None) -> None:
            if callable(previous):
                previous(sig, frame)

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            if self.draining:
                pass_on(sig, frame)
                return
            self.draining = True  # /readyz is 503 from the next request on
            loop.call_soon_threadsafe(self.start)
            loop.call_soon_threadsafe(loop.call_later, delay, pass_on, sig, None)

        signal.signal(signal.SIGTERM, on_sigterm)

        def undo() -> None:
            if signal.getsignal(signal.SIGTERM) is on_sigterm:
                signal.signal(signal.SIGTERM, previous)

        return undo


class DrainGate:
    """While draining: /readyz is 503, other requests (but liveness and metrics) are
    refused with 503 `draining`, Retry-After and Connection: close."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not self.drain.draining or path in _PASS:
            await self.app(scope, receive, send)
            return
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"}
        response: Any
        if path == "/readyz":
            response = JSONResponse({"status": "draining", "checks": {}}, status_code=503)
        elif is_openai_path(path):
            response = openai_error(503, _MESSAGE, "draining", headers=headers)
        else:
            response = error_response(503, _MESSAGE, "draining")
        response.headers.update(headers)
        await response(scope, receive, send)


_MESSAGE = "The gateway is shutting down; nothing was charged. Retry shortly (another replica)."
