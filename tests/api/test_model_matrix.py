"""Every catalog model honours every contract ratio, text-to-image and image-to-image,
through the real SDKs against the emulators (embedded stack)."""

from __future__ import annotations

import base64
import hashlib
import io
from fractions import Fraction

import pytest
from PIL import Image

from app.imaging.aspect import CONTRACT_RATIOS
from app.providers.catalog import Catalog
from tests.support.gateway import Stack

CATALOG = Catalog.load()


def _source() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), "teal").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("mode", ["text", "image"])
@pytest.mark.parametrize("model", CATALOG.ids)
async def test_every_model_every_ratio(embedded_stack: Stack, model: str, mode: str) -> None:
    catalog_model = CATALOG.get(model)
    assert catalog_model is not None
    tenant = await embedded_stack.new_tenant(credits=catalog_model.price * len(CONTRACT_RATIOS))
    async with embedded_stack.client() as client:
        for ratio in CONTRACT_RATIOS:
            body = {"prompt": f"{model} {ratio}", "model": model, "aspectRatio": ratio}
            if mode == "image":
                body["sourceImage"] = _source()
            response = await client.post("/api/v1/generate-image", json=body, headers=tenant.auth)
            assert response.status_code == 200, (ratio, response.text)
            (image,) = response.json()["images"]
            assert image["model"] == model  # served by the model asked for, no fallback
            fetched = await client.get(image["url"])
            decoded = Image.open(io.BytesIO(fetched.content))
            assert decoded.format == "WEBP", ratio
            want_w, want_h = (int(part) for part in ratio.split(":"))
            assert Fraction(*decoded.size) == Fraction(want_w, want_h), (ratio, decoded.size)
            assert decoded.size == (image["width"], image["height"])
    assert await embedded_stack.balance(tenant) == 0


async def test_native_webp_is_stored_without_reencoding(embedded_stack: Stack) -> None:
    """gpt-image answers WebP at 1:1 natively: the stored bytes are the upstream's (the
    emulator draws a new picture per call, and lists what it served)."""
    tenant = await embedded_stack.new_tenant(credits=100)
    async with embedded_stack.client() as client:
        response = await client.post(
            "/api/v1/generate-image",
            json={"prompt": "pass me through", "model": "openai/gpt-image-1"},
            headers=tenant.auth,
        )
        assert response.status_code == 200, response.text
        stored = (await client.get(response.json()["images"][0]["url"])).content
    async with embedded_stack.control_client() as control:
        served = (await control.get("/emulators/openai/_emulator/openai/served")).json()
    assert stored[:4] == b"RIFF"
    assert hashlib.sha256(stored).hexdigest() in served["sha256"]
