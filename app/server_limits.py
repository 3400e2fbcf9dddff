"""Limits on what one client connection may cost, for `imagegate serve`.

Uvicorn (0.54) times out only idle keep-alive connections, and that timer is cancelled
by every byte received, so a client dripping one byte of headers or body every few
seconds holds a connection (and its buffers) for as long as it likes; and its httptools
parser, the one `uvicorn[standard]` picks, has no header size limit at all (h11 has
`h11_max_incomplete_event_size`). The protocol classes here add, for both parsers:

- a header deadline: the request line and headers must be complete within
  `server_header_timeout_seconds` of the connection becoming ready for a request
  (accepted, or the previous response finished) or of the first byte of a request
  pipelined behind an unfinished one; otherwise the connection is closed;
- a body deadline: the whole body must arrive within `server_body_timeout_seconds` of
  the headers; otherwise a 408 JSON answer (if nothing was answered yet) and close;
- a header size cap: more than `server_max_header_bytes` received after the previous
  request's body (pipelined or not) before the headers end, or a request whose parsed
  line and headers exceed it, is a 431 JSON answer and close (just a close behind an
  unfinished response, which a 431 would corrupt); checked after each read.

`QuietDisconnects` (an ASGI middleware) ends a request whose client is gone, or was cut
by the body deadline, without uvicorn's error traceback: there is nobody to answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

import uvicorn
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.settings import Settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)


class _Cycle(Protocol):
    """The parts of uvicorn's RequestResponseCycle (both parsers) read here."""

    more_body: bool
    response_started: bool
    response_complete: bool
    disconnected: bool
    message_event: asyncio.Event
    scope: Any


class GatewayConfig(uvicorn.Config):
    """uvicorn's Config plus the limits, which the protocol classes read from it."""

    def __init__(self, app: Any, *, settings: Settings, **kwargs: Any) -> None:
        self.header_timeout = settings.server_header_timeout_seconds
        self.body_timeout = settings.server_body_timeout_seconds
        self.max_header_bytes = settings.server_max_header_bytes
        kwargs["http"] = _protocol_class(kwargs.pop("http", "auto"))
        # No route is a WebSocket; an upgraded connection would escape the limits above.
        kwargs.setdefault("ws", "none")
        # uvicorn would rewrite the client address from X-Forwarded-For sent by loopback
        # peers; IMAGEGATE_TRUSTED_PROXY_HOPS is the one switch that decides whom to trust.
        kwargs.setdefault("proxy_headers", False)
        super().__init__(
            app,
            limit_concurrency=settings.server_limit_concurrency,
            backlog=settings.server_backlog,
            # h11's own cap, so a plain H11Protocol (http="h11" elsewhere) honours it too.
            h11_max_incomplete_event_size=settings.server_max_header_bytes,
            # After a drain's delay (app/api/drain.py), requests in flight get this long.
            timeout_graceful_shutdown=settings.drain_seconds,
            **kwargs,
        )


class QuietDisconnects:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            # One line, no traceback: a crowd of slow clients must not cost a crowd of
            # formatted stack traces on the event loop.
            log.info("client gone before its request body was read")


