"""The guarded upstream transport: body caps, gzip bombs, deadlines, in-flight bound, pool rebuild.

Providers are reached through their real SDKs (google-genai, openai) or the BFL adapter,
against the in-process emulators (httpx.ASGITransport, as --emulate runs them) or real
loopback servers where a pool and sockets matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response, StreamingResponse

from app.emulators.bfl import create_bfl_emulator
from app.emulators.faults import FaultPlan
from app.emulators.gemini import create_gemini_emulator
from app.emulators.openai import create_openai_emulator
from app.providers.base import ImageRequest, ProviderAdapter, UpstreamBadRequest, UpstreamTimeout
from app.providers.bfl import BflAdapter
from app.providers.gemini import GeminiAdapter
from app.providers.openai import OpenAIImagesAdapter
from app.providers.retry import RetryPolicy, call_with_retries
from app.providers.transport import GuardedTransport, UpstreamLimits, pooled_transport
from tests.support.servers import serve_in_thread

KB = 1024
MB = 1024 * KB
RETRYING = RetryPolicy(max_attempts=3, attempt_timeout=10, base_delay=0.01, max_delay=0.02)


def guarded_client(
    transport: httpx.AsyncBaseTransport | None, **limits: float
) -> tuple[httpx.AsyncClient, GuardedTransport]:
    """A client as the registry builds it: around `transport`, or a real pool if None."""
    settings = UpstreamLimits(**limits)  # type: ignore[arg-type]
    factory = (lambda: transport) if transport is not None else lambda: pooled_transport(settings)
    guard = GuardedTransport("test", factory, settings)
    return httpx.AsyncClient(transport=guard, trust_env=False), guard


def adapter_for(provider: str, client: httpx.AsyncClient, plan: FaultPlan) -> ProviderAdapter:
    del plan
    if provider == "gemini":
        return GeminiAdapter(api_key="k", base_url="http://gemini.emulator", http_client=client)
    if provider == "openai":
        return OpenAIImagesAdapter(
            api_key="k", base_url="http://openai.emulator/v1", http_client=client
        )
    return BflAdapter(
        api_key="k",
        base_url="http://bfl.emulator",
        http_client=client,
        allowed_hosts=(),
        max_sample_bytes=32 * MB,
        poll_interval=0.01,
        max_poll_interval=0.02,
    )


EMULATORS = {
    "gemini": (create_gemini_emulator, "gemini-2.5-flash-image"),
    "openai": (create_openai_emulator, "gpt-image-1"),
    "bfl": (create_bfl_emulator, "flux-kontext-pro"),
}


@pytest.mark.parametrize("provider", sorted(EMULATORS))
async def test_a_body_over_the_cap_is_a_final_error_with_one_upstream_call(provider: str) -> None:
    factory, model = EMULATORS[provider]
    plan = FaultPlan()
    app = factory(plan)
    # Every emulator answers a 1024x1024 image: far more than 4 KB once read.
    client, _guard = guarded_client(httpx.ASGITransport(app=app), max_response_bytes=4 * KB)
    adapter = adapter_for(provider, client, plan)
    async with client:
        with pytest.raises(UpstreamBadRequest, match="over the 4096 byte limit") as raised:
            await call_with_retries(
                lambda: adapter.generate(ImageRequest(model, "a lighthouse", "1:1")),
                RETRYING,
                deadline=time.monotonic() + 30,
                what="test",
            )
    assert not raised.value.retryable
    assert plan.calls == 1  # refused, not retried


async def test_the_same_calls_succeed_under_the_default_cap() -> None:
    # The cap above is what refused those bodies, not something else about the transport.
    for provider, (factory, model) in sorted(EMULATORS.items()):
        plan = FaultPlan()
        client, guard = guarded_client(httpx.ASGITransport(app=factory(plan)))
        async with client:
            image = await adapter_for(provider, client, plan).generate(
                ImageRequest(model, "a lighthouse", "1:1")
            )
        assert image.data[:4] in (b"\x89PNG", b"RIFF"), provider
        assert guard.in_flight == 0


def gzip_bomb(inflated: int) -> bytes:
    return gzip.compress(b"\0" * inflated, compresslevel=9)


async def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip_bomb(256 * MB)  # about 250 KB on the wire
    app = FastAPI()

    @app.post("/v1beta/models/{model}:generateContent")
    def generate(model: str) -> Response:
        return Response(bomb, media_type="application/json", headers={"content-encoding": "gzip"})

    client, _guard = guarded_client(httpx.ASGITransport(app=app), max_response_bytes=MB)
    adapter = GeminiAdapter(api_key="k", base_url="http://gemini.emulator", http_client=client)
    tracemalloc.start()
    try:
        async with client:
            with pytest.raises(UpstreamBadRequest, match="over the 1048576 byte limit"):
                await adapter.generate(ImageRequest("gemini-2.5-flash-image", "x", "1:1"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The bomb itself is in memory twice or so (ASGI buffers it); 256 MB never is.
    assert peak < 32 * MB


@pytest.fixture(scope="module")
def slow_server() -> Iterator[tuple[str, dict[str, int]]]:
    """A loopback server: /drip trickles a body forever, /slow answers after 1 s, and it
    counts the requests it is serving at once."""
    app = FastAPI()
    stats = {"now": 0, "peak": 0}
    lock = threading.Lock()

    @app.get("/drip")
    async def drip() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            while True:
                yield b" "
                await asyncio.sleep(0.2)

        return StreamingResponse(body(), media_type="application/json")

    @app.get("/slow")
    async def slow() -> Response:
        with lock:
            stats["now"] += 1
            stats["peak"] = max(stats["peak"], stats["now"])
        try:
            await asyncio.sleep(1)
        finally:
            with lock:
                stats["now"] -= 1
        return Response(b"{}", media_type="application/json")

    @app.get("/fast")
    def fast() -> Response:
        return Response(b"{}", media_type="application/json")

    with serve_in_thread(app) as url:
        yield url, stats


async def test_a_trickling_body_ends_at_the_attempt_deadline_without_cancelling(
    slow_server: tuple[str, dict[str, int]],
) -> None:
    url, _ = slow_server
    client, guard = guarded_client(None, read_timeout=60)
    policy = RetryPolicy(max_attempts=1, attempt_timeout=1.5)
    started = time.monotonic()
    async with client:

        async def call() -> httpx.Response:
            return await client.get(f"{url}/drip")

        with pytest.raises(httpx.ReadTimeout):
            # Each byte arrives well within the 60 s read timeout; the deadline ends it.
            await call_with_retries(call, policy, deadline=started + 1.5, what="drip")
        # The transport's own timeout ended it (ReadTimeout, not the backstop's
        # UpstreamTimeout), and not before the deadline: the connection was closed and
        # the slot given back.
        assert time.monotonic() >= started + 1.5
        assert guard.in_flight == 0
        assert (await client.get(f"{url}/fast")).status_code == 200


async def test_the_backstop_gives_up_on_a_call_that_ignores_the_deadline_without_cancelling() -> (
    None
):
    release = asyncio.Event()
    outcome: list[str] = []

    async def hang() -> None:
        try:
            await release.wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("finished")

    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="did not answer in time"):
        await call_with_retries(
            hang, RetryPolicy(max_attempts=1), deadline=started + 0.3, what="hang"
        )
    # The backstop stopped waiting after the deadline; the call itself was left running.
    assert time.monotonic() >= started + 0.3
    assert outcome == []
    release.set()
    for _ in range(100):
        if outcome:
            break
        await asyncio.sleep(0.01)
    assert outcome == ["finished"]


@contextlib.asynccontextmanager
async def dripping_server(*, headers: bool) -> AsyncIterator[str]:
    """A raw loopback server that answers every request with a status line, then drips
    header lines (`headers`) or, after complete headers, body bytes, one every 0.2 s."""
    writers: set[asyncio.StreamWriter] = set()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\n")
            if not headers:
                writer.write(b"content-type: application/json\r\ncontent-length: 99999\r\n\r\n")
            for _ in range(300):
                writer.write(b"x-drip: y\r\n" if headers else b" ")
                await writer.drain()
                await asyncio.sleep(0.2)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client gave up: what we want
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in list(writers):
            writer.close()
        await server.wait_closed()


@pytest.mark.parametrize("drip", ["headers", "body"])
async def test_a_dripping_upstream_cannot_keep_slots_past_the_deadline(
    drip: str, slow_server: tuple[str, dict[str, int]]
) -> None:
    healthy, _ = slow_server
    # Each line or byte arrives far within the 60 s read timeout; only the deadline ends it.
    client, guard = guarded_client(None, max_connections=3, max_in_flight=2, read_timeout=60)
    policy = RetryPolicy(max_attempts=1, attempt_timeout=0.5)
    errors: list[BaseException] = []
    async with client, dripping_server(headers=drip == "headers") as url:
        for _ in range(4):  # more than max_in_flight attempts
            try:
                await call_with_retries(
                    lambda: client.get(url),
                    policy,
                    deadline=time.monotonic() + 0.5,
                    what="drip",
                )
            except (httpx.HTTPError, UpstreamTimeout) as exc:
                errors.append(exc)
        # Every attempt was sent and timed out: none found the slots taken by the others.
        assert len(errors) == 4
        assert not any(isinstance(exc, httpx.PoolTimeout) for exc in errors), errors
        # Each exchange ends by its own deadline (the backstop does not end it), so the
        # slots come back.
        for _ in range(100):
            if guard.in_flight == 0:
                break
            await asyncio.sleep(0.05)
        assert guard.in_flight == 0
        assert (await client.get(f"{healthy}/fast")).status_code == 200
        assert guard.rebuilds == 0


async def test_exchanges_in_flight_stay_below_the_pool_size(
    slow_server: tuple[str, dict[str, int]],
) -> None:
    url, stats = slow_server
    stats["peak"] = 0
    client, guard = guarded_client(None, max_connections=4, max_in_flight=3)
    async with client:
        responses = await asyncio.gather(*(client.get(f"{url}/slow") for _ in range(12)))
    assert [r.status_code for r in responses] == [200] * 12
    assert stats["peak"] == 3
    assert guard.in_flight == 0 and guard.rebuilds == 0


async def test_a_pool_that_stops_handing_out_connections_is_rebuilt(
    slow_server: tuple[str, dict[str, int]],
) -> None:
    url, _ = slow_server
    client, guard = guarded_client(None, max_connections=2, max_in_flight=1, pool_timeout=0.3)
    async with client:
        # Wedge the real pool the way leaked slots do: every connection taken, none of them
        # ours (these go around the guard and are never closed).
        wedged = guard.inner
        stuck = [
            await wedged.handle_async_request(httpx.Request("GET", f"{url}/drip")) for _ in range(2)
        ]
        response = await client.get(f"{url}/fast")
        assert response.status_code == 200
        assert guard.rebuilds == 1 and guard.inner is not wedged
        # The new pool keeps working, with no further rebuild.
        assert (await client.get(f"{url}/fast")).status_code == 200
        assert guard.rebuilds == 1
        for held in stuck:
            await held.aclose()
