"""`stream=True` through the official `openai` Python SDK: OpenAI's Server-Sent Events, which
the SDK's stream iterator parses, ending in the completed image; charged once."""

from __future__ import annotations

import openai
import pytest

from tests.clients.conftest import CREDITS, GEMINI, GPT_IMAGE, assert_stream, b64_png, png, price
from tests.support.gateway import TenantHandle
from tests.support.upstreams import NetworkGateway


def test_generate_stream_yields_partial_images_then_completed_and_charges_once(
    client: openai.OpenAI, gateway: NetworkGateway, tenant: TenantHandle
) -> None:
    stream = client.images.generate(
        model=GPT_IMAGE, prompt="a sailing boat", size="1536x1024", stream=True, partial_images=2
    )
    events = list(stream)

    assert_stream(events, "image_generation", partials=2, size="1536x1024")
    assert any(event.type == "image_generation.partial_image" for event in events), (
        "the OpenAI emulator streams partial images as the real API does"
    )
    assert gateway.balance(tenant) == CREDITS - price(GPT_IMAGE)


def test_edit_stream_yields_image_edit_events(
    client: openai.OpenAI, gateway: NetworkGateway, tenant: TenantHandle
) -> None:
    stream = client.images.edit(
        model=GPT_IMAGE,
        image=[("a.png", png("a"), "image/png"), ("b.png", png("b"), "image/png")],
        prompt="make it winter",
        size="1024x1024",
        stream=True,
        partial_images=1,
    )
    events = list(stream)

    assert_stream(events, "image_edit", partials=1, size="1024x1024")
    assert gateway.balance(tenant) == CREDITS - price(GPT_IMAGE)


def test_stream_from_a_provider_without_partials_is_just_the_completed_event(
    client: openai.OpenAI, gateway: NetworkGateway, tenant: TenantHandle
) -> None:
    stream = client.images.generate(
        model=GEMINI, prompt="a fox", size="1024x1024", stream=True, partial_images=3
    )
    events = list(stream)

    assert [event.type for event in events] == ["image_generation.completed"]
    image = b64_png(events[0].b64_json)
    assert (image.width, image.height) == (1024, 1024)
    assert gateway.balance(tenant) == CREDITS - price(GEMINI)


def test_partial_images_out_of_range_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model=GPT_IMAGE, prompt="a fox", stream=True, partial_images=4)
    assert caught.value.param == "partial_images"
