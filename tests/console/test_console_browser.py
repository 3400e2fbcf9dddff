"""The operator console in a real browser (tests/support/browser.py), against a live
gateway with emulated providers: an operator signs in with the admin token, creates a
tenant, grants credits and manages keys while the test spends with those keys over HTTP."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from app.api.admin import CSV_COLUMNS
from tests.support.browser import SCREENSHOTS
from tests.support.gateway import Stack

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 375, "height": 812}
MINI = "openai/gpt-image-1-mini"  # 3 credits an image
FLASH = "google/gemini-2.5-flash-image"  # 4 credits an image


class Console:
    """One browser tab on the console, collecting console errors (CSP violations too)."""

    def __init__(self, page: Page, stack: Stack) -> None:
        self.page = page
        self.stack = stack
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _console(self, message: Any) -> None:
        # A 4xx the page explains is logged by the browser as a failed resource.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    @property
    def token(self) -> str:
        assert self.stack.settings.admin_token is not None
        return self.stack.settings.admin_token.get_secret_value()

    async def open(self) -> None:
        response = await self.page.goto(self.stack.base_url + "/admin")
        assert response is not None and response.status == 200
        assert "script-src 'self'" in response.headers["content-security-policy"]

    async def sign_in(self, token: str | None = None) -> None:
        await self.page.get_by_label("Admin token").fill(token or self.token)
        await self.page.get_by_role("button", name="Sign in").click()

    async def signed_in(self) -> None:
        await self.sign_in()
        await self.page.locator("#console").wait_for(state="visible")
        await self.page.locator("#key-models .key-model").first.wait_for(state="attached")

    async def create_tenant(self, name: str) -> None:
        await self.page.get_by_label("New tenant").fill(name)
        await self.page.get_by_role("button", name="Create tenant").click()
        await self.page.wait_for_function(
            "n => document.querySelector('#tenant-title').textContent === n", arg=name
        )

    async def expect_balance(self, value: int) -> None:
        await self.page.wait_for_function(
            "v => document.querySelector('#tenant-balance').textContent === v", arg=str(value)
        )

    async def expect_text(self, locator: Any, text: str) -> None:
        from playwright.async_api import expect

        await expect(locator).to_have_text(text)

    async def grant(self, amount: int, note: str) -> None:
        await self.page.get_by_label("Grant credits").fill(str(amount))
        await self.page.get_by_label("Note").fill(note)
        await self.page.get_by_role("button", name="Grant", exact=True).click()

    def key_card(self, prefix: str) -> Any:
        return self.page.locator(f"#keys li[data-prefix='{prefix}']")

    async def created_key(self) -> tuple[str, str]:
        """(prefix, plaintext) of the key the console has just shown once."""
        await self.page.locator("#created").wait_for(state="visible")
        plaintext = await self.page.locator("#created-key").input_value()
        prefix = (await self.page.locator("#created-prefix").text_content() or "").strip()
        assert plaintext.startswith(prefix)
        await self.key_card(prefix).wait_for()
        return prefix, plaintext

    async def fact(self, prefix: str, term: str) -> str:
        card = self.key_card(prefix)
        value = card.locator(f"xpath=.//dt[normalize-space()='{term}']/following-sibling::dd[1]")
        return (await value.text_content() or "").strip()

    async def overflow(self) -> int:
        value = await self.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        return int(value)

    async def screenshot(self, name: str) -> None:
        await self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def _console(browser: Browser, stack: Stack, viewport: dict[str, int]) -> Console:
    context = await browser.new_context(
        viewport=viewport,  # type: ignore[arg-type]
        accept_downloads=True,
    )
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.base_url)
    return Console(await context.new_page(), stack)


def _tenant_name() -> str:
    return f"acme-{uuid.uuid4().hex[:8]}"


async def _generate(stack: Stack, key: str, model: str = MINI) -> httpx.Response:
    async with stack.client() as client:
        return await client.post(
            "/api/v1/generate-image",
            headers={"Authorization": f"Bearer {key}"},
            json={"prompt": "A red bicycle against a blue wall", "model": model},
        )


async def _download(console: Console) -> str:
    async with console.page.expect_download() as info:
        await console.page.get_by_role("button", name="Export CSV").click()
    download = await info.value
    path = await download.path()
    assert path is not None
    return await asyncio.to_thread(Path(path).read_text, "utf-8")


@pytest.mark.browser
async def test_a_limited_key_spends_to_its_limit_then_is_rotated_and_revoked(
    browser: Browser, embedded_stack: Stack
) -> None:
    stack = embedded_stack
    console = await _console(browser, stack, DESKTOP)
    page = console.page
    await console.open()
    await console.signed_in()
    assert await page.evaluate("sessionStorage.getItem('imagegate.adminToken')") == console.token
    assert await page.evaluate("localStorage.length") == 0

    name = _tenant_name()
    await console.create_tenant(name)
    await console.expect_balance(0)
    await console.grant(100, "first invoice")
    await console.expect_balance(100)
    await page.locator("#ledger .entry.grant").first.wait_for()
    assert "first invoice" in (await page.locator("#ledger").text_content() or "")

    # A key worth four images of the 3-credit model, and only that model and one other.
    await page.get_by_role("button", name="New key").click()
    await page.get_by_label("Label").fill("mobile app")
    await page.get_by_label("Credit limit").fill("12")
    await page.get_by_label("Per", exact=True).select_option("total")
    await page.get_by_label("All models").uncheck()
    await page.get_by_label(MINI, exact=True).check()
    await page.get_by_label(FLASH, exact=True).check()
    await page.get_by_role("button", name="Create key").click()
    prefix, key = await console.created_key()
    await page.get_by_role("button", name="Copy").click()
    assert await page.evaluate("navigator.clipboard.readText()") == key
    assert set((await console.fact(prefix, "Models")).split(", ")) == {MINI, FLASH}
    assert "0 of 12 credits in total spent" in await console.fact(prefix, "Credits")
    assert await console.fact(prefix, "Last used") == "Never"
    await console.screenshot("console-01-key-created")

    # Spend from the test until the key's limit: four images, then the key's own 402.
    outside = await _generate(stack, key, "openai/gpt-image-1")
    assert outside.status_code == 403 and outside.json()["code"] == "model_not_allowed"
    for _ in range(4):
        response = await _generate(stack, key)
        assert response.status_code == 200, response.text
    refused = await _generate(stack, key)
    assert refused.status_code == 402
    assert refused.json()["code"] == "key_credit_limit"
    assert refused.json()["required"] == 3 and refused.json()["available"] == 0

    # The console shows the spend: the key at its limit, the tenant charged exactly that.
    await page.get_by_role("button", name=name, exact=True).click()
    await console.expect_balance(88)
    await page.wait_for_function(
        "p => document.querySelector(`#keys li[data-prefix='${p}']`)"
        "?.textContent.includes('12 of 12 credits in total spent · 0 left')",
        arg=prefix,
    )
    assert await console.fact(prefix, "Last used") != "Never"
    rows = page.locator("#model-rows tr")
    await console.expect_text(rows.first.locator("th"), MINI)
    assert await rows.count() == 1
    cells = [(await cell.text_content() or "") for cell in await rows.first.locator("td").all()]
    assert cells == ["4", "0", "4", "12"]
    assert await page.locator("#chart svg rect").count() >= 1
    await console.screenshot("console-02-key-at-its-limit")

    # CSV of the tenant's usage: the admin API's columns, the four images, 12 credits.
    exported = list(csv.reader(io.StringIO(await _download(console))))
    assert tuple(exported[0]) == CSV_COLUMNS
    body = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in exported[1:]]
    assert {row["tenant"] for row in body} == {name}
    assert sum(int(row["images"]) for row in body) == 4
    assert sum(int(row["credits_charged"]) for row in body) == 12

    # Raise the limit by one image in the console: the key generates once more.
    await console.key_card(prefix).get_by_role("button", name="Edit").click()
    await page.get_by_label("Credit limit").fill("15")
    await page.get_by_role("button", name="Save changes").click()
    await page.wait_for_function(
        "p => document.querySelector(`#keys li[data-prefix='${p}']`)"
        "?.textContent.includes('12 of 15 credits in total spent · 3 left')",
        arg=prefix,
    )
    assert (await _generate(stack, key)).status_code == 200

    # Rotate: a new key with the same policies and spend; the old one stops at once.
    await console.key_card(prefix).get_by_role("button", name="Rotate").click()
    await page.get_by_role("button", name="Rotate key", exact=True).click()
    await page.locator("#confirm").wait_for(state="hidden")
    new_prefix, new_key = await console.created_key()
    assert new_prefix != prefix
    assert await page.evaluate("document.activeElement.id") == "created-copy"
    assert await console.fact(new_prefix, "Rotated from") == prefix
    assert set((await console.fact(new_prefix, "Models")).split(", ")) == {MINI, FLASH}
    assert "15 of 15 credits" in await console.fact(new_prefix, "Credits")
    assert (await _generate(stack, key)).status_code == 401
    at_limit = await _generate(stack, new_key)
    assert at_limit.status_code == 402 and at_limit.json()["code"] == "key_credit_limit"

    # Revoke the new key: refused over HTTP, shown as revoked.
    await console.key_card(new_prefix).get_by_role("button", name="Revoke").click()
    await page.get_by_role("button", name="Revoke key", exact=True).click()
    await console.key_card(new_prefix).locator(".pill.revoked").wait_for()
    assert await page.locator("#created").is_hidden()  # its plaintext is no longer shown
    assert (await _generate(stack, new_key)).status_code == 401
    await console.expect_balance(85)

    # Usage per key: the old key made all five images, the rotated one none.
    usage_key = page.get_by_label("Key", exact=True)
    await usage_key.select_option(new_prefix)
    await console.expect_text(rows.first, "No generations in this period.")
    await usage_key.select_option(prefix)
    await console.expect_text(rows.first.locator("th"), MINI)
    cells = [(await cell.text_content() or "") for cell in await rows.first.locator("td").all()]
    assert cells == ["5", "0", "5", "15"]
    assert f"key {prefix}" in (await page.locator("#usage-scope").text_content() or "")

    # The audit status in the top bar (another test may break its own tenant's ledger, so
    # the gateway-wide result is only read; this tenant's own audit must be clean).
    status = page.locator("#audit-status")
    await page.wait_for_function(
        "() => !document.querySelector('#audit-status').innerText.endsWith('…')"
    )
    assert re.fullmatch(r"Audit (OK|: \d+ problems?)", await status.text_content() or "")
    await status.click()
    await page.locator("#audit-detail").wait_for(state="visible")
    assert (await stack.audit(name)).ok
    await console.screenshot("console-03-rotated-and-revoked")
    assert console.errors == []


@pytest.mark.browser
async def test_grant_revoke_csv_and_plain_errors(browser: Browser, embedded_stack: Stack) -> None:
    """What the admin API had before key limits: tenants, grants, keys, usage."""
    stack = embedded_stack
    console = await _console(browser, stack, DESKTOP)
    page = console.page
    await console.open()

    # A wrong token: a plain sentence, still signed out, nothing stored.
    await console.sign_in("not-the-admin-token-0123456789")
    error = page.locator("#signin-error")
    await error.wait_for(state="visible")
    assert "admin token was not accepted" in (await error.text_content() or "")
    assert await page.evaluate("sessionStorage.length") == 0
    assert await page.locator("#console").is_hidden()

    # The gateway unreachable: said so, not an HTTP code.
    await page.route("**/admin/v1/**", lambda route: route.abort("connectionrefused"))
    await console.sign_in()
    await page.wait_for_function(
        "() => document.querySelector('#signin-error').textContent.includes('Could not reach')"
    )
    await page.unroute("**/admin/v1/**")
    await console.signed_in()

    # The admin API's own 400 message for a bad name, and the console's for a bad amount.
    await page.get_by_label("New tenant").fill("no spaces allowed")
    await page.get_by_role("button", name="Create tenant").click()
    tenant_error = page.locator("#tenant-error")
    await tenant_error.wait_for(state="visible")
    assert "name" in (await tenant_error.text_content() or "")
    name = _tenant_name()
    await console.create_tenant(name)
    await tenant_error.wait_for(state="hidden")
    await page.get_by_label("Grant credits").fill("lots")
    await page.get_by_role("button", name="Grant", exact=True).click()
    grant_error = page.locator("#grant-error")
    await grant_error.wait_for(state="visible")
    assert "whole number" in (await grant_error.text_content() or "")
    await console.grant(20, "trial")
    await console.expect_balance(20)
    row = page.locator("#tenant-rows tr", has=page.get_by_role("button", name=name, exact=True))
    await console.expect_text(row.locator("td").first, "20")

    # A key with only a label, used once, then revoked from the console.
    await page.get_by_role("button", name="New key").click()
    await page.get_by_label("Label").fill("ci")
    await page.get_by_role("button", name="Create key").click()
    prefix, key = await console.created_key()
    assert (await _generate(stack, key)).status_code == 200
    await page.get_by_role("button", name="I have stored it").click()
    assert await page.locator("#created").is_hidden()
    assert await page.locator("#created-key").input_value() == ""

    # Rotate with a grace period, by keyboard: the old key keeps working until it ends.
    await console.key_card(prefix).get_by_role("button", name="Rotate").click()
    await page.get_by_label("Keep the old key working for (seconds)").fill("soon")
    await page.get_by_role("button", name="Rotate key", exact=True).click()
    confirm_error = page.locator("#confirm-error")
    await confirm_error.wait_for(state="visible")
    assert "whole number of seconds" in (await confirm_error.text_content() or "")
    await page.get_by_label("Keep the old key working for (seconds)").fill("3600")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    rotated_prefix, _ = await console.created_key()
    await console.key_card(prefix).locator(".pill.ending").wait_for()
    assert await console.fact(rotated_prefix, "Rotated from") == prefix
    async with stack.client() as client:
        still = await client.get("/api/v1/credits", headers={"Authorization": f"Bearer {key}"})
    assert still.status_code == 200

    await console.key_card(prefix).get_by_role("button", name="Revoke").click()
    await page.get_by_role("button", name="Revoke key", exact=True).click()
    await console.key_card(prefix).locator(".pill.revoked").wait_for()
    assert (await _generate(stack, key)).status_code == 401
    await console.expect_balance(17)

    exported = list(csv.reader(io.StringIO(await _download(console))))
    assert tuple(exported[0]) == CSV_COLUMNS
    assert [(row[1], row[3], row[6], row[7]) for row in exported[1:]] == [(name, MINI, "1", "3")]
    await console.screenshot("console-00-desktop")

    # A reload keeps the tab signed in, on the same tenant; Sign out forgets the token.
    await page.reload()
    await page.wait_for_function(
        "n => document.querySelector('#tenant-title').textContent === n", arg=name
    )
    await console.expect_balance(17)
    await page.get_by_role("button", name="Sign out").click()
    await page.locator("#signin").wait_for(state="visible")
    assert await page.evaluate("sessionStorage.length") == 0
    assert console.errors == []


@pytest.mark.browser
async def test_phone_width_has_no_sideways_scroll_and_works_by_keyboard(
    browser: Browser, embedded_stack: Stack
) -> None:
    stack = embedded_stack
    tenant = await stack.new_tenant(credits=10)
    assert (await _generate(stack, tenant.key)).status_code == 200
    console = await _console(browser, stack, PHONE)
    page = console.page
    await console.open()
    assert await console.overflow() <= 0
    # Keyboard only: the token field has focus; Enter submits.
    await page.keyboard.type(console.token)
    await page.keyboard.press("Enter")
    await page.locator("#console").wait_for(state="visible")
    assert await console.overflow() <= 0, "the tenant list scrolls sideways at 375px"

    await page.get_by_role("button", name=tenant.name, exact=True).focus()
    await page.keyboard.press("Enter")
    await page.locator("#keys li").first.wait_for()
    await page.wait_for_function("() => document.activeElement.id === 'tenant-title'")
    assert await console.overflow() <= 0, "the tenant's keys scroll sideways at 375px"
    await page.locator("#model-rows tr").first.wait_for()
    await console.screenshot("console-04-phone")

    # The key dialog by keyboard: opens with focus inside, Escape closes it, focus returns.
    await page.get_by_role("button", name="New key").focus()
    await page.keyboard.press("Enter")
    await page.locator("#key-dialog").wait_for(state="visible")
    assert await page.evaluate("document.activeElement.id") == "key-label"
    assert await console.overflow() <= 0
    dialog_box = await page.locator("#key-dialog").bounding_box()
    assert dialog_box is not None and dialog_box["width"] <= PHONE["width"]
    await console.screenshot("console-05-phone-key-dialog")
    await page.keyboard.press("Escape")
    await page.locator("#key-dialog").wait_for(state="hidden")
    assert await page.evaluate("document.activeElement.id") == "key-new"
    assert console.errors == []
