"""Builds the adapters that are configured: a dict registry keyed by catalog adapter name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from app.providers.base import ProviderAdapter
from app.providers.gemini import GeminiAdapter
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where an adapter sends its calls: a real API or an in-process emulator."""

    api_key: str
    base_url: str
    http_client: httpx.AsyncClient


AdapterFactory = Callable[[Upstream], ProviderAdapter]

FACTORIES: dict[str, AdapterFactory] = {
    "gemini": lambda up: GeminiAdapter(
        api_key=up.api_key, base_url=up.base_url, http_client=up.http_client
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
    for name, (api_key, base_url) in real.items():
        if emulator_transports and name in emulator_transports:
            client = httpx.AsyncClient(
                transport=emulator_transports[name], timeout=_timeout(settings)
            )
            upstreams[name] = Upstream("emulated", f"http://{name}.emulator", client)
        elif api_key:
            client = httpx.AsyncClient(
                timeout=_timeout(settings),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            )
            upstreams[name] = Upstream(api_key, base_url, client)
    return upstreams


def build_adapters(upstreams: dict[str, Upstream]) -> dict[str, ProviderAdapter]:
    return {
        name: FACTORIES[name](upstream) for name, upstream in upstreams.items() if name in FACTORIES
    }


def _timeout(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(settings.upstream_attempt_timeout_seconds, connect=10.0)
