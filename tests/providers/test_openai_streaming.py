"""OpenAIImagesAdapter.generate_streaming through the `openai` SDK against the emulator on
a real port, behind the gateway's GuardedTransport (body cap, deadlines, slots)."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from app.emulators.faults import FaultPlan
from app.emulators.openai import create_openai_emulator
from app.emulators.openai_wire import INPUT_IMAGE_TOKENS, SERVED
from app.providers.base import (
    ImageOptions,
    ImageRequest,
    SourceImage,
    StreamsPartialImages,
    Unavailable,
    UpstreamBadRequest,
    UpstreamTimeout,
)
from app.providers.gemini import GeminiAdapter
from app.providers.openai import OpenAIImagesAdapter, OpenAIResponsesAdapter
from app.providers.sockets import attempt_deadline
from app.providers.transport import GuardedTransport, UpstreamLimits, pooled_transport
from tests.support.images import BLUE, GREEN, RED, band_colours, half_mask
from tests.support.servers import serve_in_thread


@dataclass
class Emulator:
    url: str
    faults: FaultPlan


@dataclass
class Partials:
    received: list[tuple[int, bytes]] = field(default_factory=list)
    stop_after: int | None = None

    async def __call__(self, index: int, data: bytes) -> None:
        self.received.append((index, data))
        if self.stop_after is not None and len(self.received) >= self.stop_after:
            raise Stop


class Stop(Exception):
    """What a gateway sink raises when its client has gone."""


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    plan = FaultPlan()
    with serve_in_thread(create_openai_emulator(plan)) as url:
        yield Emulator(url, plan)


@dataclass
class Guarded:
    adapter: OpenAIImagesAdapter
    transport: GuardedTransport


async def guarded(emulator: Emulator, **limits: int) -> AsyncIterator[Guarded]:
    settings = UpstreamLimits(read_timeout=10, **limits)
    transport = GuardedTransport("openai", lambda: pooled_transport(settings), settings)
    async with httpx.AsyncClient(transport=transport) as client:
        adapter = OpenAIImagesAdapter(
            api_key="sk-test", base_url=f"{emulator.url}/v1", http_client=client
        )
        yield Guarded(adapter, transport)
    emulator.faults.reset()


@pytest_asyncio.fixture
async def subject(emulator: Emulator) -> AsyncIterator[Guarded]:
    emulator.faults.reset()
    async for value in guarded(emulator):
        yield value


def request(
    ratio: str = "1:1",
    sources: tuple[SourceImage, ...] = (),
    mask: SourceImage | None = None,
    options: ImageOptions | None = None,
) -> ImageRequest:
    return ImageRequest(
        "gpt-image-1", "a lighthouse", ratio, sources, mask, options or ImageOptions()
    )


def png(colour: str) -> SourceImage:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buffer, "PNG")
    return SourceImage("image/png", buffer.getvalue())


@pytest.mark.parametrize("count", [1, 3])
async def test_partials_reach_the_sink_and_the_final_image_is_returned(
    subject: Guarded, count: int
) -> None:
    sink = Partials()
    image = await subject.adapter.generate_streaming(request("3:2"), count, sink)

    assert [index for index, _ in sink.received] == list(range(count))
    for _, data in sink.received:
        partial = Image.open(io.BytesIO(data))
        assert partial.format == "WEBP" and partial.size == (1536, 1024)
    # The final image is the one the emulator drew (each call draws a new one), and no
    # partial is it.
    assert hashlib.sha256(image.data).hexdigest() == SERVED[-1]
    assert image.mime_type == "image/webp"
    assert image.data not in {data for _, data in sink.received}
    assert subject.transport.in_flight == 0


async def test_edit_streams_with_the_source(subject: Guarded) -> None:
    sources = (png("red"),)
    sink = Partials()
    image = await subject.adapter.generate_streaming(request(sources=sources), 2, sink)

    assert len(sink.received) == 2
    assert hashlib.sha256(image.data).hexdigest() == SERVED[-1]
    assert band_colours(Image.open(io.BytesIO(image.data)), 1) == [RED]  # drawn from the source


async def test_a_streamed_edit_sends_every_reference_the_mask_and_the_options(
    subject: Guarded,
) -> None:
    """The streamed call is built as the plain one: several `image[]`, the mask, options."""
    sources = (png("red"), png("green"), png("blue"))
    options = ImageOptions(quality="high", background="opaque", input_fidelity="high")
    mask = SourceImage("image/png", half_mask())  # keeps the first image on the left half
    three = request(sources=sources, mask=mask, options=options)
    two = request(sources=sources[:2], mask=mask, options=options)

    streamed = await subject.adapter.generate_streaming(three, 1, Partials())
    fewer = await subject.adapter.generate_streaming(two, 1, Partials())

    # Three bands, red kept by the mask on the left half: red, red, blue; with two: red, green.
    assert band_colours(Image.open(io.BytesIO(streamed.data)), 3) == [RED, RED, BLUE]
    assert band_colours(Image.open(io.BytesIO(fewer.data)), 2) == [RED, GREEN]
    # The completed event's usage counts each reference the upstream received.
    assert streamed.usage is not None and fewer.usage is not None
    assert streamed.usage.input_image_tokens == 3 * INPUT_IMAGE_TOKENS
    assert fewer.usage.input_image_tokens == 2 * INPUT_IMAGE_TOKENS


async def test_a_raising_sink_ends_the_upstream_call_and_frees_its_slot(
    subject: Guarded, emulator: Emulator
) -> None:
    # Dripped: the whole stream would take seconds; the sink stops it at the first partial.
    emulator.faults.add({"kind": "slow_body", "chunk_bytes": 32 * 1024, "interval_seconds": 0.2})
    sink = Partials(stop_after=1)
    started = time.monotonic()
    with pytest.raises(Stop):
        await subject.adapter.generate_streaming(request(), 3, sink)

    assert len(sink.received) == 1
    assert time.monotonic() - started < 4
    assert subject.transport.in_flight == 0  # the response was closed, the slot returned


async def test_the_body_cap_counts_the_whole_stream(emulator: Emulator) -> None:
    emulator.faults.reset()
    # Each event (WebP previews, ~15-30 KB: each call draws a new picture) fits under the
    # cap; three partials and the final together do not. Where the cap falls depends on
    # the picture, so some partials arrive, each smaller than the cap, and the call fails.
    cap = 50 * 1024
    async for small in guarded(emulator, max_response_bytes=cap):
        sink = Partials()
        with pytest.raises(UpstreamBadRequest) as raised:
            await small.adapter.generate_streaming(request(), 3, sink)
        assert "byte limit" in raised.value.message
        assert 0 < len(sink.received) <= 3
        assert all(len(data) < cap for _, data in sink.received)
        assert small.transport.in_flight == 0


async def test_a_dripping_stream_ends_at_the_attempt_deadline(
    subject: Guarded, emulator: Emulator
) -> None:
    emulator.faults.add({"kind": "slow_body", "chunk_bytes": 1024, "interval_seconds": 0.5})
    started = time.monotonic()
    with attempt_deadline(started + 1.0), pytest.raises(UpstreamTimeout):
        await subject.adapter.generate_streaming(request(), 2, Partials())
    assert time.monotonic() - started < 3


async def test_a_reset_mid_stream_is_retryable(subject: Guarded, emulator: Emulator) -> None:
    emulator.faults.add({"kind": "reset", "after_bytes": 10**9})
    with pytest.raises(Unavailable) as raised:
        await subject.adapter.generate_streaming(request(), 3, Partials())
    assert raised.value.retryable


def test_only_the_images_adapter_streams_partials() -> None:
    assert issubclass(OpenAIImagesAdapter, StreamsPartialImages)
    assert not issubclass(OpenAIResponsesAdapter, StreamsPartialImages)
    assert not issubclass(GeminiAdapter, StreamsPartialImages)
