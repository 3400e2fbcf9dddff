"""The OpenAI-compatible endpoints, driven by the official openai SDK."""

from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image

from app.api.openai_compat import ratio_for_size
from app.errors import InvalidRequest
from tests.support.gateway import Stack

PRICE = 4


def _client(stack: Stack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=f"{stack.base_url}/v1", max_retries=0)


def _png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), colour).save(buffer, "PNG")
    return buffer.getvalue()


async def test_generate_with_url_and_b64(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = _client(stack, tenant.key)
    by_url = await client.images.generate(
        model="google/gemini-2.5-flash-image", prompt="a fox", size="1536x1024"
    )
    assert by_url.data and by_url.data[0].url
    assert by_url.output_format == "webp"
    width, height = (int(v) for v in (by_url.size or "").split("x"))
    assert width * 3 == height * 4  # 1536x1024 maps to the nearest contract ratio, 4:3
    png = await client.images.generate(
        model="gemini-2.5-flash-image",
        prompt="a fox",
        n=2,
        response_format="b64_json",
        output_format="png",
    )
    assert png.data and len(png.data) == 2
    decoded = Image.open(io.BytesIO(base64.b64decode(png.data[0].b64_json or "")))
    assert decoded.format == "PNG"
    assert await stack.balance(tenant) == 100 - 3 * PRICE
    await client.close()


async def test_edit_uses_the_uploaded_image(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = _client(stack, tenant.key)
    red = await client.images.edit(
        image=("red.png", _png("red"), "image/png"),
        prompt="watercolour",
        response_format="b64_json",
    )
    blue = await client.images.edit(
        image=("blue.png", _png("blue"), "image/png"),
        prompt="watercolour",
        response_format="b64_json",
    )
    assert red.data and blue.data
    assert red.data[0].b64_json != blue.data[0].b64_json
    assert await stack.balance(tenant) == 100 - 2 * PRICE
    await client.close()


async def test_models_list(stack: Stack) -> None:
    tenant = await stack.new_tenant()
    client = _client(stack, tenant.key)
    ids = [model.id async for model in client.models.list()]
    assert "google/gemini-2.5-flash-image" in ids and "bfl/flux-kontext-max" in ids
    await client.close()


async def test_typed_errors_401_402_429_400(stack: Stack) -> None:
    from app.tenants.service import get_tenant, set_rate_limits

    bad = _client(stack, "ig_" + "x" * 43)
    with pytest.raises(openai.AuthenticationError):
        await bad.images.generate(prompt="x")
    await bad.close()

    poor = await stack.new_tenant(credits=1)
    client = _client(stack, poor.key)
    with pytest.raises(openai.APIStatusError) as raised:
        await client.images.generate(prompt="x")
    assert raised.value.status_code == 402
    assert "needs 4" in raised.value.message
    with pytest.raises(openai.BadRequestError) as invalid:
        await client.images.generate(prompt="x", size="wide")
    assert invalid.value.param == "size"
    await client.close()

    limited = await stack.new_tenant(credits=100)
    async with stack.sessions() as session, session.begin():
        await set_rate_limits(
            session, await get_tenant(session, limited.name), per_minute=1, key_per_minute=None
        )
    client = _client(stack, limited.key)
    await client.images.generate(prompt="x")
    with pytest.raises(openai.RateLimitError) as raised_429:
        await client.images.generate(prompt="x")
    assert int(raised_429.value.response.headers["retry-after"]) >= 1
    await client.close()


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        (None, "1:1"),
        ("auto", "1:1"),
        ("1024x1024", "1:1"),
        ("1536x1024", "4:3"),
        ("1024x1536", "3:4"),
        ("1792x1024", "16:9"),
        ("1024x1792", "9:16"),
        ("2560x1080", "21:9"),
    ],
)
def test_size_maps_to_the_nearest_contract_ratio(size: str | None, ratio: str) -> None:
    assert ratio_for_size(size) == ratio


@pytest.mark.parametrize("size", ["", "0x10", "axb", "1024", 7])
def test_bad_sizes_are_rejected(size: object) -> None:
    with pytest.raises(InvalidRequest):
        ratio_for_size(size)


async def test_a_malformed_multipart_body_is_a_400_in_openai_shape(stack: Stack) -> None:
    # Starlette's multipart parser refuses this (no part headers); the SDK must still get
    # OpenAI's error object, not the native one (found by the schemathesis test).
    tenant = await stack.new_tenant(credits=100)
    boundary = "bf80673b9baeec86a7a6853455ad6d1d"
    body = f"--{boundary}\r\n5.2e+16--{boundary}--\r\n".encode()
    async with stack.client() as client:
        response = await client.post(
            "/v1/images/edits",
            content=body,
            headers=tenant.auth | {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"] == "Invalid multipart data."
    assert error["code"] == "invalid_request"
    assert await stack.balance(tenant) == 100
