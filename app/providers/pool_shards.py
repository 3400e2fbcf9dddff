"""Upstream connections in shards of a few dozen, each shard its own httpcore pool.

httpcore's pool walks every connection it holds, several method calls each, whenever a
request joins or leaves it (`AsyncConnectionPool._assign_requests_to_connections`). With
thousands of slow generations in flight on one pool, that walk is thousands of calls per
request on the event loop, so the CPU a request costs grows with how many are in flight.
Shards of at most SHARD_CONNECTIONS keep the walk short. A request goes to the shard with
the fewest exchanges, so every shard stays below its size while the total stays below
max_in_flight: a shard's pool is never contended, which GuardedTransport's wedge test
(a pool timeout means lost slots) relies on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx

SHARD_CONNECTIONS = 64


def shard_count(max_connections: int, max_in_flight: int) -> int:
    """The most shards of about SHARD_CONNECTIONS such that, filled least-loaded first,
    `max_in_flight` exchanges leave every shard (max_connections // shards connections)
    at least one connection spare."""
    for shards in range(max(1, -(-max_connections // SHARD_CONNECTIONS)), 1, -1):
        if -(-max_in_flight // shards) < max_connections // shards:
            return shards
    return 1


class _Counted(httpx.AsyncByteStream):
    """A response body that gives its shard's count back once, when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, on_close: Callable[[], None]) -> None:
        self._stream = stream
        self._on_close: Callable[[], None] | None = on_close

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()


class ShardedTransport(httpx.AsyncBaseTransport):
    """`shards` transports from `factory(size)`, each of `size` connections; every
    request on the least loaded one."""

    def __init__(
        self, factory: Callable[[int], httpx.AsyncBaseTransport], max_connections: int, shards: int
    ) -> None:
        size = max_connections // shards
        self.shards = [factory(size) for _ in range(shards)]
        self.loads = [0] * shards

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        loads = self.loads
        shard = loads.index(min(loads))
        loads[shard] += 1
        try:
            response = await self.shards[shard].handle_async_request(request)
        except BaseException:
            loads[shard] -= 1
            raise
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _Counted(stream, lambda: self._release(shard))
        return response

    def _release(self, shard: int) -> None:
        self.loads[shard] -= 1

    async def aclose(self) -> None:
        failures: list[Exception] = []
        for shard in self.shards:  # every shard closed, even after one fails to
            try:
                await shard.aclose()
            except (httpx.HTTPError, OSError, RuntimeError) as exc:
                failures.append(exc)
        if failures:
            raise failures[0]
