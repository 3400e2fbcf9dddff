"""Streamed /v1 image answers through the official `openai` SDK's stream iterators."""

from __future__ import annotations

import asyncio
import base64
import io
import os
from typing import Any, cast

import httpx
import openai
import pytest
from openai.types import ImageGenCompletedEvent, ImageGenPartialImageEvent
from PIL import Image

from app.api.openai.stream import StreamFormat, _Stream
from app.generation.producer import StoredImage
from app.imaging.webp import EncodedImage
from app.providers.catalog import Catalog
from tests.support.gateway import Stack, TenantHandle

GPT_IMAGE = ("openai/gpt-image-1", 10)
GEMINI = ("google/gemini-2.5-flash-image", 4)
OPENAI_FAULTS = "/emulators/openai/_emulator/faults"


def client(stack: Stack, tenant: TenantHandle) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=tenant.key, base_url=f"{stack.base_url}/v1", max_retries=0)


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
    image.load()
    return image


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), colour).save(buffer, "PNG")
    return buffer.getvalue()


async def settled(stack: Stack, tenant: TenantHandle, expected: int) -> None:
    """The balance once the gateway has settled (the stream ends just before it commits)."""
    for _ in range(100):
        if await stack.balance(tenant) == expected:
            break
        await asyncio.sleep(0.05)
    assert await stack.balance(tenant) == expected
    assert (await stack.audit(tenant)).ok


@pytest.mark.parametrize(("partials", "size"), [(1, "1536x1024"), (3, "1792x1024")])
async def test_gpt_image_streams_partials_then_the_final_image(
    stack: Stack, partials: int, size: str
) -> None:
    tenant = await stack.new_tenant(credits=100)
    sdk = client(stack, tenant)
    stream = await sdk.images.generate(
        model=GPT_IMAGE[0],
        prompt="a lighthouse",
        size=cast(Any, size),
        output_format="png",
        stream=True,
        partial_images=partials,
    )
    events = [event async for event in stream]
    await sdk.close()

    assert [e.type for e in events] == ["image_generation.partial_image"] * partials + [
        "image_generation.completed"
    ]
    indexes = [e.partial_image_index for e in events if isinstance(e, ImageGenPartialImageEvent)]
    assert indexes == list(range(partials))
    images = [decode(e.b64_json) for e in events]
    assert all(image.format == "PNG" for image in images)
    # Every partial has the final image's exact asked size (1792x1024 is drawn at 3:2,
    # then cropped and resized) and differs from it.
    assert {"x".join(map(str, image.size)) for image in images} == {size}
    assert len({image.tobytes() for image in images}) == partials + 1
    final = events[-1]
    assert isinstance(final, ImageGenCompletedEvent)
    assert final.output_format == "png" and final.size == "x".join(map(str, images[-1].size))
    assert final.usage is not None
    await settled(stack, tenant, 100 - GPT_IMAGE[1])


