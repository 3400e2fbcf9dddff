"""The web dashboard: one static page at /dashboard and /dashboard/images, plus its assets.

No build step: plain HTML, CSS and ES modules from the package. Every response carries
a strict Content-Security-Policy (scripts and styles from this origin only, no inline
code), and the page talks to the gateway with the API key the user typed, kept in the
tab's sessionStorage.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import Response

from app.api.deps import SettingsDep
from app.errors import NotFound
from app.settings import Settings

router = APIRouter(include_in_schema=False)

ASSET = re.compile(r"^(?:[a-z0-9-]+/)?[a-z0-9-]+\.(?P<ext>js|css|svg)$")
MEDIA_TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}


def _static() -> Traversable:
    return resources.files("app.dashboard").joinpath("static")


@router.get("/dashboard")
@router.get("/dashboard/")
@router.get("/dashboard/images")
def page(settings: SettingsDep) -> Response:
    html = _static().joinpath("index.html").read_bytes()
    return Response(html, media_type="text/html; charset=utf-8", headers=_headers(settings))


@router.get("/dashboard/static/{name:path}")
def asset(name: str, settings: SettingsDep) -> Response:
    match = ASSET.fullmatch(name)
    target = _static().joinpath(*name.split("/")) if match else None
    if match is None or target is None or not target.is_file():
        raise NotFound("No such dashboard file")
    return Response(
        target.read_bytes(), media_type=MEDIA_TYPES[match["ext"]], headers=_headers(settings)
    )


def _headers(settings: Settings) -> dict[str, str]:
    return security_headers(content_security_policy(settings))


def security_headers(csp: str) -> dict[str, str]:
    """The headers of every page and asset (the operator console's too, app.console)."""
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
        # Revalidate each time: a new gateway version's assets apply at once.
        "Cache-Control": "no-cache",
    }


def content_security_policy(settings: Settings) -> str:
    """Same-origin code only. Images may also come from the object store's own origin
    (presigned S3 URLs or a CDN), from data: (the source-image preview) and blob:."""
    image_sources = ["'self'", "data:", "blob:", *image_origins(settings)]
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(image_sources)}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def image_origins(settings: Settings) -> list[str]:
    if settings.public_base_url:
        return [_origin(settings.public_base_url)]
    if settings.s3_bucket:
        if settings.s3_endpoint_url:
            return [_origin(settings.s3_endpoint_url)]
        # Presigned AWS URLs: virtual-hosted (bucket.s3.region...) or path style.
        return ["https://*.amazonaws.com"]
    return []


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
