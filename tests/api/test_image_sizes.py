"""imageSize over HTTP: a 4K exact-ratio WebP billed at the 4K price, the hold priced per
size, a 400 naming what a model offers, /v1 sizes served at the right upstream size, and a
FLUX.2 edit from several `image[]` references."""

from __future__ import annotations

import base64
import io
from fractions import Fraction
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from sqlalchemy import select

from app.db.models import CreditHold
from app.emulators.gemini import NATIVE_SIZES
from tests.support.gateway import Stack
from tests.support.images import BLUE, GREEN, RED, band_channels, solid_png

PATH = "/api/v1/generate-image"
PRO = "google/gemini-3-pro-image"
STATE = "/emulators/gemini/_emulator/state"
ASYNC = {"Prefer": "respond-async"}


async def _generate(stack: Stack, key: str, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "a lighthouse at dawn")
    async with stack.client(timeout=120) as client:
        return await client.post(PATH, json=body, headers={"Authorization": f"Bearer {key}"})


async def _hold(stack: Stack, generation_id: str) -> CreditHold:
    async with stack.sessions() as session:
        hold = await session.scalar(
            select(CreditHold).where(CreditHold.generation_id == generation_id)
        )
    assert hold is not None
    return hold


async def test_4k_16_9_from_gemini_3_pro_is_an_exact_webp_at_the_4k_price(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    response = await _generate(stack, tenant.key, model=PRO, aspectRatio="16:9", imageSize="4K")
    assert response.status_code == 200, response.text
    body = response.json()
    (image,) = body["images"]
    async with httpx.AsyncClient(timeout=60) as http:
        fetched = Image.open(io.BytesIO((await http.get(image["url"])).content))
    assert fetched.format == "WEBP"
    assert Fraction(*fetched.size) == Fraction(16, 9)
    native_width = NATIVE_SIZES["16:9"][0] * 4  # the emulator's 4K draw, cropped to 16:9
    assert fetched.size == (native_width, native_width * 9 // 16) == (5376, 3024)
    assert body["creditsCharged"] == 24
    assert await stack.balance(tenant) == 100 - 24
    hold = await _hold(stack, body["id"])
    assert (hold.amount, hold.status, hold.captured) == (24, "captured", 24)
    assert (await stack.audit(tenant)).ok


@pytest.mark.parametrize(
    ("model", "size", "price"),
    [
        ("google/gemini-3.1-flash-image-preview", "512", 4),
        ("google/gemini-3.1-flash-image-preview", "2K", 8),
        ("openai/gpt-image-2", "2K", 48),
        ("bfl/flux-2-pro", "2K", 8),
        ("bfl/flux-2-flex", "1K", 5),
    ],
)
async def test_the_hold_is_the_price_of_the_size_asked(
    stack: Stack, model: str, size: str, price: int
) -> None:
    tenant = await stack.new_tenant(credits=2 * price)
    response = await _generate(stack, tenant.key, model=model, imageSize=size, numImages=2)
    assert response.status_code == 200, response.text
    hold = await _hold(stack, response.json()["id"])
    assert (hold.amount, hold.captured) == (2 * price, 2 * price)
    assert await stack.balance(tenant) == 0
    # One credit short of the size's price is a 402 (for 2K on Gemini 3.1 Flash, FLUX.2 and
    # gpt-image-2, though the 1K price would fit), and nothing is held.
    poorer = await stack.new_tenant(credits=price - 1)
    short = await _generate(stack, poorer.key, model=model, imageSize=size)
    assert short.status_code == 402, short.text
    assert await stack.balance(poorer) == price - 1


@pytest.mark.parametrize(
    ("model", "size", "offered"),
    [
        ("google/gemini-2.5-flash-image", "2K", "1K"),
        ("google/gemini-3-pro-image", "512", "1K, 2K, 4K"),
        ("openai/gpt-image-1", "4K", "1K"),
        ("bfl/flux-2-pro", "4K", "1K, 2K"),
        ("bfl/flux-kontext-pro", "2K", "1K"),
    ],
)
async def test_a_size_the_model_lacks_is_a_400_naming_what_it_offers(
    embedded_stack: Stack, model: str, size: str, offered: str
) -> None:
    tenant = await embedded_stack.new_tenant(credits=100)
    response = await _generate(embedded_stack, tenant.key, model=model, imageSize=size)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_request"
    assert "imageSize" in body["error"] and model in body["error"]
    assert body["error"].endswith(f"it offers: {offered}")
    assert await embedded_stack.balance(tenant) == 100


@pytest.mark.parametrize("value", ["8K", "1k", 4, None])
async def test_an_unknown_size_is_a_400_listing_every_size(
    embedded_stack: Stack, value: Any
) -> None:
    tenant = await embedded_stack.new_tenant(credits=100)
    response = await _generate(embedded_stack, tenant.key, imageSize=value)
    if value is None:  # absent or null: the default 1K
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 400
    assert "imageSize" in response.json()["error"]
    assert "512, 1K, 2K, 4K" in response.json()["error"]


async def test_models_list_sizes_prices_and_reference_limits(embedded_stack: Stack) -> None:
    async with embedded_stack.client() as client:
        models = {m["id"]: m for m in (await client.get("/api/v1/models")).json()["models"]}
    pro = models[PRO]
    assert (pro["sizes"], pro["prices"], pro["price"]) == (
        ["1K", "2K", "4K"], {"1K": 13, "2K": 13, "4K": 24}, 13
    )  # fmt: skip
    assert pro["maxReferenceImages"] == 14 and pro["configured"] is True
    flash = models["google/gemini-2.5-flash-image"]
    assert (flash["sizes"], flash["prices"], flash["maxReferenceImages"]) == (["1K"], {"1K": 4}, 3)
    assert models["google/gemini-3.1-flash-image-preview"]["sizes"] == ["512", "1K", "2K", "4K"]
    assert models["bfl/flux-2-pro"]["maxReferenceImages"] == 8
    assert models["bfl/flux-kontext-pro"]["maxReferenceImages"] == 1


async def test_a_v1_size_beyond_2k_is_drawn_at_4k_and_billed_so(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = openai.AsyncOpenAI(api_key=tenant.key, base_url=f"{stack.base_url}/v1", timeout=120)
    answer = await client.images.generate(
        model=PRO, prompt="a fox", size="3840x2160", output_format="webp"
    )
    assert answer.data and answer.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json)))
    assert (image.format, image.size) == ("WEBP", (3840, 2160))
    assert await stack.balance(tenant) == 100 - 24
    # 1536x1024 is within 1K's reach: billed at 1K.
    await client.images.generate(model="openai/gpt-image-2", prompt="a fox", size="1536x1024")
    assert await stack.balance(tenant) == 100 - 24 - 12
    await client.close()