async def test_a_model_without_previews_sends_the_completed_event_only(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    sdk = client(stack, tenant)
    stream = await sdk.images.generate(
        model=GEMINI[0], prompt="a fox", output_format="jpeg", stream=True, partial_images=3
    )
    events = [event async for event in stream]
    await sdk.close()

    assert [e.type for e in events] == ["image_generation.completed"]
    assert decode(events[0].b64_json).format == "JPEG"
    await settled(stack, tenant, 100 - GEMINI[1])


async def test_edit_streams_image_edit_events(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    sdk = client(stack, tenant)
    stream = await sdk.images.edit(
        image=("red.png", png("red"), "image/png"),
        model=GPT_IMAGE[0],
        prompt="as a watercolour",
        output_format="png",
        stream=True,
        partial_images=2,
    )
    events = [event async for event in stream]
    await sdk.close()

    assert [e.type for e in events] == [
        "image_edit.partial_image",
        "image_edit.partial_image",
        "image_edit.completed",
    ]
    r, g, _ = decode(events[-1].b64_json).convert("RGB").resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    assert r > g + 40  # the red upload shows through
    await settled(stack, tenant, 100 - GPT_IMAGE[1])


async def test_sync_client_iterates_the_stream(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)

    def run() -> list[str]:
        with openai.OpenAI(
            api_key=tenant.key, base_url=f"{stack.base_url}/v1", max_retries=0
        ) as sdk:
            stream = sdk.images.generate(
                model=GPT_IMAGE[0], prompt="a kite", stream=True, partial_images=2
            )
            return [event.type for event in stream]

    kinds = await asyncio.to_thread(run)
    assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    await settled(stack, tenant, 100 - GPT_IMAGE[1])


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"n": 2}, "n"),
        ({"partial_images": 4}, "partial_images"),
        ({"partial_images": -1}, "partial_images"),
        ({"response_format": "url"}, "response_format"),
        ({"extra_body": {"stream": "yes"}}, "stream"),
    ],
)
async def test_invalid_streams_are_400_before_anything_is_held(
    stack: Stack, kwargs: dict[str, Any], param: str
) -> None:
    tenant = await stack.new_tenant(credits=100)
    sdk = client(stack, tenant)
    arguments: dict[str, Any] = {"model": GPT_IMAGE[0], "prompt": "x", "stream": True, **kwargs}
    with pytest.raises(openai.BadRequestError) as raised:
        await sdk.images.generate(**arguments)
    await sdk.close()
    assert raised.value.param == param
    await settled(stack, tenant, 100)


async def test_an_idempotency_key_with_a_stream_is_a_400_naming_it(stack: Stack) -> None:
    """A stream is delivered once, as it happens: with nothing to replay, a retry under the
    key would draw and charge again, so the key is refused, on both routes."""
    tenant = await stack.new_tenant(credits=100)
    sdk = client(stack, tenant)
    key = {"Idempotency-Key": "stream-once"}
    with pytest.raises(openai.BadRequestError) as generation:
        await sdk.images.generate(model=GPT_IMAGE[0], prompt="x", stream=True, extra_headers=key)
    with pytest.raises(openai.BadRequestError) as edit:
        await sdk.images.edit(
            image=("red.png", png("red"), "image/png"),
            model=GPT_IMAGE[0],
            prompt="x",
            stream=True,
            extra_headers=key,
        )
    # The same key without a stream is an ordinary idempotent request.
    first = await sdk.images.generate(model=GPT_IMAGE[0], prompt="x", extra_headers=key)
    again = await sdk.images.generate(model=GPT_IMAGE[0], prompt="x", extra_headers=key)
    await sdk.close()
    assert generation.value.param == edit.value.param == "Idempotency-Key"
    assert "stream" in generation.value.message
    assert first.data == again.data
    await settled(stack, tenant, 100 - GPT_IMAGE[1])


async def faults(stack: Stack, *scripted: dict[str, Any]) -> None:
    async with stack.control_client() as control:
        await control.delete(OPENAI_FAULTS)
        if scripted:
            await control.post(OPENAI_FAULTS, json={"faults": list(scripted)})


