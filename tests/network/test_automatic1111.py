"""An AUTOMATIC1111 upstream over the real network: the emulator in its own process, a
non-emulated gateway configured by IMAGEGATE_AUTOMATIC1111_BASE_URL/_API_KEY as an
operator would. Slow, reset, oversized and gzip-bombed answers are in test_bodies.py and
the burst of timeouts in test_burst.py (both parametrized over every provider)."""

from __future__ import annotations

import io
from collections.abc import Callable
from fractions import Fraction

import httpx
import pytest
from PIL import Image

from app.providers.automatic1111 import output_size
from tests.support.servers import free_port
from tests.support.upstreams import MODELS, NetworkGateway

pytestmark = pytest.mark.network

PATH = "/api/v1/generate-image"
MODEL, PRICE = MODELS["automatic1111"]


@pytest.fixture(scope="module")
def gateway(network_gateway_factory: Callable[..., NetworkGateway]) -> NetworkGateway:
    return network_gateway_factory()


async def test_a_generation_is_an_exact_webp_billed_at_the_price(gateway: NetworkGateway) -> None:
    emulator = gateway.emulators["automatic1111"]
    emulator.set_faults()
    tenant = gateway.new_tenant(credits=5 * PRICE)
    body: dict[str, object] = {"prompt": "a tram in the rain", "model": MODEL}
    body |= {"aspectRatio": "21:9"}
    body |= {"stylePreset": "cinematic", "numImages": 2}
    async with gateway.client() as client:
        response = await client.post(PATH, json=body, headers=tenant.auth)
        assert response.status_code == 200, response.text
        assert "x-imagegate-emulated" not in response.headers
        pictures = [(await client.get(image["url"])).content for image in response.json()["images"]]
    for data in pictures:
        image = Image.open(io.BytesIO(data))
        assert image.format == "WEBP" and Fraction(*image.size) == Fraction(21, 9)
    assert pictures[0] != pictures[1]  # a new seed per call
    assert gateway.balance(tenant) == 3 * PRICE
    async with httpx.AsyncClient(base_url=emulator.base_url, timeout=10) as control:
        last = (await control.get("/_emulator/automatic1111/calls")).json()[-1]
    assert last["endpoint"] == "txt2img" and "tram" in last["prompt"]
    assert "flat lighting" in last["negative_prompt"]  # the cinematic preset's negative
    assert (last["width"], last["height"]) == output_size("21:9", "1K", multiple=64)
    assert gateway.audit_ok()


async def test_a_failing_web_ui_is_retried_then_refunded(gateway: NetworkGateway) -> None:
    emulator = gateway.emulators["automatic1111"]
    tenant = gateway.new_tenant(credits=PRICE)
    emulator.set_faults({"kind": "failed", "count": 100})
    calls_before = emulator.calls()
    try:
        async with gateway.client() as client:
            response = await client.post(
                PATH, json={"prompt": "x", "model": MODEL}, headers=tenant.auth
            )
    finally:
        emulator.set_faults()
    assert response.status_code == 500, response.text
    assert response.json()["code"] == "generation_failed"
    assert emulator.calls() - calls_before == 3  # the gateway's upstream_max_attempts
    assert gateway.balance(tenant) == PRICE and gateway.audit_ok()


async def test_an_unreachable_web_ui_is_a_refunded_500(
    network_gateway_factory: Callable[..., NetworkGateway],
) -> None:
    gateway = network_gateway_factory(automatic1111_base_url=f"http://127.0.0.1:{free_port()}")
    tenant = gateway.new_tenant(credits=PRICE)
    async with gateway.client() as client:
        response = await client.post(
            PATH, json={"prompt": "x", "model": MODEL}, headers=tenant.auth
        )
    assert response.status_code == 500, response.text
    assert response.json()["code"] == "generation_failed"
    assert gateway.balance(tenant) == PRICE and gateway.audit_ok()
    assert gateway.stored_files() == []
