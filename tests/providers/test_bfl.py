"""The BFL adapter over real HTTP against the emulator (and a second, recording host)."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from PIL import Image

from app.emulators.bfl import create_bfl_emulator
from app.emulators.bfl_tasks import TaskBoard
from app.emulators.bfl_wire import ENDPOINTS, output_size
from app.emulators.faults import FaultPlan
from app.providers.base import (
    ImageRequest,
    Moderated,
    RateLimited,
    SourceImage,
    Unavailable,
    UpstreamBadRequest,
    UpstreamTimeout,
)
from app.providers.bfl import BflAdapter, host_allowed
from app.providers.retry import RetryPolicy, call_with_retries
from tests.support.servers import free_port, serve_in_thread

MODEL = "flux-kontext-pro"
RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"]
MB = 1024 * 1024


def png(colour: str, size: tuple[int, int] = (32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Emulator:
    url: str
    faults: FaultPlan
    tasks: TaskBoard


@dataclass
class SampleHost:
    """A second host serving a PNG, a large stream, and recording what it was sent."""

    url: str  # http://localhost:<port>: another host name than the emulator's 127.0.0.1
    requests: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    plan = FaultPlan()
    app = create_bfl_emulator(plan)
    with serve_in_thread(app) as url:
        yield Emulator(url, plan, app.state.tasks)


@pytest.fixture(scope="module")
def sample_host() -> Iterator[SampleHost]:
    app = FastAPI()
    host = SampleHost("")

    @app.get("/sample.png")
    def sample(request: Request) -> Response:
        host.requests.append(dict(request.headers))
        return Response(png("purple"), media_type="image/png")

    @app.get("/endless.png")
    def endless(request: Request) -> StreamingResponse:
        host.requests.append(dict(request.headers))

        def chunks() -> Iterator[bytes]:
            yield png("purple")
            for _ in range(10_000):  # 640 MB: reading it whole would not finish in time
                yield b"\0" * 65536

        return StreamingResponse(chunks(), media_type="image/png")  # no content-length

    with serve_in_thread(app) as url:
        host.url = url.replace("127.0.0.1", "localhost")
        yield host


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield http


def make_adapter(
    client: httpx.AsyncClient,
    base_url: str,
    *,
    allowed_hosts: tuple[str, ...] = ("api.bfl.ai", "*.bfl.ai"),
    max_sample_bytes: int = 20 * MB,
    api_key: str = "bfl-secret-key",
) -> BflAdapter:
    return BflAdapter(
        api_key=api_key,
        base_url=base_url,
        http_client=client,
        allowed_hosts=allowed_hosts,
        max_sample_bytes=max_sample_bytes,
        poll_interval=0.01,
        max_poll_interval=0.05,
    )


@pytest.fixture
def adapter(
    client: httpx.AsyncClient, emulator: Emulator, sample_host: SampleHost
) -> Iterator[BflAdapter]:
    emulator.faults.reset()
    emulator.tasks.reset()
    sample_host.requests.clear()
    yield make_adapter(client, emulator.url)
    emulator.faults.reset()


@pytest.mark.parametrize("ratio", RATIOS)
async def test_each_contract_ratio_is_native(adapter: BflAdapter, ratio: str) -> None:
    image = await adapter.generate(ImageRequest(MODEL, "a lighthouse", ratio))
    assert image.mime_type == "image/png"
    assert Image.open(io.BytesIO(image.data)).size == output_size(ratio)


async def test_polls_until_ready_with_one_submit(adapter: BflAdapter, emulator: Emulator) -> None:
    image = await adapter.generate(ImageRequest("flux-kontext-max", "a fox", "1:1"))
    assert image.data.startswith(b"\x89PNG")
    assert emulator.faults.calls == 1
    assert emulator.tasks.active == dict.fromkeys(ENDPOINTS, 0)


async def test_image_to_image_follows_the_source(adapter: BflAdapter) -> None:
    red = await adapter.generate(
        ImageRequest(MODEL, "paint it", "1:1", (SourceImage("image/png", png("red")),))
    )
    green = await adapter.generate(
        ImageRequest(MODEL, "paint it", "1:1", (SourceImage("image/png", png("green")),))
    )
    plain = await adapter.generate(ImageRequest(MODEL, "paint it", "1:1"))
    assert len({red.data, green.data, plain.data}) == 3


async def test_more_than_one_input_image_is_refused(adapter: BflAdapter) -> None:
    two = (SourceImage("image/png", png("red")), SourceImage("image/png", png("green")))
    with pytest.raises(UpstreamBadRequest, match="one input image"):
        await adapter.generate(ImageRequest(MODEL, "paint it", "1:1", two))


async def test_slow_task_is_polled_with_backoff(adapter: BflAdapter, emulator: Emulator) -> None:
    emulator.faults.add({"kind": "delay", "seconds": 0.4})
    started = time.monotonic()
    image = await adapter.generate(ImageRequest(MODEL, "x", "1:1"))
    assert time.monotonic() - started >= 0.4
    assert image.data


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"kind": "blocked", "reason": "Derivative_Works"}, "Derivative_Works"),
        ({"kind": "refused"}, "IMAGE_SAFETY"),
    ],
)
async def test_moderation_is_moderated(
    adapter: BflAdapter, emulator: Emulator, fault: dict[str, str], reason: str
) -> None:
    emulator.faults.add(fault)
    with pytest.raises(Moderated, match=reason) as raised:
        await adapter.generate(ImageRequest(MODEL, "x", "1:1"))
    assert not raised.value.retryable


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "failed"}, Unavailable),
        ({"kind": "lost"}, Unavailable),
        ({"kind": "error", "status": 500}, Unavailable),
        ({"kind": "error", "status": 503}, Unavailable),
        ({"kind": "error", "status": 402}, UpstreamBadRequest),
        ({"kind": "error", "status": 403}, UpstreamBadRequest),
        ({"kind": "error", "status": 401}, UpstreamBadRequest),
        ({"kind": "error", "status": 422}, UpstreamBadRequest),
    ],
)
async def test_failures_map_to_shared_errors(
    adapter: BflAdapter, emulator: Emulator, fault: dict[str, object], error: type[Exception]
) -> None:
    emulator.faults.add(fault)
    with pytest.raises(error):
        await adapter.generate(ImageRequest(MODEL, "x", "1:1"))


async def test_out_of_credits_says_so(adapter: BflAdapter, emulator: Emulator) -> None:
    emulator.faults.add({"kind": "error", "status": 402})
    with pytest.raises(UpstreamBadRequest, match="out of credits"):
        await adapter.generate(ImageRequest(MODEL, "x", "1:1"))


async def test_missing_key_is_a_bad_request(client: httpx.AsyncClient, emulator: Emulator) -> None:
    with pytest.raises(UpstreamBadRequest, match="API key"):
        await make_adapter(client, emulator.url, api_key="").generate(
            ImageRequest(MODEL, "x", "1:1")
        )


async def test_rate_limit_carries_retry_after(adapter: BflAdapter, emulator: Emulator) -> None:
    emulator.faults.add({"kind": "error", "status": 429, "retry_after": 7})
    with pytest.raises(RateLimited) as raised:
        await adapter.generate(ImageRequest(MODEL, "x", "1:1"))
    assert raised.value.retry_after == 7.0
    assert raised.value.retryable


async def test_active_task_limit_is_rate_limited(
    client: httpx.AsyncClient, sample_host: SampleHost
) -> None:
    app = create_bfl_emulator(max_active_tasks={"flux-kontext-pro": 1})
    with serve_in_thread(app) as url:
        async with httpx.AsyncClient() as raw:
            busy = await raw.post(f"{url}/v1/{MODEL}", headers={"x-key": "k"}, json={"prompt": "x"})
            assert busy.status_code == 200
        with pytest.raises(RateLimited, match="active tasks"):
            await make_adapter(client, url).generate(ImageRequest(MODEL, "x", "1:1"))


async def test_validation_error_names_the_problem_without_image_data(adapter: BflAdapter) -> None:
    garbage = b"definitely not an image " * 200
    with pytest.raises(UpstreamBadRequest, match="input_image") as raised:
        await adapter.generate(
            ImageRequest(MODEL, "x", "1:1", (SourceImage("image/png", garbage),))
        )
    assert base64.b64encode(garbage).decode()[:40] not in raised.value.message
    assert len(raised.value.message) < 400
    with pytest.raises(UpstreamBadRequest, match="aspect_ratio"):
        await adapter.generate(ImageRequest(MODEL, "x", "3:1"))


async def test_sample_on_a_foreign_host_is_refused_without_fetching_it(
    adapter: BflAdapter, emulator: Emulator, sample_host: SampleHost
) -> None:
    emulator.faults.add({"kind": "foreign_sample", "url": f"{sample_host.url}/sample.png"})
    with pytest.raises(
        UpstreamBadRequest, match="'localhost' is not in the allowed hosts"
    ) as raised:
        await adapter.generate(ImageRequest(MODEL, "x", "1:1"))
    assert not raised.value.retryable
    assert sample_host.requests == []


@pytest.mark.parametrize("url", ["ftp://localhost/x.png", "file:///etc/passwd"])
async def test_sample_urls_must_be_http(adapter: BflAdapter, emulator: Emulator, url: str) -> None:
    emulator.faults.add({"kind": "foreign_sample", "url": url})
    with pytest.raises(UpstreamBadRequest, match="scheme"):
        await adapter.generate(ImageRequest(MODEL, "x", "1:1"))


async def test_key_is_never_sent_to_the_sample_host(
    client: httpx.AsyncClient, emulator: Emulator, sample_host: SampleHost
) -> None:
    emulator.faults.reset()
    sample_host.requests.clear()
    emulator.faults.add({"kind": "foreign_sample", "url": f"{sample_host.url}/sample.png"})
    adapter = make_adapter(client, emulator.url, allowed_hosts=("localhost",))
    image = await adapter.generate(ImageRequest(MODEL, "x", "1:1"))
    assert image.data == png("purple")
    [headers] = sample_host.requests
    assert "x-key" not in headers
    assert "bfl-secret-key" not in json.dumps(headers)


async def test_oversized_sample_is_refused(client: httpx.AsyncClient, emulator: Emulator) -> None:
    emulator.faults.reset()
    adapter = make_adapter(client, emulator.url, max_sample_bytes=10_000)
    with pytest.raises(UpstreamBadRequest, match="10000"):
        await adapter.generate(ImageRequest(MODEL, "x", "1:1"))


async def test_oversized_stream_is_cut_off_while_reading(
    client: httpx.AsyncClient, emulator: Emulator, sample_host: SampleHost
) -> None:
    emulator.faults.reset()
    emulator.faults.add({"kind": "foreign_sample", "url": f"{sample_host.url}/endless.png"})
    adapter = make_adapter(client, emulator.url, allowed_hosts=("localhost",), max_sample_bytes=MB)
    started = time.monotonic()
    with pytest.raises(UpstreamBadRequest, match="limit"):
        await adapter.generate(ImageRequest(MODEL, "x", "1:1"))
    assert time.monotonic() - started < 5


async def test_closed_port_is_unavailable(client: httpx.AsyncClient) -> None:
    adapter = make_adapter(client, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable):
        await adapter.generate(ImageRequest(MODEL, "x", "1:1"))


async def test_lost_task_is_resubmitted_by_the_retry_policy(
    adapter: BflAdapter, emulator: Emulator
) -> None:
    emulator.faults.add({"kind": "lost"})
    image = await call_with_retries(
        lambda: adapter.generate(ImageRequest(MODEL, "x", "1:1")),
        RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02),
        deadline=time.monotonic() + 10,
        what="test",
    )
    assert image.data
    assert emulator.faults.calls == 2


# --- URLs the emulator cannot produce: a scripted transport stands in for BFL ----------


def scripted(polling_url: str, seen: list[httpx.Request]) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "t1", "polling_url": polling_url, "cost": 4})

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


@pytest.mark.parametrize(
    ("base_url", "polling_url", "message"),
    [
        ("https://api.bfl.ai", "https://evil.example/v1/get_result?id=t1", "'evil.example'"),
        ("https://api.bfl.ai", "https://bfl.ai.evil.example/v1/get_result?id=t1", "evil"),
        ("https://api.bfl.ai", "http://api.eu1.bfl.ai/v1/get_result?id=t1", "https"),
    ],
)
async def test_polling_url_must_be_trusted(base_url: str, polling_url: str, message: str) -> None:
    seen: list[httpx.Request] = []
    async with scripted(polling_url, seen) as client:
        with pytest.raises(UpstreamBadRequest, match=message):
            await make_adapter(client, base_url).generate(ImageRequest(MODEL, "x", "1:1"))
    assert [request.url.host for request in seen] == ["api.bfl.ai"]  # the submit only


async def test_regional_polling_host_is_allowed_by_wildcard() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            body = {"id": "t1", "polling_url": "https://api.eu1.bfl.ai/v1/get_result?id=t1"}
            return httpx.Response(200, json=body)
        if request.url.host == "api.eu1.bfl.ai":
            result = {"sample": "https://delivery-eu1.bfl.ai/t1/sample.png?sig=x"}
            return httpx.Response(200, json={"id": "t1", "status": "Ready", "result": result})
        return httpx.Response(200, content=png("teal"))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        image = await make_adapter(client, "https://api.bfl.ai").generate(
            ImageRequest(MODEL, "x", "16:9")
        )
    assert image.data == png("teal")
    assert [(r.url.host, r.headers.get("x-key")) for r in seen] == [
        ("api.bfl.ai", "bfl-secret-key"),
        ("api.eu1.bfl.ai", "bfl-secret-key"),
        ("delivery-eu1.bfl.ai", None),
    ]
    submitted = json.loads(seen[0].content)
    assert submitted == {
        "prompt": "x",
        "aspect_ratio": "16:9",
        "output_format": "png",
        "safety_tolerance": 2,
        "prompt_upsampling": False,
    }


async def test_timeouts_are_upstream_timeouts() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        with pytest.raises(UpstreamTimeout):
            await make_adapter(client, "https://api.bfl.ai").generate(
                ImageRequest(MODEL, "x", "1:1")
            )


def test_host_allow_list_patterns() -> None:
    patterns = ("api.bfl.ai", "*.bfl.ai")
    assert host_allowed("api.bfl.ai", patterns)
    assert host_allowed("API.BFL.AI.", patterns)
    assert host_allowed("delivery-eu1.bfl.ai", patterns)
    assert not host_allowed("bfl.ai", ("*.bfl.ai",))
    assert not host_allowed("evilbfl.ai", patterns)
    assert not host_allowed("bfl.ai.evil.example", patterns)
    assert not host_allowed("localhost", patterns)
