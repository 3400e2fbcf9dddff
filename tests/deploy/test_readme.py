"""The README says what the code does: every packaged model with its price, and no
adapter described as missing."""

from __future__ import annotations

import re

from app.providers.catalog import Catalog
from tests.deploy.files import REPO

README = (REPO / "README.md").read_text()


def test_every_catalog_model_is_listed_with_its_price() -> None:
    models = list(Catalog.load())
    assert len(models) >= 10
    # The Models paragraph: "`<id>` (<price>" for each model.
    paragraph = README.split("Models (the packaged catalog", 1)[1].split("\n\n", 1)[0]
    listed = dict(re.findall(r"`([a-z0-9-]+/[a-z0-9.-]+)` \((\d+)", paragraph))
    assert listed == {model.id: str(model.price) for model in models}


def test_no_adapter_is_described_as_not_landed() -> None:
    assert "until their adapters land" not in README
