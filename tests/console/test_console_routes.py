"""The operator console over HTTP: served only with an admin token, under a strict CSP,
its assets typed, and its model list behind the admin token."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from tests.support.gateway import Stack, TenantHandle, gateway_settings
from tests.support.servers import serve_in_thread

STATIC = resources.files("app.console").joinpath("static")


def _admin_auth(stack: Stack) -> dict[str, str]:
    assert stack.settings.admin_token is not None
    return {"Authorization": f"Bearer {stack.settings.admin_token.get_secret_value()}"}


@pytest.mark.parametrize("path", ["/admin", "/admin/"])
async def test_page_is_served_with_a_strict_csp(embedded_stack: Stack, path: str) -> None:
    async with embedded_stack.client() as client:
        response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Console · imagegate</title>" in response.text
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "img-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


def test_absent_without_an_admin_token(tmp_path: Path) -> None:
    settings = gateway_settings(data_dir=tmp_path, admin_token=None)
    with serve_in_thread(create_app(settings)) as base_url, httpx.Client(base_url=base_url) as c:
        for path in ("/admin", "/admin/", "/admin/static/js/main.js", "/admin/console/models"):
            response = c.get(path, headers={"Authorization": "Bearer anything-at-all-1234567"})
            assert response.status_code == 404, (path, response.text)
            assert response.json()["code"] == "not_found"
            assert "content-security-policy" not in response.headers
        assert c.get("/dashboard").status_code == 200  # the tenant dashboard stays


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("console.css", "text/css; charset=utf-8"),
        ("js/main.js", "text/javascript; charset=utf-8"),
        ("js/api.js", "text/javascript; charset=utf-8"),
        ("js/keys.js", "text/javascript; charset=utf-8"),
        ("js/usage.js", "text/javascript; charset=utf-8"),
        ("js/ui.js", "text/javascript; charset=utf-8"),
    ],
)
async def test_assets_are_served_typed(embedded_stack: Stack, name: str, media_type: str) -> None:
    async with embedded_stack.client() as client:
        response = await client.get(f"/admin/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.content == STATIC.joinpath(*name.split("/")).read_bytes()


@pytest.mark.parametrize(
    "name", ["index.html", "nope.js", "../routes.py", "js/../../routes.py", "%2e%2e/routes.py"]
)
async def test_only_known_assets_are_served(embedded_stack: Stack, name: str) -> None:
    async with embedded_stack.client() as client:
        response = await client.get(f"/admin/static/{name}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_page_has_no_inline_code_and_loads_nothing_from_elsewhere() -> None:
    html = STATIC.joinpath("index.html").read_text("utf-8")
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)
    code = [html, *(p.read_text("utf-8") for p in STATIC.joinpath("js").iterdir())]
    # Every URL the page loads is a path on this gateway: no CDN, no other origin.
    for text in code:
        assert not re.search(r"""(?:src|href)=["']https?:""", text)
        assert not re.search(r"""from\s+["']https?:""", text)


async def test_model_list_needs_the_admin_token(embedded_stack: Stack) -> None:
    tenant: TenantHandle = await embedded_stack.new_tenant()
    async with embedded_stack.client() as client:
        anonymous = await client.get("/admin/console/models")
        as_tenant = await client.get("/admin/console/models", headers=tenant.auth)
        as_admin = await client.get("/admin/console/models", headers=_admin_auth(embedded_stack))
        for_tenant = await client.get("/api/v1/models", headers=tenant.auth)
    assert anonymous.status_code == 401 and as_tenant.status_code == 401
    assert as_admin.status_code == 200
    # The same catalog as a tenant's key sees (before any key policy narrows it).
    assert as_admin.json() == for_tenant.json()
