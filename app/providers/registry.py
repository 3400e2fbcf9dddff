"""Builds the cloud APIs' adapters that are configured: a dict registry keyed by catalog
adapter name (self-hosted entries are built per entry: app.providers.self_hosted).

Several adapters can share one upstream (OpenAI's Images and Responses APIs share a key,
a base URL and a connection pool). Every upstream's client sends through a GuardedTransport
(app.providers.transport): deadlines, a bound on exchanges in flight, body caps and a
rebuilt pool if it wedges, for real pools and the in-process emulators alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from app.providers.automatic1111 import Automatic1111Adapter
from app.providers.base import ProviderAdapter
from app.providers.bfl import BflAdapter
from app.providers.catalog import FIRST_PARTY_ADAPTERS
from app.providers.gemini import GeminiAdapter
from app.providers.openai import OpenAIImagesAdapter, OpenAIResponsesAdapter
from app.providers.transport import GuardedTransport, UpstreamLimits, pooled_transport
from app.settings import Settings

PROVIDERS = ("gemini", "openai", "bfl", "automatic1111")
# Self-hosted upstreams that may run without credentials: configured by a base URL alone.
_KEY_OPTIONAL = frozenset({"automatic1111"})


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
    # Catalog defaults (steps, sampler, CFG) are the adapter's DEFAULT_OPTIONS.
    "automatic1111": AdapterSpec(
        "automatic1111",
        lambda up, _settings: Automatic1111Adapter(
            base_url=up.base_url,
            api_key=None if up.emulated else up.api_key or None,
            http_client=up.http_client,
            options={},
        ),
    ),
}


# The catalog tells first-party entries from self-hosted ones by this set of names.
assert frozenset(ADAPTERS) == FIRST_PARTY_ADAPTERS, "registry and catalog disagree"


def configured_upstreams(
    settings: Settings, emulator_transports: dict[str, httpx.AsyncBaseTransport] | None
) -> dict[str, Upstream]:
    """One Upstream per provider that has credentials (or an emulator)."""
    upstreams: dict[str, Upstream] = {}
    real = {
        "gemini": (settings.gemini_api_key, settings.gemini_base_url),
        "openai": (settings.openai_api_key, settings.openai_base_url),
        "bfl": (settings.bfl_api_key, settings.bfl_base_url),
        "automatic1111": (settings.automatic1111_api_key, settings.automatic1111_base_url),
    }
    limits = upstream_limits(settings)
    for provider, (api_key, base_url) in real.items():
        if emulator_transports and provider in emulator_transports:
            emulator = _fixed(emulator_transports[provider])
            client = _client(GuardedTransport(provider, emulator, limits))
            upstreams[provider] = Upstream(
                provider, "emulated", emulated_base_url(provider), client, emulated=True
            )
        elif base_url and (api_key or provider in _KEY_OPTIONAL):
            client = _client(GuardedTransport(provider, lambda: pooled_transport(limits), limits))
            upstreams[provider] = Upstream(provider, api_key or "", base_url, client)
    return upstreams


def upstream_limits(settings: Settings) -> UpstreamLimits:
    return UpstreamLimits(
        max_connections=settings.upstream_max_connections,
        max_in_flight=settings.upstream_max_in_flight,
        max_response_bytes=settings.upstream_max_response_bytes,
        connect_timeout=settings.upstream_connect_timeout_seconds,
        read_timeout=settings.upstream_attempt_timeout_seconds,
        pool_timeout=settings.upstream_pool_timeout_seconds,
    )


def _client(transport: GuardedTransport) -> httpx.AsyncClient:
    # The transport sets every timeout per exchange (SDKs pass their own, or None).
    # trust_env=False: proxy variables would mount other transports, bypassing the guard.
    return httpx.AsyncClient(transport=transport, trust_env=False)


def _fixed(transport: httpx.AsyncBaseTransport) -> Callable[[], httpx.AsyncBaseTransport]:
    """An emulator's in-process transport has no pool to rebuild: always the same one."""
    return lambda: transport


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
