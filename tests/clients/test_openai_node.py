"""The official `openai` npm package (tests/clients/node/openai.mjs) against `/v1`.

The script is configured only by OPENAI_BASE_URL and OPENAI_API_KEY, as the README tells a
Node user, runs every step once for the module, and prints what the SDK gave back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clients.conftest import (
    CREDITS,
    GPT_IMAGE,
    b64_png,
    decode_image,
    mask_png,
    png,
    price,
    run_node,
    step_ok,
)
from tests.support.gateway import TenantHandle
from tests.support.upstreams import NetworkGateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node_tenant(gateway: NetworkGateway) -> TenantHandle:
    return gateway.new_tenant(credits=CREDITS)


@pytest.fixture(scope="module")
def results(
    gateway: NetworkGateway,
    node_tenant: TenantHandle,
    node_modules: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    inputs = tmp_path_factory.mktemp("node-inputs")
    for name in ("first", "second"):
        (inputs / f"{name}.png").write_bytes(png(name))
    (inputs / "mask.png").write_bytes(mask_png())
    env = {"OPENAI_BASE_URL": f"{gateway.base_url}/v1", "OPENAI_API_KEY": node_tenant.key}
    return run_node("openai.mjs", env, str(inputs))


def test_generate_default_is_b64_png_of_the_exact_size(results: dict[str, Any]) -> None:
    step = step_ok(results, "generate_b64")
    assert step["url"] is None
    image = b64_png(step["b64_json"])
    assert (image.width, image.height) == (1536, 1024)
    assert step["usage"] is not None and step["usage"]["total_tokens"] > 0


def test_url_serves_the_requested_png(results: dict[str, Any]) -> None:
    step = step_ok(results, "generate_url")
    assert step["output_format"] == "png"
    served = httpx.get(step["url"], timeout=30)
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert decode_image(served.content).size == (1024, 1024)


def test_edit_with_to_file_uploads_of_two_images_and_a_mask(results: dict[str, Any]) -> None:
    step = step_ok(results, "edit")
    image = b64_png(step["b64_json"])
    assert (image.width, image.height) == (1024, 1024)
    assert step["usage"] is not None


def test_stream_yields_partials_then_completed(results: dict[str, Any]) -> None:
    events = step_ok(results, "stream")["events"]
    types = [event["type"] for event in events]
    assert types and types[-1] == "image_generation.completed", types
    partial = [event for event in events[:-1] if event["type"] == "image_generation.partial_image"]
    assert len(partial) == len(events) - 1 and 1 <= len(partial) <= 2, types
    assert [event["index"] for event in partial] == list(range(len(partial)))
    image = b64_png(events[-1]["b64_json"])
    assert (image.width, image.height) == (1024, 1024)


def test_models_list_and_retrieve(results: dict[str, Any]) -> None:
    assert GPT_IMAGE in step_ok(results, "models_list")["ids"]
    assert step_ok(results, "models_retrieve") == {"id": GPT_IMAGE, "object": "model"}


def test_an_invalid_quality_is_a_400_naming_it(results: dict[str, Any]) -> None:
    error = results["invalid_quality"].get("error")
    assert error is not None, "quality='bogus' was accepted"
    assert (error["status"], error["param"], error["type"]) == (
        400,
        "quality",
        "invalid_request_error",
    )


def test_charged_once_per_image_delivered(
    results: dict[str, Any], gateway: NetworkGateway, node_tenant: TenantHandle
) -> None:
    # Each step reports how many images the SDK got back; only those may be charged.
    delivered = sum(step.get("delivered", 0) for step in results.values())
    assert gateway.balance(node_tenant) == CREDITS - delivered * price(GPT_IMAGE)
    # generate (b64 and url), edit and stream each delivered one; the 400 none.
    assert delivered == 4
