"""The one HTTP transport every provider client sends through: deadlines, body caps, pool health.

Why httpx without cancellation, and not aiohttp (the evidence, December 2026):
- The wedge is httpcore's: a request cancelled while it waits for a pool connection (or
  while a new connection is being set up) leaves a slot the pool never reclaims
  (encode/httpcore#1093, #830, fix proposed in #1099 and still open). The reports all need
  a cancellation delivered from outside httpcore (asyncio.timeout, task.cancel). httpcore's
  own timeouts fail the socket operation inside its own code, which closes the connection
  and removes the request from the pool on the exception path.
- google-genai's aiohttp path is the weaker one: it passed only `connect` to
  aiohttp.ClientTimeout (no read timeout), did not share one session across calls
  (googleapis/python-genai#1083, open), and a custom httpx client had to force httpx anyway
  (#1565). Our emulated mode and fast tests run on httpx.ASGITransport, which aiohttp cannot
  use; one transport for all three providers keeps one set of limits and one code path.
So: nothing cancels an HTTP call. Every socket operation (connect, TLS, each read and
write) gets a timeout that is at most the time left to the attempt's deadline: httpcore
reads its `timeout` extension only once per phase (response head, body), so the pool's
network backend caps each operation itself (app.providers.sockets), and a server dripping
headers or body bytes is cut at the deadline. The body is also checked against the
deadline as it arrives, and the caller's backstop in app.providers.retry waits without
cancelling.

On top of that, per provider:
- in-flight exchanges are bounded by a semaphore below the pool size, so the pool is never
  contended (contention is both the leak's precondition and, with hundreds of waiters, a
  quadratic reassignment loop on the event loop); the connections are split into shards
  of a few dozen (app.providers.pool_shards), so the pool's walk over its connections on
  every request stays short with thousands in flight;
- a pool timeout while we hold fewer exchanges than the pool has connections means the pool
  lost slots: the pool is replaced (the SDK clients keep working, they hold this transport)
  and the request, which was never sent, goes out once on the new pool;
- every body is decoded here, with the decoded size counted against a cap: a gzip bomb is
  inflated at most to the cap, and an oversized body is ResponseTooLarge, a final error.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from app.providers.base import ProviderError, Unavailable, UpstreamBadRequest, UpstreamTimeout
from app.providers.pool_shards import ShardedTransport, shard_count
from app.providers.sockets import DeadlineBackend, current_deadline

log = logging.getLogger(__name__)

# Seconds an old pool is kept after a rebuild, so exchanges still running on it can finish.
_RETIRE_AFTER = 120.0


class ResponseTooLarge(httpx.DecodingError):
    """An upstream body (decoded) over the configured cap. Final: the same call would be
    just as large again, so it is never retried."""

    def __init__(self, limit: int, *, request: httpx.Request | None = None) -> None:
        super().__init__(f"upstream response is over the {limit} byte limit", request=request)
        self.limit = limit


def too_large_cause(exc: BaseException) -> ResponseTooLarge | None:
    """The ResponseTooLarge behind `exc`, which SDKs may wrap in their own error types."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ResponseTooLarge):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def translate_http_error(exc: httpx.HTTPError, upstream: str) -> ProviderError:
    """The shared error for an httpx error met talking to `upstream` (e.g. "Gemini")."""
    too_large = too_large_cause(exc)
    if too_large is not None:
        # Final: the same request would be as large again, so no retry, no fallback storm.
        return UpstreamBadRequest(f"{upstream} response is over the {too_large.limit} byte limit")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{upstream} did not answer in time")
    if isinstance(exc, httpx.DecodingError):
        return Unavailable(f"{upstream} sent a body that could not be decoded")
    return Unavailable(f"{upstream} unreachable: {type(exc).__name__}")


def validation_error_text(detail: list[Any]) -> str:
    """FastAPI's 422 `detail` list (`[{"loc": ["body", "width"], "msg": ...}]`) as one line
    naming each field; the `input` pydantic 2 echoes (maybe image data) is left out."""
    parts = []
    for error in detail:
        if isinstance(error, dict):
            loc = [str(p) for p in error.get("loc") or [] if p != "body"]
            parts.append(f"{'.'.join(loc) or 'body'}: {error.get('msg', '')}")
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    max_connections: int = 100
    max_in_flight: int = 80  # below max_connections: the pool is never contended
    max_response_bytes: int = 64 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # per socket operation, and never past the deadline
    pool_timeout: float = 5.0  # only a wedged pool makes anyone wait here

    def __post_init__(self) -> None:
        if not 0 < self.max_in_flight < self.max_connections:
            raise ValueError("max_in_flight must be positive and below max_connections")


