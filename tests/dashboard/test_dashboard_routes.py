"""The dashboard's pages and assets over HTTP: served, typed, and under a strict CSP."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from app.dashboard.routes import content_security_policy
from tests.support.gateway import Stack, gateway_settings

STATIC = resources.files("app.dashboard").joinpath("static")


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/", "/dashboard/images"])
async def test_pages_are_served_with_a_strict_csp(embedded_stack: Stack, path: str) -> None:
    async with embedded_stack.client() as client:
        response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Images · imagegate</title>" in response.text
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self';" in csp
    assert "style-src 'self';" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("style.css", "text/css; charset=utf-8"),
        ("js/main.js", "text/javascript; charset=utf-8"),
        ("js/api.js", "text/javascript; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ],
)
async def test_assets_are_served_typed(embedded_stack: Stack, name: str, media_type: str) -> None:
    async with embedded_stack.client() as client:
        response = await client.get(f"/dashboard/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.content == STATIC.joinpath(*name.split("/")).read_bytes()


@pytest.mark.parametrize(
    "name",
    ["index.html", "nope.js", "../routes.py", "js/../../routes.py", "%2e%2e/routes.py", "a/b/c.js"],
)
async def test_only_known_assets_are_served(embedded_stack: Stack, name: str) -> None:
    async with embedded_stack.client() as client:
        response = await client.get(f"/dashboard/static/{name}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_page_has_no_inline_code() -> None:
    html = STATIC.joinpath("index.html").read_text("utf-8")
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)


def test_images_from_s3_or_a_cdn_are_allowed_by_origin() -> None:
    local = content_security_policy(gateway_settings())
    assert "img-src 'self' data: blob:;" in local
    s3 = content_security_policy(
        gateway_settings(s3_bucket="b", s3_endpoint_url="http://127.0.0.1:8333/x")
    )
    assert "img-src 'self' data: blob: http://127.0.0.1:8333;" in s3
    cdn = content_security_policy(
        gateway_settings(s3_bucket="b", public_base_url="https://cdn.example.com/images")
    )
    assert "img-src 'self' data: blob: https://cdn.example.com;" in cdn
    aws = content_security_policy(gateway_settings(s3_bucket="b"))
    assert "https://*.amazonaws.com" in aws
