"""`openai-compatible` upstreams over the real network, configured by catalog entries only.

1. A non-emulated gateway process whose catalog file has an entry pointing at the OpenAI
   emulator process (base_url, api_key_env): generations, error mapping, retries.
2. Two gateways chained: an upstream `imagegate serve --emulate` process and a downstream
   gateway whose entry points at the upstream's `/v1` with an upstream tenant's key (from
   the environment variable the entry names). Each gateway charges its own tenant its own
   price.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.support.catalogs import catalog_with, self_hosted_entry
from tests.support.gateway import TenantHandle
from tests.support.upstreams import EmulatorProcess, NetworkGateway, emulated_gateway

pytestmark = pytest.mark.network

PATH = "/api/v1/generate-image"
KEY_VARIABLE = "IMAGEGATE_TEST_COMPATIBLE_KEY"
EMULATED = "local/emulated-openai"  # -> the OpenAI emulator process
CHAINED = "local/chained-gateway"  # -> the upstream gateway's /v1
UNKEYED = "local/no-key-set"  # names a variable the gateway's environment lacks
WEB_UI = "local/own-web-ui"  # an automatic1111 entry with a base_url of its own
EMULATED_PRICE, CHAINED_PRICE = 2, 15
UPSTREAM_MODEL, UPSTREAM_PRICE = "openai/gpt-image-1", 10  # the upstream gateway's own price


@pytest.fixture(scope="module")
def upstream_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkGateway]:
    """`imagegate serve --emulate` as the upstream of the chain."""
    with emulated_gateway(tmp_path_factory.mktemp("chain-upstream")) as running:
        yield running


@pytest.fixture(scope="module")
def upstream_tenant(upstream_gateway: NetworkGateway) -> TenantHandle:
    """The downstream gateway's account at the upstream gateway."""
    return upstream_gateway.new_tenant(credits=1000)


@pytest.fixture(scope="module")
def gateway(
    network_gateway_factory: Callable[..., NetworkGateway],
    upstream_emulators: dict[str, EmulatorProcess],
    upstream_gateway: NetworkGateway,
    upstream_tenant: TenantHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> NetworkGateway:
    catalog = catalog_with(
        tmp_path_factory.mktemp("compatible-catalog"),
        self_hosted_entry(
            EMULATED,
            "openai-compatible",
            price=EMULATED_PRICE,
            image_to_image=True,
            base_url=upstream_emulators["openai"].api_base_url,
            api_key_env=KEY_VARIABLE,
        ),
        self_hosted_entry(
            CHAINED,
            "openai-compatible",
            upstream_model=UPSTREAM_MODEL,
            price=CHAINED_PRICE,
            base_url=f"{upstream_gateway.base_url}/v1",
            api_key_env="IMAGEGATE_TEST_CHAIN_KEY",
        ),
        self_hosted_entry(
            WEB_UI,
            "automatic1111",
            upstream_model="default",
            price=EMULATED_PRICE,
            native_aspect_ratios=["1:1", "16:9"],
            base_url=upstream_emulators["automatic1111"].api_base_url,
            api_key_env="IMAGEGATE_TEST_WEB_UI_KEY",
            options={"steps": 12, "cfg_scale": 4.5},
        ),
        self_hosted_entry(
            UNKEYED,
            "openai-compatible",
            base_url=upstream_emulators["openai"].api_base_url,
            api_key_env="IMAGEGATE_TEST_UNSET_KEY",
        ),
    )
    # Settings overrides become IMAGEGATE_<NAME> variables: the two key variables above.
    return network_gateway_factory(
        catalog=catalog,
        test_compatible_key="sk-emulator-key",
        test_chain_key=upstream_tenant.key,
        test_web_ui_key="imagegate:fake-password",
        upstream_attempt_timeout_seconds=5,
        upstream_deadline_seconds=10,
    )


@pytest.fixture
def openai_emulator(upstream_emulators: dict[str, EmulatorProcess]) -> Iterator[EmulatorProcess]:
    emulator = upstream_emulators["openai"]
    emulator.set_faults()
    yield emulator
    emulator.set_faults()


def generate(gateway: NetworkGateway, tenant: TenantHandle, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "a lighthouse at dusk")
    return httpx.post(f"{gateway.base_url}{PATH}", json=body, headers=tenant.auth, timeout=60)


def fetched_webp(url: str) -> Image.Image:
    image = Image.open(io.BytesIO(httpx.get(url, timeout=30).content))
    assert image.format == "WEBP"
    return image


def test_an_entry_pointing_at_the_openai_emulator_generates_and_bills(
    gateway: NetworkGateway, openai_emulator: EmulatorProcess
) -> None:
    tenant = gateway.new_tenant(credits=20)
    calls = openai_emulator.calls()
    response = generate(gateway, tenant, model=EMULATED, aspectRatio="16:9")
    assert response.status_code == 200, response.text
    (image,) = response.json()["images"]
    assert Fraction(*fetched_webp(image["url"]).size) == Fraction(16, 9)
    assert openai_emulator.calls() == calls + 1
    assert response.json()["creditsCharged"] == EMULATED_PRICE
    assert gateway.balance(tenant) == 20 - EMULATED_PRICE


def test_a_source_image_goes_to_the_upstreams_edits(
    gateway: NetworkGateway, openai_emulator: EmulatorProcess
) -> None:
    tenant = gateway.new_tenant(credits=20)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "PNG")
    source = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    response = generate(gateway, tenant, model=EMULATED, sourceImage=source)
    assert response.status_code == 200, response.text
    assert gateway.balance(tenant) == 20 - EMULATED_PRICE


