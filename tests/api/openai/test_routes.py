"""The OpenAI-compatible endpoints, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import openai
import pytest
from PIL import Image

from app.api.openai.routes import GENERATION_BODY_BYTES
from app.emulators.openai_wire import INPUT_IMAGE_TOKENS
from tests.support.gateway import Stack

PRICE = 4


def _client(stack: Stack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=f"{stack.base_url}/v1", max_retries=0)


def _sync_client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{stack.base_url}/v1", max_retries=0)


def _png(colour: str, *, alpha: bool = False) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGBA" if alpha else "RGB", (48, 48), colour)
    if alpha:
        image.putpixel((0, 0), (0, 0, 0, 0))
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


async def test_defaults_are_b64_png_and_url_serves_the_asked_format(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = _client(stack, tenant.key)
    # No response_format: b64_json PNG (OpenAI's default), for gpt-image and others alike.
    for model in ("gpt-image-1", "google/gemini-2.5-flash-image"):
        default = await client.images.generate(model=model, prompt="a fox")
        assert default.data and default.data[0].b64_json and default.data[0].url is None
        assert _decode(default.data[0].b64_json).format == "PNG"
        assert default.output_format == "png" and default.background == "opaque"
    by_url = await client.images.generate(
        prompt="a fox", response_format="url", output_format="jpeg", output_compression=50
    )
    assert by_url.data and by_url.data[0].url
    async with httpx.AsyncClient() as http:
        served = await http.get(by_url.data[0].url)
    assert served.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(served.content)).format == "JPEG"
    assert await stack.balance(tenant) == 100 - 10 - 2 * PRICE
    assert (await stack.audit(tenant)).ok
    await client.close()


@pytest.mark.parametrize("size", ["1536x1024", "1024x1536", "256x256", "512x512", "1792x1024"])
async def test_size_is_exact(stack: Stack, size: str) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = _client(stack, tenant.key)
    answer = await client.images.generate(prompt="a fox", size=size, output_format="webp")
    assert answer.size == size and answer.data and answer.data[0].b64_json
    image = _decode(answer.data[0].b64_json)
    assert f"{image.width}x{image.height}" == size and image.format == "WEBP"
    await client.close()


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"size": "1023x1023"}, "size"),
        ({"size": "4096x4096"}, "size"),
        ({"size": "wide"}, "size"),
        ({"quality": "bogus"}, "quality"),
        ({"quality": "high"}, "quality"),  # Gemini draws at one quality: not honourable
        ({"output_compression": 150}, "output_compression"),
        ({"output_compression": 50}, "output_compression"),  # png is lossless
        ({"output_format": "gif"}, "output_format"),
        ({"background": "transparent"}, "background"),  # Gemini has no alpha
        ({"moderation": "low"}, "moderation"),
        ({"style": "vivid"}, "style"),
        ({"n": 11}, "n"),
        ({"n": 0}, "n"),
        ({"stream": "yes"}, "stream"),
        ({"response_format": "svg"}, "response_format"),
        ({"model": "dall-e-9"}, "model"),
    ],
)
async def test_unhonourable_parameters_are_400_naming_them(
    stack: Stack, params: dict[str, object], param: str
) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = _sync_client(stack, tenant.key)
    with pytest.raises(openai.BadRequestError) as refused:
        # extra_body: the SDK's types would refuse some of these before sending.
        await asyncio.to_thread(
            client.images.generate,
            prompt="a fox",
            model="google/gemini-2.5-flash-image",
            extra_body=params,
        )
    assert refused.value.param == param
    body = refused.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error"
    assert await stack.balance(tenant) == 100
    client.close()


async def test_unknown_parameters_are_refused(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = _client(stack, tenant.key)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.images.generate(prompt="a fox", extra_body={"seed": 7})
    assert refused.value.param == "seed"
    await client.close()


async def test_openai_options_reach_openai_and_usage_is_reported(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = _client(stack, tenant.key)
    answer = await client.images.generate(
        model="openai/gpt-image-1",
        prompt="a fox",
        quality="low",
        background="transparent",
        moderation="low",
        output_format="webp",
        user="end-user-7",
    )
    assert answer.background == "transparent" and answer.quality == "low"
    assert answer.usage is not None and answer.usage.output_tokens > 0
    assert answer.usage.input_tokens_details.image_tokens == 0
    # Gemini reports no tokens: the usage counts images (1 delivered).
    gemini = await client.images.generate(prompt="a fox", n=2)
    assert gemini.usage is not None and gemini.usage.output_tokens == 2
    await client.close()


async def test_v1_takes_ten_images_and_long_prompts(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = _client(stack, tenant.key)
    answer = await client.images.generate(prompt="a fox " * 1000, n=6, size="256x256")
    assert answer.data and len(answer.data) == 6
    assert len({image.b64_json for image in answer.data}) >= 1
    assert await stack.balance(tenant) == 100 - 6 * PRICE
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


async def test_every_uploaded_image_reaches_openai(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = _client(stack, tenant.key)
    images = [(f"{c}.png", _png(c), "image/png") for c in ("red", "green", "blue")]
    three = await client.images.edit(model="gpt-image-1", image=images, prompt="collage")
    one = await client.images.edit(model="gpt-image-1", image=images[0], prompt="collage")
    assert three.usage is not None and one.usage is not None
    # The upstream counts INPUT_IMAGE_TOKENS per image it received.
    assert three.usage.input_tokens_details.image_tokens == 3 * INPUT_IMAGE_TOKENS
    assert one.usage.input_tokens_details.image_tokens == INPUT_IMAGE_TOKENS
    assert three.data and one.data and three.data[0].b64_json != one.data[0].b64_json
    masked = await client.images.edit(
        model="gpt-image-1",
        image=images[0],
        mask=("mask.png", _png("white", alpha=True), "image/png"),
        prompt="collage",
        input_fidelity="high",
    )
    assert masked.data
    await client.close()


async def test_edit_limits_and_masks_are_400s(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = _client(stack, tenant.key)
    two = [("a.png", _png("red"), "image/png"), ("b.png", _png("blue"), "image/png")]
    with pytest.raises(openai.BadRequestError) as too_many:
        await client.images.edit(model="bfl/flux-kontext-pro", image=two, prompt="x")
    assert too_many.value.param == "image" and "at most 1" in too_many.value.message
    four = [(f"{c}.png", _png(c), "image/png") for c in ("red", "green", "blue", "white")]
    gemini = await client.images.edit(image=four[:3], prompt="x")  # Gemini 2.5 Flash takes 3
    assert gemini.data and gemini.usage is not None
    assert gemini.usage.input_tokens_details.image_tokens == 3  # counted, not tokens
    with pytest.raises(openai.BadRequestError) as over_three:
        await client.images.edit(image=four, prompt="x")
    assert over_three.value.param == "image" and "at most 3" in over_three.value.message
    with pytest.raises(openai.BadRequestError) as no_masks:
        await client.images.edit(
            image=two[0], mask=("m.png", _png("white", alpha=True), "image/png"), prompt="x"
        )
    assert no_masks.value.param == "mask"
    with pytest.raises(openai.BadRequestError) as not_an_image:
        await client.images.edit(image=("a.png", b"not an image", "image/png"), prompt="x")
    assert not_an_image.value.param == "image"
    assert await stack.balance(tenant) == 100 - PRICE
    await client.close()


async def test_idempotency_key_replays_once_charged(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = _client(stack, tenant.key)
    key = {"Idempotency-Key": f"k-{tenant.id}"}
    first = await client.images.with_raw_response.generate(
        prompt="a fox", response_format="url", extra_headers=key
    )
    again = await client.images.with_raw_response.generate(
        prompt="a fox", response_format="url", extra_headers=key
    )
    assert again.headers.get("idempotent-replayed") == "true"
    first_urls = [image.url or "" for image in first.parse().data or []]
    again_urls = [image.url or "" for image in again.parse().data or []]
    assert len(first_urls) == 1 and len(again_urls) == 1
    assert first_urls[0].split("?")[0] == again_urls[0].split("?")[0]  # the same object
    b64 = await client.images.generate(prompt="a cat", extra_headers={"Idempotency-Key": "b"})
    b64_again = await client.images.generate(prompt="a cat", extra_headers={"Idempotency-Key": "b"})
    assert b64.data and b64_again.data and b64.data[0].b64_json == b64_again.data[0].b64_json
    assert await stack.balance(tenant) == 100 - 2 * PRICE
    with pytest.raises(openai.ConflictError) as conflict:
        await client.images.generate(prompt="a dog", extra_headers=key)
    assert "different request body" in conflict.value.message
    assert (await stack.audit(tenant)).ok
    await client.close()


async def test_unknown_paths_and_methods_answer_openai_errors(stack: Stack) -> None:
    tenant = await stack.new_tenant()
    async with stack.client() as client:
        missing = await client.get("/v1/nothing/here", headers=tenant.auth)
        wrong = await client.get("/v1/images/generations", headers=tenant.auth)
    assert missing.status_code == 404 and wrong.status_code == 405
    for response in (missing, wrong):
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_models_retrieve(stack: Stack) -> None:
    tenant = await stack.new_tenant()
    client = _sync_client(stack, tenant.key)
    for name in ("openai/gpt-image-1", "gpt-image-1"):
        model = await asyncio.to_thread(client.models.retrieve, name)
        assert model.id == "openai/gpt-image-1" and model.owned_by == "openai"
    async with stack.client() as http:
        encoded = await http.get("/v1/models/openai%2Fgpt-image-1", headers=tenant.auth)
    assert encoded.status_code == 200 and encoded.json()["id"] == "openai/gpt-image-1"
    with pytest.raises(openai.NotFoundError):
        await asyncio.to_thread(client.models.retrieve, "openai/dall-e-9")
    client.close()


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
    with pytest.raises(openai.BadRequestError) as count:
        await client.images.generate(prompt="x", n=12)
    assert count.value.param == "n" and "numImages" not in count.value.message
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


async def test_too_large_bodies_are_413_in_openai_shape(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    big = b"x" * (stack.settings.max_body_bytes + 1)
    async with stack.client() as client:
        generation = await client.post(
            "/v1/images/generations",
            content=big,
            headers=tenant.auth | {"Content-Type": "application/json"},
        )
        edit = await client.post(
            "/v1/images/edits",
            content=big,
            headers=tenant.auth | {"Content-Type": "multipart/form-data; boundary=b"},
        )
    for response in (generation, edit):
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert await stack.balance(tenant) == 100


async def test_a_generation_body_over_a_mebibyte_is_413(stack: Stack) -> None:
    """Generations carry a prompt and options, never images: the cap is 1 MiB, not the
    16 MiB an edit's uploads may take."""
    tenant = await stack.new_tenant(credits=100)
    assert stack.settings.max_body_bytes > GENERATION_BODY_BYTES
    padded = json.dumps({"prompt": "a kite", "user": "u" * GENERATION_BODY_BYTES})
    async with stack.client() as client:
        response = await client.post(
            "/v1/images/generations",
            content=padded,
            headers=tenant.auth | {"Content-Type": "application/json"},
        )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert await stack.balance(tenant) == 100


async def test_edits_replay_by_key_and_a_new_upload_is_a_conflict(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    client = _sync_client(stack, tenant.key)
    key = {"Idempotency-Key": "edit-1"}

    def edit(colour: str) -> openai.types.ImagesResponse:
        image = (f"{colour}.png", _png(colour), "image/png")
        return client.images.edit(image=image, prompt="ink", extra_headers=key)

    first = await asyncio.to_thread(edit, "red")
    again = await asyncio.to_thread(edit, "red")
    assert first.data and again.data and first.data[0].b64_json == again.data[0].b64_json
    with pytest.raises(openai.ConflictError):
        await asyncio.to_thread(edit, "blue")  # same key and fields, another image
    assert await stack.balance(tenant) == 100 - PRICE
    client.close()


async def test_a_text_field_where_a_file_belongs_is_refused(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    async with stack.client() as client:
        response = await client.post(
            "/v1/images/edits",
            headers=tenant.auth,
            data={"prompt": "x", "mask": "not a file"},
            files={"image": ("a.png", _png("red"), "image/png")},
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "mask"
    assert await stack.balance(tenant) == 100
