"""What a request reserves (app.generation.pricing): price x numImages, for the dearest
model that may serve it."""

from __future__ import annotations

import pytest

from app.generation.pricing import required_credits
from app.generation.request import parse_generate_request
from app.providers.catalog import Catalog

CATALOG = Catalog.load()
MAX_SOURCE = 1024 * 1024


@pytest.mark.parametrize("num_images", [1, 2, 4])
def test_requested_model_price_times_images(num_images: int) -> None:
    request = parse_generate_request(
        {"prompt": "a fox", "model": "openai/gpt-image-1", "numImages": num_images},
        CATALOG,
        max_source_bytes=MAX_SOURCE,
    )
    assert request.model.price == 10
    assert required_credits(request) == 10 * num_images


def test_dearest_model_of_the_chain_counts() -> None:
    request = parse_generate_request(
        {"prompt": "a fox", "model": "google/gemini-2.5-flash-image", "numImages": 3},
        CATALOG,
        max_source_bytes=MAX_SOURCE,
    )
    dearer = CATALOG.get("google/gemini-3-pro-image")
    assert dearer is not None and dearer.price == 13
    assert required_credits(request, (request.model, dearer)) == 13 * 3
    # The chain the catalog gives: a model and its cheaper fallback hold the model's price.
    preview = parse_generate_request(
        {"prompt": "a fox", "model": "google/gemini-3.1-flash-image-preview", "numImages": 2},
        CATALOG,
        max_source_bytes=MAX_SOURCE,
    )
    assert required_credits(preview, CATALOG.chain(preview.model)) == 5 * 2


def test_empty_chain_means_the_requested_model() -> None:
    request = parse_generate_request(
        {"prompt": "a fox", "model": "bfl/flux-kontext-pro"}, CATALOG, max_source_bytes=MAX_SOURCE
    )
    assert required_credits(request, ()) == 5


@pytest.mark.parametrize(("size", "price"), [("1K", 13), ("2K", 13), ("4K", 24)])
def test_the_price_of_the_size_asked(size: str, price: int) -> None:
    request = parse_generate_request(
        {"prompt": "fox", "model": "google/gemini-3-pro-image", "imageSize": size, "numImages": 2},
        CATALOG,
        max_source_bytes=MAX_SOURCE,
    )
    assert request.image_size == size
    assert required_credits(request) == price * 2