def test_an_upstream_400_fails_naming_the_upstream_and_charges_nothing(
    gateway: NetworkGateway, openai_emulator: EmulatorProcess
) -> None:
    tenant = gateway.new_tenant(credits=20)
    openai_emulator.set_faults({"kind": "error", "status": 400, "message": "size is too big"})
    calls = openai_emulator.calls()
    response = generate(gateway, tenant, model=EMULATED)
    assert response.status_code == 500, response.text
    message = response.json()["error"]
    assert "OpenAI-compatible upstream 400" in message and "size is too big" in message
    assert openai_emulator.calls() == calls + 1  # final: not retried
    assert gateway.balance(tenant) == 20


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_5xx_are_retried_then_fail_refunded(
    gateway: NetworkGateway, openai_emulator: EmulatorProcess, status: int
) -> None:
    tenant = gateway.new_tenant(credits=20)
    openai_emulator.set_faults({"kind": "error", "status": status, "count": 3})
    calls = openai_emulator.calls()
    response = generate(gateway, tenant, model=EMULATED)
    assert response.status_code == 500, response.text
    assert f"OpenAI-compatible upstream {status}" in response.json()["error"]
    assert openai_emulator.calls() == calls + 3  # IMAGEGATE_UPSTREAM_MAX_ATTEMPTS
    assert gateway.balance(tenant) == 20

    openai_emulator.set_faults({"kind": "error", "status": status, "count": 2})
    response = generate(gateway, tenant, model=EMULATED)
    assert response.status_code == 200, response.text  # the third attempt succeeds
    assert gateway.balance(tenant) == 20 - EMULATED_PRICE


def test_a_slow_upstream_times_out_and_charges_nothing(
    gateway: NetworkGateway, openai_emulator: EmulatorProcess
) -> None:
    tenant = gateway.new_tenant(credits=20)
    openai_emulator.set_faults({"kind": "delay", "seconds": 30, "count": 5})
    response = generate(gateway, tenant, model=EMULATED)
    assert response.status_code == 500, response.text
    assert "did not answer in time" in response.json()["error"]
    assert gateway.balance(tenant) == 20


def test_an_unset_key_variable_is_an_unconfigured_model(gateway: NetworkGateway) -> None:
    listing = httpx.get(f"{gateway.base_url}/api/v1/models", timeout=30).json()["models"]
    configured = {model["id"]: model["configured"] for model in listing}
    assert configured[EMULATED] is True and configured[CHAINED] is True
    assert configured[UNKEYED] is False
    tenant = gateway.new_tenant(credits=20)
    response = generate(gateway, tenant, model=UNKEYED)
    assert response.status_code == 503
    assert response.json()["code"] == "provider_not_configured"
    log = gateway.process.logs().decode(errors="replace")
    assert "IMAGEGATE_TEST_UNSET_KEY" in log  # which variable, not any key
    assert "sk-emulator-key" not in log


def test_two_chained_gateways_each_charge_their_own_tenant(
    gateway: NetworkGateway, upstream_gateway: NetworkGateway, upstream_tenant: TenantHandle
) -> None:
    tenant = gateway.new_tenant(credits=100)
    upstream_before = upstream_gateway.balance(upstream_tenant)
    response = generate(gateway, tenant, model=CHAINED, aspectRatio="16:9", numImages=2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["images"]) == 2
    for image in body["images"]:
        assert Fraction(*fetched_webp(image["url"]).size) == Fraction(16, 9)
    assert body["creditsCharged"] == 2 * CHAINED_PRICE
    assert gateway.balance(tenant) == 100 - 2 * CHAINED_PRICE
    assert upstream_gateway.balance(upstream_tenant) == upstream_before - 2 * UPSTREAM_PRICE
    assert gateway.audit_ok() and upstream_gateway.audit_ok()


def test_an_automatic1111_entry_with_its_own_base_url_uses_its_options(
    gateway: NetworkGateway, upstream_emulators: dict[str, EmulatorProcess]
) -> None:
    """Besides the settings' web UI (automatic1111/sd-xl), an entry may name its own server,
    with the steps and CFG scale of its `options`."""
    emulator = upstream_emulators["automatic1111"]
    emulator.set_faults()
    tenant = gateway.new_tenant(credits=10)
    response = generate(gateway, tenant, model=WEB_UI, aspectRatio="16:9")
    assert response.status_code == 200, response.text
    (image,) = response.json()["images"]
    assert Fraction(*fetched_webp(image["url"]).size) == Fraction(16, 9)
    assert gateway.balance(tenant) == 10 - EMULATED_PRICE
    last = httpx.get(f"{emulator.base_url}/_emulator/automatic1111/calls", timeout=10).json()[-1]
    assert last["endpoint"] == "txt2img" and "lighthouse" in last["prompt"]
    assert (last["steps"], last["cfg_scale"]) == (12, 4.5)
