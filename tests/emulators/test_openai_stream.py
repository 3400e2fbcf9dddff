"""The OpenAI emulator's streamed Images API, through the `openai` SDK's stream iterators."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai import AsyncOpenAI
from PIL import Image, ImageChops, ImageStat

from app.emulators.faults import FaultPlan
from app.emulators.openai import create_openai_emulator
from app.emulators.openai_wire import SERVED

MODEL = "gpt-image-1"


@pytest.fixture(scope="module")
def emulator() -> FastAPI:
    return create_openai_emulator()


@pytest.fixture
async def client(base_url: str, plan: FaultPlan) -> AsyncIterator[AsyncOpenAI]:
    sdk = AsyncOpenAI(api_key="sk-test", base_url=f"{base_url}/v1", max_retries=0)
    yield sdk
    await sdk.close()


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
    image.load()
    return image


def distance(image: Image.Image, final: Image.Image) -> float:
    """Mean per-channel difference from the final image."""
    difference = ImageChops.difference(image.convert("RGB"), final.convert("RGB"))
    return float(sum(ImageStat.Stat(difference).mean))


async def collect(stream: Any) -> list[Any]:
    return [event async for event in stream]


def png_of(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("partials", [0, 1, 2, 3])
async def test_generation_streams_partials_then_the_final_image(
    client: AsyncOpenAI, partials: int
) -> None:
    stream = await client.images.generate(
        model=MODEL, prompt="a lighthouse", stream=True, partial_images=partials
    )
    events = await collect(stream)

    assert [e.type for e in events] == ["image_generation.partial_image"] * partials + [
        "image_generation.completed"
    ]
    assert [e.partial_image_index for e in events[:-1]] == list(range(partials))
    completed = events[-1]
    plain = await client.images.generate(model=MODEL, prompt="a lighthouse")
    assert plain.data and plain.usage is not None
    # The streamed final is drawn like a plain call's (each call draws a new picture, as
    # OpenAI's do: the emulator records what it served); partials cost 100 tokens each.
    final = base64.b64decode(completed.b64_json)
    assert hashlib.sha256(final).hexdigest() in SERVED
    assert decode(plain.data[0].b64_json or "").size == decode(completed.b64_json).size
    assert completed.usage.output_tokens == plain.usage.output_tokens + 100 * partials
    assert completed.usage.total_tokens == plain.usage.total_tokens + 100 * partials
    assert (completed.size, completed.quality, completed.output_format) == (
        "1024x1024",
        "medium",
        "png",
    )
    images = [decode(e.b64_json) for e in events]
    assert all(image.size == (1024, 1024) and image.format == "PNG" for image in images)
    # Each partial is a distinct step, closer to the final image than the one before.
    steps = [distance(image, images[-1]) for image in images]
    assert steps == sorted(steps, reverse=True) and len(set(steps)) == len(steps)
    assert steps[-1] == 0


async def test_partials_follow_the_requested_format_and_size(client: AsyncOpenAI) -> None:
    stream = await client.images.generate(
        model=MODEL,
        prompt="a harbour",
        stream=True,
        partial_images=2,
        size="1536x1024",
        output_format="webp",
        quality="low",
    )
    events = await collect(stream)

    assert len(events) == 3
    for event in events:
        assert (event.size, event.output_format, event.quality) == ("1536x1024", "webp", "low")
        image = decode(event.b64_json)
        assert image.format == "WEBP" and image.size == (1536, 1024)
        assert event.created_at > 0


async def test_edit_streams_image_edit_events(client: AsyncOpenAI) -> None:
    stream = await client.images.edit(
        image=("src.png", png_of((200, 30, 30)), "image/png"),
        model=MODEL,
        prompt="as a painting",
        stream=True,
        partial_images=1,
    )
    events = await collect(stream)

    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    r, g, _ = ImageStat.Stat(decode(events[-1].b64_json).convert("RGB")).mean
    assert r > g + 40  # the red source shows through the edit
    assert events[-1].usage.input_tokens_details.image_tokens > 0


def test_sync_client_iterates_the_stream(base_url: str, plan: FaultPlan) -> None:
    with openai.OpenAI(api_key="sk-test", base_url=f"{base_url}/v1", max_retries=0) as sdk:
        stream = sdk.images.generate(model=MODEL, prompt="a kite", stream=True, partial_images=2)
        kinds = [event.type for event in stream]
    assert kinds == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]


async def test_wire_format_is_named_server_sent_events(base_url: str, plan: FaultPlan) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await http.post(
            "/v1/images/generations",
            headers={"Authorization": "Bearer k"},
            json={"model": MODEL, "prompt": "x", "stream": True, "partial_images": 1},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [block for block in response.text.split("\n\n") if block]
    assert len(blocks) == 2
    for block in blocks:
        event_line, data_line = block.split("\n")
        kind = event_line.removeprefix("event: ")
        assert json.loads(data_line.removeprefix("data: "))["type"] == kind


@pytest.mark.parametrize(
    ("kwargs", "param", "code"),
    [
        ({"n": 2}, "input", "unsupported_parameter"),
        ({"partial_images": 4}, "partial_images", "integer_above_max_value"),
        ({"partial_images": -1}, "partial_images", "integer_below_min_value"),
    ],
)
async def test_invalid_streaming_requests_are_400(
    client: AsyncOpenAI, kwargs: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(model=MODEL, prompt="x", stream=True, **kwargs)
    assert (caught.value.param, caught.value.code) == (param, code)


async def test_n_above_one_is_refused_as_openai_does(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(model=MODEL, prompt="x", n=3, stream=True)
    assert caught.value.message.endswith("Streaming is only supported with n=1.")
    assert caught.value.type == "image_generation_user_error"


async def test_reset_fault_cuts_the_stream(client: AsyncOpenAI, plan: FaultPlan) -> None:
    plan.add({"kind": "reset", "after_bytes": 10**9})  # at most half the stream is sent
    stream = await client.images.generate(model=MODEL, prompt="x", stream=True, partial_images=3)
    seen: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        async for event in stream:
            seen.append(event.type)
    assert "image_generation.completed" not in seen


async def test_slow_body_fault_drips_the_stream(client: AsyncOpenAI, plan: FaultPlan) -> None:
    plan.add({"kind": "slow_body", "chunk_bytes": 256 * 1024, "interval_seconds": 0.2})
    stream = await client.images.generate(model=MODEL, prompt="x", stream=True, partial_images=2)
    arrivals: list[float] = []
    async for _ in stream:
        arrivals.append(time.monotonic())
    assert len(arrivals) == 3
    assert arrivals[-1] - arrivals[0] >= 0.2  # the final image came chunks after the first
