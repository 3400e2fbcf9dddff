"""The operator console: one static page at /admin, its assets, and the model list it offers
when a key's models are edited.

Mounted only when IMAGEGATE_ADMIN_TOKEN is set (without one, /admin is a plain 404, like
the admin API). The page is public HTML and code; everything it shows comes from the admin
API under /admin/v1, called with the token the operator typed, kept in the tab's
sessionStorage. As on the tenant dashboard: no build step, no inline code, and a strict
Content-Security-Policy (nothing but this origin, not even images from the object store).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from fastapi import APIRouter, Depends, Security
from fastapi.responses import Response

from app.api.admin import require_admin
from app.api.deps import CatalogDep, GenerationDep
from app.api.models import catalog_listing
from app.api.schemas.common import ADMIN_TOKEN, error_responses
from app.api.schemas.native import Models
from app.dashboard.routes import ASSET, MEDIA_TYPES, security_headers
from app.errors import NotFound

PAGE = "/admin"
STATIC = "/admin/static"
# The dashboard's styles are reused (/dashboard/static), so they are 'self' as well.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = security_headers(CONTENT_SECURITY_POLICY)

# The HTML and assets: not part of the API, so not in /openapi.json.
router = APIRouter(include_in_schema=False)
# The one JSON route: the catalog as an operator sees it (/api/v1/models wants a tenant key).
models_router = APIRouter(
    tags=["admin"],
    dependencies=[Security(ADMIN_TOKEN), Depends(require_admin)],
    responses=error_responses(400, 401, 503),
)


def _static() -> Traversable:
    return resources.files("app.console").joinpath("static")


@router.get(PAGE)
@router.get(f"{PAGE}/")
def page() -> Response:
    html = _static().joinpath("index.html").read_bytes()
    return Response(html, media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get(f"{STATIC}/{{name:path}}")
def asset(name: str) -> Response:
    match = ASSET.fullmatch(name)
    target = _static().joinpath(*name.split("/")) if match else None
    if match is None or target is None or not target.is_file():
        raise NotFound("No such console file")
    return Response(target.read_bytes(), media_type=MEDIA_TYPES[match["ext"]], headers=HEADERS)


@models_router.get("/admin/console/models", response_model=Models)
async def catalog_models(catalog: CatalogDep, generation: GenerationDep) -> dict[str, Any]:
    """Every catalog model, as GET /api/v1/models lists them, for the admin token: the
    ids a key's model list may name."""
    return catalog_listing(catalog, generation)
