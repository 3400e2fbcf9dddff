"""The long-lived objects of one gateway process, created once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.generation.decode_budget import DecodeBudget
from app.generation.service import GenerationService
from app.jobs.runner import JobRunner
from app.observability.metrics import Metrics
from app.providers.catalog import Catalog
from app.ratelimit import RateLimiter
from app.settings import Settings
from app.storage.base import ImageStore
from app.tenants.auth_cache import AuthCache


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    catalog: Catalog
    image_store: ImageStore
    generation: GenerationService
    rate_limiter: RateLimiter
    job_runner: JobRunner
    metrics: Metrics
    emulated: bool
    auth_cache: AuthCache
    # Request-body bytes in flight (app/api/body_budget.py).
    request_budget: DecodeBudget
