"""The official `openai` Python SDK's async client (`AsyncOpenAI`) against `/v1`."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import openai
import pytest_asyncio

from tests.clients.conftest import (
    CREDITS,
    GPT_IMAGE,
    assert_stream,
    b64_png,
    data_of,
    mask_png,
    png,
    price,
)
from tests.support.gateway import TenantHandle
from tests.support.upstreams import NetworkGateway


@pytest_asyncio.fixture
async def aclient(
    gateway: NetworkGateway, tenant: TenantHandle
) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{gateway.base_url}/v1", api_key=tenant.key, max_retries=0, timeout=60
    ) as sdk:
        yield sdk


async def test_async_generate_answers_b64_png_with_usage(
    aclient: openai.AsyncOpenAI, gateway: NetworkGateway, tenant: TenantHandle
) -> None:
    result = await aclient.images.generate(model=GPT_IMAGE, prompt="a comet", size="1536x1024")

    image = b64_png(data_of(result)[0].b64_json)
    assert (image.width, image.height) == (1536, 1024)
    assert result.usage is not None and result.usage.total_tokens > 0
    assert gateway.balance(tenant) == CREDITS - price(GPT_IMAGE)


async def test_async_url_answer_serves_openais_default_png(aclient: openai.AsyncOpenAI) -> None:
    result = await aclient.images.generate(
        model=GPT_IMAGE, prompt="a comet", size="1024x1024", response_format="url"
    )

    url = data_of(result)[0].url
    assert url is not None
    async with httpx.AsyncClient(timeout=30) as http:
        served = await http.get(url)
    # No output_format: OpenAI's default, PNG, for the URL too.
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"


async def test_async_edit_with_two_images_and_a_mask(aclient: openai.AsyncOpenAI) -> None:
    images = [("a.png", png("a"), "image/png"), ("b.png", png("b"), "image/png")]

    plain = await aclient.images.edit(model=GPT_IMAGE, image=images[:1], prompt="at night")
    both = await aclient.images.edit(
        model=GPT_IMAGE, image=images, mask=("m.png", mask_png(), "image/png"), prompt="at night"
    )

    assert both.usage is not None
    b64_png(data_of(both)[0].b64_json)
    assert base64.b64decode(data_of(both)[0].b64_json or "") != base64.b64decode(
        data_of(plain)[0].b64_json or ""
    )


async def test_async_stream_yields_partials_then_completed_and_charges_once(
    aclient: openai.AsyncOpenAI, gateway: NetworkGateway, tenant: TenantHandle
) -> None:
    stream = await aclient.images.generate(
        model=GPT_IMAGE, prompt="a comet", size="1024x1536", stream=True, partial_images=1
    )
    events = [event async for event in stream]

    assert_stream(events, "image_generation", partials=1, size="1024x1536")
    assert events[0].type == "image_generation.partial_image"
    assert gateway.balance(tenant) == CREDITS - price(GPT_IMAGE)
