"""BFL over real sockets: polling and sample URLs pinned to the API origin, bodies capped.

The emulator runs on a loopback port; a second recording server on another port of the
same host stands in for whatever a hostile `polling_url` or `sample` points at.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from app.emulators.bfl import create_bfl_emulator
from app.emulators.faults import FaultPlan
from app.providers.base import ImageRequest, UpstreamBadRequest
from app.providers.bfl import MAX_JSON_BYTES, BflAdapter
from app.providers.retry import RetryPolicy, call_with_retries
from app.providers.transport import GuardedTransport, UpstreamLimits, pooled_transport
from tests.support.servers import serve_in_thread

MODEL = "flux-kontext-pro"
KEY = "bfl-secret-key"
MB = 1024 * 1024


@dataclass
class Recorder:
    url: str = ""
    requests: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[str, FaultPlan]]:
    plan = FaultPlan()
    with serve_in_thread(create_bfl_emulator(plan)) as url:
        yield url, plan


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    """Another server on 127.0.0.1 (another port): answers like BFL and records headers."""
    app = FastAPI()
    recorder = Recorder()

    @app.get("/v1/get_result")
    def poll(request: Request) -> JSONResponse:
        recorder.requests.append(dict(request.headers))
        return JSONResponse({"id": "t", "status": "Pending"})

    @app.get("/sample.png")
    def sample(request: Request) -> Response:
        recorder.requests.append(dict(request.headers))
        return Response(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, media_type="image/png")

    with serve_in_thread(app) as url:
        recorder.url = url
        yield recorder


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    limits = UpstreamLimits(read_timeout=10)
    guard = GuardedTransport("bfl", lambda: pooled_transport(limits), limits)
    async with httpx.AsyncClient(transport=guard, trust_env=False) as http:
        yield http


@pytest.fixture
def plan(emulator: tuple[str, FaultPlan], recorder: Recorder) -> Iterator[FaultPlan]:
    _, faults = emulator
    faults.reset()
    recorder.requests.clear()
    yield faults
    faults.reset()


def make_adapter(client: httpx.AsyncClient, base_url: str) -> BflAdapter:
    return BflAdapter(
        api_key=KEY,
        base_url=base_url,
        http_client=client,
        allowed_hosts=("api.bfl.ai", "*.bfl.ai"),
        max_sample_bytes=20 * MB,
        poll_interval=0.01,
        max_poll_interval=0.05,
    )


def hostile_polling_urls(api: str, other: str) -> list[tuple[str, str]]:
    """(polling_url, what the refusal names) for each way a URL can leave the origin."""
    api_port = api.rsplit(":", 1)[1]
    return [
        (f"{other}/v1/get_result?id={{id}}", "'127.0.0.1' is not in the allowed hosts"),
        (f"https://127.0.0.1:{api_port}/v1/get_result?id={{id}}", "not in the allowed"),
        (f"http://user:pw@127.0.0.1:{api_port}/v1/get_result?id={{id}}", "userinfo"),
        ("http://api.eu1.bfl.ai/v1/get_result?id={id}", "not https"),
        ("https://api.eu1.bfl.ai:8443/v1/get_result?id={id}", "port 8443"),
        ("https://evil.example/v1/get_result?id={id}", "'evil.example'"),
    ]


@pytest.mark.parametrize("case", range(6))
async def test_hostile_polling_urls_are_refused_before_any_request(
    client: httpx.AsyncClient,
    emulator: tuple[str, FaultPlan],
    recorder: Recorder,
    plan: FaultPlan,
    case: int,
) -> None:
    api, _ = emulator
    polling_url, message = hostile_polling_urls(api, recorder.url)[case]
    plan.add({"kind": "foreign_polling", "url": polling_url})
    # Bounded: a followed URL would answer "Pending" for ever.
    async with asyncio.timeout(20):
        with pytest.raises(UpstreamBadRequest, match=message) as raised:
            await make_adapter(client, api).generate(ImageRequest(MODEL, "x", "1:1"))
    assert not raised.value.retryable
    assert recorder.requests == []  # nothing, and so no key, went to the other port


async def test_a_sample_on_another_port_of_the_api_host_is_not_fetched(
    client: httpx.AsyncClient,
    emulator: tuple[str, FaultPlan],
    recorder: Recorder,
    plan: FaultPlan,
) -> None:
    api, _ = emulator
    plan.add({"kind": "foreign_sample", "url": f"{recorder.url}/sample.png"})
    with pytest.raises(UpstreamBadRequest, match="not in the allowed hosts"):
        await make_adapter(client, api).generate(ImageRequest(MODEL, "x", "1:1"))
    assert recorder.requests == []


async def test_the_key_goes_to_the_api_origin_and_the_image_arrives(
    client: httpx.AsyncClient, emulator: tuple[str, FaultPlan], plan: FaultPlan
) -> None:
    api, _ = emulator
    image = await make_adapter(client, api).generate(ImageRequest(MODEL, "x", "1:1"))
    assert image.data.startswith(b"\x89PNG")
    assert plan.calls == 1


@pytest.mark.parametrize("stage", ["submit", "result"])
@pytest.mark.parametrize("declare_length", [True, False])
async def test_an_oversized_api_answer_is_refused_and_not_retried(
    client: httpx.AsyncClient,
    emulator: tuple[str, FaultPlan],
    plan: FaultPlan,
    stage: str,
    declare_length: bool,
) -> None:
    api, _ = emulator
    plan.add(
        {
            "kind": "oversized",
            "total_bytes": 8 * MB,
            "declare_length": declare_length,
            "stage": stage,
        }
    )
    adapter = make_adapter(client, api)
    with pytest.raises(UpstreamBadRequest, match=f"over {MAX_JSON_BYTES} bytes"):
        await call_with_retries(
            lambda: adapter.generate(ImageRequest(MODEL, "x", "1:1")),
            RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02),
            deadline=time.monotonic() + 30,
            what="test",
        )
    assert plan.calls == 1


@pytest.mark.parametrize("stage", ["submit", "result", "sample"])
async def test_a_gzip_bomb_is_refused_at_every_stage(
    client: httpx.AsyncClient, emulator: tuple[str, FaultPlan], plan: FaultPlan, stage: str
) -> None:
    api, _ = emulator
    plan.add({"kind": "gzip_bomb", "inflated_bytes": 1024 * MB, "stage": stage})
    with pytest.raises(UpstreamBadRequest, match="over"):
        await make_adapter(client, api).generate(ImageRequest(MODEL, "x", "1:1"))
