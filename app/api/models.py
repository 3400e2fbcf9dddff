"""GET /api/v1/models and /api/v1/presets: what a client may ask for, with prices.

Public: the catalogue is not secret, so no key is needed and these reads never count
against a rate limit (a client's startup check must not eat a 1/min tenant's request).
A key that is sent must still be valid (the elizaOS plugin checks its key this way), and a
key limited to some models sees only those."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Security

from app.api.deps import CallerIfPresentedDep, CatalogDep, GenerationDep
from app.api.rendering import openai_model_objects
from app.api.schemas.common import API_KEY, OPTIONAL_API_KEY, error_responses
from app.api.schemas.native import Models, Presets
from app.generation.presets import DEFAULT_PRESET, all_presets
from app.generation.request import DEFAULT_MODEL
from app.generation.service import GenerationService
from app.imaging.aspect import CONTRACT_RATIOS
from app.providers.catalog import Catalog, CatalogModel
from app.tenants.service import AuthContext

router = APIRouter(tags=["catalog"], dependencies=[Security(API_KEY)])


@router.get(
    "/api/v1/models",
    response_model=Models,
    responses=error_responses(401, 429, 503),
    openapi_extra=OPTIONAL_API_KEY,
)
async def list_models(
    caller: CallerIfPresentedDep, catalog: CatalogDep, generation: GenerationDep
) -> dict[str, Any]:
    """Every catalog model. Each serves every contract aspect ratio: natively, or by
    generating the nearest native ratio and centre-cropping; `sizes` are the `imageSize`
    values it offers and `prices` the credits per image at each. `configured` is false when
    this gateway has no credentials for its provider (requests for it answer 503).
    `object` and `data` list the same models as OpenAI model objects."""
    return catalog_listing(catalog, generation, allows_for(caller))


def allows_for(caller: AuthContext | None) -> Callable[[str], bool]:
    """Which models a listing shows: all without a key, the key's own with one."""
    return caller.allows if caller is not None else lambda _model: True


def catalog_listing(
    catalog: Catalog,
    generation: GenerationService,
    allows: Callable[[str], bool] = lambda _model: True,
) -> dict[str, Any]:
    """The body of GET /api/v1/models (the operator console lists every model, app.console)."""
    models = [model for model in catalog if allows(model.id)]
    return {
        "object": "list",
        "data": openai_model_objects(models),
        "models": [
            model_summary(model, configured=generation.is_configured(model)) for model in models
        ],
        "defaultModel": DEFAULT_MODEL,
        "aspectRatios": list(CONTRACT_RATIOS),
    }


@router.get(
    "/api/v1/presets",
    response_model=Presets,
    responses=error_responses(401, 429, 503),
    openapi_extra=OPTIONAL_API_KEY,
)
async def list_presets(_caller: CallerIfPresentedDep) -> dict[str, Any]:
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
        "sizes": list(model.sizes),
        "prices": model.size_prices,
        "nativeAspectRatios": list(model.native_aspect_ratios),
        "supportedAspectRatios": list(CONTRACT_RATIOS),
        "imageToImage": model.image_to_image,
        "maxReferenceImages": model.max_reference_images,
        "configured": configured,
        "default": model.id == DEFAULT_MODEL,
    }
