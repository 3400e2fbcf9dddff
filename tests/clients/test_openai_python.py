"""The official `openai` Python SDK, sync, against `/v1`: what OpenAI's Images API gives.

Each test is a row of issue #13: code written for OpenAI, pointed at the gateway with
`base_url=http://<gateway>/v1` and a gateway key, gets the same answers and errors.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.clients.conftest import (
    CREDITS,
    GEMINI,
    GPT_IMAGE,
    b64_png,
    data_of,
    decode_image,
    mask_png,
    png,
    price,
)
from tests.support.gateway import TenantHandle
from tests.support.images import GREEN, RED, band_colours, solid_png
from tests.support.upstreams import NetworkGateway

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff", "webp": b"RIFF"}
ERROR_FIELDS = {"message", "type", "param", "code"}


def assert_openai_error(body: object) -> None:
    """The SDK's `error.body` is the `error` object of OpenAI's shape."""
    assert isinstance(body, dict), body
    assert body.keys() >= ERROR_FIELDS, body
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["type"], str) and body["type"]


# --------------------------------------------------------------------------- generate


@pytest.mark.parametrize("size", ["1024x1024", "1536x1024", "1024x1536"])
def test_generate_answers_b64_png_of_the_exact_size_by_default(
    client: openai.OpenAI, gateway: NetworkGateway, tenant: TenantHandle, size: str
) -> None:
    result = client.images.generate(model=GPT_IMAGE, prompt=f"a lighthouse {size}", size=size)

    assert len(data_of(result)) == 1
    assert data_of(result)[0].url is None
    image = b64_png(data_of(result)[0].b64_json)
    assert f"{image.width}x{image.height}" == size
    assert gateway.balance(tenant) == CREDITS - price(GPT_IMAGE)


def test_generate_without_response_format_is_b64_for_other_models_too(
    client: openai.OpenAI,
) -> None:
    result = client.images.generate(model=GEMINI, prompt="a fox", size="1024x1024")

    image = b64_png(data_of(result)[0].b64_json)
    assert (image.width, image.height) == (1024, 1024)


@pytest.mark.parametrize("output_format", ["webp", "png", "jpeg"])
def test_url_serves_the_requested_output_format(client: openai.OpenAI, output_format: str) -> None:
    options: dict[str, Any] = {"response_format": "url", "output_format": output_format}
    result = client.images.generate(
        model=GPT_IMAGE, prompt=f"a harbour in {output_format}", size="1024x1024", **options
    )

    url = data_of(result)[0].url
    assert url is not None and data_of(result)[0].b64_json is None
    served = httpx.get(url, timeout=30)
    assert served.status_code == 200
    assert served.headers["content-type"] == f"image/{output_format}"
    assert served.content.startswith(MAGIC[output_format])
    assert decode_image(served.content).size == (1024, 1024)
    assert result.output_format == output_format


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_b64_honours_output_format_and_compression(
    client: openai.OpenAI, output_format: str
) -> None:
    options: dict[str, Any] = {"output_format": output_format}
    if output_format != "png":
        options["output_compression"] = 40
    result = client.images.generate(model=GPT_IMAGE, prompt="a meadow", size="1024x1024", **options)

    raw = base64.b64decode(data_of(result)[0].b64_json or "")
    assert raw.startswith(MAGIC[output_format])
    assert decode_image(raw).size == (1024, 1024)


def test_every_valid_parameter_is_accepted_and_echoed(client: openai.OpenAI) -> None:
    result = client.images.generate(
        model=GPT_IMAGE,
        prompt="a quiet street",
        size="1024x1536",
        quality="high",
        background="opaque",
        moderation="low",
        output_format="png",
        user="end-user-42",
    )

    image = b64_png(data_of(result)[0].b64_json)
    assert (image.width, image.height) == (1024, 1536)
    assert (result.size, result.quality, result.output_format) == ("1024x1536", "high", "png")
    assert result.background == "opaque"


def test_transparent_background_comes_back_transparent(client: openai.OpenAI) -> None:
    result = client.images.generate(
        model=GPT_IMAGE, prompt="a logo", size="1024x1024", background="transparent"
    )

    image = b64_png(data_of(result)[0].b64_json)
    assert image.mode in ("RGBA", "LA"), image.mode
    low = image.getchannel("A").getextrema()[0]
    assert isinstance(low, int) and low < 255, "no transparent pixel"
    assert result.background == "transparent"


def test_transparent_background_on_a_model_without_it_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model=GEMINI, prompt="a logo", background="transparent")
    assert caught.value.param == "background"
    assert_openai_error(caught.value.body)


def test_n_up_to_ten_gives_ten_different_images(
    client: openai.OpenAI, gateway: NetworkGateway, tenant: TenantHandle
) -> None:
    model = "openai/gpt-image-1-mini"
    result = client.images.generate(model=model, prompt="ten birds", n=10, size="1024x1024")

    images = [base64.b64decode(item.b64_json or "") for item in data_of(result)]
    assert len(images) == 10
    assert len(set(images)) == 10, "some of the n images are byte-identical"
    assert gateway.balance(tenant) == CREDITS - 10 * price(model)


def test_a_prompt_of_32000_characters_is_accepted(client: openai.OpenAI) -> None:
    result = client.images.generate(model=GPT_IMAGE, prompt="a" * 32_000, size="1024x1024")
    b64_png(data_of(result)[0].b64_json)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("size", "bogus"),
        ("quality", "bogus"),
        ("output_compression", 150),
        ("output_format", "tiff"),
        ("background", "bogus"),
        ("moderation", "bogus"),
        ("response_format", "bogus"),
        ("n", 0),
        ("n", 11),
        ("prompt", "a" * 32_001),
    ],
)
def test_an_invalid_value_is_a_400_naming_the_parameter_as_sent(
    client: openai.OpenAI,
    gateway: NetworkGateway,
    tenant: TenantHandle,
    param: str,
    value: Any,
) -> None:
    arguments: dict[str, Any] = {"model": GPT_IMAGE, "prompt": "a cat", param: value}
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(**arguments)

    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"
    assert_openai_error(caught.value.body)
    assert gateway.balance(tenant) == CREDITS


def test_usage_is_in_the_response(client: openai.OpenAI) -> None:
    result = client.images.generate(model=GPT_IMAGE, prompt="a kite", size="1024x1024")

    usage = result.usage
    assert usage is not None
    assert usage.total_tokens > 0
    assert usage.input_tokens + usage.output_tokens == usage.total_tokens


# --------------------------------------------------------------------------- edits


def _edit(client: openai.OpenAI, images: list[bytes], mask: bytes | None = None) -> bytes:
    files = [(f"in-{i}.png", data, "image/png") for i, data in enumerate(images)]
    extra: dict[str, Any] = {} if mask is None else {"mask": ("mask.png", mask, "image/png")}
    result = client.images.edit(
        model=GPT_IMAGE, image=files, prompt="make it dusk", size="1024x1024", **extra
    )
    assert result.usage is not None
    image = b64_png(data_of(result)[0].b64_json)
    assert (image.width, image.height) == (1024, 1024)
    return base64.b64decode(data_of(result)[0].b64_json or "")


def test_edit_uses_every_image_and_the_mask(
    client: openai.OpenAI, gateway: NetworkGateway, tenant: TenantHandle
) -> None:
    # Each call draws a new picture (as OpenAI's do), but every reference shows in its own
    # vertical band, and the mask's opaque (kept) right half shows the first image.
    first, second, mask = solid_png(RED), solid_png(GREEN), mask_png()

    one = decode_image(_edit(client, [first]))
    two = decode_image(_edit(client, [first, second]))
    masked = decode_image(_edit(client, [first, second], mask))

    assert band_colours(one, 1) == [RED]
    assert band_colours(two, 2) == [RED, GREEN], "only the first image was used"
    assert band_colours(masked, 2) == [RED, RED], "the mask was ignored"
    assert gateway.balance(tenant) == CREDITS - 3 * price(GPT_IMAGE)


def test_edit_mask_on_a_model_without_masks_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(
            model=GEMINI,
            image=("in.png", png("in"), "image/png"),
            mask=("mask.png", mask_png(), "image/png"),
            prompt="make it dusk",
        )
    assert caught.value.param == "mask"
    assert_openai_error(caught.value.body)


def test_edit_without_an_image_names_image(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(model=GPT_IMAGE, image=[], prompt="make it dusk")
    assert caught.value.param == "image"
    assert_openai_error(caught.value.body)


# --------------------------------------------------------------------------- idempotency


def test_idempotency_key_replays_the_answer_and_charges_once(
    client: openai.OpenAI, gateway: NetworkGateway, tenant: TenantHandle
) -> None:
    headers = {"Idempotency-Key": f"client-{uuid.uuid4().hex}"}
    arguments: dict[str, Any] = {"model": GPT_IMAGE, "prompt": "a bridge", "size": "1024x1024"}

    first = client.images.with_raw_response.generate(**arguments, extra_headers=headers)
    second = client.images.with_raw_response.generate(**arguments, extra_headers=headers)

    assert second.headers.get("idempotent-replayed") == "true"
    assert second.parse().data[0].b64_json == first.parse().data[0].b64_json
    assert second.parse().created == first.parse().created
    assert gateway.balance(tenant) == CREDITS - price(GPT_IMAGE)


# --------------------------------------------------------------------------- models


def test_models_list_has_the_catalog(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert GPT_IMAGE in ids and GEMINI in ids


def test_models_retrieve_by_id_with_a_slash(
    client: openai.OpenAI, gateway: NetworkGateway, tenant: TenantHandle
) -> None:
    model = client.models.retrieve(GPT_IMAGE)  # the SDK sends openai%2Fgpt-image-1

    assert (model.id, model.object) == (GPT_IMAGE, "model")
    assert isinstance(model.owned_by, str) and model.owned_by
    # The raw slash works too.
    raw = httpx.get(f"{gateway.base_url}/v1/models/{GPT_IMAGE}", headers=tenant.auth)
    assert raw.status_code == 200 and raw.json()["id"] == GPT_IMAGE


def test_models_retrieve_of_an_unknown_id_is_an_openai_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("openai/no-such-model")
    assert_openai_error(caught.value.body)


# --------------------------------------------------------------------------- errors


def test_unknown_v1_path_is_an_openai_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.post("/images/nowhere", cast_to=httpx.Response, body={})
    assert_openai_error(caught.value.body)
    assert list(caught.value.response.json()) == ["error"]


def test_wrong_method_on_a_v1_path_is_an_openai_405(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.get("/images/generations", cast_to=httpx.Response)
    assert caught.value.status_code == 405
    assert_openai_error(caught.value.body)


def test_too_few_credits_is_a_402_in_openai_shape(gateway: NetworkGateway) -> None:
    broke = gateway.new_tenant(credits=price(GPT_IMAGE) - 1)
    with (
        openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=broke.key, max_retries=0) as sdk,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        sdk.images.generate(model=GPT_IMAGE, prompt="a cat")
    assert caught.value.status_code == 402
    assert_openai_error(caught.value.body)


def test_a_wrong_key_is_an_authentication_error(gateway: NetworkGateway) -> None:
    with (
        openai.OpenAI(
            base_url=f"{gateway.base_url}/v1", api_key="ig_not-a-real-key", max_retries=0
        ) as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.images.generate(model=GPT_IMAGE, prompt="a cat")
    assert_openai_error(caught.value.body)
