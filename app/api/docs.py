"""Interactive API docs at /docs, off unless IMAGEGATE_DOCS_ENABLED=true.

FastAPI's own /docs and /redoc pages load unpinned scripts from a third-party CDN and
run inline code, on the same origin as the dashboard, whose tab keeps an API key in
sessionStorage: any script on this origin can read it. This page serves Swagger UI from
the copy the installed `fastapi-offline` package ships (its files only), with the start-up
code as a file of its own, under a Content-Security-Policy that allows scripts, styles and
requests from this origin only (no inline code, no eval). There is no ReDoc page: ReDoc injects
inline styles, which this policy refuses. `/openapi.json` is served either way.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from app.errors import NotFound

router = APIRouter(include_in_schema=False)

PATH = "/docs"
CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
# The package's files this page uses, and their media types.
_ASSETS: Final = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
_INIT_JS = """\
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // The default validator badge would send the schema to a third-party service.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
  });
});
"""
_PAGE = f"""\
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>imagegate API</title>
  <link rel="icon" type="image/png" href="{PATH}/assets/favicon.png">
  <link rel="stylesheet" href="{PATH}/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{PATH}/assets/swagger-ui-bundle.js"></script>
  <script src="{PATH}/assets/init.js"></script>
</body>
</html>
"""


def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
    }


@router.get(PATH)
def page() -> HTMLResponse:
    return HTMLResponse(_PAGE, headers=_headers())


@router.get(f"{PATH}/assets/{{name}}")
def asset(name: str) -> Response:
    if name == "init.js":
        return Response(_INIT_JS, media_type="text/javascript; charset=utf-8", headers=_headers())
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound("No such docs file")
    data = resources.files("fastapi_offline").joinpath("static", name).read_bytes()
    return Response(data, media_type=media_type, headers=_headers())
