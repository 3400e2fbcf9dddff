"""Upstream connections split into shards: each shard stays small and below its size,
exchanges spread least-loaded first, and every exchange gives its shard's count back."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response

from app.providers.pool_shards import SHARD_CONNECTIONS, ShardedTransport, shard_count
from app.providers.transport import (
    GuardedTransport,
    ResponseTooLarge,
    UpstreamLimits,
    pooled_transport,
)
from tests.support.servers import serve_in_thread

HELD = 150


@pytest.mark.parametrize("max_connections", [2, 3, 64, 65, 100, 129, 500, 2200, 5200, 10_001])
def test_filled_least_loaded_first_no_shard_reaches_its_size(max_connections: int) -> None:
    for max_in_flight in {1, max_connections // 2, max_connections - 1} - {0}:
        shards = shard_count(max_connections, max_in_flight)
        size = max_connections // shards
        assert shards >= 1 and size >= 2
        # Least-loaded first puts at most ceil(in flight / shards) on any shard.
        assert -(-max_in_flight // shards) < size, (max_connections, max_in_flight)


def test_thousands_of_connections_come_in_shards_of_a_few_dozen() -> None:
    shards = shard_count(2200, 2100)
    assert shards > 1 and 2200 // shards <= SHARD_CONNECTIONS
    assert shard_count(100, 80) == 2  # the defaults: 2 x 50
    assert shard_count(2, 1) == 1


@pytest.fixture(scope="module")
def held_server() -> Iterator[tuple[str, dict[str, int], threading.Event]]:
    """/held answers once the test sets `release` (or after 10 s), counting the requests
    it holds at once."""
    app = FastAPI()
    state = {"now": 0, "peak": 0}
    release = threading.Event()

    @app.post("/held")
    async def held() -> Response:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        for _ in range(200):
            if release.is_set():
                break
            await asyncio.sleep(0.05)
        state["now"] -= 1
        return Response(b'{"data": []}', media_type="application/json")

    @app.post("/big")
    async def big() -> Response:
        return Response(b"x" * 4096, media_type="application/json")

    release.set()
    with serve_in_thread(app) as url:
        yield url, state, release


def _guarded(limits: UpstreamLimits) -> tuple[httpx.AsyncClient, GuardedTransport]:
    guard = GuardedTransport("test", lambda: pooled_transport(limits), limits)
    return httpx.AsyncClient(transport=guard, trust_env=False, timeout=30), guard


def _sharded(guard: GuardedTransport) -> ShardedTransport:
    inner = guard.inner
    assert isinstance(inner, ShardedTransport)
    return inner


async def test_exchanges_in_flight_spread_over_small_pools_and_come_back(
    held_server: tuple[str, dict[str, int], threading.Event],
) -> None:
    url, state, release = held_server
    state["peak"] = 0
    release.clear()
    client, guard = _guarded(UpstreamLimits(max_connections=200, max_in_flight=HELD + 10))
    sharded = _sharded(guard)
    assert len(sharded.shards) == 4
    seen: list[list[int]] = []

    async def watch() -> None:
        # The server counts on its own thread and loop: polled, not awaited.
        for _ in range(2000):
            if state["peak"] >= HELD:
                break
            await asyncio.sleep(0.005)
        seen.append(list(sharded.loads))
        seen.append([len(shard._pool.connections) for shard in sharded.shards])  # type: ignore[attr-defined]
        release.set()

    async with client:
        watcher = asyncio.create_task(watch())
        responses = await asyncio.gather(*(client.post(f"{url}/held") for _ in range(HELD)))
        await watcher
    assert [r.status_code for r in responses] == [200] * HELD
    loads, connections = seen
    # All held at once, evenly, and no httpcore pool walks more than its shard.
    assert sum(loads) == HELD and max(loads) - min(loads) <= 1, loads
    assert max(connections) <= 200 // 4 <= SHARD_CONNECTIONS, connections
    assert sharded.loads == [0, 0, 0, 0] and guard.in_flight == 0 and guard.rebuilds == 0


async def test_an_exchange_that_fails_or_is_cut_gives_its_shard_back(
    held_server: tuple[str, dict[str, int], threading.Event],
) -> None:
    url, _, _ = held_server
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client, guard = _guarded(
        UpstreamLimits(max_connections=200, max_in_flight=100, max_response_bytes=1024)
    )
    sharded = _sharded(guard)
    async with client:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{closed_port}/held")
        with pytest.raises(ResponseTooLarge):
            await client.post(f"{url}/big")  # closed by the guard on its declared length
        async with client.stream("POST", f"{url}/held") as response:
            assert response.status_code == 200  # left unread: closing it is enough
    assert sharded.loads == [0] * len(sharded.shards)
    assert guard.in_flight == 0