def _response(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps({"error": message, "code": code}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Guard:
    """The timers and header accounting of one connection, for either parser.

    Bytes count toward the next request's header allowance from the moment the previous
    request's body is complete, not from when its response is: a client may pipeline the
    next request while the previous one is still being handled, and that request's
    headers get the same cap and deadline as any other.
    """

    def __init__(
        self, config: GatewayConfig, transport: asyncio.Transport, flow: FlowControl
    ) -> None:
        self._config = config
        self._transport = transport
        self._flow = flow
        self._loop = asyncio.get_running_loop()
        self._cycle: _Cycle | None = None  # the request whose headers were seen last
        self._body_done = True  # so the next request's headers are due
        self._header_bytes = 0
        self._header_timer_on = False
        self._timer: asyncio.TimerHandle | None = None
        self._await_headers()

    def received(self, size: int) -> None:
        """Before the parser sees `size` new bytes."""
        if self._body_done and not self._transport.is_closing():
            self._header_bytes += size
            if not self._header_timer_on:  # pipelined: the deadline starts with its bytes
                self._await_headers()

    def parsed(self, cycle: _Cycle | None) -> None:
        """After the parser (or a finished response) may have moved the request on."""
        if self._transport.is_closing():
            return
        if cycle is not None and self._follow(cycle):
            return
        if self._body_done and self._header_bytes > self._config.max_header_bytes:
            self._too_large(cycle)

    def _follow(self, cycle: _Cycle) -> bool:
        """Track `cycle`; True when it was refused."""
        if cycle is not self._cycle:  # a new request's headers are complete
            previous, self._cycle = self._cycle, cycle
            self._header_timer_on = False
            # Its own size too: the read that completed it may have begun while the
            # request before was still in its body, so was not counted.
            if _header_size(cycle) > self._config.max_header_bytes:
                cycle.disconnected = True  # its application, if started, sees a disconnect
                cycle.message_event.set()
                self._too_large(previous)
                return True
            self._header_bytes = 0
            self._body_done = not cycle.more_body
            self._arm(None if self._body_done else self._config.body_timeout, self._body_late)
        elif not self._body_done and not cycle.more_body:
            self._body_done = True
            self._arm(None, self._body_late)
        if self._body_done and cycle.response_complete and not self._header_timer_on:
            self._await_headers()  # keep-alive: the next request's headers are due
        return False

    def lost(self) -> None:
        self._arm(None, self._body_late)

    def _await_headers(self) -> None:
        self._header_timer_on = True
        self._arm(self._config.header_timeout, self._headers_late)

    def _arm(self, delay: float | None, callback: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None if delay is None else self._loop.call_later(delay, callback)

    def _headers_late(self) -> None:
        self._timer = None
        self._header_timer_on = False
        if self._flow.read_paused:
            # uvicorn stopped reading (a pipelined request waits for the previous
            # response), so what is missing may be unread; the deadline restarts when the
            # previous response completes.
            return
        if self._body_done and not self._transport.is_closing():
            log.info(
                "closed a connection whose request headers were not complete within %s s",
                self._config.header_timeout,
            )
            self._transport.close()

    def _body_late(self) -> None:
        self._timer = None
        cycle = self._cycle
        if cycle is None or self._body_done or self._transport.is_closing():
            return
        if self._flow.read_paused:
            # Not the client's delay: uvicorn is not reading (a pipelined request waits
            # for the previous response, or the application for its buffered body).
            self._arm(self._config.body_timeout, self._body_late)
            return
        log.info("request body not complete within %s s", self._config.body_timeout)
        answer = b""
        if not cycle.response_started:
            answer = _response(
                408,
                "Request Timeout",
                f"request body not received within {self._config.body_timeout:g} s",
                "request_timeout",
            )
        # The application sees the client as gone (http.disconnect) and writes nothing.
        cycle.disconnected = True
        cycle.message_event.set()
        self._refuse(answer)

    def _too_large(self, previous: _Cycle | None) -> None:
        limit = self._config.max_header_bytes
        log.info("request line and headers exceed %s bytes", limit)
        answer = b""
        if previous is not None and not previous.response_complete:
            # uvicorn marks only its newest request gone on close (httptools: the refused
            # one), and writing to a closed transport raises inside the application.
            previous.disconnected = True
            previous.message_event.set()
        else:  # a 431 behind an unfinished response would read as part of that response
            answer = _response(
                431,
                "Request Header Fields Too Large",
                f"request line and headers exceed the limit of {limit} bytes",
                "headers_too_large",
            )
        self._refuse(answer)

    def _refuse(self, answer: bytes) -> None:
        self._arm(None, self._body_late)
        self._body_done = False  # nothing more is counted or timed
        if answer:
            self._transport.write(answer)
        self._transport.close()


def _header_size(cycle: _Cycle) -> int:
    """A lower bound of the request line and headers' size on the wire."""
    scope = cycle.scope
    size = len(scope["raw_path"]) + len(scope["query_string"])
    return size + sum(len(name) + len(value) + 3 for name, value in scope["headers"])


if TYPE_CHECKING:
    _ProtocolBase = H11Protocol
else:
    _ProtocolBase = object


class _Limits(_ProtocolBase):
    """The limits, mixed in ahead of either of uvicorn's protocol classes."""

    config: GatewayConfig
    _guard: _Guard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._guard = _Guard(self.config, transport, self.flow)

    def data_received(self, data: bytes) -> None:
        self._guard.received(len(data))
        super().data_received(data)
        self._guard.parsed(self.cycle)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._guard.parsed(self.cycle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.lost()
        super().connection_lost(exc)


class LimitedH11Protocol(_Limits, H11Protocol):
    """h11 parses one request at a time (it pauses on pipelined data)."""


if HttpToolsProtocol is not None:

    class LimitedHttpToolsProtocol(_Limits, HttpToolsProtocol):  # type: ignore[misc]
        def on_headers_complete(self) -> None:
            # One read may complete several pipelined requests: check each as it ends.
            super().on_headers_complete()
            self._guard.parsed(self.cycle)


def _protocol_class(http: str) -> type[asyncio.Protocol]:
    """uvicorn's choice for `http` ("auto": httptools when installed), with the limits."""
    if http in ("auto", "httptools") and HttpToolsProtocol is not None:
        return LimitedHttpToolsProtocol
    if http in ("auto", "h11"):
        return LimitedH11Protocol
    raise ValueError(f"unsupported HTTP implementation {http!r}")
