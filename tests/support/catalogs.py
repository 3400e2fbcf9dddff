"""Catalog files for tests: the packaged catalog plus entries of the test's own."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from app.providers.catalog import Catalog


def catalog_with(directory: Path, *entries: dict[str, Any]) -> Path:
    """A catalog file in `directory`: every packaged model, then `entries` (validated)."""
    packaged = json.loads(
        resources.files("app.providers").joinpath("catalog.json").read_text("utf-8")
    )
    path = directory / "catalog.json"
    path.write_text(json.dumps({"models": [*packaged["models"], *entries]}), "utf-8")
    Catalog.load(path)  # a test's typo fails here, not as a 503 later
    return path


def self_hosted_entry(model_id: str, adapter: str, **fields: Any) -> dict[str, Any]:
    """A catalog entry for a self-hosted upstream (OpenAI's three native ratios)."""
    return {
        "id": model_id,
        "adapter": adapter,
        "upstream_model": fields.pop("upstream_model", "gpt-image-1"),
        "price": fields.pop("price", 2),
        "native_aspect_ratios": fields.pop("native_aspect_ratios", ["1:1", "3:2", "2:3"]),
        **fields,
    }
