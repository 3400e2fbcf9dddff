"""Builds the adapters that are configured: a dict registry keyed by catalog adapter name.

Several adapters can share one upstream (OpenAI's Images and Responses APIs share a key,
a base URL and a connection pool).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from app.providers.base import ProviderAdapter
from app.providers.bfl import BflAdapter
from app.providers.gemini import GeminiAdapter
from app.providers.openai import OpenAIImagesAdapter, OpenAIResponsesAdapter
from app.settings import Settings

PROVIDERS = ("gemini", "openai", "bfl")


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where an adapter sends its calls: a real API or an in-process emulator."""

    provider: str
    api_key: str
    base_url: str
    http_client: httpx.AsyncClient
    emulated: bool = False


AdapterFactory = Callable[[Upstream, Settings], ProviderAdapter]


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    provider: str
    factory: AdapterFactory


ADAPTERS: dict[str, AdapterSpec] = {
    "gemini": AdapterSpec(
        "gemini",
        lambda up, _settings: GeminiAdapter(
            api_key=up.api_key, base_url=up.base_url, http_client=up.http_client
        ),
    ),
    "openai-images": AdapterSpec(
        "openai",
        lambda up, _settings: OpenAIImagesAdapter(
            api_key=up.api_key, base_url=up.base_url, http_client=up.http_client
        ),
    ),
    "openai-responses": AdapterSpec(
        "openai",
        lambda up, _settings: OpenAIResponsesAdapter(
            api_key=up.api_key, base_url=up.base_url, http_client=up.http_client
        ),
    ),
    "bfl": AdapterSpec(
        "bfl",
        lambda up, settings: BflAdapter(
            api_key=up.api_key,
            base_url=up.base_url,
            http_client=up.http_client,
            allowed_hosts=settings.bfl_allowed_hosts,
            max_sample_bytes=settings.bfl_max_sample_bytes,
            poll_interval=settings.bfl_poll_interval_seconds,
        ),
    ),
}


def configured_upstreams(
    settings: Settings, emulator_transports: dict[str, httpx.AsyncBaseTransport] | None
) -> dict[str, Upstream]:
    """One Upstream per provider that has credentials (or an emulator)."""
    upstreams: dict[str, Upstream] = {}
    real = {
        "gemini": (settings.gemini_api_key, settings.gemini_base_url),
        "openai": (settings.openai_api_key, settings.openai_base_url),
        "bfl": (settings.bfl_api_key, settings.bfl_base_url),
    }
    for provider, (api_key, base_url) in real.items():
        if emulator_transports and provider in emulator_transports:
            client = httpx.AsyncClient(
                transport=_ReleasingSentBodies(emulator_transports[provider]),
                timeout=_timeout(settings),
            )
            upstreams[provider] = Upstream(
                provider, "emulated", emulated_base_url(provider), client, emulated=True
            )
        elif api_key:
            client = httpx.AsyncClient(
                transport=_ReleasingSentBodies(
                    httpx.AsyncHTTPTransport(
                        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
                    )
                ),
                timeout=_timeout(settings),
            )
            upstreams[provider] = Upstream(provider, api_key, base_url, client)
    return upstreams


class _ReleasingSentBodies(httpx.AsyncBaseTransport):
    """Drops a request's body once it is sent (the response headers are in).

    httpx's Request, Response and httpcore's pool stream refer to each other, so a sent
    request (the SDK's JSON with the base64 source image, several MB) is freed only by
    the cyclic collector, which counts objects, not bytes, and may not run for many
    requests: memory would grow past what the request-bytes budget accounts for.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if isinstance(request.stream, httpx.ByteStream):
            request.stream = httpx.ByteStream(b"")
            request._content = b""  # the same bytes, kept by Request.read()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def emulated_base_url(provider: str) -> str:
    """The base URL adapters use for an in-process emulator (never resolved by DNS)."""
    suffix = "/v1" if provider == "openai" else ""
    return f"http://{provider}.emulator{suffix}"


def build_adapters(
    upstreams: dict[str, Upstream], settings: Settings
) -> dict[str, ProviderAdapter]:
    return {
        name: spec.factory(upstreams[spec.provider], settings)
        for name, spec in ADAPTERS.items()
        if spec.provider in upstreams
    }


def _timeout(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(settings.upstream_attempt_timeout_seconds, connect=10.0)
