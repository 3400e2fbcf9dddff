"""The OpenAI emulator, driven by the real `openai` SDK over a loopback socket."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai import AsyncOpenAI, omit
from openai.types.responses import (
    ResponseOutputMessage,
    ResponseReasoningItem,
    ToolChoiceTypes,
)
from openai.types.responses.response_output_item import ImageGenerationCall
from PIL import Image, ImageStat

from app.emulators.faults import FaultPlan
from app.emulators.openai import create_openai_emulator
from tests.support.images import BLUE, GREEN, RED, band_colours, half_mask, region_mean, solid_png
from tests.support.servers import serve_in_thread

MODEL = "gpt-image-1"
YELLOW = (230, 220, 20)
PALETTE = (RED, GREEN, BLUE, YELLOW)
SIZES = {"1024x1024": (1024, 1024), "1536x1024": (1536, 1024), "1024x1536": (1024, 1536)}
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


@pytest.fixture(scope="module")
def emulator() -> FastAPI:
    return create_openai_emulator()


@pytest.fixture
async def client(base_url: str, plan: FaultPlan) -> AsyncIterator[AsyncOpenAI]:
    sdk = AsyncOpenAI(api_key="sk-test", base_url=f"{base_url}/v1", max_retries=0)
    yield sdk
    await sdk.close()


@pytest.fixture
async def http(base_url: str, plan: FaultPlan) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as raw:
        yield raw


def decode(b64: str | None) -> Image.Image:
    assert b64
    image = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
    image.load()
    return image


def png_of(colour: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


async def draw(client: AsyncOpenAI, prompt: str = "a lighthouse", **kwargs: Any) -> Image.Image:
    response = await client.images.generate(model=MODEL, prompt=prompt, **kwargs)
    assert response.data and len(response.data) == 1
    return decode(response.data[0].b64_json)


async def respond(
    client: AsyncOpenAI, prompt: str = "draw a fox", source: bytes | None = None, **tool: Any
) -> Any:
    content: list[Any] = [{"type": "input_text", "text": prompt}]
    if source is not None:
        content.append({"type": "input_image", "image_url": data_url(source), "detail": "auto"})
    message: Any = {"role": "user", "content": content}
    image_tool: Any = {"type": "image_generation", **tool}
    return await client.responses.create(
        model="gpt-5-nano",
        input=[message],
        tools=[image_tool],
        tool_choice={"type": "image_generation"},
    )


# --- Images API: generations ---------------------------------------------------------


@pytest.mark.parametrize("output_format", list(FORMATS))
@pytest.mark.parametrize("size", [*SIZES, "auto"])
async def test_generations_in_every_size_and_format(
    client: AsyncOpenAI, size: str, output_format: Any
) -> None:
    response = await client.images.generate(
        model=MODEL, prompt="a lighthouse at dusk", size=size, output_format=output_format
    )

    assert response.data and len(response.data) == 1
    image = decode(response.data[0].b64_json)
    expected = "1024x1024" if size == "auto" else size
    assert image.size == SIZES[expected]
    assert image.format == FORMATS[output_format]
    assert response.size == expected
    assert response.output_format == output_format
    assert response.quality == "medium"  # what "auto" resolves to
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.created > 0


async def test_n_images_are_distinct_and_every_call_draws_new_ones(client: AsyncOpenAI) -> None:
    # OpenAI has no seed: a gateway asking once per image must still get N different ones.
    first = await client.images.generate(model=MODEL, prompt="three cats", n=3)
    second = await client.images.generate(model=MODEL, prompt="three cats", n=3)

    assert first.data and second.data
    blobs = [item.b64_json for item in first.data]
    assert len(set(blobs)) == 3
    assert not set(blobs) & {item.b64_json for item in second.data}


async def test_prompt_and_model_each_change_the_image(client: AsyncOpenAI) -> None:
    base = await draw(client, "a red fox")
    other_prompt = await draw(client, "a blue fox")
    other_model = await client.images.generate(model="gpt-image-1-mini", prompt="a red fox")

    assert other_model.data
    assert other_prompt.tobytes() != base.tobytes()
    assert decode(other_model.data[0].b64_json).tobytes() != base.tobytes()


async def test_output_compression_shrinks_lossy_output(client: AsyncOpenAI) -> None:
    sizes = []
    for compression in (95, 20):
        response = await client.images.generate(
            model=MODEL,
            prompt="a detailed city",
            output_format="jpeg",
            output_compression=compression,
        )
        assert response.data
        sizes.append(len(base64.b64decode(response.data[0].b64_json or "")))
    assert sizes[1] < sizes[0]


@pytest.mark.parametrize("output_format", ["png", "webp"])
async def test_transparent_background_draws_alpha(
    client: AsyncOpenAI, output_format: Literal["png", "webp"]
) -> None:
    result = await client.images.generate(
        model=MODEL,
        prompt="a logo",
        size="1024x1024",
        background="transparent",
        output_format=output_format,
    )
    assert result.data and result.background == "transparent"
    alpha = decode(result.data[0].b64_json).convert("RGBA").getchannel("A")
    assert alpha.getpixel((0, 0)) == 0  # the frame is clear
    assert alpha.getpixel((512, 512)) == 255  # the subject is not
    opaque = await client.images.generate(model=MODEL, prompt="a logo", size="1024x1024")
    assert opaque.data and opaque.background == "opaque"
    assert decode(opaque.data[0].b64_json).mode == "RGB"


@pytest.mark.parametrize(
    ("kwargs", "param", "code"),
    [
        ({"size": "512x512"}, "size", "invalid_value"),
        ({"size": "1792x1024"}, "size", "invalid_value"),
        ({"n": 11}, "n", "integer_above_max_value"),
        ({"n": 0}, "n", "integer_below_min_value"),
        ({"output_format": "gif"}, "output_format", "invalid_value"),
        ({"output_compression": 50}, "output_compression", "invalid_value"),
        ({"quality": "ultra"}, "quality", "invalid_value"),
        ({"model": "dall-e-3"}, "model", "invalid_value"),
        ({"output_format": "jpeg", "background": "transparent"}, "background", "invalid_value"),
    ],
)
async def test_invalid_parameters_are_400_naming_the_param(
    client: AsyncOpenAI, kwargs: dict[str, Any], param: str, code: str
) -> None:
    arguments = {"model": MODEL, "prompt": "x", **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(**arguments)
    assert caught.value.param == param
    assert caught.value.code == code
    assert caught.value.type == "invalid_request_error"


async def test_error_body_matches_openais_shape(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/images/generations",
        headers={"Authorization": "Bearer k"},
        json={"model": MODEL, "prompt": "x", "size": "999x999"},
    )
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"].startswith("req_")


async def test_unknown_path_is_openais_404(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/images/variations2", headers={"Authorization": "Bearer k"})
    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith("Invalid URL (POST ")


# --- Images API: edits (multipart) ---------------------------------------------------


async def test_edit_with_the_sdk_uses_the_source_image(client: AsyncOpenAI) -> None:
    async def edit(colour: tuple[int, int, int]) -> Image.Image:
        response = await client.images.edit(
            image=("src.png", png_of(colour), "image/png"),
            model=MODEL,
            prompt="make it a painting",
            size="1536x1024",
            output_format="webp",
            output_compression=80,
        )
        assert response.data and response.size == "1536x1024"
        return decode(response.data[0].b64_json)

    red, blue, red_again = (
        await edit((230, 20, 20)),
        await edit((20, 20, 230)),
        await edit((230, 20, 20)),
    )

    assert red.format == "WEBP" and red.size == (1536, 1024)
    red_r, _, red_b = ImageStat.Stat(red.convert("RGB")).mean
    blue_r, _, blue_b = ImageStat.Stat(blue.convert("RGB")).mean
    assert red_r > blue_r + 60 and blue_b > red_b + 60
    # A new picture per call, following the same source.
    assert red.tobytes() != red_again.tobytes()
    assert ImageStat.Stat(red_again.convert("RGB")).mean[0] > blue_r + 60
    text_only = await draw(client, "make it a painting", size="1536x1024")
    assert text_only.convert("RGB").tobytes() != red.convert("RGB").tobytes()


async def test_edit_with_several_images_uses_image_array(client: AsyncOpenAI) -> None:
    one = await client.images.edit(
        image=[("a.png", png_of((10, 200, 10)), "image/png")], model=MODEL, prompt="merge"
    )
    two = await client.images.edit(
        image=[
            ("a.png", png_of((10, 200, 10)), "image/png"),
            ("b.png", png_of((200, 10, 200)), "image/png"),
        ],
        model=MODEL,
        prompt="merge",
        n=2,
    )
    assert one.data and two.data and len(two.data) == 2
    assert one.data[0].b64_json != two.data[0].b64_json


async def test_changing_any_one_of_three_images_changes_the_edit(client: AsyncOpenAI) -> None:
    async def edit(colours: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        response = await client.images.edit(
            image=[(f"{i}.png", solid_png(c), "image/png") for i, c in enumerate(colours)],
            model=MODEL,
            prompt="combine",
            size="1536x1024",
        )
        assert response.data
        return band_colours(decode(response.data[0].b64_json), 3, PALETTE)

    base = [RED, GREEN, BLUE]
    assert await edit(base) == base
    for index in range(3):
        colours = [YELLOW if i == index else colour for i, colour in enumerate(base)]
        # The new image shows in its own band, and the other two are unchanged.
        assert await edit(colours) == colours


async def test_every_image_and_the_mask_change_the_edit(client: AsyncOpenAI) -> None:
    async def edit(*images: bytes, mask: bytes | None = None) -> Image.Image:
        response = await client.images.edit(
            image=[(f"{i}.png", data, "image/png") for i, data in enumerate(images)],
            mask=("mask.png", mask, "image/png") if mask is not None else omit,
            model=MODEL,
            prompt="combine",
            size="1536x1024",
        )
        assert response.data
        return decode(response.data[0].b64_json)

    red, green = solid_png(RED), solid_png(GREEN)
    # Each image[] shows in its own band, in order: a dropped one is visible in any call.
    assert band_colours(await edit(red, green), 2) == [RED, GREEN]
    assert band_colours(await edit(green, red), 2) == [GREEN, RED]
    assert band_colours(await edit(red), 2) == [RED, RED]
    # The mask keeps the first image where it is opaque (the left half), and only there.
    masked, unmasked = await edit(red, mask=half_mask()), await edit(red)
    left = (0, 0, 700, 900)
    assert max(abs(m - c) for m, c in zip(region_mean(masked, left), RED, strict=True)) < 3
    assert max(abs(m - c) for m, c in zip(region_mean(unmasked, left), RED, strict=True)) > 10
    right = (900, 0, 1536, 900)
    assert max(abs(m - c) for m, c in zip(region_mean(masked, right), RED, strict=True)) > 10


async def test_an_undecodable_mask_is_invalid_image_file(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.images.edit(
            image=("a.png", solid_png(RED), "image/png"),
            mask=("mask.png", b"not an image", "image/png"),
            model=MODEL,
            prompt="x",
        )
    assert raised.value.param == "mask"


async def test_edit_without_image_is_missing_parameter(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/images/edits",
        headers={"Authorization": "Bearer k"},
        data={"model": MODEL, "prompt": "x"},
        files={"other": ("x.txt", b"hello", "text/plain")},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "image"
    assert response.json()["error"]["code"] == "missing_required_parameter"


async def test_edit_with_undecodable_or_non_image_file_is_rejected(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.edit(image=("a.png", b"not an image", "image/png"), prompt="x")
    assert caught.value.code == "invalid_image_file"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.edit(image=("a.txt", b"hello", "text/plain"), prompt="x")
    assert caught.value.code == "unsupported_file_mimetype"


# --- Responses API -------------------------------------------------------------------


async def test_responses_create_is_parsed_into_typed_items(client: AsyncOpenAI) -> None:
    response = await respond(client, size="1024x1536", output_format="webp", quality="high")

    assert response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.model == "gpt-5-nano"
    reasoning, call, message = response.output
    assert isinstance(reasoning, ResponseReasoningItem)
    assert isinstance(call, ImageGenerationCall)
    assert isinstance(message, ResponseOutputMessage)
    assert call.status == "completed" and call.id.startswith("ig_")
    assert call.action == "generate"
    assert (call.size, call.output_format, call.quality) == ("1024x1536", "webp", "high")
    image = decode(call.result)
    assert image.format == "WEBP" and image.size == (1024, 1536)
    assert response.output_text == "Here is the image you asked for."
    assert response.usage is not None and response.usage.total_tokens > 0
    assert response.tools[0].type == "image_generation"
    assert response.tool_choice == ToolChoiceTypes(type="image_generation")


async def test_responses_input_image_drives_an_edit(client: AsyncOpenAI) -> None:
    plain = await respond(client, "paint it")
    red = await respond(client, "paint it", png_of((230, 20, 20)))
    green = await respond(client, "paint it", png_of((20, 230, 20)))

    results = [r.output[1].result for r in (plain, red, green)]
    assert len(set(results)) == 3
    assert red.output[1].action == "edit"
    assert decode(results[1]).format == "PNG"  # the tool's default format


async def test_responses_string_input_and_no_tool_gives_text_only(client: AsyncOpenAI) -> None:
    response = await client.responses.create(model="gpt-5-nano", input="say hello")
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert "say hello" in response.output_text


async def test_responses_forced_tool_must_be_offered(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(
            model="gpt-5-nano", input="x", tool_choice={"type": "image_generation"}
        )
    assert caught.value.param == "tool_choice"


async def test_responses_tool_options_are_validated(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await respond(client, size="640x480")
    assert caught.value.param == "tools[0].size"


async def test_responses_rejects_non_data_image_urls(client: AsyncOpenAI) -> None:
    message: Any = {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "x"},
            {"type": "input_image", "image_url": "data:image/png;base64,@@@", "detail": "auto"},
        ],
    }
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(
            model="gpt-5-nano", input=[message], tools=[{"type": "image_generation"}]
        )
    assert caught.value.param == "input[0].content[1].image_url"
    assert "@@@" not in caught.value.message


# --- auth ----------------------------------------------------------------------------


async def test_missing_key_is_authentication_error(client: AsyncOpenAI, plan: FaultPlan) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.images.generate(model=MODEL, prompt="x", extra_headers={"Authorization": omit})
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"
    assert "didn't provide an API key" in caught.value.message
    assert plan.calls == 0  # rejected before it counts as a generation call


# --- scripted faults, as the SDK sees them -------------------------------------------


async def test_rate_limit_fault_has_openai_headers(client: AsyncOpenAI, plan: FaultPlan) -> None:
    plan.add({"kind": "error", "status": 429, "retry_after": 2})

    with pytest.raises(openai.RateLimitError) as caught:
        await draw(client)

    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.response.headers["retry-after-ms"] == "2000"
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert (await draw(client)).size == (1024, 1024)  # the fault was used up
    assert plan.calls == 2


async def test_sdk_default_retries_honour_retry_after_ms(base_url: str, plan: FaultPlan) -> None:
    """The SDK's own retry loop reads our headers: a 50 ms hint, then success."""
    plan.add({"kind": "error", "status": 429, "retry_after": 0.05})
    async with AsyncOpenAI(api_key="k", base_url=f"{base_url}/v1") as sdk:
        started = time.perf_counter()
        assert (await draw(sdk)).size == (1024, 1024)
    assert time.perf_counter() - started < 5
    assert plan.calls == 2


