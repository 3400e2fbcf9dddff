"""The elizaOS Cloud clients from npm (tests/clients/node/elizacloud.mjs) against
`ELIZAOS_CLOUD_BASE_URL=http://<gateway>/api/v1`: plugin-elizacloud 1.7.3's image handler,
key check and startup models check, and @elizaos/cloud-sdk 2.0.0-beta.1 (plugin 2.x's
client): the models list, generateImage, credits balance and the 402 it reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.generation.request import DEFAULT_MODEL
from app.tenants import service as tenants
from tests.clients.conftest import CREDITS, GPT_IMAGE, decode_image, price, run_node, step_ok
from tests.support.gateway import TenantHandle
from tests.support.process import run_in_session
from tests.support.upstreams import NetworkGateway

pytestmark = pytest.mark.slow

# plugin-elizacloud 2.x's default ELIZAOS_CLOUD_IMAGE_GENERATION_MODEL, sent by the script.
SDK_MODEL = "openai/gpt-5-nano"


@pytest.fixture(scope="module")
def agents(gateway: NetworkGateway) -> dict[str, TenantHandle]:
    limited = gateway.new_tenant(credits=CREDITS)

    async def one_per_minute(session: Any) -> None:
        tenant = await tenants.get_tenant(session, limited.name)
        await tenants.set_rate_limits(session, tenant, per_minute=1, key_per_minute=1)

    run_in_session(gateway.database_url, one_per_minute)
    return {
        "paying": gateway.new_tenant(credits=CREDITS),
        # Less than one image of the default model.
        "broke": gateway.new_tenant(credits=1),
        "limited": limited,
    }


@pytest.fixture(scope="module")
def results(
    gateway: NetworkGateway, agents: dict[str, TenantHandle], node_modules: Path
) -> dict[str, Any]:
    env = {
        "ELIZAOS_CLOUD_BASE_URL": f"{gateway.base_url}/api/v1",
        "ELIZAOS_CLOUD_API_KEY": agents["paying"].key,
        "BROKE_API_KEY": agents["broke"].key,
        "LIMITED_API_KEY": agents["limited"].key,
    }
    return run_node("elizacloud.mjs", env)


def served_image(url: str) -> tuple[int, int]:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text[:200]
    assert response.headers["content-type"].startswith("image/")
    size: tuple[int, int] = decode_image(response.content).size
    return size


# --------------------------------------------------------------------------- plugin 1.7.3


def test_plugin_startup_models_check_succeeds(
    results: dict[str, Any], gateway: NetworkGateway
) -> None:
    requests = step_ok(results, "plugin_init_models_check")["requests"]
    assert requests == [{"url": f"{gateway.base_url}/api/v1/models", "status": 200}]
    step_ok(results, "plugin_url_and_key_check")


def test_plugin_image_handler_gets_a_served_image_of_the_ratio_asked(
    results: dict[str, Any],
) -> None:
    images = step_ok(results, "plugin_image")["images"]
    assert len(images) == 1
    width, height = served_image(images[0]["url"])
    # The plugin maps size 1792x1024 to aspectRatio 16:9.
    assert abs(width / height - 16 / 9) < 0.01


def test_plugin_base_url_with_a_trailing_slash_works(results: dict[str, Any]) -> None:
    # ELIZAOS_CLOUD_BASE_URL ending in "/" makes the plugin call /api/v1//generate-image.
    images = step_ok(results, "plugin_image_trailing_slash")["images"]
    served_image(images[0]["url"])


def test_plugin_without_credits_gets_the_402_with_required_and_available_credits(
    results: dict[str, Any],
) -> None:
    error = results["plugin_image_no_credits"].get("error")
    assert error is not None, "an image was made without credits"
    prefix = "Failed to generate image: 402 "
    assert error["message"].startswith(prefix), error["message"]
    body = json.loads(error["message"][len(prefix) :])
    assert body["requiredCredits"] == body["required"] == price(DEFAULT_MODEL)
    assert body["availableCredits"] == body["available"] == 1


def test_a_one_request_a_minute_agent_can_start_and_still_generate(
    results: dict[str, Any], gateway: NetworkGateway
) -> None:
    step = step_ok(results, "limited_agent_starts_then_generates")
    assert step["init"]["requests"] == [{"url": f"{gateway.base_url}/api/v1/models", "status": 200}]
    served_image(step["images"][0]["url"])


# --------------------------------------------------------------------------- cloud-sdk 2.x


def test_sdk_list_models_is_public_and_an_openai_style_list(results: dict[str, Any]) -> None:
    listing = step_ok(results, "sdk_list_models")  # the SDK sends no key for it
    assert listing["object"] == "list"
    ids = [entry["id"] for entry in listing["data"]]
    assert GPT_IMAGE in ids and SDK_MODEL in ids
    assert all(entry["object"] == "model" for entry in listing["data"])
    # The gateway's own fields stay.
    assert {model["id"] for model in listing["models"]} == set(ids)
    assert listing["defaultModel"] == DEFAULT_MODEL


def test_sdk_generate_image_with_plugin_2x_default_model(results: dict[str, Any]) -> None:
    answer = step_ok(results, "sdk_generate_image")
    assert answer["model"] == SDK_MODEL
    assert answer["creditsCharged"] == price(SDK_MODEL)
    assert served_image(answer["images"][0]["url"]) == (1024, 1024)


def test_sdk_credits_balance_is_the_tenants_balance(
    results: dict[str, Any], gateway: NetworkGateway, agents: dict[str, TenantHandle]
) -> None:
    # The script reads the balance last, after every charge of this tenant.
    assert step_ok(results, "sdk_credits_balance")["balance"] == gateway.balance(agents["paying"])


def test_sdk_without_credits_raises_insufficient_credits_with_required_credits(
    results: dict[str, Any],
) -> None:
    step = results["sdk_no_credits"]
    assert "error" in step, "an image was made without credits"
    assert step["insufficientCreditsError"] is True
    assert step["error"]["requiredCredits"] == price(DEFAULT_MODEL)


def test_each_tenant_paid_for_exactly_what_it_received(
    results: dict[str, Any], gateway: NetworkGateway, agents: dict[str, TenantHandle]
) -> None:
    plugin_images = sum(
        len(results[name].get("images", []))
        for name in ("plugin_image", "plugin_image_trailing_slash")
    )
    sdk_images = len(results["sdk_generate_image"].get("images", []))
    expected = CREDITS - plugin_images * price(DEFAULT_MODEL) - sdk_images * price(SDK_MODEL)
    assert gateway.balance(agents["paying"]) == expected
    assert gateway.balance(agents["broke"]) == 1
    limited = len(results["limited_agent_starts_then_generates"].get("images", []))
    assert gateway.balance(agents["limited"]) == CREDITS - limited * price(DEFAULT_MODEL)
    assert gateway.audit_ok()
