"""The decode budget seen over HTTP: a gateway with a small IMAGEGATE_DECODE_BUDGET_MPX
queues concurrent large source images (all succeed), refuses one larger than the whole
budget with a 400 naming sourceImage, and refunds an upstream output too large for it."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from tests.support.gateway import Stack, gateway_settings, stack_in_thread

PATH = "/api/v1/generate-image"
PRICE = 4  # google/gemini-2.5-flash-image
# 4 Mpx: one 1800x1800 source (3.24 Mpx) or one 1024x1024 output transcode (3 x 1.05 Mpx)
# at a time; two of either never fit together.
BUDGET_MPX = 4.0


@pytest_asyncio.fixture(scope="module")
async def small_budget(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("decode-budget")
    settings = gateway_settings(data_dir=data_dir, decode_budget_mpx=BUDGET_MPX)
    async for stack in stack_in_thread(settings, "small-budget"):
        yield stack


@pytest_asyncio.fixture(scope="module")
async def tiny_budget(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("decode-budget-tiny")
    # Below one 1024x1024 transcode (3.1 Mpx): every upstream output is too large.
    settings = gateway_settings(data_dir=data_dir, decode_budget_mpx=2.0)
    async for stack in stack_in_thread(settings, "tiny-budget"):
        yield stack


def _source(size: int, colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_large_sources_queue_for_the_budget_and_one_beyond_it_is_a_400(
    small_budget: Stack,
) -> None:
    tenant = await small_budget.new_tenant(credits=PRICE * 7)
    sources = [_source(1800, (40 * i, 200, 255 - 40 * i)) for i in range(6)]
    # 2100 x 2100 = 4.41 Mpx: under the 40 Mpx source limit, over the whole 4 Mpx budget.
    too_big = _source(2100, (9, 9, 9))
    async with small_budget.client(timeout=120) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    PATH,
                    json={"prompt": f"variation {i}", "sourceImage": source},
                    headers=tenant.auth,
                )
                for i, source in enumerate([*sources, too_big])
            )
        )
    *fitting, refused = responses
    # Two 1800x1800 decodes never fit together: these waited their turn, none failed.
    for response in fitting:
        assert response.status_code == 200, response.text
        assert response.json()["numImages"] == 1
    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert body["code"] == "invalid_request"
    assert "sourceImage" in body["error"]
    assert "2100x2100" in body["error"]
    assert await small_budget.balance(tenant) == PRICE
    assert (await small_budget.audit(tenant)).ok


async def test_an_output_larger_than_the_whole_budget_fails_and_is_refunded(
    tiny_budget: Stack,
) -> None:
    tenant = await tiny_budget.new_tenant(credits=PRICE)
    async with tiny_budget.client() as client:
        response = await client.post(
            PATH, json={"prompt": "a 1024x1024 output"}, headers=tenant.auth
        )
    assert response.status_code == 500, response.text
    body = response.json()
    assert body["code"] == "generation_failed"
    assert "1024x1024" in body["error"]
    assert "decodes at once" in body["error"]
    assert await tiny_budget.balance(tenant) == PRICE
    assert (await tiny_budget.audit(tenant)).ok
