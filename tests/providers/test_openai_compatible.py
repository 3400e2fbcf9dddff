"""The `openai-compatible` adapter, built from catalog entries as the gateway builds it
(app.providers.self_hosted: real pooled transport under the GuardedTransport), through the
official `openai` SDK against the OpenAI emulator on a real loopback port."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from app.emulators.openai import create_openai_emulator
from app.providers.base import (
    ImageRequest,
    ProviderAdapter,
    RateLimited,
    SourceImage,
    Unavailable,
    UpstreamBadRequest,
    UpstreamTimeout,
)
from app.providers.catalog import Catalog, CatalogModel
from app.providers.openai_compatible import OpenAICompatibleAdapter, compatible_size
from app.providers.registry import upstream_limits
from app.providers.retry import RetryPolicy, call_with_retries
from app.providers.self_hosted import SelfHostedAdapters, build_self_hosted
from app.settings import Settings
from tests.support.servers import ServedEmulator as Emulator
from tests.support.servers import serve_emulator

KEY_VARIABLE = "IMAGEGATE_TEST_COMPATIBLE_KEY"
UPSTREAM_KEY = "sk-upstream-secret-4321"
MODEL_ID = "local/images"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with serve_emulator(create_openai_emulator) as served:
        yield served


def entry(base_url: str, **fields: Any) -> CatalogModel:
    return CatalogModel.model_validate(
        {
            "id": fields.pop("id", MODEL_ID),
            "adapter": "openai-compatible",
            "upstream_model": "gpt-image-1",
            "price": 2,
            "native_aspect_ratios": ["1:1", "3:2", "2:3"],
            "image_to_image": True,
            "base_url": base_url,
            **fields,
        }
    )


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"upstream_attempt_timeout_seconds": 5.0}
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest_asyncio.fixture
async def built(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SelfHostedAdapters]:
    monkeypatch.setenv(KEY_VARIABLE, UPSTREAM_KEY)
    emulator.faults.reset()
    config = settings()
    catalog = Catalog(
        (
            entry(f"{emulator.url}/v1", api_key_env=KEY_VARIABLE),
            entry(
                f"{emulator.url}/v1",
                id="local/images-webp",
                api_key_env=KEY_VARIABLE,
                options={"output_format": "webp"},
            ),
        )
    )
    adapters = build_self_hosted(catalog, config, upstream_limits(config))
    yield adapters
    await adapters.aclose()
    emulator.faults.reset()


def adapter(built: SelfHostedAdapters, model_id: str = MODEL_ID) -> ProviderAdapter:
    return built.adapters[model_id]


def request(ratio: str = "1:1", *sources: SourceImage, image_size: str = "1K") -> ImageRequest:
    return ImageRequest("gpt-image-1", "a lighthouse", ratio, sources, image_size=image_size)


def png(colour: str) -> SourceImage:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), colour).save(buffer, "PNG")
    return SourceImage("image/png", buffer.getvalue())


@pytest.mark.parametrize(
    ("ratio", "size"), [("1:1", (1024, 1024)), ("3:2", (1536, 1024)), ("2:3", (1024, 1536))]
)
async def test_generation_returns_the_upstreams_image_at_the_size_asked(
    built: SelfHostedAdapters, ratio: str, size: tuple[int, int]
) -> None:
    image = await adapter(built).generate(request(ratio))
    decoded = Image.open(io.BytesIO(image.data))
    # No output_format sent: the emulator answers its default, PNG, as OpenAI does.
    assert (decoded.format, image.mime_type) == ("PNG", "image/png")
    assert decoded.size == size


async def test_catalog_options_are_sent_as_request_fields(built: SelfHostedAdapters) -> None:
    image = await adapter(built, "local/images-webp").generate(request())
    assert image.mime_type == "image/webp"


async def test_sources_go_to_the_edits_endpoint(built: SelfHostedAdapters) -> None:
    red = await adapter(built).generate(request("1:1", png("red")))
    green = await adapter(built).generate(request("1:1", png("green")))
    assert red.data != green.data  # the emulator draws from each reference


async def test_entries_with_one_upstream_share_its_client_and_slots(
    built: SelfHostedAdapters,
) -> None:
    assert len(built.clients) == 1
    assert built.slots[MODEL_ID] is built.slots["local/images-webp"]


async def test_an_upstream_400_is_a_bad_request_naming_the_upstream_without_its_key(
    built: SelfHostedAdapters, emulator: Emulator
) -> None:
    emulator.faults.add(
        {"kind": "error", "status": 400, "message": f"Bad size for key {UPSTREAM_KEY}"}
    )
    with pytest.raises(UpstreamBadRequest) as raised:
        await adapter(built).generate(request())
    assert raised.value.message.startswith("OpenAI-compatible upstream 400")
    assert "Bad size" in raised.value.message
    assert UPSTREAM_KEY not in raised.value.message


@pytest.mark.parametrize(("status", "error"), [(429, RateLimited), (500, Unavailable)])
async def test_429_and_5xx_are_retried_by_the_one_policy(
    built: SelfHostedAdapters, emulator: Emulator, status: int, error: type[Exception]
) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)
    emulator.faults.add({"kind": "error", "status": status, "count": 2})
    image = await call_with_retries(
        lambda: adapter(built).generate(request()), policy, deadline=_later(10), what="t"
    )
    assert image.data
    assert emulator.faults.calls == 3

    emulator.faults.reset()
    emulator.faults.add({"kind": "error", "status": status, "count": 3})
    with pytest.raises(error):
        await call_with_retries(
            lambda: adapter(built).generate(request()), policy, deadline=_later(10), what="t"
        )
    assert emulator.faults.calls == 3


async def test_a_slow_upstream_is_a_timeout_at_the_attempt_deadline(
    built: SelfHostedAdapters, emulator: Emulator
) -> None:
    emulator.faults.add({"kind": "delay", "seconds": 3})
    policy = RetryPolicy(max_attempts=1, attempt_timeout=0.5)
    with pytest.raises(UpstreamTimeout):
        await call_with_retries(
            lambda: adapter(built).generate(request()), policy, deadline=_later(10), what="t"
        )


def test_sizes_follow_ratio_and_image_size() -> None:
    assert compatible_size("3:2", "1K") == "1536x1024"
    assert compatible_size("16:9", "1K") == "1360x768"
    assert compatible_size("1:1", "2K") == "2048x2048"
    assert compatible_size("16:9", "4K") == "5456x3072"
    with pytest.raises(UpstreamBadRequest, match="8K"):
        compatible_size("1:1", "8K")


class _Recorder:
    """A fake upstream server (httpx's MockTransport): records what it was sent."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, sent: httpx.Request) -> httpx.Response:
        self.requests.append(sent)
        return httpx.Response(200, json=self.answer)


async def test_a_url_result_is_refused_not_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = _Recorder({"created": 1, "data": [{"url": "http://169.254.169.254/x.png"}]})
    async with httpx.AsyncClient(transport=httpx.MockTransport(upstream)) as client:
        subject = OpenAICompatibleAdapter(
            base_url="http://images.local/v1", api_key=None, http_client=client, options={}
        )
        with pytest.raises(UpstreamBadRequest, match="b64_json"):
            await subject.generate(request())
    assert [r.url.path for r in upstream.requests] == ["/v1/images/generations"]
    sent = json.loads(upstream.requests[0].content)
    assert sent["response_format"] == "b64_json"
    assert sent["model"] == "gpt-image-1"


async def test_an_entry_without_a_key_never_sends_the_openai_key_or_account_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-real-openai-key")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-the-gateways")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-the-gateways")
    upstream = _Recorder({"created": 1, "data": []})
    async with httpx.AsyncClient(transport=httpx.MockTransport(upstream)) as client:
        subject = OpenAICompatibleAdapter(
            base_url="http://images.local/v1", api_key=None, http_client=client, options={}
        )
        with pytest.raises(Unavailable, match="no image"):
            await subject.generate(request())
    headers = upstream.requests[0].headers
    assert "sk-the-real-openai-key" not in headers.get("authorization", "")
    # Nor the gateway's OpenAI organization and project.
    assert "openai-organization" not in headers and "openai-project" not in headers


async def test_an_unset_key_variable_leaves_the_model_unconfigured_and_says_so(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    config = settings()
    catalog = Catalog((entry("http://127.0.0.1:9/v1", api_key_env=KEY_VARIABLE),))
    with caplog.at_level(logging.WARNING, logger="app.providers.self_hosted"):
        built = build_self_hosted(catalog, config, upstream_limits(config))
    assert built.adapters == {}
    assert any(KEY_VARIABLE in r.getMessage() for r in caplog.records)
    await built.aclose()


def test_first_party_entries_refuse_upstream_fields() -> None:
    with pytest.raises(ValueError, match="only self-hosted"):
        CatalogModel.model_validate(
            {
                "id": "openai/x",
                "adapter": "openai-images",
                "upstream_model": "x",
                "price": 1,
                "native_aspect_ratios": ["1:1"],
                "base_url": "http://elsewhere/v1",
            }
        )
    with pytest.raises(ValueError, match="needs base_url"):
        CatalogModel.model_validate(
            {
                "id": "local/x",
                "adapter": "openai-compatible",
                "upstream_model": "x",
                "price": 1,
                "native_aspect_ratios": ["1:1"],
            }
        )


def _later(seconds: float) -> float:
    return time.monotonic() + seconds
