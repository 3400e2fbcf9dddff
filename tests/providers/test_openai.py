"""Both OpenAI adapters through the real `openai` SDK against the emulator on a real port."""

from __future__ import annotations

import email.utils
import io
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import openai
import pytest
import pytest_asyncio
from PIL import Image, ImageStat

from app.emulators.faults import FaultPlan
from app.emulators.openai import create_openai_emulator
from app.emulators.openai_wire import INPUT_IMAGE_TOKENS
from app.providers.base import (
    ImageOptions,
    ImageRequest,
    Moderated,
    ProviderAdapter,
    RateLimited,
    SourceImage,
    Unavailable,
    UpstreamBadRequest,
    UpstreamTimeout,
)
from app.providers.openai import OpenAIImagesAdapter, OpenAIResponsesAdapter, translate_error
from app.providers.retry import RetryPolicy, call_with_retries
from tests.support.images import half_mask
from tests.support.servers import free_port, serve_in_thread

API_KEY = "sk-test-secret-key-1234"
RATIO_SIZES = {"1:1": (1024, 1024), "3:2": (1536, 1024), "2:3": (1024, 1536)}
MODELS = {OpenAIImagesAdapter: "gpt-image-1", OpenAIResponsesAdapter: "gpt-5-nano"}
AdapterClass = type[OpenAIImagesAdapter] | type[OpenAIResponsesAdapter]


@dataclass
class Emulator:
    url: str
    faults: FaultPlan


@dataclass
class Subject:
    adapter: ProviderAdapter
    model: str

    def request(
        self, ratio: str = "1:1", source: SourceImage | None = None, prompt: str = "a fox"
    ) -> ImageRequest:
        return ImageRequest(self.model, prompt, ratio, (source,) if source else ())


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    plan = FaultPlan()
    with serve_in_thread(create_openai_emulator(plan)) as url:
        yield Emulator(url, plan)


@pytest_asyncio.fixture(
    params=[OpenAIImagesAdapter, OpenAIResponsesAdapter], ids=["images", "responses"]
)
async def subject(request: pytest.FixtureRequest, emulator: Emulator) -> AsyncIterator[Subject]:
    emulator.faults.reset()
    cls: AdapterClass = request.param
    async with httpx.AsyncClient(timeout=10) as client:
        adapter = cls(api_key=API_KEY, base_url=f"{emulator.url}/v1", http_client=client)
        yield Subject(adapter, MODELS[cls])
        await adapter.aclose()
        assert not client.is_closed  # the shared client belongs to its owner
    emulator.faults.reset()


def png(colour: str) -> SourceImage:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), colour).save(buffer, "PNG")
    return SourceImage("image/png", buffer.getvalue())


@pytest.mark.parametrize("ratio", list(RATIO_SIZES))
async def test_text_to_image_returns_webp_of_the_native_size(subject: Subject, ratio: str) -> None:
    image = await subject.adapter.generate(subject.request(ratio))

    assert image.mime_type == "image/webp"
    assert image.data[:4] == b"RIFF" and image.data[8:12] == b"WEBP"
    decoded = Image.open(io.BytesIO(image.data))
    assert decoded.format == "WEBP"
    assert decoded.size == RATIO_SIZES[ratio]


async def test_adapter_names_match_the_registry() -> None:
    assert OpenAIImagesAdapter.name == "openai-images"
    assert OpenAIResponsesAdapter.name == "openai-responses"


async def test_responses_adapter_returns_the_models_text(emulator: Emulator) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        adapter = OpenAIResponsesAdapter(
            api_key=API_KEY, base_url=f"{emulator.url}/v1", http_client=client
        )
        image = await adapter.generate(ImageRequest("gpt-5-nano", "a fox", "1:1"))
    assert image.text == "Here is the image you asked for."


async def test_image_to_image_uses_the_source(subject: Subject) -> None:
    red = await subject.adapter.generate(subject.request(source=png("red")))
    green = await subject.adapter.generate(subject.request(source=png("green")))
    text_only = await subject.adapter.generate(subject.request())

    assert len({red.data, green.data, text_only.data}) == 3
    assert red.mime_type == "image/webp"
    r, g, _ = ImageStat.Stat(Image.open(io.BytesIO(red.data)).convert("RGB")).mean
    assert r > g + 60


