"""The Gemini emulator, driven by the real google-genai SDK over a loopback socket."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from google import genai
from google.genai import errors, types
from PIL import Image, ImageStat

from app.emulators.faults import FaultPlan
from app.emulators.gemini import NATIVE_SIZES, create_gemini_emulator
from tests.support.images import BLUE, GREEN, RED, band_colours, solid_png
from tests.support.servers import serve_in_thread

MODEL = "gemini-2.5-flash-image"
YELLOW = (230, 220, 20)
PALETTE = (RED, GREEN, BLUE, YELLOW)
PATH = f"/v1beta/models/{MODEL}:generateContent"


@pytest.fixture(scope="module")
def emulator() -> FastAPI:
    return create_gemini_emulator()


def make_client(base: str) -> genai.Client:
    return genai.Client(
        api_key="test",
        http_options=types.HttpOptions(base_url=base, api_version="v1beta"),
    )


@pytest.fixture
async def client(base_url: str, plan: FaultPlan) -> AsyncIterator[genai.Client]:
    sdk = make_client(base_url)
    yield sdk
    await sdk.aio.aclose()


@pytest.fixture
async def http(base_url: str, plan: FaultPlan) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as raw:
        yield raw


def image_config(ratio: str | None = None, seed: int | None = None) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        response_modalities=["IMAGE"],
        image_config=types.ImageConfig(aspect_ratio=ratio) if ratio else None,
        seed=seed,
    )


async def generate(
    client: genai.Client,
    prompt: str,
    ratio: str | None = "1:1",
    source: bytes | None = None,
    model: str = MODEL,
    seed: int | None = None,
    references: tuple[bytes, ...] = (),
) -> types.GenerateContentResponse:
    images = (*references, source) if source is not None else references
    contents: list[Any] = [types.Part.from_bytes(data=i, mime_type="image/png") for i in images]
    contents.append(prompt)
    return await client.aio.models.generate_content(
        model=model, contents=contents, config=image_config(ratio, seed)
    )


def image_bytes(response: types.GenerateContentResponse) -> bytes:
    assert response.candidates
    content = response.candidates[0].content
    assert content is not None and content.parts
    blobs = [part.inline_data for part in content.parts if part.inline_data]
    assert len(blobs) == 1
    assert blobs[0].mime_type == "image/png"
    assert blobs[0].data is not None
    return blobs[0].data


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    return image


def png_of(colour: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


# --- normal generation -------------------------------------------------------------


@pytest.mark.parametrize("ratio", list(NATIVE_SIZES))
async def test_every_native_ratio_gives_a_png_of_the_table_size(
    client: genai.Client, ratio: str
) -> None:
    response = await generate(client, "a lighthouse at dusk", ratio)

    assert decode(image_bytes(response)).size == NATIVE_SIZES[ratio]
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.model_version == MODEL
    assert response.usage_metadata is not None
    assert response.usage_metadata.candidates_token_count == 1290


async def test_table_sizes_are_gemini_flash_image_1k_sizes() -> None:
    assert NATIVE_SIZES == {
        "1:1": (1024, 1024),
        "2:3": (832, 1248),
        "3:2": (1248, 832),
        "3:4": (864, 1184),
        "4:3": (1184, 864),
        "4:5": (896, 1152),
        "5:4": (1152, 896),
        "9:16": (768, 1344),
        "16:9": (1344, 768),
        "21:9": (1536, 672),
    }


async def test_default_aspect_ratio_is_square(client: genai.Client) -> None:
    response = await generate(client, "a lighthouse at dusk", ratio=None)
    assert decode(image_bytes(response)).size == (1024, 1024)


async def test_same_request_gives_a_new_image_unless_a_seed_pins_it(
    client: genai.Client,
) -> None:
    # Like the real API: each call draws a new picture (so a gateway asking once per image
    # gets N different ones), and generationConfig.seed makes it repeatable.
    first = await generate(client, "a red fox in the snow", "16:9")
    second = await generate(client, "a red fox in the snow", "16:9")
    seeded = [await generate(client, "a red fox in the snow", "16:9", seed=7) for _ in range(2)]

    assert image_bytes(first) != image_bytes(second)
    assert image_bytes(seeded[0]) == image_bytes(seeded[1])
    assert first.response_id and second.response_id
    assert first.response_id != second.response_id


async def test_prompt_ratio_and_model_each_change_the_image(client: genai.Client) -> None:
    base = image_bytes(await generate(client, "a red fox in the snow", "4:3"))
    other_prompt = image_bytes(await generate(client, "a blue fox in the snow", "4:3"))
    other_model = image_bytes(
        await generate(client, "a red fox in the snow", "4:3", model="gemini-3-pro-image-preview")
    )

    assert len({base, other_prompt, other_model}) == 3
    pixels = decode(base).convert("RGB")
    assert ImageStat.Stat(pixels).mean != ImageStat.Stat(decode(other_prompt).convert("RGB")).mean


async def test_source_image_changes_and_drives_the_output(client: genai.Client) -> None:
    prompt = "make it look like a painting"
    text_only = image_bytes(await generate(client, prompt, "1:1", seed=1))
    from_red = image_bytes(await generate(client, prompt, source=png_of((230, 20, 20)), seed=1))
    from_blue = image_bytes(await generate(client, prompt, source=png_of((20, 20, 230)), seed=1))
    again = image_bytes(await generate(client, prompt, source=png_of((230, 20, 20)), seed=1))

    assert len({text_only, from_red, from_blue}) == 3
    assert again == from_red
    red_r, _, red_b = ImageStat.Stat(decode(from_red).convert("RGB")).mean
    blue_r, _, blue_b = ImageStat.Stat(decode(from_blue).convert("RGB")).mean
    assert red_r > blue_r + 60
    assert blue_b > red_b + 60
    assert decode(from_red).size == (1024, 1024)


async def test_every_reference_image_shows_in_order(client: genai.Client) -> None:
    async def edit(*images: bytes) -> bytes:
        response = await generate(client, "combine", "16:9", references=images, seed=11)
        return image_bytes(response)

    red, green = solid_png(RED), solid_png(GREEN)
    both, red_only, green_only, swapped = (
        await edit(red, green),
        await edit(red),
        await edit(green),
        await edit(green, red),
    )
    # A dropped or reordered reference gives another picture, visibly.
    assert len({both, red_only, green_only, swapped}) == 4
    assert band_colours(decode(both), 2) == [RED, GREEN]
    assert band_colours(decode(swapped), 2) == [GREEN, RED]
    assert band_colours(decode(red_only), 2) == [RED, RED]


async def test_changing_any_one_of_three_references_changes_the_output(
    client: genai.Client,
) -> None:
    async def edit(*images: bytes) -> bytes:
        response = await generate(client, "combine", "16:9", references=images, seed=5)
        return image_bytes(response)

    base = [RED, GREEN, BLUE]
    original = await edit(*(solid_png(colour) for colour in base))
    assert band_colours(decode(original), 3, PALETTE) == base
    for index in range(3):
        colours = [YELLOW if i == index else colour for i, colour in enumerate(base)]
        changed = await edit(*(solid_png(colour) for colour in colours))
        assert changed != original
        # The new reference shows in its own band, and the other two are unchanged.
        assert band_colours(decode(changed), 3, PALETTE) == colours


async def test_a_seed_that_is_not_an_integer_is_invalid_argument(http: httpx.AsyncClient) -> None:
    response = await http.post(
        PATH,
        headers={"x-goog-api-key": "k"},
        json={"contents": [{"parts": [{"text": "a cat"}]}], "generationConfig": {"seed": "x"}},
    )
    assert response.status_code == 400
    assert "seed" in response.json()["error"]["message"]


async def test_usage_counts_the_input_image(client: genai.Client) -> None:
    response = await generate(client, "edit", "1:1", source=png_of((1, 2, 3)))
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_tokens_details
    modalities = {detail.modality: detail.token_count for detail in usage.prompt_tokens_details}
    assert modalities[types.MediaModality.IMAGE] == 258
    assert usage.total_token_count == (usage.prompt_token_count or 0) + 1290


# --- raw wire format ---------------------------------------------------------------


async def test_response_body_matches_googles_shape(http: httpx.AsyncClient) -> None:
    response = await http.post(
        PATH,
        headers={"x-goog-api-key": "k"},
        json={
            "contents": [{"role": "user", "parts": [{"text": "a cat"}]}],
            "generationConfig": {
                "responseModalities": ["IMAGE"],
                "imageConfig": {"aspectRatio": "9:16"},
            },
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"candidates", "usageMetadata", "modelVersion", "responseId"}
    (candidate,) = body["candidates"]
    assert candidate["finishReason"] == "STOP"
    assert candidate["index"] == 0
    assert candidate["content"]["role"] == "model"
    text_part, image_part = candidate["content"]["parts"]
    assert isinstance(text_part["text"], str)
    assert image_part["inlineData"]["mimeType"] == "image/png"
    # Standard alphabet, as Google sends it.
    png = base64.b64decode(image_part["inlineData"]["data"], validate=True)
    assert decode(png).size == (768, 1344)
    assert body["modelVersion"] == MODEL
    assert body["usageMetadata"]["candidatesTokenCount"] == 1290


async def test_snake_case_fields_and_both_base64_alphabets_are_accepted(
    http: httpx.AsyncClient,
) -> None:
    # Find a source whose base64 uses the characters that differ between the alphabets.
    source = next(
        png
        for png in (png_of((shade, 90, 200), (33, 17)) for shade in range(256))
        if set(base64.b64encode(png).decode()) & {"+", "/"}
    )
    images = []
    for encoded in (
        base64.b64encode(source).decode(),
        base64.urlsafe_b64encode(source).decode().rstrip("="),
    ):
        response = await http.post(
            PATH,
            headers={"x-goog-api-key": "k"},
            json={
                "contents": [
                    {
                        "parts": [
                            {"inline_data": {"mime_type": "image/png", "data": encoded}},
                            {"text": "add a hat"},
                        ]
                    }
                ],
                "generation_config": {"image_config": {"aspect_ratio": "3:2"}, "seed": 3},
            },
        )
        assert response.status_code == 200, response.text
        parts = response.json()["candidates"][0]["content"]["parts"]
        images.append(base64.b64decode(parts[1]["inlineData"]["data"]))
    assert images[0] == images[1]
    assert decode(images[0]).size == (1248, 832)


async def test_invalid_base64_is_invalid_argument(http: httpx.AsyncClient) -> None:
    response = await http.post(
        PATH,
        headers={"x-goog-api-key": "k"},
        json={
            "contents": [
                {
                    "parts": [
                        {"inlineData": {"mimeType": "image/png", "data": "!!not*base64!!"}},
                        {"text": "edit"},
                    ]
                }
            ]
        },
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert "Base64 decoding failed" in error["message"]


async def test_undecodable_image_is_a_client_error(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as caught:
        await generate(client, "edit this", "1:1", source=b"definitely not a png")
    assert caught.value.code == 400
    assert caught.value.status == "INVALID_ARGUMENT"
    assert "input image" in (caught.value.message or "")


async def test_unsupported_ratio_is_rejected_by_name(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as caught:
        await generate(client, "a tall tower", "9:21")
    assert caught.value.code == 400
    assert caught.value.status == "INVALID_ARGUMENT"
    assert "9:21" in (caught.value.message or "")


async def test_missing_api_key_is_api_key_invalid(http: httpx.AsyncClient, plan: FaultPlan) -> None:
    response = await http.post(PATH, json={"contents": [{"parts": [{"text": "a cat"}]}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400
    assert error["status"] == "INVALID_ARGUMENT"
    reasons = [detail.get("reason") for detail in error["details"]]
    assert "API_KEY_INVALID" in reasons
    assert plan.calls == 0  # rejected before it counts as a generation call


@pytest.mark.parametrize(
    "path",
    [
        f"/v1beta/models/{MODEL}:streamGenerateContent",
        f"/v1beta/models/{MODEL}:predict",
        f"/v1beta/models/{MODEL}",
        f"/v9/models/{MODEL}:generateContent",
        "/v1beta/nothing-here",
    ],
)
async def test_other_actions_and_paths_get_googles_404(http: httpx.AsyncClient, path: str) -> None:
    response = await http.post(path, headers={"x-goog-api-key": "k"}, json={})
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"
    assert response.json()["error"]["code"] == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"parts": [{"text": "  "}]}]}, "empty text"),
        ({"contents": [{"role": "robot", "parts": [{"text": "x"}]}]}, "valid role"),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generationConfig": {"candidateCount": 2},
            },
            "Multiple candidates",
        ),
        (
            {
                "contents": [{"parts": [{"inlineData": {"mimeType": "image/gif", "data": "AA"}}]}],
            },
            "Unsupported MIME type",
        ),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generationConfig": {"imageConfig": {"aspectRatio": ["1:1"]}},
            },
            "Unsupported aspect ratio",
        ),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generationConfig": {"imageConfig": {"imageSize": "8K"}},
            },
            "Unsupported image size",
        ),
    ],
)
async def test_malformed_requests_are_invalid_argument(
    http: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await http.post(PATH, headers={"x-goog-api-key": "k"}, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert message in response.json()["error"]["message"]


async def test_malformed_json_is_invalid_argument(http: httpx.AsyncClient) -> None:
    response = await http.post(
        PATH,
        headers={"x-goog-api-key": "k", "content-type": "application/json"},
        content=b'{"contents": [',
    )
    assert response.status_code == 400
    assert "Invalid JSON payload" in response.json()["error"]["message"]


async def test_oversized_request_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.post(
        PATH,
        headers={"x-goog-api-key": "k", "content-type": "application/json"},
        content=b" " * (20 * 1024 * 1024 + 1),
    )
    assert response.status_code == 400
    assert "exceeds the limit" in response.json()["error"]["message"]


async def test_pro_model_honours_2k_image_size(client: genai.Client) -> None:
    response = await client.aio.models.generate_content(
        model="gemini-3-pro-image-preview",
        contents="a castle",
        config=types.GenerateContentConfig(
            response_modalities=["IMAGE"],
            image_config=types.ImageConfig(aspect_ratio="3:4", image_size="2K"),
        ),
    )
    assert decode(image_bytes(response)).size == (1728, 2368)


async def test_text_only_modality_gets_no_image(client: genai.Client) -> None:
    response = await client.aio.models.generate_content(
        model=MODEL,
        contents="describe a cat",
        config=types.GenerateContentConfig(response_modalities=["TEXT"]),
    )
    assert response.text
    assert response.candidates and response.candidates[0].content
    assert all(part.inline_data is None for part in response.candidates[0].content.parts or [])


# --- scripted faults, as the SDK sees them -----------------------------------------


async def test_rate_limit_fault_carries_retry_info(client: genai.Client, plan: FaultPlan) -> None:
    plan.add({"kind": "error", "status": 429, "retry_after": 2})

    with pytest.raises(errors.ClientError) as caught:
        await generate(client, "a cat")

    assert caught.value.code == 429
    assert caught.value.status == "RESOURCE_EXHAUSTED"
    details = caught.value.details["error"]["details"]
    retry_info = [d for d in details if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
    assert retry_info == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]
    # The fault was used up: the next call succeeds.
    assert decode(image_bytes(await generate(client, "a cat"))).size == (1024, 1024)
    assert plan.calls == 2


async def test_fractional_retry_after_uses_duration_json(
    client: genai.Client, plan: FaultPlan
) -> None:
    plan.add({"kind": "error", "status": 429, "retry_after": 1.5})
    with pytest.raises(errors.ClientError) as caught:
        await generate(client, "a cat")
    delays = [d.get("retryDelay") for d in caught.value.details["error"]["details"]]
    assert "1.500s" in delays


@pytest.mark.parametrize(("status", "name"), [(500, "INTERNAL"), (503, "UNAVAILABLE")])
async def test_server_error_faults_are_server_errors(
    client: genai.Client, plan: FaultPlan, status: int, name: str
) -> None:
    plan.add({"kind": "error", "status": status, "count": 2})

    for _ in range(2):
        with pytest.raises(errors.ServerError) as caught:
            await generate(client, "a cat")
        assert caught.value.code == status
        assert caught.value.status == name
    assert image_bytes(await generate(client, "a cat"))
    assert plan.calls == 3


async def test_blocked_fault_is_a_200_with_block_reason(
    client: genai.Client, plan: FaultPlan
) -> None:
    plan.add({"kind": "blocked", "reason": "PROHIBITED_CONTENT"})

    response = await generate(client, "something forbidden")

    assert not response.candidates
    assert response.prompt_feedback is not None
    assert response.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT


async def test_refused_fault_has_finish_reason_and_no_image(
    client: genai.Client, plan: FaultPlan
) -> None:
    plan.add({"kind": "refused", "finish_reason": "IMAGE_SAFETY"})

    response = await generate(client, "something unsafe")

    assert response.candidates and len(response.candidates) == 1
    candidate = response.candidates[0]
    assert candidate.finish_reason == types.FinishReason.IMAGE_SAFETY
    assert candidate.content is not None and candidate.content.parts
    assert all(part.inline_data is None for part in candidate.content.parts)
    assert candidate.content.parts[0].text


async def test_delay_fault_delays_then_answers_normally(
    client: genai.Client, plan: FaultPlan
) -> None:
    plan.add({"kind": "delay", "seconds": 0.5})

    started = time.perf_counter()
    response = await generate(client, "a slow cat", "21:9")
    elapsed = time.perf_counter() - started

    assert elapsed >= 0.5
    assert decode(image_bytes(response)).size == (1536, 672)


async def test_http_control_scripts_faults_for_sdk_calls(
    client: genai.Client, http: httpx.AsyncClient
) -> None:
    added = await http.post(
        "/_emulator/faults",
        json={"faults": [{"kind": "error", "status": 503}, {"kind": "blocked", "reason": "OTHER"}]},
    )
    assert added.status_code == 200

    with pytest.raises(errors.ServerError):
        await generate(client, "a cat")
    state = (await http.get("/_emulator/state")).json()
    assert state["calls"] == 1
    assert [fault["kind"] for fault in state["pending"]] == ["blocked"]

    assert (await http.delete("/_emulator/faults")).status_code == 204
    assert image_bytes(await generate(client, "a cat"))
    assert (await http.get("/_emulator/state")).json() == {"calls": 2, "pending": []}

    bad = await http.post("/_emulator/faults", json={"faults": [{"kind": "error", "status": 7}]})
    assert bad.status_code == 422


# --- mounted under a prefix, as the gateway does -----------------------------------


async def test_works_mounted_under_a_prefix() -> None:
    plan = FaultPlan()
    parent = FastAPI()
    parent.mount("/emulators/gemini", create_gemini_emulator(plan))

    with serve_in_thread(parent) as root:
        base = f"{root}/emulators/gemini"
        sdk = make_client(base)
        try:
            response = await generate(sdk, "a mounted cat", "16:9")
            assert decode(image_bytes(response)).size == (1344, 768)

            async with httpx.AsyncClient(base_url=base) as http:
                added = await http.post(
                    "/_emulator/faults", json={"faults": [{"kind": "error", "status": 429}]}
                )
                assert added.status_code == 200
                with pytest.raises(errors.ClientError) as caught:
                    await generate(sdk, "a mounted cat", "16:9")
                assert caught.value.code == 429
                assert (await http.get("/_emulator/state")).json()["calls"] == 2
        finally:
            await sdk.aio.aclose()
    assert plan.calls == 2