@pytest.mark.parametrize("status", [500, 503])
async def test_server_error_faults(client: AsyncOpenAI, plan: FaultPlan, status: int) -> None:
    plan.add({"kind": "error", "status": status})
    with pytest.raises(openai.InternalServerError) as caught:
        await draw(client)
    assert caught.value.status_code == status
    assert caught.value.type == "server_error"


async def test_blocked_fault_is_moderation_blocked(client: AsyncOpenAI, plan: FaultPlan) -> None:
    plan.add({"kind": "blocked", "reason": "SEXUAL"}, {"kind": "refused"})

    with pytest.raises(openai.BadRequestError) as blocked:
        await draw(client)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.images.edit(image=("a.png", png_of((1, 2, 3)), "image/png"), prompt="x")

    for caught in (blocked, refused):
        assert caught.value.code == "moderation_blocked"
        assert caught.value.type == "image_generation_user_error"
    assert "safety_violations=[sexual]" in blocked.value.message
    assert blocked.value.message != refused.value.message


async def test_responses_blocked_is_a_400(client: AsyncOpenAI, plan: FaultPlan) -> None:
    plan.add({"kind": "blocked"})
    with pytest.raises(openai.BadRequestError) as caught:
        await respond(client)
    assert caught.value.code == "moderation_blocked"


