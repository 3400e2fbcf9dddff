"""/docs: off by default; when enabled, Swagger UI from local files under a strict CSP,
checked over HTTP and in a real browser (Debian's chromium, as the dashboard tests)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from app.api.docs import CONTENT_SECURITY_POLICY
from app.main import create_app
from tests.support.gateway import Stack, gateway_settings
from tests.support.servers import serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def docs_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = gateway_settings(
        data_dir=tmp_path_factory.mktemp(f"docs-{uuid.uuid4().hex[:6]}"), docs_enabled=True
    )
    with serve_in_thread(create_app(settings)) as base_url:
        yield base_url


async def test_docs_are_off_by_default_and_the_schema_stays(embedded_stack: Stack) -> None:
    async with embedded_stack.client() as client:
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect", "/docs/assets/init.js"):
            response = await client.get(path)
            assert response.status_code == 404, path
        schema = await client.get("/openapi.json")
    assert schema.status_code == 200
    assert "/api/v1/generate-image" in schema.json()["paths"]


async def test_enabled_docs_use_only_local_assets_under_a_strict_csp(docs_gateway: str) -> None:
    async with httpx.AsyncClient(base_url=docs_gateway) as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert csp == CONTENT_SECURITY_POLICY
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'" and directives["connect-src"] == "'self'"
        assert "unsafe" not in csp and "http" not in csp
        assert "<script>" not in page.text  # no inline code
        assert "//" not in page.text.replace("<!doctype html>", "")  # nothing off-origin
        for name, media_type in (
            ("swagger-ui-bundle.js", "text/javascript"),
            ("swagger-ui.css", "text/css"),
            ("init.js", "text/javascript"),
            ("favicon.png", "image/png"),
        ):
            asset = await client.get(f"/docs/assets/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-type"].startswith(media_type)
            assert asset.headers["x-content-type-options"] == "nosniff"
        for bad in ("redoc.standalone.js", "..%2F__init__.py", "core.py"):
            assert (await client.get(f"/docs/assets/{bad}")).status_code == 404, bad
        assert (await client.get("/redoc")).status_code == 404
        assert (await client.get("/openapi.json")).status_code == 200


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is not installed; CI must run the browser tests")
        pytest.skip(f"{CHROMIUM} is not installed")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return CHROMIUM


@pytest.mark.browser
async def test_enabled_docs_render_in_a_browser_with_no_csp_violation(
    docs_gateway: str, chromium: Path
) -> None:
    from playwright.async_api import async_playwright

    origin = urlsplit(docs_gateway).netloc
    problems: list[str] = []
    requested: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page()
            page.on(
                "console",
                lambda message: problems.append(message.text) if message.type == "error" else None,
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requested.append(request.url))
            await page.goto(f"{docs_gateway}/docs")
            operation = page.locator(".opblock-summary-path", has_text="/api/v1/generate-image")
            await operation.first.wait_for(timeout=30_000)
            await page.screenshot(path=str(SCREENSHOTS / "docs.png"))
        finally:
            await browser.close()
    assert problems == [], problems  # a CSP violation is a console error
    off_origin = [url for url in requested if not url.startswith(("data:", f"http://{origin}/"))]
    assert off_origin == [], off_origin
