"""The OpenAI emulator's sizes: gpt-image-2 draws any WIDTHxHEIGHT within OpenAI's rule
(sides multiples of 16, long side <= 3840, ratio 1:3 to 3:1, 655,360 to 8,294,400 pixels);
the other GPT Image models only their three."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator

import openai
import pytest
from fastapi import FastAPI
from openai import AsyncOpenAI
from PIL import Image

from app.emulators.faults import FaultPlan
from app.emulators.openai import create_openai_emulator


@pytest.fixture(scope="module")
def emulator() -> FastAPI:
    return create_openai_emulator()


@pytest.fixture
async def client(base_url: str, plan: FaultPlan) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(api_key="k", base_url=f"{base_url}/v1", max_retries=0) as sdk:
        yield sdk


@pytest.mark.parametrize("size", ["2048x2048", "3840x2160", "2880x2880", "1024x3072", "1536x1024"])
async def test_gpt_image_2_draws_any_valid_size(client: AsyncOpenAI, size: str) -> None:
    answer = await client.images.generate(model="gpt-image-2", prompt="a fox", size=size)
    assert answer.data and answer.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json)))
    assert f"{image.width}x{image.height}" == size


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("gpt-image-2", "1000x1000"),  # not multiples of 16
        ("gpt-image-2", "3840x2176"),  # over 8,294,400 pixels
        ("gpt-image-2", "4096x1024"),  # long side over 3840
        ("gpt-image-2", "512x512"),  # under 655,360 pixels
        ("gpt-image-2", "3200x1024"),  # ratio over 3:1
        ("gpt-image-1", "2048x2048"),  # only the three sizes
    ],
)
async def test_other_sizes_are_invalid_values(client: AsyncOpenAI, model: str, size: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(model=model, prompt="a fox", size=size)
    assert caught.value.param == "size"
    assert size in caught.value.message