async def test_errors_before_the_first_event_are_http_errors(stack: Stack) -> None:
    """402, a blocked prompt and an upstream that fails every attempt (emulated providers
    answer in one piece, so before any preview) are HTTP errors: no stream is started,
    nothing is charged, and the next stream of the same tenant works."""
    poor = await stack.new_tenant(credits=3)
    sdk = client(stack, poor)
    with pytest.raises(openai.APIStatusError) as raised:
        await sdk.images.generate(model=GPT_IMAGE[0], prompt="x", stream=True, partial_images=2)
    await sdk.close()
    assert raised.value.status_code == 402

    tenant = await stack.new_tenant(credits=100)
    sdk = client(stack, tenant)
    try:
        await faults(stack, {"kind": "blocked", "count": 5})
        with pytest.raises(openai.BadRequestError) as blocked:
            await sdk.images.generate(model=GPT_IMAGE[0], prompt="x", stream=True, partial_images=2)
        await faults(stack, {"kind": "reset", "after_bytes": 10**9, "count": 5})
        with pytest.raises(openai.APIStatusError) as failed:
            await sdk.images.generate(model=GPT_IMAGE[0], prompt="x", stream=True, partial_images=3)
        await faults(stack)
        stream = await sdk.images.generate(
            model=GPT_IMAGE[0], prompt="x", stream=True, partial_images=1
        )
        kinds = [event.type async for event in stream]
    finally:
        await faults(stack)
        await sdk.close()
    assert blocked.value.code == "content_rejected"
    assert failed.value.status_code >= 500 and "refunded" in failed.value.message
    assert kinds == ["image_generation.partial_image", "image_generation.completed"]
    await settled(stack, poor, 3)
    await settled(stack, tenant, 100 - GPT_IMAGE[1])


async def test_a_completed_event_nobody_reads_counts_as_not_delivered() -> None:
    """A client that stays connected but stops reading: the completed event waits to be
    written; past the delivery timeout the image counts as not delivered (refunded by the
    service), instead of holding the generation open until the sweeper."""

    async def never_disconnects() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    fmt = StreamFormat(
        kind="image_generation",
        output_format="png",
        usage=lambda _item: {},
        delivery_timeout=0.2,
    )
    stream = _Stream(fmt, never_disconnects)
    image = EncodedImage(b"png", 1, 1, "image/png")
    item = StoredImage(0, "k", image, None, next(iter(Catalog.load())))
    # Nothing pumps the queue: the write never happens.
    delivered = await asyncio.wait_for(stream.deliver(item), timeout=10)
    assert delivered is False
    assert stream.queue.qsize() == 1  # the event was queued, never written


OPENAI_FAULTS = "/emulators/openai/_emulator/faults"


async def _bytes_in_use(http: httpx.AsyncClient) -> int:
    return int((await http.get("/healthz")).json()["requestBytesInUse"])


async def test_a_streamed_edit_holds_its_upload_budget_until_the_stream_ends(stack: Stack) -> None:
    """The generation keeps the uploads after the first event: so does the budget."""
    tenant = await stack.new_tenant(credits=100)
    buffer = io.BytesIO()  # noise: a PNG over the budget's exemption (64 KiB)
    Image.frombytes("RGB", (220, 220), os.urandom(220 * 220 * 3)).save(buffer, "PNG")
    fields = {
        "model": GPT_IMAGE[0],
        "prompt": "as ink",
        "stream": "true",
        "partial_images": "1",
        "output_format": "webp",
    }
    drip = {"kind": "slow_body", "chunk_bytes": 65536, "interval_seconds": 0.25}
    async with stack.control_client() as control:
        (await control.post(OPENAI_FAULTS, json={"faults": [drip]})).raise_for_status()
    try:
        async with stack.client() as http:
            files = {"image": ("noise.png", buffer.getvalue(), "image/png")}
            async with http.stream(
                "POST", "/v1/images/edits", files=files, data=fields, headers=tenant.auth
            ) as response:
                assert response.status_code == 200
                lines = response.aiter_lines()
                async for line in lines:
                    if line == "event: image_edit.partial_image":
                        break
                # The final image is still dripping from the upstream.
                assert await _bytes_in_use(http) > 0
                kinds = [line async for line in lines if line.startswith("event: ")]
            assert kinds == ["event: image_edit.completed"]
            for _ in range(100):
                if await _bytes_in_use(http) == 0:
                    break
                await asyncio.sleep(0.05)
            assert await _bytes_in_use(http) == 0
    finally:
        async with stack.control_client() as control:
            await control.delete(OPENAI_FAULTS)
    await settled(stack, tenant, 100 - GPT_IMAGE[1])
