"""Several reference images (`sourceImages`) on POST /api/v1/generate-image, over real HTTP
against the emulated providers: sync, async and with an Idempotency-Key."""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import func, select

from app.db.models import Generation, Job
from app.storage.base import ObjectNotFound
from app.storage.factory import create_image_store
from app.storage.keys import job_source_key
from tests.support.gateway import Stack, TenantHandle
from tests.support.images import (
    BLUE,
    GREEN,
    RED,
    band_channels,
    band_colours,
    png_header_only,
    solid_png,
)

PATH = "/api/v1/generate-image"
PRICE = 4  # google/gemini-2.5-flash-image, which takes at most 3 references
FLASH_31 = "google/gemini-3.1-flash-image-preview"  # 14 references; falls back to 2.5 (3)


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


RGB = [data_url(solid_png(colour)) for colour in (RED, GREEN, BLUE)]


async def _post(
    stack: Stack, tenant: TenantHandle, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    body.setdefault("prompt", "combine these into one picture")
    async with stack.client() as client:
        return await client.post(PATH, json=body, headers={**tenant.auth, **(headers or {})})


async def _picture(url: str) -> Image.Image:
    async with httpx.AsyncClient(timeout=30) as client:
        fetched = await client.get(url)
    assert fetched.status_code == 200
    return Image.open(io.BytesIO(fetched.content))


async def _generations(stack: Stack, tenant: TenantHandle) -> int:
    async with stack.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Generation).where(Generation.tenant_id == tenant.id)
        )
    return int(count or 0)


