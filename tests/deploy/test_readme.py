"""The README says what the code does: every packaged model with its price, and no
adapter described as missing."""

from __future__ import annotations

import re

from app.providers.catalog import Catalog
from tests.deploy.files import REPO

README = (REPO / "README.md").read_text()


def test_every_catalog_model_is_listed_with_its_sizes_prices_and_references() -> None:
    models = list(Catalog.load())
    assert len(models) >= 10
    # The Models table: "| `<id>` ... | <sizes> | <size>: <price>, ... | <references> |".
    section = README.split("Models (the packaged catalog", 1)[1].split("\n\n", 2)[1]
    listed = {}
    for row in re.findall(
        r"^\| `([a-z0-9-]+/[A-Za-z0-9.-]+)`[^|]*\|([^|]+)\|([^|]+)\|([^|]+)\|$", section, re.M
    ):
        model_id, sizes, prices, references = (cell.strip() for cell in row)
        listed[model_id] = (sizes.split(), prices, int(references))
    assert listed == {
        model.id: (
            list(model.sizes),
            ", ".join(f"{size}: {model.price_for(size)}" for size in model.sizes),
            model.max_reference_images,
        )
        for model in models
    }


def test_no_adapter_is_described_as_not_landed() -> None:
    assert "until their adapters land" not in README
