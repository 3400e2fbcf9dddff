"""The Images API adapters read the answer's raw body (app/providers/images_answer.py):
a 2xx body that is not JSON, or not an Images answer, is a clean `Unavailable` naming the
upstream, small bodies (parsed on the loop) and large ones (in a thread) alike. Through
the real `openai` SDK against a real loopback server that answers what it is told to."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from fastapi import FastAPI, Request, Response
from PIL import Image

from app.providers.base import ImageRequest, ProviderAdapter, Unavailable
from app.providers.images_answer import INLINE_PARSE_BYTES
from app.providers.openai import OpenAIImagesAdapter
from app.providers.openai_compatible import OpenAICompatibleAdapter
from tests.support.servers import serve_in_thread

# Makes a body larger than what is parsed on the loop, so the threaded path is taken.
PADDING = "x" * (INLINE_PARSE_BYTES + 1)


class _Answers:
    """The next body `/v1/images/generations` answers with 200."""

    def __init__(self) -> None:
        self.body = b"{}"


@pytest.fixture(scope="module")
def answers() -> _Answers:
    return _Answers()


@pytest.fixture(scope="module")
def upstream(answers: _Answers) -> Iterator[str]:
    app = FastAPI()

    @app.post("/v1/images/generations")
    async def generations(request: Request) -> Response:
        await request.body()
        return Response(answers.body, media_type="application/json")

    with serve_in_thread(app) as url:
        yield f"{url}/v1"


@pytest_asyncio.fixture(params=["openai", "openai-compatible"])
async def adapter(request: pytest.FixtureRequest, upstream: str) -> AsyncIterator[ProviderAdapter]:
    async with httpx.AsyncClient(timeout=10) as client:
        if request.param == "openai":
            yield OpenAIImagesAdapter(api_key="sk-test", base_url=upstream, http_client=client)
        else:
            yield OpenAICompatibleAdapter(
                base_url=upstream, api_key=None, http_client=client, options={}
            )


def _webp_b64() -> str:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(out, "WEBP")
    return base64.b64encode(out.getvalue()).decode()


MALFORMED: dict[str, bytes] = {
    "not json": b"<html>502 from a proxy, with a 200</html>",
    "truncated json": b'{"data": [{"b64_json": "AAAA',
    "json list": b"[]",
    "data missing": b'{"created": 1}',
    "data not a list": b'{"data": "oops"}',
    "entry not an object": b'{"data": [7]}',
    "b64_json not a string": b'{"data": [{"b64_json": 12345}]}',
    "b64_json a list": b'{"data": [{"b64_json": ["AAAA"]}]}',
    "large, b64_json not a string": orjson.dumps({"data": [{"b64_json": 1}], "pad": PADDING}),
    "large, not json": b"{" + PADDING.encode(),
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_2xx_is_unavailable_naming_the_upstream(
    adapter: ProviderAdapter, answers: _Answers, body: bytes
) -> None:
    answers.body = body
    with pytest.raises(Unavailable) as raised:
        await adapter.generate(ImageRequest("gpt-image-1", "a fox", "1:1", ()))
    assert raised.value.retryable
    assert any(name in str(raised.value) for name in ("OpenAI", "compatible"))


@pytest.mark.parametrize("padding", ["", PADDING], ids=["small", "large"])
async def test_a_good_answer_gives_its_image_and_usage(
    adapter: ProviderAdapter, answers: _Answers, padding: str
) -> None:
    usage: dict[str, Any] = {
        "input_tokens": 7,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 7},
        "output_tokens": 272,
        "total_tokens": 279,
    }
    answers.body = orjson.dumps(
        {"created": 1, "data": [{"b64_json": _webp_b64()}], "usage": usage, "pad": padding}
    )
    image = await adapter.generate(ImageRequest("gpt-image-1", "a fox", "1:1", ()))
    assert image.mime_type == "image/webp"
    assert Image.open(io.BytesIO(image.data)).size == (16, 16)
    assert image.usage is not None and image.usage.output_tokens == 272
    assert image.usage.input_text_tokens == 7


async def test_a_usage_of_another_shape_leaves_the_image_good(
    adapter: ProviderAdapter, answers: _Answers
) -> None:
    answers.body = orjson.dumps({"data": [{"b64_json": _webp_b64()}], "usage": {"total": 3}})
    image = await adapter.generate(ImageRequest("gpt-image-1", "a fox", "1:1", ()))
    assert image.usage is None and image.mime_type == "image/webp"
