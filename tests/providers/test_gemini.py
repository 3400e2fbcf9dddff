"""The Gemini adapter through the real google-genai SDK against the emulator on a real port."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from app.emulators.faults import FaultPlan
from app.emulators.gemini import NATIVE_SIZES, create_gemini_emulator
from app.providers.base import (
    ImageRequest,
    Moderated,
    RateLimited,
    SourceImage,
    Unavailable,
    UpstreamBadRequest,
)
from app.providers.gemini import GeminiAdapter
from app.providers.retry import RetryPolicy, call_with_retries
from tests.support.servers import free_port, serve_in_thread

MODEL = "gemini-2.5-flash-image"


@dataclass
class Emulator:
    url: str
    faults: FaultPlan


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    plan = FaultPlan()
    with serve_in_thread(create_gemini_emulator(plan)) as url:
        yield Emulator(url, plan)


@pytest_asyncio.fixture
async def adapter(emulator: Emulator) -> AsyncIterator[GeminiAdapter]:
    emulator.faults.reset()
    client = httpx.AsyncClient(timeout=10)
    gemini = GeminiAdapter(api_key="test-key", base_url=emulator.url, http_client=client)
    yield gemini
    await gemini.aclose()
    await client.aclose()
    emulator.faults.reset()


@pytest.mark.parametrize("ratio", ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9"])
async def test_ratio_is_requested_natively(adapter: GeminiAdapter, ratio: str) -> None:
    image = await adapter.generate(ImageRequest(MODEL, "a lighthouse", ratio))
    assert image.mime_type == "image/png"
    assert Image.open(io.BytesIO(image.data)).size == NATIVE_SIZES[ratio]


async def test_source_image_is_sent_inline(adapter: GeminiAdapter) -> None:
    def png(colour: str) -> SourceImage:
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), colour).save(buffer, "PNG")
        return SourceImage("image/png", buffer.getvalue())

    red = await adapter.generate(ImageRequest(MODEL, "paint it", "1:1", (png("red"),)))
    green = await adapter.generate(ImageRequest(MODEL, "paint it", "1:1", (png("green"),)))
    assert red.data != green.data
    # Several references go inline, each its own part (the emulator draws from the last).
    pair = await adapter.generate(
        ImageRequest(MODEL, "paint it", "1:1", (png("red"), png("green")))
    )
    assert pair.data != red.data  # the second reference reached the upstream
    with pytest.raises(UpstreamBadRequest):
        await adapter.generate(ImageRequest(MODEL, "x", "1:1", (png("red"),), png("white")))


async def test_blocked_prompt_is_moderated(adapter: GeminiAdapter, emulator: Emulator) -> None:
    emulator.faults.add({"kind": "blocked", "reason": "SAFETY"})
    with pytest.raises(Moderated, match="SAFETY"):
        await adapter.generate(ImageRequest(MODEL, "x", "1:1"))


async def test_refused_output_is_moderated(adapter: GeminiAdapter, emulator: Emulator) -> None:
    emulator.faults.add({"kind": "refused", "finish_reason": "IMAGE_SAFETY"})
    with pytest.raises(Moderated, match="IMAGE_SAFETY"):
        await adapter.generate(ImageRequest(MODEL, "x", "1:1"))


async def test_rate_limit_carries_retry_info(adapter: GeminiAdapter, emulator: Emulator) -> None:
    emulator.faults.add({"kind": "error", "status": 429, "retry_after": 7})
    with pytest.raises(RateLimited) as raised:
        await adapter.generate(ImageRequest(MODEL, "x", "1:1"))
    assert raised.value.retry_after == 7.0
    assert raised.value.retryable


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_unavailable(
    adapter: GeminiAdapter, emulator: Emulator, status: int
) -> None:
    emulator.faults.add({"kind": "error", "status": status})
    with pytest.raises(Unavailable):
        await adapter.generate(ImageRequest(MODEL, "x", "1:1"))


async def test_unsupported_ratio_is_a_bad_request(adapter: GeminiAdapter) -> None:
    with pytest.raises(UpstreamBadRequest):
        await adapter.generate(ImageRequest(MODEL, "x", "9:21"))


async def test_closed_port_is_unavailable() -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        gemini = GeminiAdapter(
            api_key="k", base_url=f"http://127.0.0.1:{free_port()}", http_client=client
        )
        with pytest.raises(Unavailable):
            await gemini.generate(ImageRequest(MODEL, "x", "1:1"))


async def test_sdk_does_not_retry_on_its_own(adapter: GeminiAdapter, emulator: Emulator) -> None:
    """Our policy retries a 429 once; the emulator sees exactly two calls, not more."""
    import time

    emulator.faults.add({"kind": "error", "status": 429, "retry_after": 0.01})
    image = await call_with_retries(
        lambda: adapter.generate(ImageRequest(MODEL, "x", "1:1")),
        RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02),
        deadline=time.monotonic() + 10,
        what="test",
    )
    assert image.data
    assert emulator.faults.calls == 2
