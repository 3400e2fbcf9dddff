"""Generations through the gateway's HTTP API on `automatic1111/sd-xl`, served by the
mounted AUTOMATIC1111 emulator (`--emulate`): exact-ratio WebPs billed at the model's
price, the style preset's negative prompt and the source image reaching the web UI, and
its out-of-memory errors retried, then refunded."""

from __future__ import annotations

import base64
import io
from fractions import Fraction
from typing import Any

from PIL import Image

from app.providers.catalog import Catalog
from tests.support.gateway import Stack, TenantHandle
from tests.support.images import RED, solid_png

PATH = "/api/v1/generate-image"
MODEL = "automatic1111/sd-xl"
_model = Catalog.load().get(MODEL)
assert _model is not None
PRICE = _model.price
EMULATOR = "/emulators/automatic1111/_emulator"


async def _calls(stack: Stack) -> list[dict[str, Any]]:
    async with stack.control_client() as control:
        response = await control.get(f"{EMULATOR}/automatic1111/calls")
        response.raise_for_status()
        calls: list[dict[str, Any]] = response.json()
        return calls


async def _generate(stack: Stack, tenant: TenantHandle, **body: Any) -> Any:
    async with stack.client() as client:
        response = await client.post(PATH, json={"model": MODEL, **body}, headers=tenant.auth)
        if response.status_code != 200:
            return response
        (image,) = response.json()["images"]
        fetched = await client.get(image["url"])
        return response, Image.open(io.BytesIO(fetched.content))


async def test_a_16_9_photograph_is_an_exact_webp_at_the_price(embedded_stack: Stack) -> None:
    tenant = await embedded_stack.new_tenant(credits=3 * PRICE)
    response, image = await _generate(
        embedded_stack,
        tenant,
        prompt="a harbour at dawn",
        aspectRatio="16:9",
        stylePreset="photographic",
    )
    assert image.format == "WEBP"
    assert Fraction(*image.size) == Fraction(16, 9)
    assert response.json()["images"][0]["model"] == MODEL
    assert await embedded_stack.balance(tenant) == 2 * PRICE
    call = (await _calls(embedded_stack))[-1]
    assert call["endpoint"] == "txt2img"
    assert "a harbour at dawn" in call["prompt"] and "photograph" in call["prompt"]
    assert "cartoon" in call["negative_prompt"]  # the preset's negative reached the web UI
    assert (call["width"], call["height"]) == (1344, 768)
    assert (call["steps"], call["sampler_name"], call["cfg_scale"]) == (25, "DPM++ 2M", 7.0)
    assert call["sd_model_checkpoint"] == "sd_xl_base_1.0"
    assert (await embedded_stack.audit(tenant)).ok


async def test_a_source_image_goes_to_img2img(embedded_stack: Stack) -> None:
    tenant = await embedded_stack.new_tenant(credits=PRICE)
    source = "data:image/png;base64," + base64.b64encode(solid_png(RED)).decode()
    _, image = await _generate(
        embedded_stack, tenant, prompt="repaint it", aspectRatio="3:4", sourceImage=source
    )
    assert Fraction(*image.size) == Fraction(3, 4)
    call = (await _calls(embedded_stack))[-1]
    assert (call["endpoint"], call["init_images"], call["denoising_strength"]) == (
        "img2img",
        1,
        0.75,
    )
    assert call["negative_prompt"] == ""  # no preset, nothing excluded
    assert await embedded_stack.balance(tenant) == 0


async def test_out_of_memory_is_retried_then_refunded(embedded_stack: Stack) -> None:
    tenant = await embedded_stack.new_tenant(credits=PRICE)
    async with embedded_stack.control_client() as control:
        await control.delete(f"{EMULATOR}/state")
        faults = [{"kind": "error", "status": 500, "count": 100}]
        (await control.post(f"{EMULATOR}/faults", json={"faults": faults})).raise_for_status()
    try:
        response = await _generate(embedded_stack, tenant, prompt="too big")
        async with embedded_stack.control_client() as control:
            state = (await control.get(f"{EMULATOR}/state")).json()
    finally:
        async with embedded_stack.control_client() as control:
            await control.delete(f"{EMULATOR}/state")
    assert response.status_code == 500, response.text
    assert "refunded" in response.json()["error"]
    assert state["calls"] == embedded_stack.settings.upstream_max_attempts
    assert await embedded_stack.balance(tenant) == PRICE
