"""imageSize through the Gemini and OpenAI adapters, via their SDKs, against the emulators:
each size asked natively (Gemini `imageConfig.imageSize`, gpt-image-2 `WxH`), and what a
model lacks refused by the upstream, as real ones do."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from app.emulators.gemini import NATIVE_SIZES, create_gemini_emulator
from app.emulators.openai import create_openai_emulator
from app.providers.base import ImageRequest, UpstreamBadRequest
from app.providers.gemini import GeminiAdapter
from app.providers.openai import LARGE_SIZES, OpenAIImagesAdapter
from tests.support.servers import serve_in_thread

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-3.1-flash-image-preview"


@pytest.fixture(scope="module")
def gemini_url() -> Iterator[str]:
    with serve_in_thread(create_gemini_emulator()) as url:
        yield url


@pytest.fixture(scope="module")
def openai_url() -> Iterator[str]:
    with serve_in_thread(create_openai_emulator()) as url:
        yield f"{url}/v1"


@pytest_asyncio.fixture
async def gemini(gemini_url: str) -> AsyncIterator[GeminiAdapter]:
    async with httpx.AsyncClient(timeout=60) as client:
        adapter = GeminiAdapter(api_key="k", base_url=gemini_url, http_client=client)
        yield adapter
        await adapter.aclose()


@pytest_asyncio.fixture
async def openai(openai_url: str) -> AsyncIterator[OpenAIImagesAdapter]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield OpenAIImagesAdapter(api_key="k", base_url=openai_url, http_client=client)


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


@pytest.mark.parametrize(("size", "scale"), [("1K", 1), ("2K", 2), ("4K", 4)])
async def test_gemini_pro_draws_each_size(gemini: GeminiAdapter, size: str, scale: int) -> None:
    image = await gemini.generate(ImageRequest(PRO, "a castle", "16:9", image_size=size))
    width, height = NATIVE_SIZES["16:9"]
    assert size_of(image.data) == (width * scale, height * scale)


async def test_gemini_flash_31_has_512(gemini: GeminiAdapter) -> None:
    image = await gemini.generate(ImageRequest(FLASH, "a castle", "1:1", image_size="512"))
    assert size_of(image.data) == (512, 512)


async def test_gemini_25_flash_refuses_other_sizes_upstream(gemini: GeminiAdapter) -> None:
    # The gateway never asks (its catalog offers 1K only); the upstream's answer if it did.
    request = ImageRequest("gemini-2.5-flash-image", "a castle", "1:1", image_size="2K")
    with pytest.raises(UpstreamBadRequest, match="Supported values are: 1K"):
        await gemini.generate(request)


@pytest.mark.parametrize("size", ["2K", "4K"])
@pytest.mark.parametrize("ratio", ["1:1", "3:2", "2:3"])
async def test_gpt_image_2_draws_larger_sizes(
    openai: OpenAIImagesAdapter, size: str, ratio: str
) -> None:
    image = await openai.generate(ImageRequest("gpt-image-2", "a fox", ratio, image_size=size))
    width, height = size_of(image.data)
    assert f"{width}x{height}" == LARGE_SIZES[size][ratio]
    assert width % 16 == 0 and height % 16 == 0 and width * height <= 3840 * 2160


async def test_gpt_image_1_refuses_a_custom_size_upstream(openai: OpenAIImagesAdapter) -> None:
    request = ImageRequest("gpt-image-1", "a fox", "1:1", image_size="2K")
    with pytest.raises(UpstreamBadRequest, match="2048x2048"):
        await openai.generate(request)
