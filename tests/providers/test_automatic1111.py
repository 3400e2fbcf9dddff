"""The AUTOMATIC1111 adapter over HTTP against the emulator: in process through the
gateway's GuardedTransport (as `--emulate` runs it) and on a real loopback port (timeouts,
refused connections), plus stand-in web UIs for answers the emulator cannot give."""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, Field

from app.emulators.automatic1111 import create_automatic1111_emulator, recorded
from app.emulators.faults import FaultPlan
from app.providers.automatic1111 import Automatic1111Adapter, output_size
from app.providers.base import (
    ImageRequest,
    RateLimited,
    SourceImage,
    Unavailable,
    UpstreamBadRequest,
    UpstreamTimeout,
)
from app.providers.retry import RetryPolicy, call_with_retries
from app.providers.transport import GuardedTransport, UpstreamLimits
from tests.support.images import GREEN, RED, half_mask, region_mean, solid_png
from tests.support.servers import free_port, serve_in_thread

MODEL = "sd_xl_base_1.0"
RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"]
MiB = 1024 * 1024
BODY_CAP = 4 * MiB


@dataclass
class Subject:
    adapter: Automatic1111Adapter
    emulator: FastAPI

    @property
    def faults(self) -> FaultPlan:
        plan: FaultPlan = self.emulator.state.faults
        return plan

    def calls(self) -> list[dict[str, Any]]:
        return recorded(self.emulator)


def guarded_client(app: FastAPI, *, cap: int = BODY_CAP) -> httpx.AsyncClient:
    """The gateway's client for an in-process emulator (app.providers.registry)."""
    inner = httpx.ASGITransport(app=app)
    limits = UpstreamLimits(max_connections=10, max_in_flight=5, max_response_bytes=cap)
    transport = GuardedTransport("automatic1111", lambda: inner, limits)
    return httpx.AsyncClient(transport=transport, trust_env=False)


@pytest_asyncio.fixture
async def subject() -> AsyncIterator[Subject]:
    emulator = create_automatic1111_emulator(api_auth="imagegate:s3cret", gpu_pixels=6_000_000)
    async with guarded_client(emulator) as client:
        adapter = Automatic1111Adapter(
            base_url="http://automatic1111.emulator",
            api_key="imagegate:s3cret",
            http_client=client,
            options={"steps": 30, "negative_prompt": "watermark"},
        )
        yield Subject(adapter, emulator)


def source(colour: tuple[int, int, int]) -> SourceImage:
    return SourceImage("image/png", solid_png(colour))


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


@pytest.mark.parametrize("ratio", RATIOS)
def test_sizes_keep_the_ratio_in_multiples_of_64(ratio: str) -> None:
    w, h = (int(part) for part in ratio.split(":"))
    for size, pixels in (("1K", 1024**2), ("2K", 2048**2), ("4K", 4096**2)):
        width, height = output_size(ratio, size, multiple=64)
        assert width % 64 == 0 and height % 64 == 0
        assert 0.85 < width * height / pixels < 1.15, (size, width, height)
        # No other multiple of 64 near the target is closer to the ratio.
        assert abs(math.log(width / height * h / w)) < 0.05, (size, width, height)
    assert output_size("1:1", "1K", multiple=64) == (1024, 1024)
    assert output_size("16:9", "1K", multiple=8) == (1368, 768)


