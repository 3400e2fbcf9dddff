"""Models, image history, credits and gallery APIs over real HTTP, on both stacks."""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.db.engine import create_engine, create_sessionmaker
from app.db.models import Generation
from app.db.models import Image as ImageRow
from app.generation.presets import PRESET_NAMES
from app.imaging.aspect import CONTRACT_RATIOS
from app.main import create_app
from app.providers.catalog import Catalog
from tests.support.gateway import Stack, TenantHandle, gateway_settings
from tests.support.servers import serve_in_thread

FLASH = "google/gemini-2.5-flash-image"  # 4 credits
PREVIEW = "google/gemini-3.1-flash-image-preview"  # 5 credits


async def _get(
    stack: Stack, tenant: TenantHandle | None, path: str, **params: Any
) -> httpx.Response:
    async with stack.client() as client:
        return await client.get(path, params=params, headers=tenant.auth if tenant else {})


async def _delete(stack: Stack, tenant: TenantHandle, path: str) -> httpx.Response:
    async with stack.client() as client:
        return await client.delete(path, headers=tenant.auth)


async def _generate(stack: Stack, tenant: TenantHandle, **body: Any) -> dict[str, Any]:
    body.setdefault("prompt", "A lighthouse on a cliff at dawn")
    async with stack.client() as client:
        response = await client.post("/api/v1/generate-image", json=body, headers=tenant.auth)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _fetch(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url)


async def _all_images(stack: Stack, tenant: TenantHandle, **params: Any) -> list[dict[str, Any]]:
    response = await _get(stack, tenant, "/api/v1/images", limit=100, **params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_models_list_the_catalog_with_prices_ratios_and_configuration(
    stack: Stack,
) -> None:
    tenant = await stack.new_tenant()
    response = await _get(stack, tenant, "/api/v1/models")
    assert response.status_code == 200, response.text
    body = response.json()
    catalog = Catalog.load()
    assert [model["id"] for model in body["models"]] == list(catalog.ids)
    assert body["defaultModel"] == FLASH
    by_id = {model["id"]: model for model in body["models"]}
    for model in catalog:
        entry = by_id[model.id]
        assert entry["provider"] == model.provider
        assert entry["price"] == model.price
        assert entry["description"] == model.description
        assert entry["nativeAspectRatios"] == list(model.native_aspect_ratios)
        assert entry["supportedAspectRatios"] == list(CONTRACT_RATIOS)
        assert entry["imageToImage"] == model.image_to_image
        assert entry["default"] == (model.id == FLASH)
    assert all(isinstance(model["configured"], bool) for model in body["models"])
    # Gemini is emulated on the test gateways (a model without an adapter: below).
    assert all(by_id[m.id]["configured"] for m in catalog if m.provider == "google")


async def test_a_model_without_an_adapter_is_listed_as_not_configured(
    tmp_path: Path,
) -> None:
    packaged = json.loads(resources.files("app.providers").joinpath("catalog.json").read_text())
    painter = {
        "id": "acme/painter",
        "adapter": "acme-painter",
        "upstream_model": "painter-1",
        "price": 2,
        "native_aspect_ratios": ["1:1"],
    }
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"models": [*packaged["models"], painter]}))
    settings = gateway_settings(data_dir=tmp_path, catalog=catalog)
    with serve_in_thread(create_app(settings)) as base_url:
        engine = create_engine(settings.resolved_database_url)
        try:
            stack = Stack("custom", settings, base_url, engine, create_sessionmaker(engine))
            tenant = await stack.new_tenant()
            response = await _get(stack, tenant, "/api/v1/models")
        finally:
            await engine.dispose()
    assert response.status_code == 200, response.text
    by_id = {model["id"]: model for model in response.json()["models"]}
    assert by_id["acme/painter"]["configured"] is False
    assert by_id["acme/painter"]["supportedAspectRatios"] == list(CONTRACT_RATIOS)
    assert by_id[FLASH]["configured"] is True


async def test_presets_have_one_line_descriptions(stack: Stack) -> None:
    tenant = await stack.new_tenant()
    response = await _get(stack, tenant, "/api/v1/presets")
    assert response.status_code == 200, response.text
    presets = response.json()["presets"]
    assert [preset["id"] for preset in presets] == list(PRESET_NAMES)
    assert all(preset["description"] and "\n" not in preset["description"] for preset in presets)
    assert response.json()["defaultPreset"] == "none"


