"""Self-hosted upstreams: adapters built per catalog entry, built-in or from plugins.

A catalog entry whose adapter is not one of the cloud APIs' (FIRST_PARTY_ADAPTERS) names
its own upstream: `base_url`, `api_key_env` (the environment variable holding the key, or
none) and `options` (the adapter's defaults). Each entry gets its own adapter, keyed by
model id (CatalogModel.adapter_key); entries with the same adapter, base URL and key
variable share one SelfHostedUpstream: one httpx client on one GuardedTransport (the same
deadlines, in-flight bound and body caps as the cloud APIs) and one bound on calls in
flight. `--emulate` does not redirect these entries: they point at servers the operator
runs by definition.

Adapters are made by factories, `SelfHostedFactory(upstream, model, settings)`: the
built-in ones in BUILT_IN, and third-party ones registered by installed packages under
the entry-point group `imagegate.providers` (the entry point's name is the catalog's
`adapter`). A plugin that fails to load or to build, or an entry whose key variable is
unset, is logged (never the key) and leaves its models unconfigured (503
provider_not_configured, `configured: false` in /api/v1/models); the gateway still starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from urllib.parse import urlsplit

import httpx

from app.providers.automatic1111 import Automatic1111Adapter
from app.providers.base import ProviderAdapter
from app.providers.catalog import Catalog, CatalogModel
from app.providers.openai_compatible import OpenAICompatibleAdapter
from app.providers.transport import GuardedTransport, UpstreamLimits, pooled_transport
from app.settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "imagegate.providers"


@dataclass(frozen=True, slots=True)
class SelfHostedUpstream:
    """What a self-hosted adapter talks through: the entry's base URL (None only for a
    plugin that needs none), its key (None: the upstream takes none) and the guarded
    client shared by the entries of one upstream. The client belongs to the gateway:
    an adapter's aclose() must not close it."""

    name: str  # for logs: "<adapter> <host>", never the key
    base_url: str | None
    api_key: str | None
    http_client: httpx.AsyncClient


SelfHostedFactory = Callable[[SelfHostedUpstream, CatalogModel, Settings], ProviderAdapter]


def _base_url(upstream: SelfHostedUpstream) -> str:
    if upstream.base_url is None:  # the catalog requires it for built-in kinds
        raise ValueError(f"{upstream.name}: base_url is required")
    return upstream.base_url


def _over_http(adapter: type[OpenAICompatibleAdapter | Automatic1111Adapter]) -> SelfHostedFactory:
    """A factory for a built-in adapter that takes the entry's base URL, key and options."""

    def build(
        upstream: SelfHostedUpstream, model: CatalogModel, _settings: Settings
    ) -> ProviderAdapter:
        return adapter(
            base_url=_base_url(upstream),
            api_key=upstream.api_key,
            http_client=upstream.http_client,
            options=model.options,
        )

    return build


# Built-in self-hosted adapters by catalog `adapter` name. Adding one is one line here.
BUILT_IN: dict[str, SelfHostedFactory] = {
    "openai-compatible": _over_http(OpenAICompatibleAdapter),
    "automatic1111": _over_http(Automatic1111Adapter),
}


@dataclass
class SelfHostedAdapters:
    """The self-hosted adapters that are configured, by model id, and what they share."""

    adapters: dict[str, ProviderAdapter] = field(default_factory=dict)
    # Per model id: its upstream's bound on calls in flight (shared by that upstream's models).
    slots: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    async def aclose(self) -> None:
        for model_id, adapter in self.adapters.items():
            try:
                await adapter.aclose()
            except Exception as exc:  # noqa: BLE001 - a plugin's close must not stop shutdown
                log.warning(
                    "self-hosted adapter failed to close",
                    extra={"model": model_id, "error": type(exc).__name__},
                )
        for client in self.clients:
            await client.aclose()


