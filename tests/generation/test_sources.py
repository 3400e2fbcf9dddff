"""`sourceImage` / `sourceImages` parsing (app.generation.sources): the checks that need
no decoding run before any base64 is decoded, and messages name the image by index."""

from __future__ import annotations

import base64
import io
import os

import pytest
from PIL import Image

from app.errors import InvalidRequest
from app.generation.request import parse_generate_request
from app.generation.sources import parse_sources, source_field_at
from app.providers.catalog import Catalog, CatalogModel
from tests.support.images import BLUE, GREEN, RED, solid_png

CATALOG = Catalog.load()
GEMINI = CATALOG.get("google/gemini-2.5-flash-image")  # at most 3 references
TEXT_ONLY = CatalogModel(
    id="acme/text-only", adapter="gemini", upstream_model="x", price=1,
    native_aspect_ratios=("1:1",),
)  # fmt: skip
PNGS = [solid_png(colour, (16, 16)) for colour in (RED, GREEN, BLUE)]
URLS = ["data:image/png;base64," + base64.b64encode(png).decode() for png in PNGS]
MAX = 1024 * 1024


def parse(payload: dict[str, object], model: CatalogModel | None = GEMINI, **bounds: int) -> object:
    assert model is not None
    return parse_sources(
        payload, model, max_bytes=bounds.get("max_bytes", MAX), max_total=bounds.get("max_total")
    )


def test_source_images_decode_in_order_and_name_their_field() -> None:
    assert parse({"sourceImages": URLS}) == (tuple(PNGS), "sourceImages")
    assert parse({"sourceImage": URLS[1]}) == ((PNGS[1],), "sourceImage")
    assert parse({}) == ((), "sourceImage")


def test_the_request_carries_every_reference() -> None:
    request = parse_generate_request(
        {"prompt": "p", "sourceImages": URLS}, CATALOG, max_source_bytes=MAX
    )
    assert request.source_images == tuple(PNGS)
    assert request.source_field == "sourceImages"


def test_a_model_without_image_to_image_refuses_source_images() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse({"sourceImages": URLS[:1]}, TEXT_ONLY)
    assert caught.value.extra["field"] == "sourceImages"
    assert (
        caught.value.message
        == "model acme/text-only does not support image-to-image (sourceImages)"
    )


def test_the_limit_is_checked_before_anything_is_decoded() -> None:
    # The fourth entry is not even a data URL: the count refuses the request first.
    with pytest.raises(InvalidRequest) as caught:
        parse({"sourceImages": [*URLS, "not a data url"]})
    assert caught.value.message == (
        "sourceImages has 4 images; model google/gemini-2.5-flash-image takes at most 3"
    )


def test_each_image_keeps_the_single_image_bound_and_is_named_by_index() -> None:
    noise = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(noise, "PNG")
    big = noise.getvalue()
    urls = [URLS[0], "data:image/png;base64," + base64.b64encode(big).decode()]
    assert parse({"sourceImages": urls}, max_bytes=len(big))[0] == (PNGS[0], big)  # type: ignore[index]
    with pytest.raises(InvalidRequest) as caught:
        parse({"sourceImages": urls}, max_bytes=len(big) - 1)
    assert caught.value.extra["field"] == "sourceImages[1]"
    assert caught.value.message.startswith("sourceImages[1] is too large")


def test_the_total_bound_covers_all_images_together() -> None:
    total = sum(map(len, PNGS))
    assert parse({"sourceImages": URLS}, max_total=total)[0] == tuple(PNGS)  # type: ignore[index]
    with pytest.raises(InvalidRequest) as caught:
        parse({"sourceImages": URLS}, max_total=total - 1)
    assert caught.value.extra["field"] == "sourceImages"
    assert f"at most {total - 1} bytes" in caught.value.message
    # Far over the total: refused from the base64 lengths, before decoding (the bad
    # base64 of the last entry is never looked at).
    with pytest.raises(InvalidRequest) as caught:
        parse({"sourceImages": [*URLS[:2], "data:image/png;base64," + "@" * 4000]}, max_total=100)
    assert "together" in caught.value.message


def test_messages_index_several_images_only() -> None:
    assert source_field_at("sourceImages", 0, 1) == "sourceImages[0]"
    assert source_field_at("sourceImage", 0, 1) == "sourceImage"
    assert source_field_at("image", 2, 3) == "image[2]"