@pytest.mark.parametrize("path", ["/api/v1/images", "/api/v1/credits", "/api/v1/credits/balance"])
async def test_history_apis_need_a_key(stack: Stack, path: str) -> None:
    response = await _get(stack, None, path)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_images_newest_first_with_cursor_and_offset_pages(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    first = await _generate(stack, tenant, numImages=2)
    second = await _generate(stack, tenant, model=PREVIEW)
    third = await _generate(stack, tenant, numImages=2, aspectRatio="9:16")
    expected_generations = [third["id"], third["id"], second["id"], first["id"], first["id"]]

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = await _get(stack, tenant, "/api/v1/images", **params)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        assert len(page["items"]) <= 2
        seen.extend(page["items"])
        assert page["hasMore"] == (page["nextCursor"] is not None)
        if not page["hasMore"]:
            break
        cursor = page["nextCursor"]
    assert pages == 3
    assert [item["generationId"] for item in seen] == expected_generations
    assert len({item["id"] for item in seen}) == 5
    created = [datetime.fromisoformat(item["createdAt"]) for item in seen]
    assert created == sorted(created, reverse=True)

    by_offset: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = await _get(stack, tenant, "/api/v1/images", limit=2, offset=offset)
        assert response.status_code == 200, response.text
        page = response.json()
        by_offset.extend(page["items"])
        if not page["hasMore"]:
            assert page["nextOffset"] is None
            break
        assert page["nextOffset"] == offset + 2
        offset = page["nextOffset"]
    assert [item["id"] for item in by_offset] == [item["id"] for item in seen]


async def test_image_items_describe_the_request_and_carry_fresh_urls(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    result = await _generate(
        stack, tenant, prompt="A red fox in snow", aspectRatio="16:9", stylePreset="cinematic"
    )
    (item,) = await _all_images(stack, tenant)
    assert item["generationId"] == result["id"]
    assert item["prompt"] == "A red fox in snow"
    assert (item["stylePreset"], item["aspectRatio"], item["model"]) == ("cinematic", "16:9", FLASH)
    assert item["mimeType"] == "image/webp"
    assert (item["width"], item["height"]) == (
        result["images"][0]["width"],
        result["images"][0]["height"],
    )
    assert item["width"] * 9 == item["height"] * 16
    assert item["createdAt"].endswith("Z")
    fetched = await _fetch(item["url"])
    assert fetched.status_code == 200
    assert len(fetched.content) == item["fileSize"]

    one = await _get(stack, tenant, f"/api/v1/images/{item['id']}")
    assert one.status_code == 200, one.text
    assert {k: v for k, v in one.json().items() if k != "url"} == {
        k: v for k, v in item.items() if k != "url"
    }


async def test_images_filter_by_model(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    await _generate(stack, tenant, numImages=2)
    preview = await _generate(stack, tenant, model=PREVIEW)
    items = await _all_images(stack, tenant, model=PREVIEW)
    assert [item["generationId"] for item in items] == [preview["id"]]
    assert len(await _all_images(stack, tenant, model=FLASH)) == 2
    assert await _all_images(stack, tenant, model="google/gemini-3-pro-image") == []


async def test_another_tenants_image_is_not_found_anywhere(stack: Stack) -> None:
    owner = await stack.new_tenant(credits=100)
    other = await stack.new_tenant(credits=100)
    await _generate(stack, owner)
    (image,) = await _all_images(stack, owner)

    for response in (
        await _get(stack, other, f"/api/v1/images/{image['id']}"),
        await _delete(stack, other, f"/api/v1/images/{image['id']}"),
    ):
        assert response.status_code == 404
        assert response.json() == {"error": "Image not found", "code": "not_found"}
    assert await _all_images(stack, other) == []
    gallery = await _get(stack, other, "/api/v1/gallery")
    assert gallery.json()["items"] == []
    # The owner still has it, stored.
    assert [item["id"] for item in await _all_images(stack, owner)] == [image["id"]]
    assert (await _fetch(image["url"])).status_code == 200


async def test_delete_removes_the_object_and_keeps_the_billing_record(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    result = await _generate(stack, tenant, numImages=2)
    items = await _all_images(stack, tenant)
    doomed, kept = items[0], items[1]
    assert (await _fetch(doomed["url"])).status_code == 200

    response = await _delete(stack, tenant, f"/api/v1/images/{doomed['id']}")
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert "x-ratelimit-remaining" in response.headers

    assert (await _fetch(doomed["url"])).status_code == 404
    assert (await _fetch(kept["url"])).status_code == 200
    assert (await _get(stack, tenant, f"/api/v1/images/{doomed['id']}")).status_code == 404
    again = await _delete(stack, tenant, f"/api/v1/images/{doomed['id']}")
    assert again.status_code == 404
    assert [item["id"] for item in await _all_images(stack, tenant)] == [kept["id"]]

    async with stack.sessions() as session:
        generation = await session.get(Generation, result["id"])
        row = await session.scalar(select(ImageRow).where(ImageRow.id == doomed["id"]))
    assert generation is not None and generation.credits_charged == result["creditsCharged"] == 8
    assert row is not None and row.deleted_at is not None
    assert await stack.balance(tenant) == 92
    assert (await stack.audit(tenant)).ok


async def test_unknown_image_ids_are_404(stack: Stack) -> None:
    tenant = await stack.new_tenant()
    for image_id in ("nope", "0" * 36, "x" * 300):
        assert (await _get(stack, tenant, f"/api/v1/images/{image_id}")).status_code == 404
        assert (await _delete(stack, tenant, f"/api/v1/images/{image_id}")).status_code == 404


async def test_credits_show_balance_and_recent_entries(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=50)
    result = await _generate(stack, tenant, model=PREVIEW)
    response = await _get(stack, tenant, "/api/v1/credits")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["balance"] == 45
    kinds = [(entry["kind"], entry["amount"]) for entry in body["entries"]]
    assert kinds == [("capture", 0), ("hold", -5), ("grant", 50)]
    assert [entry["generationId"] for entry in body["entries"]] == [result["id"]] * 2 + [None]
    assert body["entries"][2]["note"] == "test grant"
    assert all(entry["createdAt"].endswith("Z") for entry in body["entries"])
    limited = await _get(stack, tenant, "/api/v1/credits", limit=1)
    assert [entry["kind"] for entry in limited.json()["entries"]] == ["capture"]


async def test_gallery_has_the_hosted_shape(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    await _generate(stack, tenant, numImages=3)
    response = await _get(stack, tenant, "/api/v1/gallery", type="image", limit=2, offset=0)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "count", "offset", "limit", "hasMore"}
    assert (body["count"], body["offset"], body["limit"], body["hasMore"]) == (2, 0, 2, True)
    assert all(item["type"] == "image" and item["url"] for item in body["items"])
    rest = (await _get(stack, tenant, "/api/v1/gallery", limit=2, offset=2)).json()
    assert (rest["count"], rest["offset"], rest["hasMore"]) == (1, 2, False)
    ids = [item["id"] for item in body["items"] + rest["items"]]
    assert ids == [item["id"] for item in await _all_images(stack, tenant)]
    videos = (await _get(stack, tenant, "/api/v1/gallery", type="video")).json()
    assert (videos["items"], videos["count"], videos["hasMore"]) == ([], 0, False)
    defaults = (await _get(stack, tenant, "/api/v1/gallery")).json()
    assert (defaults["count"], defaults["limit"], defaults["offset"]) == (3, 12, 0)


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/images", {"limit": "0"}, "limit"),
        ("/api/v1/images", {"limit": "101"}, "limit"),
        ("/api/v1/images", {"limit": "ten"}, "limit"),
        ("/api/v1/images", {"offset": "-1"}, "offset"),
        ("/api/v1/images", {"offset": "1.5"}, "offset"),
        ("/api/v1/images", {"cursor": "not-a-cursor"}, "cursor"),
        ("/api/v1/images", {"cursor": ""}, "cursor"),
        ("/api/v1/images", {"cursor": "MjAyNnwx", "offset": "0"}, "cursor"),
        ("/api/v1/images", {"model": "acme/nope"}, "model"),
        ("/api/v1/credits", {"limit": "0"}, "limit"),
        ("/api/v1/gallery", {"type": "audio"}, "type"),
        ("/api/v1/gallery", {"limit": "x"}, "limit"),
        ("/api/v1/gallery", {"offset": "999999999"}, "offset"),
    ],
)
async def test_bad_query_parameters_are_400_naming_them(
    stack: Stack, path: str, params: dict[str, str], field: str
) -> None:
    tenant = await stack.new_tenant()
    response = await _get(stack, tenant, path, **params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["error"].startswith(field) or f"{field}" in body["error"]
    assert body["field"] == field