async def test_rate_limit_carries_retry_after(subject: Subject, emulator: Emulator) -> None:
    emulator.faults.add({"kind": "error", "status": 429, "retry_after": 7})
    with pytest.raises(RateLimited) as raised:
        await subject.adapter.generate(subject.request())
    assert raised.value.retry_after == 7.0
    assert raised.value.retryable


async def test_retry_after_ms_gives_sub_second_precision(
    subject: Subject, emulator: Emulator
) -> None:
    emulator.faults.add({"kind": "error", "status": 429, "retry_after": 0.25})
    with pytest.raises(RateLimited) as raised:
        await subject.adapter.generate(subject.request())
    assert raised.value.retry_after == 0.25


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_unavailable(
    subject: Subject, emulator: Emulator, status: int
) -> None:
    emulator.faults.add({"kind": "error", "status": status})
    with pytest.raises(Unavailable):
        await subject.adapter.generate(subject.request())


async def test_blocked_prompt_is_moderated(subject: Subject, emulator: Emulator) -> None:
    emulator.faults.add({"kind": "blocked", "reason": "SEXUAL"})
    with pytest.raises(Moderated, match="moderation_blocked"):
        await subject.adapter.generate(subject.request())


async def test_refused_output_is_moderated(subject: Subject, emulator: Emulator) -> None:
    """Images API: a 400 moderation_blocked. Responses API: a 200 whose image call failed,
    which is a verdict on the prompt (retrying is billed and refused again), not an outage."""
    emulator.faults.add({"kind": "refused", "finish_reason": "VIOLENCE"})
    with pytest.raises(Moderated, match="violence"):
        await subject.adapter.generate(subject.request())
    assert emulator.faults.calls == 1


async def test_unauthorised_is_a_bad_request_without_the_key(
    subject: Subject, emulator: Emulator
) -> None:
    emulator.faults.add(
        {"kind": "error", "status": 401, "message": f"Incorrect API key provided: {API_KEY}."}
    )
    with pytest.raises(UpstreamBadRequest) as raised:
        await subject.adapter.generate(subject.request())
    assert "401" in raised.value.message
    assert API_KEY not in raised.value.message
    assert API_KEY not in str(raised.value)


async def test_non_native_ratio_is_a_bad_request_without_a_call(
    subject: Subject, emulator: Emulator
) -> None:
    with pytest.raises(UpstreamBadRequest, match="16:9"):
        await subject.adapter.generate(subject.request("16:9"))
    assert emulator.faults.calls == 0


async def test_undecodable_source_is_a_bad_request(subject: Subject) -> None:
    with pytest.raises(UpstreamBadRequest) as raised:
        await subject.adapter.generate(subject.request(source=SourceImage("image/png", b"junk")))
    assert "junk" not in raised.value.message


async def test_slow_upstream_is_a_timeout(emulator: Emulator) -> None:
    emulator.faults.reset()
    emulator.faults.add({"kind": "delay", "seconds": 2})
    async with httpx.AsyncClient(timeout=0.3) as client:
        adapter = OpenAIImagesAdapter(
            api_key=API_KEY, base_url=f"{emulator.url}/v1", http_client=client
        )
        with pytest.raises(UpstreamTimeout):
            await adapter.generate(ImageRequest("gpt-image-1", "a fox", "1:1"))
    assert emulator.faults.calls == 1  # and not retried by the SDK
    emulator.faults.reset()


@pytest.mark.parametrize("cls", [OpenAIImagesAdapter, OpenAIResponsesAdapter])
async def test_closed_port_is_unavailable(cls: AdapterClass) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        adapter = cls(
            api_key=API_KEY, base_url=f"http://127.0.0.1:{free_port()}/v1", http_client=client
        )
        with pytest.raises(Unavailable) as raised:
            await adapter.generate(ImageRequest(MODELS[cls], "x", "1:1"))
    assert API_KEY not in raised.value.message