def test_unknown_or_capped_size_is_a_bad_request() -> None:
    with pytest.raises(UpstreamBadRequest, match="8K"):
        output_size("1:1", "8K", multiple=64)
    with pytest.raises(UpstreamBadRequest, match="at most 4194304"):
        output_size("1:1", "4K", multiple=64, max_pixels=2048 * 2048)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stepz": 3}, "unknown"),
        ({"steps": True}, "must be int"),
        ({"cfg_scale": "7"}, "must be int"),
        ({"steps": 0}, "between"),
        ({"size_multiple": 12}, "multiple of 8"),
    ],
)
def test_bad_options_fail_when_the_adapter_is_built(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Automatic1111Adapter(
            base_url="http://x", api_key=None, http_client=httpx.AsyncClient(), options=options
        )


async def test_txt2img_sends_the_catalog_defaults_and_the_negative_prompt(
    subject: Subject,
) -> None:
    request = ImageRequest(MODEL, "a lighthouse", "16:9", negative_prompt="cartoon, blurry")
    image = await subject.adapter.generate(request)
    assert image.mime_type == "image/png"
    assert size_of(image.data) == output_size("16:9", "1K", multiple=64) == (1344, 768)
    (call,) = subject.calls()
    assert call["endpoint"] == "txt2img" and call["user"] == "imagegate"
    assert (call["width"], call["height"]) == (1344, 768)
    assert (call["steps"], call["sampler_name"], call["cfg_scale"]) == (30, "DPM++ 2M", 7.0)
    assert call["negative_prompt"] == "cartoon, blurry, watermark"
    assert call["sd_model_checkpoint"] == MODEL
    again = await subject.adapter.generate(request)
    assert again.data != image.data  # seed -1: the web UI draws a new one per call


async def test_2k_is_about_four_megapixels(subject: Subject) -> None:
    image = await subject.adapter.generate(ImageRequest(MODEL, "big", "4:3", image_size="2K"))
    assert size_of(image.data) == output_size("4:3", "2K", multiple=64)


async def test_img2img_sends_the_first_source_and_the_mask(subject: Subject) -> None:
    red = await subject.adapter.generate(ImageRequest(MODEL, "edit", "4:3", (source(RED),)))
    green = await subject.adapter.generate(ImageRequest(MODEL, "edit", "4:3", (source(GREEN),)))
    assert red.data != green.data
    mask = SourceImage("image/png", half_mask())
    masked = await subject.adapter.generate(
        ImageRequest(MODEL, "edit", "4:3", (source(GREEN),), mask)
    )
    image = Image.open(io.BytesIO(masked.data))
    width, height = image.size
    # OpenAI's mask keeps the opaque left half: the adapter asks the web UI to invert.
    assert region_mean(image, (10, 10, width // 2 - 10, height - 60)) == pytest.approx(
        list(GREEN), abs=2
    )
    calls = subject.calls()
    assert [c["endpoint"] for c in calls] == ["img2img"] * 3
    assert calls[0]["init_images"] == 1 and calls[0]["denoising_strength"] == 0.75
    assert calls[2]["mask"] and calls[2]["inpainting_mask_invert"] == 1
    two = ImageRequest(MODEL, "edit", "4:3", (source(RED), source(GREEN)))
    with pytest.raises(UpstreamBadRequest, match="one init image"):
        await subject.adapter.generate(two)


async def test_wrong_credentials_are_a_bad_request(subject: Subject) -> None:
    async with guarded_client(subject.emulator) as client:
        for key in ("imagegate:wrong", "just-a-token", None):
            adapter = Automatic1111Adapter(
                base_url="http://automatic1111.emulator",
                api_key=key,
                http_client=client,
                options={},
            )
            with pytest.raises(UpstreamBadRequest, match="credentials"):
                await adapter.generate(ImageRequest(MODEL, "x", "1:1"))


@pytest.mark.parametrize(
    ("fault", "error", "match"),
    [
        ({"kind": "error", "status": 500}, Unavailable, "OutOfMemoryError"),
        ({"kind": "failed"}, Unavailable, "RuntimeError"),
        ({"kind": "error", "status": 503}, Unavailable, "503"),
        ({"kind": "error", "status": 502}, Unavailable, "502"),
        ({"kind": "error", "status": 429, "retry_after": 3}, RateLimited, "429"),
        ({"kind": "error", "status": 400, "message": "bad thing"}, UpstreamBadRequest, "bad thing"),
        ({"kind": "oversized", "total_bytes": 2 * BODY_CAP}, UpstreamBadRequest, "limit"),
        ({"kind": "gzip_bomb", "inflated_bytes": 64 * MiB}, UpstreamBadRequest, "limit"),
    ],
)
async def test_upstream_errors_map_to_the_shared_types(
    subject: Subject, fault: dict[str, Any], error: type[Exception], match: str
) -> None:
    subject.faults.add(fault)
    with pytest.raises(error, match=match) as raised:
        await subject.adapter.generate(ImageRequest(MODEL, "x", "1:1"))
    if isinstance(raised.value, RateLimited):
        assert raised.value.retry_after == 3


async def test_web_ui_refusals_are_bad_requests(subject: Subject) -> None:
    async with guarded_client(subject.emulator) as client:
        adapter = Automatic1111Adapter(
            base_url="http://automatic1111.emulator",
            api_key="imagegate:s3cret",
            http_client=client,
            options={"sampler_name": "No Such Sampler"},
        )
        with pytest.raises(UpstreamBadRequest, match="Sampler not found"):
            await adapter.generate(ImageRequest(MODEL, "x", "1:1"))
    broken = SourceImage("image/png", b"definitely not a picture" * 10)
    with pytest.raises(UpstreamBadRequest, match="Invalid encoded image"):
        await subject.adapter.generate(ImageRequest(MODEL, "x", "1:1", (broken,)))


async def test_out_of_memory_is_retried_then_unavailable(subject: Subject) -> None:
    """4K is more than the emulated GPU holds: OutOfMemoryError, retryable."""
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
    with pytest.raises(Unavailable, match="OutOfMemoryError"):
        await call_with_retries(
            lambda: subject.adapter.generate(ImageRequest(MODEL, "x", "1:1", image_size="4K")),
            policy,
            deadline=time.monotonic() + 30,
            what="test",
        )
    assert subject.faults.calls == 2


# --- a real port: timeouts and refused connections ------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, FaultPlan]]:
    plan = FaultPlan()
    with serve_in_thread(create_automatic1111_emulator(plan)) as url:
        yield url, plan


def plain(client: httpx.AsyncClient, url: str) -> Automatic1111Adapter:
    return Automatic1111Adapter(base_url=url, api_key=None, http_client=client, options={})


async def test_a_slow_web_ui_is_a_timeout(served: tuple[str, FaultPlan]) -> None:
    url, plan = served
    plan.reset()
    plan.add({"kind": "delay", "seconds": 5})
    async with httpx.AsyncClient(timeout=0.3) as client:
        adapter = plain(client, url)
        with pytest.raises(UpstreamTimeout):
            await adapter.generate(ImageRequest(MODEL, "x", "1:1"))
        plan.reset()
        image = await adapter.generate(ImageRequest(MODEL, "x", "1:1", image_size="512"))
    assert size_of(image.data) == (512, 512)


async def test_a_reset_mid_body_is_unavailable(served: tuple[str, FaultPlan]) -> None:
    url, plan = served
    plan.reset()
    plan.add({"kind": "reset", "after_bytes": 4096})
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(Unavailable, match="unreachable"):
            await plain(client, url).generate(ImageRequest(MODEL, "x", "1:1", image_size="512"))


async def test_a_closed_port_is_unavailable() -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        adapter = plain(client, f"http://127.0.0.1:{free_port()}")
        with pytest.raises(Unavailable, match="unreachable"):
            await adapter.generate(ImageRequest(MODEL, "x", "1:1"))


# --- stand-ins for answers the emulator does not give -----------------------------------


class _Strict(BaseModel):
    width: int = Field(le=100)


def stand_in() -> FastAPI:
    app = FastAPI()

    @app.post("/strict/sdapi/v1/txt2img")
    def strict(body: _Strict) -> dict[str, str]:  # FastAPI's own 422 (pydantic 2)
        return {}

    @app.post("/jpeg/sdapi/v1/txt2img")
    def jpeg() -> JSONResponse:  # the web UI with samples_format = jpg
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), "red").save(buffer, "JPEG")
        return JSONResponse({"images": [base64.b64encode(buffer.getvalue()).decode()]})

    @app.post("/text/sdapi/v1/txt2img")
    def text() -> JSONResponse:
        return JSONResponse({"images": [base64.b64encode(b"hello" * 20).decode()]})

    @app.post("/empty/sdapi/v1/txt2img")
    def empty() -> JSONResponse:
        return JSONResponse({"images": [], "info": "{}"})

    return app


async def call_stand_in(prefix: str, **request: Any) -> Any:
    async with guarded_client(stand_in()) as client:
        adapter = plain(client, f"http://stand-in/{prefix}")
        return await adapter.generate(ImageRequest(MODEL, "x", "1:1", **request))


async def test_a_422_names_the_field_and_never_echoes_data() -> None:
    with pytest.raises(UpstreamBadRequest) as raised:
        await call_stand_in("strict")
    assert "width: " in raised.value.message
    assert "1024" not in raised.value.message  # pydantic 2 quotes the input; not kept


async def test_other_answers() -> None:
    image = await call_stand_in("jpeg")
    assert image.mime_type == "image/jpeg"
    with pytest.raises(Unavailable, match="not a PNG"):
        await call_stand_in("text")
    with pytest.raises(Unavailable, match="no image"):
        await call_stand_in("empty")
    with pytest.raises(UpstreamBadRequest, match="--api"):
        await call_stand_in("nothing-here")