async def test_responses_refused_is_a_failed_call_without_result(
    client: AsyncOpenAI, plan: FaultPlan
) -> None:
    plan.add({"kind": "refused", "finish_reason": "VIOLENCE"})

    response = await respond(client)

    assert response.status == "completed"
    call = response.output[1]
    assert isinstance(call, ImageGenerationCall)
    assert call.status == "failed" and call.result is None
    assert call.error is not None and call.error.code == "moderation_blocked"
    assert call.error.moderation_details is not None
    assert call.error.moderation_details.categories == ["violence"]
    assert response.output_text


async def test_delay_fault_delays_then_answers(client: AsyncOpenAI, plan: FaultPlan) -> None:
    plan.add({"kind": "delay", "seconds": 0.5})
    started = time.perf_counter()
    response = await respond(client, size="1536x1024")
    assert time.perf_counter() - started >= 0.5
    assert decode(response.output[1].result).size == (1536, 1024)


async def test_sdk_timeout_is_api_timeout_error(base_url: str, plan: FaultPlan) -> None:
    plan.add({"kind": "delay", "seconds": 2})
    async with AsyncOpenAI(
        api_key="k", base_url=f"{base_url}/v1", max_retries=0, timeout=0.3
    ) as sdk:
        with pytest.raises(openai.APITimeoutError):
            await draw(sdk)