async def test_three_references_on_gemini_reach_the_upstream_and_bill_once(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    response = await _post(stack, tenant, sourceImages=RGB, aspectRatio="16:9")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["creditsCharged"] == PRICE
    assert await stack.balance(tenant) == 100 - PRICE
    assert await _generations(stack, tenant) == 1
    # The emulator draws each inline image it received in its own band, in order.
    picture = await _picture(body["images"][0]["url"])
    assert picture.format == "WEBP"
    assert band_colours(picture, 3) == [RED, GREEN, BLUE]
    async with stack.sessions() as session:
        row = await session.get(Generation, body["id"])
    assert row is not None and row.image_to_image
    assert (await stack.audit(tenant)).ok


@pytest.mark.parametrize("model", ["openai/gpt-image-1", "openai/gpt-5-nano"])
async def test_three_references_reach_openai_edits_and_responses(stack: Stack, model: str) -> None:
    tenant = await stack.new_tenant(credits=100)
    response = await _post(stack, tenant, model=model, sourceImages=RGB, aspectRatio="16:9")
    assert response.status_code == 200, response.text
    picture = await _picture(response.json()["images"][0]["url"])
    assert band_colours(picture, 3) == [RED, GREEN, BLUE]


@pytest.mark.parametrize(("size", "price"), [("1K", 3), ("2K", 8)])
async def test_three_references_on_flux_2_are_one_exact_webp_at_the_sizes_price(
    stack: Stack, size: str, price: int
) -> None:
    """FLUX.2 takes up to 8 references (input_image, input_image_2, ...): the emulator
    fills one band per reference it received, in order."""
    tenant = await stack.new_tenant(credits=100)
    response = await _post(
        stack, tenant, model="bfl/flux-2-pro", sourceImages=RGB, aspectRatio="16:9", imageSize=size
    )
    assert response.status_code == 200, response.text
    assert response.json()["creditsCharged"] == price
    picture = await _picture(response.json()["images"][0]["url"])
    assert picture.format == "WEBP" and picture.width * 9 == picture.height * 16
    assert band_channels(picture, 3) == ["R", "G", "B"]
    assert await stack.balance(tenant) == 100 - price
    assert (await stack.audit(tenant)).ok


async def test_a_single_reference_model_names_its_limit(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    response = await _post(stack, tenant, model="bfl/flux-kontext-pro", sourceImages=RGB[:2])
    assert response.status_code == 400, response.text
    assert response.json()["error"] == (
        "sourceImages has 2 images; model bfl/flux-kontext-pro takes at most 1"
    )
    assert response.json()["field"] == "sourceImages"


async def test_one_entry_in_source_images_works_like_source_image(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    response = await _post(stack, tenant, sourceImages=[RGB[2]], aspectRatio="16:9")
    assert response.status_code == 200, response.text
    picture = await _picture(response.json()["images"][0]["url"])
    assert band_colours(picture, 3) == [BLUE, BLUE, BLUE]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"sourceImage": RGB[0], "sourceImages": RGB[1:]}, ["sourceImages", "sourceImage "]),
        ({"sourceImages": []}, ["sourceImages", "empty"]),
        ({"sourceImages": RGB[0]}, ["sourceImages", "array"]),
        ({"sourceImages": [*RGB, RGB[0]]}, ["sourceImages", "at most 3", "has 4"]),
        ({"sourceImages": [RGB[0], 7]}, ["sourceImages[1]", "string"]),
        ({"sourceImages": [RGB[0], "data:image/png;base64,@@@@"]}, ["sourceImages[1]", "base64"]),
        ({"sourceImages": [RGB[0], "https://example.com/a.png"]}, ["sourceImages[1]"]),
        # Over the pixel bound: found when the header is read, in the service.
        (
            {"sourceImages": [RGB[0], RGB[1], data_url(png_header_only(9000, 9000))]},
            ["sourceImages[2]", "pixels"],
        ),
    ],
    ids=["both", "empty", "not-array", "over-limit", "not-string", "base64", "url", "pixels"],
)
async def test_bad_source_images_are_400_naming_the_field(
    stack: Stack, body: dict[str, Any], message: list[str]
) -> None:
    tenant = await stack.new_tenant(credits=100)
    response = await _post(stack, tenant, **body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == "invalid_request"
    for part in message:
        assert part in error["error"], error
    assert error["field"] == message[0]
    assert await stack.balance(tenant) == 100
    assert await _generations(stack, tenant) == 0


async def test_a_fallback_that_takes_fewer_references_is_not_used(stack: Stack) -> None:
    """3.1 Flash (14 references) falls back to 2.5 Flash (3): with 4 references the
    fallback cannot serve, so a failing 3.1 fails the request (refunded); with 3 it serves."""
    tenant = await stack.new_tenant(credits=100)

    async def while_31_fails(sources: list[str]) -> httpx.Response:
        # Every attempt 3.1 gets fails; the fallback's call (if any) is the next one.
        attempts = stack.settings.upstream_max_attempts
        await stack.set_faults({"kind": "error", "status": 503, "count": attempts})
        try:
            return await _post(stack, tenant, model=FLASH_31, sourceImages=sources)
        finally:
            await stack.set_faults()

    refused = await while_31_fails([*RGB, data_url(solid_png((200, 200, 20)))])
    assert refused.status_code == 500, refused.text
    assert await stack.balance(tenant) == 100
    served = await while_31_fails(RGB)
    assert served.status_code == 200, served.text
    assert served.json()["images"][0]["model"] == "google/gemini-2.5-flash-image"
    assert await stack.balance(tenant) == 100 - PRICE
    assert (await stack.audit(tenant)).ok


async def test_async_job_with_three_references_completes_and_cleans_up(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    submitted = await _post(
        stack, tenant, {"Prefer": "respond-async"}, sourceImages=RGB, aspectRatio="16:9"
    )
    assert submitted.status_code == 202, submitted.text
    done = await stack.wait_for_job(tenant, submitted.headers["location"])
    assert done["status"] == "succeeded", done
    picture = await _picture(done["images"][0]["url"])
    assert band_colours(picture, 3) == [RED, GREEN, BLUE]
    assert await stack.balance(tenant) == 100 - PRICE
    async with stack.sessions() as session:
        job = await session.get(Job, submitted.json()["id"])
    assert job is not None
    assert "base64" not in job.request_json and "sourceImages" not in job.request_json
    store = create_image_store(stack.settings)
    try:
        for index in range(3):
            with pytest.raises(ObjectNotFound):
                await store.get(job_source_key(tenant.id, job.id, index))
    finally:
        await store.aclose()


async def test_idempotent_replay_needs_the_same_references(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await _post(stack, tenant, key, sourceImages=RGB)
    again = await _post(stack, tenant, key, sourceImages=RGB)
    # Only the last reference differs.
    other = await _post(stack, tenant, key, sourceImages=[*RGB[:2], RGB[0]])
    assert first.status_code == again.status_code == 200, first.text
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409, other.text
    assert other.json()["code"] == "idempotency_conflict"
    assert await stack.balance(tenant) == 100 - PRICE
    assert await _generations(stack, tenant) == 1


async def test_async_idempotent_retry_with_other_references_is_a_conflict(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    headers = {"Idempotency-Key": str(uuid.uuid4()), "Prefer": "respond-async"}
    first = await _post(stack, tenant, headers, sourceImages=RGB)
    other = await _post(stack, tenant, headers, sourceImages=RGB[::-1])
    assert first.status_code == 202, first.text
    assert other.status_code == 409, other.text
    done = await stack.wait_for_job(tenant, first.headers["location"])
    assert done["status"] == "succeeded"
    assert await stack.balance(tenant) == 100 - PRICE


async def test_the_models_listing_shows_each_reference_limit(stack: Stack) -> None:
    async with stack.client() as client:
        listing = await client.get("/api/v1/models")
    limits = {model["id"]: model["maxReferenceImages"] for model in listing.json()["models"]}
    assert limits["google/gemini-2.5-flash-image"] == 3
    assert limits[FLASH_31] == 14
    assert limits["openai/gpt-image-1"] == 16
    assert limits["bfl/flux-kontext-pro"] == 1
