"""GET /api/v1/models and /api/v1/presets: what a client may ask for, with prices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Security

from app.api.deps import AuthDep, CatalogDep, GenerationDep
from app.api.schemas.common import API_KEY, error_responses
from app.api.schemas.native import Models, Presets
from app.generation.presets import DEFAULT_PRESET, all_presets
from app.generation.request import DEFAULT_MODEL
from app.imaging.aspect import CONTRACT_RATIOS
from app.providers.catalog import CatalogModel

router = APIRouter(tags=["catalog"], dependencies=[Security(API_KEY)])


@router.get("/api/v1/models", response_model=Models, responses=error_responses(401, 429, 503))
async def list_models(
    auth: AuthDep,
    catalog: CatalogDep,
    generation: GenerationDep,
) -> dict[str, Any]:
    """Every catalog model. Each serves every contract aspect ratio: natively, or by
    generating the nearest native ratio and centre-cropping. `configured` is false when
    this gateway has no credentials for its provider (requests for it answer 503).
    A key limited to some models sees only those."""
    return catalog_listing(catalog, generation, auth.allows)


def catalog_listing(
    catalog: CatalogDep,
    generation: GenerationDep,
    allows: Callable[[str], bool] = lambda _model: True,
) -> dict[str, Any]:
    """The body of GET /api/v1/models (the operator console lists every model, app.console)."""
    return {
        "models": [
            model_summary(model, configured=generation.is_configured(model))
            for model in catalog
            if allows(model.id)
        ],
        "defaultModel": DEFAULT_MODEL,
        "aspectRatios": list(CONTRACT_RATIOS),
    }


@router.get("/api/v1/presets", response_model=Presets, responses=error_responses(401, 429, 503))
async def list_presets(
    _auth: AuthDep,
) -> dict[str, Any]:
    """The style presets, each with a one-line description."""
    return {
        "presets": [
            {"id": preset.name, "description": preset.description} for preset in all_presets()
        ],
        "defaultPreset": DEFAULT_PRESET,
    }


def model_summary(model: CatalogModel, *, configured: bool) -> dict[str, Any]:
    return {
        "id": model.id,
        "provider": model.provider,
        "description": model.description,
        "price": model.price,
        "nativeAspectRatios": list(model.native_aspect_ratios),
        "supportedAspectRatios": list(CONTRACT_RATIOS),
        "imageToImage": model.image_to_image,
        "configured": configured,
        "default": model.id == DEFAULT_MODEL,
    }
