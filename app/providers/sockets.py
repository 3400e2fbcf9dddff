"""Sockets that end by the attempt's deadline: httpcore's network backend, capped.

httpcore reads its `timeout` extension once per phase (once for the response head, once
for the body), so a server dripping header lines or body bytes would keep an exchange
(and its slot in app.providers.transport) past the attempt's deadline. The backend here
caps every connect, TLS handshake, read and write at the time left to the deadline of the
attempt using the socket, and raises httpcore's own timeout once it has passed, inside
httpcore, which cleans up as for any timeout: nothing is cancelled from outside.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "imagegate_upstream_deadline", default=None
)


@contextlib.contextmanager
def attempt_deadline(when: float) -> Iterator[None]:
    """Every upstream exchange started inside this block (and in tasks created inside it)
    ends by `when`, a time.monotonic() value."""
    token = _DEADLINE.set(when)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def current_deadline() -> float | None:
    """The deadline (time.monotonic()) of the attempt this task runs, if any."""
    return _DEADLINE.get()


def _capped(timeout: float | None, error: type[Exception], what: str) -> float | None:
    """`timeout` capped by the time left to the current attempt's deadline; `error` at once
    if that has passed (raised inside httpcore, which cleans up as for any timeout)."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error(f"attempt deadline passed before {what}")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.AsyncNetworkStream):
    """A socket whose every read and write ends by the deadline of the attempt using it.

    httpcore reads its `timeout` extension once per phase (once for the response head,
    once for the body), so a server dripping header lines or body bytes would keep an
    exchange, and our slot, past the deadline; here each socket operation is capped. The
    deadline is looked up at each call: a kept-alive connection serves many attempts.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    # httpcore's interface passes timeouts as arguments (ASYNC109 does not apply).
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, _capped(timeout, httpcore.ReadTimeout, "a read"))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, _capped(timeout, httpcore.WriteTimeout, "a write"))

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        timeout = _capped(timeout, httpcore.ConnectTimeout, "the TLS handshake")
        return _DeadlineStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default backend, its connects and streams capped by the deadline."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        timeout = _capped(timeout, httpcore.ConnectTimeout, "connecting")
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        timeout = _capped(timeout, httpcore.ConnectTimeout, "connecting")
        return _DeadlineStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
