"""Dashboard → Images in a real browser: Debian's chromium driven by Playwright, against a
live gateway with emulated providers (the embedded stack).

The browser and its fixtures: tests/support/browser.py.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image as PILImage

from tests.support.browser import SCREENSHOTS
from tests.support.gateway import Stack, TenantHandle

DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
PRO = "google/gemini-3-pro-image"  # 13 credits an image

if TYPE_CHECKING:
    from playwright.async_api import Browser, FilePayload, Page, Request


class Dashboard:
    """One browser tab on the dashboard, collecting console errors (CSP violations too)."""

    def __init__(self, page: Page, stack: Stack) -> None:
        self.page = page
        self.stack = stack
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _console(self, message: Any) -> None:
        # A 402 or 404 the page handles is logged by the browser as a failed resource.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    async def open(self, path: str = "/dashboard/images") -> None:
        response = await self.page.goto(self.stack.base_url + path)
        assert response is not None and response.status == 200
        assert "script-src 'self'" in response.headers["content-security-policy"]

    async def sign_in(self, tenant: TenantHandle) -> None:
        await self.page.get_by_label("API key").fill(tenant.key)
        await self.page.get_by_role("button", name="Sign in").click()
        await self.page.locator("#workspace").wait_for(state="visible")
        await self.page.locator("#model option").first.wait_for(state="attached")

    async def balance(self) -> str:
        return (await self.page.locator("#balance").text_content() or "").strip()

    async def expect_balance(self, value: int) -> None:
        await self.page.wait_for_function(
            "v => document.querySelector('#balance').textContent.trim() === v", arg=str(value)
        )

    async def choose(
        self, *, prompt: str, model: str, ratio: str, preset: str = "none", count: int = 1
    ) -> None:
        page = self.page
        await page.get_by_label("Prompt").fill(prompt)
        await page.get_by_label("Model", exact=True).select_option(model)
        await page.locator(f"label[for='ratio-{ratio.replace(':', '-')}']").click()
        await page.get_by_label("Style preset").select_option(preset)
        await page.locator(f"label[for='count-{count}']").click()

    async def generate(self) -> None:
        await self.page.get_by_role("button", name="Generate").click()

    async def screenshot(self, name: str) -> None:
        await self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def _dashboard(
    browser: Browser, stack: Stack, viewport: dict[str, int], color_scheme: str = "dark"
) -> Dashboard:
    context = await browser.new_context(
        viewport=viewport,  # type: ignore[arg-type]
        color_scheme=color_scheme,  # type: ignore[arg-type]
    )
    return Dashboard(await context.new_page(), stack)


async def _box_ratio(page: Page, selector: str) -> float:
    box = await page.locator(selector).bounding_box()
    assert box is not None and box["height"] > 0
    return float(box["width"] / box["height"])


async def _api(stack: Stack, tenant: TenantHandle, path: str) -> httpx.Response:
    async with stack.client() as client:
        return await client.get(path, headers=tenant.auth)


@pytest.mark.browser
async def test_generate_see_reload_delete_and_run_out_of_credits(
    browser: Browser, embedded_stack: Stack
) -> None:
    stack = embedded_stack
    tenant = await stack.new_tenant(credits=30)
    dash = await _dashboard(browser, stack, DESKTOP)
    page = dash.page
    await dash.open()
    await dash.screenshot("01-sign-in")
    await dash.sign_in(tenant)
    await dash.expect_balance(30)
    assert await page.evaluate("sessionStorage.getItem('imagegate.apiKey')") == tenant.key
    assert await page.evaluate("localStorage.length") == 0

    await dash.choose(
        prompt="A lighthouse on a cliff at dawn, waves below",
        model=PRO,
        ratio="16:9",
        preset="cinematic",
    )
    assert "13 credits per image" in (await page.locator("#model-hint").text_content() or "")
    # The sizes the model offers, each priced; the cost line follows the chosen one.
    sizes = page.get_by_label("Image size")
    assert await sizes.locator("option").all_text_contents() == [
        "1K · 13 credits", "2K · 13 credits", "4K · 24 credits"
    ]  # fmt: skip
    await sizes.select_option("4K")
    assert "24 credits" in (await page.locator("#cost").text_content() or "")
    assert "24 credits per image at 4K" in (await page.locator("#model-hint").text_content() or "")
    await sizes.select_option("1K")
    assert "13 credits" in (await page.locator("#cost").text_content() or "")
    assert await page.locator("#preset-hint").text_content()
    # A slow upstream, so the progress indicator is seen.
    await stack.set_faults({"kind": "delay", "seconds": 1.5, "count": 1})
    try:
        await dash.generate()
        await page.locator("#progress").wait_for(state="visible")
        assert await page.locator("#latest-grid .placeholder").count() == 1
        await dash.screenshot("02-generating")
        image = page.locator("#latest-grid .result img")
        await image.wait_for(state="visible", timeout=30_000)
    finally:
        await stack.set_faults()
    await page.wait_for_function(
        "() => { const i = document.querySelector('#latest-grid .result img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    await page.locator("#progress").wait_for(state="hidden")
    natural = await image.evaluate("i => i.naturalWidth / i.naturalHeight")
    assert natural == pytest.approx(16 / 9, rel=0.01)
    assert await _box_ratio(page, "#latest-grid .result img") == pytest.approx(16 / 9, rel=0.02)
    await dash.expect_balance(17)
    await page.locator("#gallery .tile").first.wait_for()
    await page.mouse.move(0, 0)
    await dash.screenshot("03-generated")

    # After a reload the tab is still signed in and the image is in the gallery.
    await page.reload()
    tile = page.locator("#gallery .tile")
    await tile.first.wait_for()
    assert await tile.count() == 1
    await page.wait_for_function("() => document.querySelector('#gallery .tile img').complete")
    assert await _box_ratio(page, "#gallery .tile") == pytest.approx(16 / 9, rel=0.03)
    assert await dash.balance() == "17"
    listed = (await _api(stack, tenant, "/api/v1/images")).json()["items"]
    assert [(i["model"], i["aspectRatio"], i["stylePreset"]) for i in listed] == [
        (PRO, "16:9", "cinematic")
    ]

    # The large view: details, a download link, Escape closes it and focus returns.
    await tile.first.click()
    viewer = page.locator("#viewer")
    await viewer.wait_for(state="visible")
    assert "16:9" in (await page.locator("#viewer-meta").text_content() or "")
    download = page.locator("#viewer-download")
    assert await download.get_attribute("download") == f"imagegate-{listed[0]['id']}.webp"
    assert "/files/" in (await download.get_attribute("href") or "")
    await page.wait_for_function("() => document.querySelector('#viewer-img').complete")
    await dash.screenshot("04-viewer")
    await page.keyboard.press("Escape")
    await viewer.wait_for(state="hidden")
    assert await page.evaluate("document.activeElement.classList.contains('tile')")

    # Delete: gone from the gallery and from the API.
    await tile.first.click()
    await page.get_by_role("button", name="Delete", exact=True).click()
    await page.get_by_role("button", name="Delete image").click()
    await viewer.wait_for(state="hidden")
    await page.locator("#gallery-empty").wait_for(state="visible")
    assert await tile.count() == 0
    assert (await _api(stack, tenant, "/api/v1/images")).json()["items"] == []
    gone = await _api(stack, tenant, f"/api/v1/images/{listed[0]['id']}")
    assert gone.status_code == 404

    # Out of credits: 4 images of a 13-credit model need 52; 17 are left.
    await dash.choose(prompt="Four more lighthouses", model=PRO, ratio="1:1", count=4)
    assert "not enough" in (await page.locator("#cost").text_content() or "")
    await dash.generate()
    error = page.locator("#error")
    await error.wait_for(state="visible")
    text = await error.text_content() or ""
    assert "needs 52 credits, you have 17" in text
    assert "Nothing was charged" in text
    await dash.expect_balance(17)
    await dash.screenshot("05-insufficient-credits")
    assert await stack.balance(tenant) == 17
    assert dash.errors == []


def _png(colour: str, size: tuple[int, int] = (96, 64)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.browser
async def test_image_to_image_from_a_picked_or_dropped_file(
    browser: Browser, embedded_stack: Stack
) -> None:
    tenant = await embedded_stack.new_tenant(credits=20)
    dash = await _dashboard(browser, embedded_stack, DESKTOP)
    page = dash.page

    async def without_bfl(route: Any) -> None:
        # As a gateway without BFL credentials would answer.
        response = await route.fetch()
        body = await response.json()
        for model in body["models"]:
            model["configured"] = model["provider"] != "bfl"
        await route.fulfill(response=response, json=body)

    await page.route("**/api/v1/models", without_bfl)
    await dash.open()
    await dash.sign_in(tenant)
    bfl = page.locator("#model option[value='bfl/flux-kontext-max']")
    assert await bfl.is_disabled()
    assert "not configured" in (await bfl.text_content() or "")

    await page.locator("#source-file").set_input_files(
        {"name": "red.png", "mimeType": "image/png", "buffer": _png("red")}
    )
    preview = page.locator("#source-preview")
    await preview.wait_for(state="visible")
    assert (await preview.locator("img").get_attribute("src") or "").startswith(
        "data:image/png;base64,"
    )
    await page.get_by_role("button", name="Remove red.png").click()
    await preview.wait_for(state="hidden")

    # Drag and drop: a real drop event carrying a file.
    await page.locator("#dropzone").evaluate(
        """(zone, bytes) => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], "blue.png", {type: "image/png"}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        }""",
        list(_png("blue")),
    )
    await preview.wait_for(state="visible")
    assert await preview.locator(".source-name").all_text_contents() == ["blue.png"]
    await page.locator("#source-file").set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}
    )
    assert "PNG, JPEG or WebP" in (await page.locator("#source-error").text_content() or "")
    assert await preview.locator(".source-name").all_text_contents() == ["blue.png"]
    await dash.screenshot("06-source-image")

    await page.get_by_label("Prompt").fill("Turn this into a watercolor painting")
    await dash.generate()
    await page.locator("#latest-grid .result img").wait_for(state="visible", timeout=30_000)
    await dash.expect_balance(16)
    (item,) = (await _api(embedded_stack, tenant, "/api/v1/images")).json()["items"]
    assert item["imageToImage"] is True

    # A fresh result opens in the large view too; deleting it there clears it everywhere.
    await page.locator("#gallery .tile").first.wait_for()
    await page.locator("#latest-grid .result").click()
    await page.locator("#viewer").wait_for(state="visible")
    assert "image-to-image" in (await page.locator("#viewer-meta").text_content() or "")
    await page.get_by_role("button", name="Delete", exact=True).click()
    await page.get_by_role("button", name="Delete image").click()
    await page.locator("#latest").wait_for(state="hidden")
    assert await page.locator("#gallery .tile").count() == 0
    assert dash.errors == []


@pytest.mark.browser
async def test_several_source_images_up_to_the_models_limit(
    browser: Browser, embedded_stack: Stack
) -> None:
    dash = await _dashboard(browser, embedded_stack, DESKTOP)
    page, sent = dash.page, list[Any]()

    def record(request: Request) -> None:
        if request.url.endswith("/api/v1/generate-image"):
            sent.append(request.post_data_json)

    page.on("request", record)
    tenant = await embedded_stack.new_tenant(credits=20)
    await dash.open()
    await dash.sign_in(tenant)
    picker, preview = page.locator("#source-file"), page.locator("#source-preview")
    # Kontext takes one source image: one file at a time, a new one replaces it.
    await page.get_by_label("Model", exact=True).select_option("bfl/flux-kontext-pro")
    assert not await picker.evaluate("input => input.multiple")
    # gemini-2.5-flash-image takes three: a pick of four keeps the first three.
    await page.get_by_label("Model", exact=True).select_option("google/gemini-2.5-flash-image")
    assert await picker.evaluate("input => input.multiple")
    assert "takes up to 3" in (await page.locator("#source-hint").text_content() or "")
    files: list[FilePayload] = [
        {"name": f"{colour}.png", "mimeType": "image/png", "buffer": _png(colour)}
        for colour in ("red", "lime", "blue", "yellow")
    ]
    await picker.set_input_files(files)
    await page.wait_for_function(
        "() => document.querySelectorAll('#source-preview img').length === 3"
    )
    names = preview.locator(".source-name")
    assert await names.all_text_contents() == ["red.png", "lime.png", "blue.png"]
    assert "at most 3" in (await page.locator("#source-error").text_content() or "")
    assert await page.locator("#dropzone-label").is_hidden()  # full: no room for a fourth
    await preview.scroll_into_view_if_needed()
    await dash.screenshot("06b-source-images")
    await page.get_by_role("button", name="Remove lime.png").click()
    assert await names.all_text_contents() == ["red.png", "blue.png"]
    assert await page.locator("#dropzone-label").is_visible()

    # Kontext cannot take two: refused in the page, nothing sent.
    await page.get_by_label("Prompt").fill("Put these two side by side")
    await page.get_by_label("Model", exact=True).select_option("bfl/flux-kontext-pro")
    await dash.generate()
    await page.get_by_text("takes at most 1 source image").wait_for()
    assert sent == []

    await page.get_by_label("Model", exact=True).select_option("google/gemini-2.5-flash-image")
    await dash.generate()
    await page.locator("#latest-grid .result img").wait_for(state="visible", timeout=30_000)
    await dash.expect_balance(16)
    (body,) = sent
    assert "sourceImage" not in body
    assert [url[:22] for url in body["sourceImages"]] == ["data:image/png;base64,"] * 2
    assert body["sourceImages"][0] != body["sourceImages"][1]
    assert dash.errors == []


@pytest.mark.browser
async def test_a_wrong_key_is_refused_in_plain_words(
    browser: Browser, embedded_stack: Stack
) -> None:
    dash = await _dashboard(browser, embedded_stack, DESKTOP)
    await dash.open("/dashboard")
    await dash.page.get_by_label("API key").fill("ig_" + "x" * 43)
    await dash.page.get_by_role("button", name="Sign in").click()
    error = dash.page.locator("#signin-error")
    await error.wait_for(state="visible")
    assert "not accepted" in (await error.text_content() or "")
    assert await dash.page.evaluate("sessionStorage.length") == 0
    assert await dash.page.locator("#workspace").is_hidden()
    await dash.screenshot("07-wrong-key")


@pytest.mark.browser
async def test_rate_limit_and_revoked_key_messages(browser: Browser, embedded_stack: Stack) -> None:
    tenant = await embedded_stack.new_tenant(credits=10)
    dash = await _dashboard(browser, embedded_stack, DESKTOP)
    page = dash.page
    await dash.open()
    await dash.sign_in(tenant)
    body = '{"error": "Rate limit exceeded", "code": "rate_limited"}'

    async def too_many(route: Any) -> None:
        await route.fulfill(
            status=429, headers={"Retry-After": "17"}, body=body, content_type="application/json"
        )

    await page.route("**/api/v1/generate-image", too_many)
    await page.get_by_label("Prompt").fill("Anything")
    await dash.generate()
    await page.locator("#error").wait_for(state="visible")
    assert "Retry in 17 seconds" in (await page.locator("#error").text_content() or "")

    async def revoked(route: Any) -> None:
        await route.fulfill(
            status=401,
            body='{"error": "API key revoked", "code": "unauthorized"}',
            content_type="application/json",
        )

    await page.unroute("**/api/v1/generate-image")
    await page.route("**/api/v1/generate-image", revoked)
    await dash.generate()
    await page.locator("#signin").wait_for(state="visible")
    assert "no longer accepted" in (await page.locator("#signin-error").text_content() or "")
    assert await page.evaluate("sessionStorage.length") == 0
    assert dash.errors == []


@pytest.mark.browser
async def test_keyboard_only_generation(browser: Browser, embedded_stack: Stack) -> None:
    tenant = await embedded_stack.new_tenant(credits=10)
    dash = await _dashboard(browser, embedded_stack, DESKTOP)
    page = dash.page
    await dash.open()
    await page.get_by_label("API key").focus()
    await page.keyboard.type(tenant.key)
    await page.keyboard.press("Enter")
    await page.locator("#workspace").wait_for(state="visible")
    await page.wait_for_function("() => document.activeElement.id === 'prompt'")
    await page.keyboard.type("A paper boat on a pond")
    # Radios are one tab stop; arrows move the choice (1:1 -> 16:9 -> 9:16).
    await page.locator("#ratio-1-1").focus()
    await page.keyboard.press("ArrowRight")
    await page.keyboard.press("ArrowRight")
    assert await page.evaluate("document.activeElement.id") == "ratio-9-16"
    assert await page.locator("#ratio-9-16").is_checked()
    focus_ring = await page.evaluate(
        "getComputedStyle(document.querySelector('label[for=ratio-9-16]')).outlineStyle"
    )
    assert focus_ring == "solid"
    await page.keyboard.press("Control+Enter")
    image = page.locator("#latest-grid .result img")
    await image.wait_for(state="visible", timeout=30_000)
    await page.wait_for_function(
        "() => document.querySelector('#latest-grid .result img').naturalWidth > 0"
    )
    assert await _box_ratio(page, "#latest-grid .result img") == pytest.approx(9 / 16, rel=0.02)
    await dash.expect_balance(6)
    assert dash.errors == []


@pytest.mark.browser
async def test_phone_width(browser: Browser, embedded_stack: Stack) -> None:
    tenant = await embedded_stack.new_tenant(credits=40)
    dash = await _dashboard(browser, embedded_stack, PHONE, color_scheme="light")
    page = dash.page
    await dash.open()
    await page.screenshot(path=str(SCREENSHOTS / "08-phone-sign-in.png"))
    await dash.sign_in(tenant)
    await dash.choose(prompt="A koi fish, top view", model=PRO, ratio="9:16", preset="origami")
    await page.screenshot(path=str(SCREENSHOTS / "09-phone-form.png"))
    await dash.generate()
    await page.wait_for_function(
        "() => { const i = document.querySelector('#latest-grid .result img');"
        " return i && i.complete && i.naturalWidth > 0; }",
        timeout=30_000,
    )
    await page.locator("#gallery .tile").first.wait_for()
    await page.wait_for_function("() => document.querySelector('#gallery .tile img').complete")
    assert await _box_ratio(page, "#latest-grid .result img") == pytest.approx(9 / 16, rel=0.02)
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, "the page scrolls sideways at phone width"
    # The results sit below the form on a phone: the page scrolls them into view.
    await page.wait_for_function(
        "() => { const r = document.querySelector('#latest').getBoundingClientRect();"
        " return r.top >= 0 && r.top < innerHeight / 2; }"
    )
    await page.locator("#toast").wait_for(state="hidden")
    await page.screenshot(path=str(SCREENSHOTS / "10-phone-generated.png"))
    await page.locator("#gallery .tile").first.click()
    await page.locator("#viewer").wait_for(state="visible")
    await page.wait_for_function("() => document.querySelector('#viewer-img').complete")
    await page.screenshot(path=str(SCREENSHOTS / "11-phone-viewer.png"))
    await page.keyboard.press("Escape")
    await page.locator("#viewer").wait_for(state="hidden")
    assert dash.errors == []


def test_screenshot_directory_is_ignored_by_git() -> None:
    gitignore = (Path(__file__).resolve().parents[2] / ".gitignore").read_text()
    assert re.search(r"^/?artifacts/?$", gitignore, re.M)
