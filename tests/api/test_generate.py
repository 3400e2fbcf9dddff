"""POST /api/v1/generate-image over real HTTP, on the embedded and the Postgres+S3 stack."""

from __future__ import annotations

import asyncio
import base64
import io
from fractions import Fraction
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from app.db.models import CreditHold, Generation
from app.db.models import Image as ImageRow
from app.imaging.aspect import CONTRACT_RATIOS
from tests.support.gateway import Stack, TenantHandle

PATH = "/api/v1/generate-image"
PRICE = 4  # google/gemini-2.5-flash-image in the packaged catalog


async def _generate(stack: Stack, tenant: TenantHandle, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "A futuristic cityscape at sunset, cyberpunk style")
    async with stack.client() as client:
        return await client.post(PATH, json=body, headers=tenant.auth)


async def _fetch(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url)


def _png_data_url(size: tuple[int, int] = (64, 48), colour: str = "red") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_seed_curl_example_returns_webp_url(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    response = await _generate(
        stack, tenant, model="google/gemini-2.5-flash-image", aspectRatio="16:9", numImages=1
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-imagegate-emulated"] == "true"
    body = response.json()
    assert body["numImages"] == 1
    (image,) = body["images"]
    assert set(image) >= {"url", "text", "mimeType", "fileSize"}
    assert image["mimeType"] == "image/webp"
    assert body["creditsCharged"] == PRICE
    assert body["creditsRemaining"] == 100 - PRICE
    fetched = await _fetch(image["url"])
    assert fetched.status_code == 200
    assert len(fetched.content) == image["fileSize"]
    decoded = Image.open(io.BytesIO(fetched.content))
    assert decoded.format == "WEBP"
    assert decoded.size == (image["width"], image["height"])
    assert await stack.balance(tenant) == 100 - PRICE
    assert (await stack.audit(tenant)).ok


@pytest.mark.parametrize("ratio", CONTRACT_RATIOS)
async def test_every_ratio_gives_webp_of_exactly_that_ratio(stack: Stack, ratio: str) -> None:
    tenant = await stack.new_tenant(credits=PRICE)
    response = await _generate(stack, tenant, aspectRatio=ratio)
    assert response.status_code == 200, response.text
    (image,) = response.json()["images"]
    fetched = Image.open(io.BytesIO((await _fetch(image["url"])).content))
    assert fetched.format == "WEBP"
    width, height = fetched.size
    want_w, want_h = (int(part) for part in ratio.split(":"))
    assert Fraction(width, height) == Fraction(want_w, want_h)
    assert (width, height) == (image["width"], image["height"])
    assert min(width, height) >= 500  # cropped from a ~1K native image, not a thumbnail


async def test_defaults_follow_the_seed(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=PRICE)
    response = await _generate(stack, tenant)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "google/gemini-2.5-flash-image"
    assert body["images"][0]["width"] == body["images"][0]["height"]  # 1:1
    async with stack.sessions() as session:
        row = await session.get(Generation, body["id"])
    assert row is not None
    assert (row.style_preset, row.aspect_ratio, row.num_images) == ("none", "1:1", 1)
    assert row.status == "succeeded"


async def test_image_to_image_uses_the_source(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=PRICE * 2)
    prompt = "Transform this into a watercolor painting"
    red = await _generate(stack, tenant, prompt=prompt, sourceImage=_png_data_url(colour="red"))
    blue = await _generate(stack, tenant, prompt=prompt, sourceImage=_png_data_url(colour="blue"))
    assert red.status_code == 200, red.text
    assert blue.status_code == 200, blue.text
    red_bytes = (await _fetch(red.json()["images"][0]["url"])).content
    blue_bytes = (await _fetch(blue.json()["images"][0]["url"])).content
    assert red_bytes != blue_bytes
    async with stack.sessions() as session:
        row = await session.get(Generation, red.json()["id"])
    assert row is not None and row.image_to_image


async def test_num_images_runs_parallel_calls_and_charges_each(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    response = await _generate(stack, tenant, numImages=4, stylePreset="cinematic")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["numImages"] == 4
    assert len({image["url"] for image in body["images"]}) == 4
    assert body["creditsCharged"] == 4 * PRICE
    assert await stack.balance(tenant) == 100 - 4 * PRICE
    async with stack.sessions() as session:
        rows = (
            await session.scalars(select(ImageRow).where(ImageRow.generation_id == body["id"]))
        ).all()
    assert sorted(row.index for row in rows) == [0, 1, 2, 3]
    assert all(row.storage_key.startswith(f"{tenant.id}/") for row in rows)
    assert all(row.storage_key.endswith(".webp") for row in rows)


async def test_partial_success_charges_only_delivered_images(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    await stack.set_faults({"kind": "refused", "finish_reason": "IMAGE_SAFETY", "count": 2})
    try:
        response = await _generate(stack, tenant, numImages=4)
    finally:
        await stack.set_faults()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["numImages"] == 2
    assert body["creditsCharged"] == 2 * PRICE
    assert len(body["failures"]) == 2
    assert all(f["code"] == "content_rejected" for f in body["failures"])
    assert await stack.balance(tenant) == 100 - 2 * PRICE
    async with stack.sessions() as session:
        generation = await session.get(Generation, body["id"])
        hold = await session.scalar(
            select(CreditHold).where(CreditHold.generation_id == body["id"])
        )
    assert generation is not None and generation.status == "partial"
    assert hold is not None and (hold.status, hold.captured) == ("captured", 2 * PRICE)
    assert (await stack.audit(tenant)).ok


async def test_transient_upstream_errors_are_retried(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=PRICE)
    await stack.set_faults(
        {"kind": "error", "status": 503, "count": 1},
        {"kind": "error", "status": 429, "count": 1, "retry_after": 0.01},
    )
    try:
        response = await _generate(stack, tenant)
    finally:
        await stack.set_faults()
    assert response.status_code == 200, response.text
    assert await stack.balance(tenant) == 0


async def test_upstream_failure_refunds_everything(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=50)
    await stack.set_faults({"kind": "error", "status": 500, "count": 1000})
    try:
        response = await _generate(stack, tenant, numImages=2)
    finally:
        await stack.set_faults()
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "generation_failed"
    assert "refunded" in body["error"]
    assert await stack.balance(tenant) == 50
    assert (await stack.audit(tenant)).ok


async def test_blocked_prompt_is_400_and_free(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=PRICE)
    await stack.set_faults({"kind": "blocked", "reason": "PROHIBITED_CONTENT", "count": 1})
    try:
        response = await _generate(stack, tenant)
    finally:
        await stack.set_faults()
    assert response.status_code == 400
    assert response.json()["code"] == "content_rejected"
    assert "PROHIBITED_CONTENT" in response.json()["error"]
    assert await stack.balance(tenant) == PRICE
    async with stack.sessions() as session:
        statuses = (
            await session.scalars(
                select(Generation.status).where(Generation.tenant_id == tenant.id)
            )
        ).all()
    assert statuses == ["rejected"]


async def test_insufficient_credits_is_402_and_charges_nothing(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=PRICE * 2 - 1)
    response = await _generate(stack, tenant, numImages=2)
    assert response.status_code == 402
    body = response.json()
    assert body["code"] == "insufficient_credits"
    assert (body["required"], body["available"]) == (PRICE * 2, PRICE * 2 - 1)
    # The same numbers under the names the elizaOS Cloud SDK reads.
    assert (body["requiredCredits"], body["availableCredits"]) == (PRICE * 2, PRICE * 2 - 1)
    assert str(PRICE * 2) in body["error"]
    assert await stack.balance(tenant) == PRICE * 2 - 1
    async with stack.sessions() as session:
        assert (
            await session.scalar(select(Generation.id).where(Generation.tenant_id == tenant.id))
        ) is None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer ig_" + "x" * 43},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "unknown", "wrong-scheme", "empty"],
)
async def test_missing_or_unknown_key_is_401(stack: Stack, headers: dict[str, str]) -> None:
    async with stack.client() as client:
        response = await client.post(PATH, json={"prompt": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert isinstance(response.json()["error"], str)


async def test_revoked_key_is_401(stack: Stack) -> None:
    from app.tenants.service import revoke_key

    tenant = await stack.new_tenant(credits=PRICE)
    async with stack.sessions() as session, session.begin():
        await revoke_key(session, tenant.key[:11])
    response = await _generate(stack, tenant)
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]
    assert await stack.balance(tenant) == PRICE


@pytest.mark.parametrize(
    ("body", "field", "names"),
    [
        ({}, "prompt", []),
        ({"prompt": ""}, "prompt", []),
        ({"prompt": "   \n "}, "prompt", []),
        ({"prompt": 42}, "prompt", []),
        ({"prompt": "x" * 4001}, "prompt", ["4000"]),
        ({"prompt": "bad \x00 byte"}, "prompt", ["U+0000"]),
        ({"prompt": "bidi \u202e override"}, "prompt", ["U+202E"]),
        ({"prompt": "x", "model": "google/nope"}, "model", ["google/gemini-2.5-flash-image"]),
        ({"prompt": "x", "model": 7}, "model", ["bfl/flux-kontext-max"]),
        ({"prompt": "x", "aspectRatio": "2:1"}, "aspectRatio", ["21:9", "9:21"]),
        ({"prompt": "x", "aspectRatio": "16/9"}, "aspectRatio", ["16:9"]),
        ({"prompt": "x", "numImages": 0}, "numImages", ["1 to 4"]),
        ({"prompt": "x", "numImages": 5}, "numImages", ["1 to 4"]),
        ({"prompt": "x", "numImages": 2.5}, "numImages", ["integer"]),
        ({"prompt": "x", "numImages": "2"}, "numImages", ["integer"]),
        ({"prompt": "x", "numImages": True}, "numImages", ["integer"]),
        ({"prompt": "x", "stylePreset": "vaporwave"}, "stylePreset", ["neon-punk", "origami"]),
        ({"prompt": "x", "sourceImage": 5}, "sourceImage", ["data URL"]),
        ({"prompt": "x", "sourceImage": "https://example.com/a.png"}, "sourceImage", []),
        ({"prompt": "x", "sourceImage": "data:image/png;base64,@@@"}, "sourceImage", []),
        ({"prompt": "x", "sourceImage": "data:image/png;base64,aGVsbG8="}, "sourceImage", []),
    ],
)
async def test_invalid_input_is_400_naming_the_field(
    stack: Stack, body: dict[str, Any], field: str, names: list[str]
) -> None:
    tenant = await stack.new_tenant(credits=PRICE)
    async with stack.client() as client:
        response = await client.post(PATH, json=body, headers=tenant.auth)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == "invalid_request"
    assert field in error["error"]
    for name in names:
        assert name in error["error"]
    assert await stack.balance(tenant) == PRICE


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"[1, 2]", "application/json", 400),
        (b"{not json", "application/json", 400),
        (b"prompt=x", "application/x-www-form-urlencoded", 415),
        (b"", "application/json", 400),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400),
    ],
    ids=["array", "broken", "form", "empty", "deep"],
)
async def test_malformed_bodies_are_rejected(
    stack: Stack, content: bytes, content_type: str, status: int
) -> None:
    tenant = await stack.new_tenant(credits=PRICE)
    async with stack.client() as client:
        response = await client.post(
            PATH, content=content, headers={**tenant.auth, "Content-Type": content_type}
        )
    assert response.status_code == status, response.text
    assert response.json()["error"]
    assert await stack.balance(tenant) == PRICE


