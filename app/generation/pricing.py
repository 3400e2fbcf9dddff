"""What a generate request reserves: one function, so the sync hold, the async job's
pre-check and any other route agree on the number."""

from __future__ import annotations

from collections.abc import Sequence

from app.generation.request import GenerateRequest
from app.providers.catalog import CatalogModel


def required_credits(request: GenerateRequest, chain: Sequence[CatalogModel] | None = None) -> int:
    """Credits held for `request`: the dearest model that may serve it, per image, at the
    size asked for.

    `chain` is the models that may serve (the requested one and its usable fallbacks);
    without it only the requested model counts.
    """
    models = chain if chain else (request.model,)
    return max(model.price_for(request.image_size) for model in models) * request.num_images
