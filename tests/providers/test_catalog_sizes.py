"""The catalog's sizes and per-size prices: validated when it loads, priced per size."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.providers.catalog import Catalog, CatalogModel

BASE: dict[str, Any] = {
    "id": "x/model",
    "adapter": "gemini",
    "upstream_model": "m",
    "price": 10,
    "native_aspect_ratios": ["1:1"],
}


def test_without_sizes_a_model_offers_1k_at_its_price() -> None:
    model = CatalogModel.model_validate(BASE)
    assert model.sizes == ("1K",)
    assert model.price_for("1K") == 10 and model.size_prices == {"1K": 10}


def test_sizes_come_smallest_first_and_1k_costs_the_price() -> None:
    sizes = {"sizes": ["4K", "1K", "512"], "prices": {"4K": 30, "512": 6}}
    model = CatalogModel.model_validate({**BASE, **sizes})
    assert model.sizes == ("512", "1K", "4K")
    assert model.size_prices == {"512": 6, "1K": 10, "4K": 30}


@pytest.mark.parametrize(
    "extra",
    [
        {"sizes": ["2K"]},  # no 1K, the default
        {"sizes": ["1K", "8K"]},
        {"sizes": ["1K", "1K"]},
        {"sizes": ["1K"], "prices": {"2K": 20}},  # a price for a size not offered
        {"sizes": ["1K", "2K"], "prices": {"2K": -1}},
        {"prices": {"1K": 11}},  # disagrees with price
        {"sizes": ["1K", "4K"]},  # 4K would be billed at the 1K price
    ],
)
def test_inconsistent_sizes_or_prices_are_refused(extra: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CatalogModel.model_validate({**BASE, **extra})


def test_packaged_catalog_prices_4k_like_the_upstreams() -> None:
    catalog = Catalog.load()
    pro = catalog.get("google/gemini-3-pro-image")
    assert pro is not None
    # Google: $0.134 at 1K and 2K, $0.24 at 4K.
    assert pro.size_prices == {"1K": 13, "2K": 13, "4K": 24}
    assert {model.id for model in catalog if "4K" in model.sizes} == {
        "google/gemini-3-pro-image",
        "google/gemini-3.1-flash-image-preview",
        "openai/gpt-image-2",
    }
    assert hash(pro) == hash(pro.id)  # frozen, hashable despite its prices dict