async def test_a_flux_2_edit_from_three_references_shows_each(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = openai.AsyncOpenAI(api_key=tenant.key, base_url=f"{stack.base_url}/v1", timeout=60)
    images = [(f"{i}.png", solid_png(c), "image/png") for i, c in enumerate((RED, GREEN, BLUE))]
    answer = await client.images.edit(
        model="bfl/flux-2-pro", image=images, prompt="merge them", size="1536x1024"
    )
    assert answer.data and answer.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json)))
    assert image.size == (1536, 1024)
    assert band_channels(image, 3) == ["R", "G", "B"]
    assert await stack.balance(tenant) == 100 - 3  # 1K: 1536 is within its reach
    assert (await stack.audit(tenant)).ok
    await client.close()


async def test_a_fallback_that_lacks_the_size_is_not_tried(embedded_stack: Stack) -> None:
    """Gemini 3.1 Flash falls back to 2.5 Flash, which has no 2K: a 2K request whose
    upstream stays down fails on 3.1 alone (a 1K one tries both), and is refunded."""
    tenant = await embedded_stack.new_tenant(credits=100)
    model = "google/gemini-3.1-flash-image-preview"

    async def upstream_calls(size: str) -> int:
        async with embedded_stack.control_client() as control:
            await control.delete(STATE)  # the call count back to 0
        await embedded_stack.set_faults({"kind": "error", "status": 503, "count": 10_000})
        try:
            response = await _generate(embedded_stack, tenant.key, model=model, imageSize=size)
            assert response.status_code >= 500, response.text
            async with embedded_stack.control_client() as control:
                calls: int = (await control.get(STATE)).json()["calls"]
        finally:
            await embedded_stack.set_faults()
        return calls

    at_1k, at_2k = await upstream_calls("1K"), await upstream_calls("2K")
    assert 0 < at_2k < at_1k
    assert at_1k == 2 * at_2k  # the same retries, on one model instead of two
    assert await embedded_stack.balance(tenant) == 100


async def test_an_async_job_is_prechecked_and_billed_at_its_size(embedded_stack: Stack) -> None:
    stack = embedded_stack
    model = "google/gemini-3.1-flash-image-preview"
    body = {"prompt": "a slow painting", "model": model, "imageSize": "2K", "numImages": 2}
    poorer = await stack.new_tenant(credits=15)  # 2 x 1K (5) would fit; 2 x 2K (8) does not
    async with stack.client() as client:
        short = await client.post(PATH, json=body, headers={**poorer.auth, **ASYNC})
    assert short.status_code == 402, short.text
    assert (short.json()["requiredCredits"], short.json()["availableCredits"]) == (16, 15)

    tenant = await stack.new_tenant(credits=16)
    async with stack.client() as client:
        submitted = await client.post(PATH, json=body, headers={**tenant.auth, **ASYNC})
    assert submitted.status_code == 202, submitted.text
    done = await stack.wait_for_job(tenant, submitted.headers["location"])
    assert (done["status"], done["creditsCharged"]) == ("succeeded", 16)
    assert (done["images"][0]["width"], done["images"][0]["height"]) == (2048, 2048)
    assert await stack.balance(tenant) == 0
    assert (await stack.audit(tenant)).ok
