"""The BFL emulator's FLUX.2 endpoints over HTTP: width/height, up to eight references
each in its own band, flex's steps and guidance, 422s naming the field, per-MP cost."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from app.emulators.bfl import create_bfl_emulator
from app.emulators.faults import FaultPlan
from tests.support.images import BLUE, GREEN, RED, band_colours, solid_png

KEY = {"x-key": "test-key"}
PRO = "/v1/flux-2-pro"
FLEX = "/v1/flux-2-flex"
YELLOW, CYAN, MAGENTA, WHITE, BLACK = (
    (230, 230, 20), (20, 220, 220), (220, 20, 220), (250, 250, 250), (10, 10, 10)
)  # fmt: skip
EIGHT = [RED, GREEN, BLUE, YELLOW, CYAN, MAGENTA, WHITE, BLACK]
NAMES = ["input_image", *(f"input_image_{i}" for i in range(2, 9))]


@pytest.fixture(scope="module")
def emulator() -> FastAPI:
    return create_bfl_emulator()


@pytest.fixture
async def http(base_url: str, plan: FaultPlan) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield client


def encoded(colour: tuple[int, int, int]) -> str:
    return base64.b64encode(solid_png(colour)).decode()


async def sample(http: httpx.AsyncClient, path: str = PRO, **body: Any) -> Image.Image:
    submitted = await http.post(path, headers=KEY, json={"prompt": "a red fox", **body})
    assert submitted.status_code == 200, submitted.text
    for _ in range(50):
        polled = (await http.get(submitted.json()["polling_url"], headers=KEY)).json()
        if polled["status"] == "Ready":
            download = await http.get(polled["result"]["sample"])
            return Image.open(io.BytesIO(download.content))
        await asyncio.sleep(0.02)
    raise AssertionError("task never finished")


@pytest.mark.parametrize(("width", "height"), [(1024, 1024), (1360, 768), (2048, 2048), (64, 64)])
async def test_draws_at_the_width_and_height_asked(
    http: httpx.AsyncClient, width: int, height: int
) -> None:
    image = await sample(http, width=width, height=height)
    assert (image.format, image.size) == ("PNG", (width, height))


async def test_without_a_size_the_first_reference_sets_it(http: httpx.AsyncClient) -> None:
    assert (await sample(http)).size == (1024, 1024)
    # solid_png is 320x240: kept, as multiples of 16.
    assert (await sample(http, input_image=encoded(RED))).size == (320, 240)


async def test_every_one_of_eight_references_shows_in_order(http: httpx.AsyncClient) -> None:
    images = {name: encoded(colour) for name, colour in zip(NAMES, EIGHT, strict=True)}
    eight = await sample(http, seed=3, width=2048, height=512, **images)
    assert band_colours(eight, 8, EIGHT) == EIGHT
    three = await sample(http, seed=3, width=1536, height=512, **dict(list(images.items())[:3]))
    assert band_colours(three, 3) == [RED, GREEN, BLUE]
    swapped = {"input_image": encoded(BLUE), "input_image_2": encoded(GREEN)}
    swapped["input_image_3"] = encoded(RED)
    assert band_colours(await sample(http, seed=3, width=1536, height=512, **swapped), 3) == [
        BLUE, GREEN, RED,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"width": 1000, "height": 1024}, "width"),  # not a multiple of 16
        ({"width": 1024, "height": 48}, "height"),  # under 64
        ({"width": 2064, "height": 2048}, "width"),  # over 4 MP
        ({"input_image_2": "data:image/png;base64,AAAA"}, "input_image_2"),
        ({"output_format": "gif"}, "output_format"),
        ({"safety_tolerance": 7}, "safety_tolerance"),
    ],
)
async def test_invalid_bodies_are_422_naming_the_field(
    http: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await http.post(PRO, headers=KEY, json={"prompt": "x", **body})
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]
    assert "AAAA" not in response.text  # inputs are not echoed


async def test_flex_takes_steps_and_guidance_within_bounds(http: httpx.AsyncClient) -> None:
    image = await sample(http, FLEX, steps=20, guidance=3.0, width=512, height=512)
    assert image.size == (512, 512)
    for bad in ({"steps": 51}, {"guidance": 1.0}):
        response = await http.post(FLEX, headers=KEY, json={"prompt": "x", **bad})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", next(iter(bad))]


async def test_cost_is_per_started_megapixel(http: httpx.AsyncClient) -> None:
    async def cost(path: str, width: int, height: int) -> float:
        body = {"prompt": "x", "width": width, "height": height}
        result: float = (await http.post(path, headers=KEY, json=body)).json()["cost"]
        return result

    assert await cost(PRO, 1024, 1024) == 3.0  # BFL's megapixel is 1024x1024
    assert await cost(PRO, 2048, 2048) == 3.0 + 3 * 1.5
    assert await cost(FLEX, 1024, 1040) == 5.0 + 5.0  # a started megapixel counts
