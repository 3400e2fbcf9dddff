"""The BFL adapter's FLUX.2 calls over real HTTP against the emulator: width/height from
ratio and imageSize, up to eight references as input_image .. input_image_8."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from app.emulators.bfl import create_bfl_emulator
from app.providers.base import ImageRequest, SourceImage, UpstreamBadRequest
from app.providers.bfl import BflAdapter
from app.providers.bfl_body import flux2_dimensions
from tests.support.images import BLUE, GREEN, RED, band_channels, solid_png
from tests.support.servers import serve_in_thread

RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"]


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    with serve_in_thread(create_bfl_emulator()) as url:
        yield url


@pytest_asyncio.fixture
async def adapter(emulator_url: str) -> AsyncIterator[BflAdapter]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield BflAdapter(
            api_key="bfl-key",
            base_url=emulator_url,
            http_client=client,
            allowed_hosts=(),
            max_sample_bytes=32 * 1024 * 1024,
            poll_interval=0.01,
            max_poll_interval=0.05,
        )


def refs(*colours: tuple[int, int, int]) -> tuple[SourceImage, ...]:
    return tuple(SourceImage("image/png", solid_png(colour)) for colour in colours)


@pytest.mark.parametrize("size", ["1K", "2K"])
@pytest.mark.parametrize("ratio", RATIOS)
async def test_width_and_height_follow_ratio_and_size(
    adapter: BflAdapter, ratio: str, size: str
) -> None:
    request = ImageRequest("flux-2-pro", "a lighthouse", ratio, image_size=size)
    width, height = Image.open(io.BytesIO((await adapter.generate(request)).data)).size
    assert (width, height) == flux2_dimensions(ratio, size)
    assert width % 16 == 0 and height % 16 == 0 and width * height <= 2048 * 2048
    rw, rh = (int(side) for side in ratio.split(":"))
    assert abs(width / height - rw / rh) < 0.02 * rw / rh  # near; the gateway crops exactly


@pytest.mark.parametrize("model", ["flux-2-pro", "flux-2-flex"])
async def test_three_references_each_show_in_their_band(adapter: BflAdapter, model: str) -> None:
    request = ImageRequest(model, "merge them", "21:9", refs(RED, GREEN, BLUE))
    image = Image.open(io.BytesIO((await adapter.generate(request)).data))
    assert band_channels(image, 3) == ["R", "G", "B"]
    swapped = ImageRequest(model, "merge them", "21:9", refs(BLUE, RED, GREEN))
    image = Image.open(io.BytesIO((await adapter.generate(swapped)).data))
    assert band_channels(image, 3) == ["B", "R", "G"]


async def test_eight_references_reach_the_upstream(adapter: BflAdapter) -> None:
    colours = [RED, GREEN, BLUE, BLUE, GREEN, RED, RED, GREEN]
    request = ImageRequest("flux-2-pro", "all of them", "21:9", refs(*colours), image_size="2K")
    image = Image.open(io.BytesIO((await adapter.generate(request)).data))
    assert "".join(band_channels(image, 8)) == "RGBBGRRG"


async def test_nine_references_and_kontext_sizes_are_refused_before_a_call(
    adapter: BflAdapter,
) -> None:
    with pytest.raises(UpstreamBadRequest, match="at most 8"):
        await adapter.generate(ImageRequest("flux-2-pro", "x", "1:1", refs(*[RED] * 9)))
    with pytest.raises(UpstreamBadRequest, match="at 1K"):
        await adapter.generate(ImageRequest("flux-kontext-pro", "x", "1:1", image_size="2K"))