def build_self_hosted(
    catalog: Catalog, settings: Settings, limits: UpstreamLimits
) -> SelfHostedAdapters:
    """Adapters for the catalog's self-hosted entries that can be configured."""
    built = SelfHostedAdapters()
    shared: dict[tuple[str, str | None, str | None], SelfHostedUpstream] = {}
    upstream_slots: dict[tuple[str, str | None, str | None], asyncio.Semaphore] = {}
    plugins = _PluginFactories()
    for model in catalog:
        if not model.self_hosted:
            continue
        factory = BUILT_IN.get(model.adapter) or plugins.get(model.adapter)
        if factory is None:
            _not_configured(model, f"no adapter named '{model.adapter}' is installed")
            continue
        api_key = None
        if model.api_key_env is not None:
            try:
                api_key = settings.upstream_key(model.api_key_env)
            except ValueError as exc:
                _not_configured(model, str(exc))
                continue
            if api_key is None:
                _not_configured(model, f"environment variable {model.api_key_env} is not set")
                continue
        upstream_id = (model.adapter, model.base_url, model.api_key_env)
        upstream = shared.get(upstream_id)
        if upstream is None:
            upstream = _upstream(model, api_key, limits)
            shared[upstream_id] = upstream
            built.clients.append(upstream.http_client)
        try:
            adapter = factory(upstream, model, settings)
        except Exception as exc:  # a plugin's defect must not stop the gateway
            _not_configured(model, f"its adapter could not be built ({type(exc).__name__})")
            log.debug("self-hosted adapter build failure", exc_info=True)
            continue
        built.adapters[model.id] = adapter
        built.slots[model.id] = upstream_slots.setdefault(
            upstream_id, asyncio.Semaphore(limits.max_in_flight)
        )
    return built


def _upstream(
    model: CatalogModel, api_key: str | None, limits: UpstreamLimits
) -> SelfHostedUpstream:
    # Distinct per upstream (the key variable too: two keys, two budgets), never the key.
    host = urlsplit(model.base_url).netloc if model.base_url else "local"
    name = f"{model.adapter} {host}" + (f" ({model.api_key_env})" if model.api_key_env else "")
    transport = GuardedTransport(name, lambda: pooled_transport(limits), limits)
    # trust_env=False: proxy variables would mount other transports, bypassing the guard.
    client = httpx.AsyncClient(transport=transport, trust_env=False)
    return SelfHostedUpstream(name, model.base_url, api_key, client)


def _not_configured(model: CatalogModel, reason: str) -> None:
    log.warning(
        "self-hosted model not configured: %s",
        reason,
        extra={"model": model.id, "adapter": model.adapter},
    )


class _PluginFactories:
    """Factories from the `imagegate.providers` entry points, loaded when first named
    (a package that is installed but unused is never imported)."""

    def __init__(self) -> None:
        self._points: dict[str, EntryPoint] | None = None
        self._loaded: dict[str, SelfHostedFactory | None] = {}

    def get(self, name: str) -> SelfHostedFactory | None:
        if name not in self._loaded:
            self._loaded[name] = self._load(name)
        return self._loaded[name]

    def _load(self, name: str) -> SelfHostedFactory | None:
        point = self._entry_points().get(name)
        if point is None:
            return None
        try:
            loaded = point.load()
        except Exception:  # any import-time failure of third-party code
            log.error(
                "adapter plugin failed to load; its models are not configured",
                extra={"adapter": name, "entry_point": point.value},
                exc_info=True,
            )
            return None
        if not callable(loaded):
            log.error(
                "adapter plugin is not a factory; its models are not configured",
                extra={"adapter": name, "entry_point": point.value},
            )
            return None
        factory: SelfHostedFactory = loaded
        return factory

    def _entry_points(self) -> dict[str, EntryPoint]:
        if self._points is None:
            self._points = {}
            for point in entry_points(group=ENTRY_POINT_GROUP):
                if point.name in BUILT_IN:
                    log.warning(
                        "adapter plugin ignored: its name is a built-in adapter's",
                        extra={"adapter": point.name, "entry_point": point.value},
                    )
                else:
                    self._points.setdefault(point.name, point)
        return self._points