async def test_oversized_body_is_413_before_anything_else(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=PRICE)
    limit = stack.settings.max_body_bytes
    async with stack.client() as client:
        response = await client.post(
            PATH,
            content=b'{"prompt": "' + b"x" * limit + b'"}',
            headers={**tenant.auth, "Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_concurrent_requests_never_overspend(postgres_stack: Stack) -> None:
    """40 requests race for credits worth 10 images: exactly 10 win, on Postgres."""
    tenant = await postgres_stack.new_tenant(credits=10 * PRICE)
    async with postgres_stack.client(timeout=120) as client:
        responses = await asyncio.gather(
            *(
                client.post(PATH, json={"prompt": f"race {i}"}, headers=tenant.auth)
                for i in range(40)
            )
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 10, statuses
    assert statuses.count(402) == 30, statuses
    assert await postgres_stack.balance(tenant) == 0
    report = await postgres_stack.audit(tenant)
    assert report.ok, report.problems


async def test_fallback_model_serves_and_bills_its_own_price(stack: Stack) -> None:
    """gemini-3.1-flash-image-preview (5 credits) falls back to 2.5-flash (4 credits)."""
    tenant = await stack.new_tenant(credits=5)
    attempts = stack.settings.upstream_max_attempts
    await stack.set_faults({"kind": "error", "status": 503, "count": attempts})
    try:
        response = await _generate(stack, tenant, model="google/gemini-3.1-flash-image-preview")
    finally:
        await stack.set_faults()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "google/gemini-3.1-flash-image-preview"
    assert body["images"][0]["model"] == "google/gemini-2.5-flash-image"
    assert body["creditsCharged"] == PRICE
    assert await stack.balance(tenant) == 5 - PRICE
    async with stack.sessions() as session:
        row = await session.scalar(select(ImageRow).where(ImageRow.generation_id == body["id"]))
    assert row is not None and row.model == "google/gemini-2.5-flash-image"
    assert (await stack.audit(tenant)).ok


async def test_rate_limit_headers_and_429_after_auth(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    await stack.set_rate_limit(tenant, per_minute=2)
    async with stack.client() as client:
        # Unauthenticated requests are refused before the limiter and do not count.
        for _ in range(3):
            anonymous = await client.post(PATH, json={"prompt": "x"})
            assert anonymous.status_code == 401
            assert "x-ratelimit-limit" not in anonymous.headers
        invalid = await client.post(PATH, json={"prompt": ""}, headers=tenant.auth)
        ok = await client.post(PATH, json={"prompt": "x"}, headers=tenant.auth)
        limited = await client.post(PATH, json={"prompt": "x"}, headers=tenant.auth)
    assert invalid.status_code == 400
    assert invalid.headers["x-ratelimit-remaining"] == "1"
    assert ok.status_code == 200
    assert (ok.headers["x-ratelimit-limit"], ok.headers["x-ratelimit-remaining"]) == ("2", "0")
    assert int(ok.headers["x-ratelimit-reset"]) > 0
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert await stack.balance(tenant) == 100 - PRICE


@pytest.mark.parametrize(
    "model", ["google/gemini-2.5-flash-image", "openai/gpt-image-1", "bfl/flux-kontext-pro"]
)
async def test_n_images_are_n_different_stored_images(stack: Stack, model: str) -> None:
    """The gateway asks once per image with the same request; a bug storing one image N
    times must show, so the emulators draw a new picture per call."""
    tenant = await stack.new_tenant(credits=100)
    response = await _generate(stack, tenant, model=model, numImages=3)
    assert response.status_code == 200, response.text
    images = response.json()["images"]
    assert len(images) == 3
    stored = [(await _fetch(image["url"])).content for image in images]
    assert all(data[:4] == b"RIFF" for data in stored)
    assert len(set(stored)) == 3
    pixels = {Image.open(io.BytesIO(data)).convert("RGB").tobytes() for data in stored}
    assert len(pixels) == 3