class _DeadlineTimeouts(dict[str, float | None]):
    """httpcore's `timeout` extension, each value capped by the time left to `deadline`.

    httpcore looks the values up once per phase (pool wait, connect, response head, body);
    the per-operation cap is _DeadlineStream's, this one bounds the pool wait.
    """

    def __init__(self, base: dict[str, float | None], deadline: float | None) -> None:
        super().__init__(base)
        self._deadline = deadline

    def get(self, key: str, default: Any = None) -> Any:
        value = super().get(key, default)
        if self._deadline is None:
            return value
        left = max(0.0, self._deadline - time.monotonic())
        return left if value is None else min(float(value), left)


class _Decoder:
    """Content-Encoding decoding that never produces more than it is asked for."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._zlib: Any = None
        if encoding == "gzip":
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()

    def decode(self, data: bytes, room: int) -> bytes:
        """At most `room + 1` bytes of output: one more than fits says "too large"."""
        if self._zlib is None:
            return data
        try:
            return bytes(self._zlib.decompress(data, room + 1))
        except zlib.error as exc:
            if self._encoding == "deflate" and not self._zlib.total_out:
                # Some servers send raw deflate without the zlib header (as httpx accepts).
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.decode(data, room)
            raise httpx.DecodingError(f"invalid {self._encoding} body: {exc}") from None

    def flush(self) -> bytes:
        return bytes(self._zlib.flush()) if self._zlib is not None else b""


class _GuardedStream(httpx.AsyncByteStream):
    """The decoded body, refused past the cap or the deadline; closes itself on error."""

    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        *,
        decoder: _Decoder,
        cap: int,
        deadline: float | None,
        request: httpx.Request,
        on_close: Callable[[], None],
    ) -> None:
        self._inner = inner
        self._decoder = decoder
        self._cap = cap
        self._deadline = deadline
        self._request = request
        self._on_close = on_close
        self._size = 0
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                if self._deadline is not None and time.monotonic() > self._deadline:
                    raise httpx.ReadTimeout(
                        "attempt deadline passed while reading the body", request=self._request
                    )
                data = self._decoder.decode(chunk, self._cap - self._size)
                if data:
                    yield self._count(data)
            tail = self._decoder.flush()
            if tail:
                yield self._count(tail)
        except GeneratorExit:
            raise
        except BaseException:
            await self.aclose()
            raise
        await self.aclose()

    def _count(self, data: bytes) -> bytes:
        self._size += len(data)
        if self._size > self._cap:
            raise ResponseTooLarge(self._cap, request=self._request)
        return data

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._inner.aclose()
        finally:
            self._on_close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """Wraps the transport a provider's client uses (a pooled one, or the in-process ASGI
    transport of the emulators); see the module docstring."""

    def __init__(
        self,
        provider: str,
        factory: Callable[[], httpx.AsyncBaseTransport],
        limits: UpstreamLimits,
    ) -> None:
        self.provider = provider
        self._factory = factory
        self._inner = factory()
        self._limits = limits
        self._slots = asyncio.Semaphore(limits.max_in_flight)
        self._retired: dict[asyncio.Task[None], httpx.AsyncBaseTransport] = {}
        self.in_flight = 0
        self.rebuilds = 0

    @property
    def inner(self) -> httpx.AsyncBaseTransport:
        """The transport currently in use (replaced when its pool wedges)."""
        return self._inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        deadline = current_deadline()
        limits = self._limits
        request.extensions["timeout"] = _DeadlineTimeouts(
            {
                "connect": limits.connect_timeout,
                "read": limits.read_timeout,
                "write": limits.read_timeout,
                "pool": limits.pool_timeout,
            },
            deadline,
        )
        # Only encodings decoded here (with the size bound) may come back.
        request.headers["accept-encoding"] = "gzip, deflate"
        await self._acquire(request, deadline)
        try:
            response = await self._send(request)
            _drop_sent_body(request)
            return await self._guard(response, request, deadline)
        except BaseException:
            self._release()
            raise

    async def _acquire(self, request: httpx.Request, deadline: float | None) -> None:
        wait = self._limits.read_timeout if deadline is None else deadline - time.monotonic()
        try:
            # Waiting on our own semaphore is safe to time out; nothing of httpcore's is held.
            async with asyncio.timeout(max(0.0, wait)):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(
                f"{self.provider}: no upstream slot free before the deadline", request=request
            ) from None
        self.in_flight += 1

    def _release(self) -> None:
        self.in_flight -= 1
        self._slots.release()

    async def _send(self, request: httpx.Request) -> httpx.Response:
        inner = self._inner
        try:
            return await inner.handle_async_request(request)
        except httpx.PoolTimeout:
            # No condition to test: every exchange on this pool holds one of our slots, so
            # fewer than max_in_flight < max_connections are running, and httpcore waits
            # (and times out) only when it has no connection to assign. So the pool has
            # lost slots (httpcore#1093) and will never recover.
            self._rebuild(inner)
            # Never sent (no connection was handed out), so sending it again is safe.
            return await self._inner.handle_async_request(request)

    def _rebuild(self, wedged: httpx.AsyncBaseTransport) -> None:
        if self._inner is not wedged:
            return  # another request already replaced it
        self._inner = self._factory()
        self.rebuilds += 1
        log.warning(
            "upstream connection pool stopped handing out connections; replaced it",
            extra={"provider": self.provider, "in_flight": self.in_flight},
        )
        task = asyncio.create_task(self._retire(wedged))
        self._retired[task] = wedged
        task.add_done_callback(lambda done: self._retired.pop(done, None))

    async def _retire(self, transport: httpx.AsyncBaseTransport) -> None:
        # Exchanges still running on the old pool end by their deadlines; then close it.
        await asyncio.sleep(_RETIRE_AFTER)
        await _close_quietly(transport)

    async def _guard(
        self, response: httpx.Response, request: httpx.Request, deadline: float | None
    ) -> httpx.Response:
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        cap = self._limits.max_response_bytes
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "deflate"):
            await stream.aclose()
            raise httpx.DecodingError(
                f"unsupported content-encoding {encoding[:40]!r}", request=request
            )
        declared = response.headers.get("content-length", "")
        if encoding == "identity" and declared.isdigit() and int(declared) > cap:
            await stream.aclose()
            raise ResponseTooLarge(cap, request=request)
        if encoding != "identity":
            # Decoded here; httpx must not decode a second time.
            del response.headers["content-encoding"]
            response.headers.pop("content-length", None)
        response.stream = _GuardedStream(
            stream,
            decoder=_Decoder(encoding),
            cap=cap,
            deadline=deadline,
            request=request,
            on_close=self._release,
        )
        return response

    async def aclose(self) -> None:
        retired = dict(self._retired)
        for task in retired:
            task.cancel()  # our own sleep: the old pools are closed right here instead
        await asyncio.gather(*retired, return_exceptions=True)
        for transport in retired.values():
            await _close_quietly(transport)
        await self._inner.aclose()


def _drop_sent_body(request: httpx.Request) -> None:
    """Drops a request's body once it is sent (the response headers are in).

    httpx's Request, Response and httpcore's pool stream refer to each other, so a sent
    request (the SDK's JSON with the base64 source image, several MB) is freed only by
    the cyclic collector, which counts objects, not bytes, and may not run for many
    requests: memory would grow past what the request-bytes budget accounts for.
    """
    if isinstance(request.stream, httpx.ByteStream):
        request.stream = httpx.ByteStream(b"")
        request._content = b""  # the same bytes, kept by Request.read()


async def _close_quietly(transport: httpx.AsyncBaseTransport) -> None:
    try:
        await transport.aclose()
    except (httpx.HTTPError, OSError, RuntimeError) as exc:
        log.info("closing a retired upstream pool failed", extra={"error": type(exc).__name__})


def pooled_transport(limits: UpstreamLimits, shards: int | None = None) -> ShardedTransport:
    """httpx's transport on pools whose sockets honour the attempt deadline, in `shards`
    (default: `shard_count`) shards of `max_connections // shards` connections.

    httpx.AsyncHTTPTransport takes no network backend, so its pool is replaced by one built
    as its __init__ builds it (HTTP/1.1 only, no connect retries), plus the backend.
    """
    ssl_context = httpx.create_ssl_context()

    def one_pool(size: int) -> httpx.AsyncHTTPTransport:
        transport = httpx.AsyncHTTPTransport(verify=ssl_context)
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=size,
            max_keepalive_connections=min(20, size),
            keepalive_expiry=5.0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=DeadlineBackend(),
        )
        return transport

    count = shards or shard_count(limits.max_connections, limits.max_in_flight)
    return ShardedTransport(one_pool, limits.max_connections, count)