async def test_http_control_scripts_faults(client: AsyncOpenAI, http: httpx.AsyncClient) -> None:
    added = await http.post(
        "/_emulator/faults", json={"faults": [{"kind": "error", "status": 503}]}
    )
    assert added.status_code == 200
    with pytest.raises(openai.InternalServerError):
        await draw(client)
    assert (await http.get("/_emulator/state")).json() == {"calls": 1, "pending": []}


# --- mounted under a prefix, as the gateway does -------------------------------------


async def test_works_mounted_under_a_prefix() -> None:
    plan = FaultPlan()
    parent = FastAPI()
    parent.mount("/emulators/openai", create_openai_emulator(plan))

    with serve_in_thread(parent) as root:
        base = f"{root}/emulators/openai"
        async with AsyncOpenAI(api_key="k", base_url=f"{base}/v1", max_retries=0) as sdk:
            assert (await draw(sdk, size="1024x1536")).size == (1024, 1536)
            edited = await sdk.images.edit(
                image=("a.png", png_of((9, 9, 9)), "image/png"), prompt="x"
            )
            assert edited.data
            assert (await respond(sdk)).output[1].result
            async with httpx.AsyncClient(base_url=base) as http:
                added = await http.post(
                    "/_emulator/faults", json={"faults": [{"kind": "error", "status": 429}]}
                )
                assert added.status_code == 200
            with pytest.raises(openai.RateLimitError):
                await draw(sdk)
    assert plan.calls == 4
