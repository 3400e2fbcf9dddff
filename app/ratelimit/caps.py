"""The upstream concurrency caps: each model's catalog `max_concurrency` and each
provider account's IMAGEGATE_PROVIDER_MAX_CONCURRENCY, per process or (with
IMAGEGATE_REDIS_URL) across every replica."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from app.providers.catalog import Catalog
from app.providers.retry import Slots
from app.ratelimit.slots import SharedSlots
from app.settings import Settings


@dataclass
class ConcurrencyCaps:
    models: dict[str, Slots]  # by model id
    providers: dict[str, Slots]  # by provider (upstream) name: gemini, openai, bfl
    shared: SharedSlots | None = None
    _heartbeat: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def status(self) -> Literal["shared", "local", "local (redis unavailable)"]:
        """For /healthz: `shared`, `local` or `local (redis unavailable)`."""
        return self.shared.status if self.shared is not None else "local"

    def start(self) -> None:
        """Renew held leases in the background (shared caps only)."""
        if self.shared is not None and self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self.shared.heartbeat())

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self.shared is not None:
            await self.shared.aclose()


def create_concurrency_caps(
    settings: Settings, catalog: Catalog, providers: Iterable[str]
) -> ConcurrencyCaps:
    """`providers`: the names IMAGEGATE_PROVIDER_MAX_CONCURRENCY may use."""
    known = set(providers)
    unknown = sorted(set(settings.provider_max_concurrency) - known)
    if unknown:
        raise ValueError(
            f"IMAGEGATE_PROVIDER_MAX_CONCURRENCY: unknown provider {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    model_caps = {model.id: model.max_concurrency for model in catalog if model.max_concurrency}
    if settings.redis_url is None:
        return ConcurrencyCaps(
            models={name: asyncio.Semaphore(cap) for name, cap in model_caps.items()},
            providers={
                name: asyncio.Semaphore(cap)
                for name, cap in settings.provider_max_concurrency.items()
            },
        )
    shared = SharedSlots(settings.redis_url)
    return ConcurrencyCaps(
        models={name: shared.semaphore(f"model:{name}", cap) for name, cap in model_caps.items()},
        providers={
            name: shared.semaphore(f"provider:{name}", cap)
            for name, cap in settings.provider_max_concurrency.items()
        },
        shared=shared,
    )
