"""LiteLLM as a library: `openai/<model>` through `image_generation` and `image_edit` with
`api_base=http://<gateway>/v1`, as a LiteLLM user points it at the gateway."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.clients.conftest import CREDITS, GPT_IMAGE, b64_png, png, price
from tests.support.gateway import TenantHandle
from tests.support.upstreams import NetworkGateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def litellm() -> Iterator[ModuleType]:
    """LiteLLM, with its packaged cost map (it fetches one from GitHub at import otherwise,
    which is neither wanted in tests nor reachable offline)."""
    saved = os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP")
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    try:
        yield importlib.import_module("litellm")
    finally:
        if saved is None:
            os.environ.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)
        else:
            os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = saved


def target(gateway: NetworkGateway, tenant: TenantHandle) -> dict[str, Any]:
    return {"api_base": f"{gateway.base_url}/v1", "api_key": tenant.key}


def test_image_generation_returns_b64_png_with_usage_and_a_cost(
    litellm: ModuleType, gateway: NetworkGateway, tenant: TenantHandle
) -> None:
    response = litellm.image_generation(
        model=GPT_IMAGE, prompt="a lighthouse", size="1536x1024", **target(gateway, tenant)
    )

    image = b64_png(response.data[0].b64_json)
    assert (image.width, image.height) == (1536, 1024)
    assert response.usage is not None and response.usage.total_tokens > 0
    assert response._hidden_params["response_cost"] > 0
    assert gateway.balance(tenant) == CREDITS - price(GPT_IMAGE)


def test_image_edit_with_two_images_returns_b64_png(
    litellm: ModuleType, gateway: NetworkGateway, tenant: TenantHandle, tmp_path: Path
) -> None:
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        path.write_bytes(png(path.stem))
    with paths[0].open("rb") as first, paths[1].open("rb") as second:
        response = litellm.image_edit(
            model=GPT_IMAGE,
            image=[first, second],
            prompt="make it dusk",
            size="1024x1024",
            **target(gateway, tenant),
        )

    image = b64_png(response.data[0].b64_json)
    assert (image.width, image.height) == (1024, 1024)
    assert response.usage is not None
    assert gateway.balance(tenant) == CREDITS - price(GPT_IMAGE)


def test_an_invalid_quality_reaches_the_caller_as_a_400(
    litellm: ModuleType, gateway: NetworkGateway, tenant: TenantHandle
) -> None:
    with pytest.raises(litellm.BadRequestError) as caught:
        litellm.image_generation(
            model=GPT_IMAGE, prompt="a cat", quality="bogus", **target(gateway, tenant)
        )
    assert "quality" in str(caught.value)
    assert gateway.balance(tenant) == CREDITS