async def test_sdk_does_not_retry_on_its_own(subject: Subject, emulator: Emulator) -> None:
    """Our policy retries a 429 once; the emulator sees exactly two calls, not more."""
    emulator.faults.add({"kind": "error", "status": 429, "retry_after": 0.01})
    image = await call_with_retries(
        lambda: subject.adapter.generate(subject.request()),
        RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02),
        deadline=time.monotonic() + 10,
        what="test",
    )
    assert image.mime_type == "image/webp"
    assert emulator.faults.calls == 2


async def test_server_error_is_not_retried_by_the_sdk(subject: Subject, emulator: Emulator) -> None:
    emulator.faults.add({"kind": "error", "status": 500})
    with pytest.raises(Unavailable):
        await subject.adapter.generate(subject.request())
    assert emulator.faults.calls == 1


@pytest.mark.parametrize("cls", [OpenAIImagesAdapter, OpenAIResponsesAdapter])
async def test_in_process_emulator_as_the_gateway_wires_it(cls: AdapterClass) -> None:
    """`imagegate serve --emulate` drives the emulator through an ASGI transport."""
    transport = httpx.ASGITransport(app=create_openai_emulator())
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        adapter = cls(api_key="emulated", base_url="http://openai.emulator/v1", http_client=client)
        image = await adapter.generate(ImageRequest(MODELS[cls], "a fox", "3:2", (png("blue"),)))
    assert image.mime_type == "image/webp"
    assert Image.open(io.BytesIO(image.data)).size == (1536, 1024)


def status_error(status: int, body: dict[str, Any], headers: dict[str, str]) -> openai.APIError:
    response = httpx2.Response(
        status, headers=headers, request=httpx2.Request("POST", "http://openai.test/v1/x")
    )
    cls = openai.RateLimitError if status == 429 else openai.APIStatusError
    return cls("error", response=response, body=body)


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    error = translate_error(
        status_error(429, {"code": "rate_limit_exceeded"}, {"retry-after": when})
    )
    assert isinstance(error, RateLimited)
    assert error.retry_after is not None and 25 <= error.retry_after <= 31


def test_exhausted_quota_is_unavailable_not_rate_limited() -> None:
    error = translate_error(status_error(429, {"code": "insufficient_quota"}, {}))
    assert isinstance(error, Unavailable) and not isinstance(error, RateLimited)


def test_error_messages_drop_keys_and_base64() -> None:
    blob = "iVBORw0KGgo" + "A" * 200
    error = translate_error(
        status_error(400, {"message": f"bad sk-live-abcdef123456 near {blob}"}, {})
    )
    assert isinstance(error, UpstreamBadRequest)
    assert "sk-live" not in error.message and blob not in error.message


async def test_every_reference_mask_and_option_reaches_openai(subject: Subject) -> None:
    """Several sources (`image[]` / several input_image parts), a mask and the options."""
    sources = (png("red"), png("green"), png("blue"))
    mask = SourceImage("image/png", half_mask())  # keeps the first image on the left half
    options = ImageOptions(quality="low", background="transparent", moderation="low")
    edit_options = ImageOptions(quality="high", input_fidelity="high")
    three = await subject.adapter.generate(
        ImageRequest(subject.model, "a fox", "1:1", sources, mask, edit_options)
    )
    two = await subject.adapter.generate(
        ImageRequest(subject.model, "a fox", "1:1", sources[:2], mask, edit_options)
    )
    plain = await subject.adapter.generate(
        ImageRequest(subject.model, "a fox", "1:1", options=options)
    )
    assert three.data != two.data  # the emulator draws from every reference
    assert plain.mime_type == "image/webp"
    if subject.model == "gpt-image-1":  # the Images API reports token usage
        assert three.usage is not None and two.usage is not None
        assert three.usage.input_image_tokens == 3 * INPUT_IMAGE_TOKENS
        assert two.usage.input_image_tokens == 2 * INPUT_IMAGE_TOKENS
