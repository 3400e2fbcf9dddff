"""Request dependencies, one typed `Annotated` alias each (`SettingsDep`, `SessionDep`,
`AuthDep`, ...): a route declares exactly what it uses.

The long-lived objects come from the lifespan (app/lifespan.py) in one `AppState`, stored
once on the application by `install_state`; this module is the only reader of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, FastAPI, Request, Response
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.errors import GatewayError, Unauthorized
from app.generation.decode_budget import DecodeBudget
from app.generation.service import GenerationService
from app.jobs.runner import JobRunner
from app.observability.metrics import Metrics
from app.observability.tracing import span
from app.providers.catalog import Catalog
from app.ratelimit import Decision, Limit, RateLimiter
from app.ratelimit.caps import ConcurrencyCaps
from app.ratelimit.failed_auth import FailedAuthLimit, client_address
from app.settings import Settings
from app.storage.base import ImageStore
from app.storage.signing import UrlSigner
from app.tenants.auth_cache import AuthCache
from app.tenants.service import (
    AuthContext,
    authenticate,
    bearer_token,
    hash_key,
    presented_credential,
)


@dataclass(frozen=True, slots=True)
class AppState:
    """Everything a request may need that lives as long as the process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    catalog: Catalog
    image_store: ImageStore
    url_signer: UrlSigner  # what `/files` verifies the image store's URLs with
    generation: GenerationService
    rate_limiter: RateLimiter
    concurrency: ConcurrencyCaps  # upstream caps, per process or shared (app/ratelimit/caps.py)
    job_runner: JobRunner
    metrics: Metrics
    auth_cache: AuthCache
    request_budget: DecodeBudget  # request-body bytes in flight (app/api/body_budget.py)


_STATE_ATTRIBUTE = "imagegate"


def install_state(app: FastAPI, state: AppState) -> None:
    setattr(app.state, _STATE_ATTRIBUTE, state)


def installed_state(app: FastAPI) -> AppState:
    """The one typed way to the AppState (`app_state` for requests; tests read it too)."""
    state = getattr(app.state, _STATE_ATTRIBUTE, None)
    if not isinstance(state, AppState):
        raise RuntimeError("the gateway's lifespan has not installed its AppState")
    return state


async def app_state(request: Request) -> AppState:
    return installed_state(request.app)


StateDep = Annotated[AppState, Depends(app_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_engine(state: StateDep) -> AsyncEngine:
    return state.engine


async def get_sessions(state: StateDep) -> async_sessionmaker[AsyncSession]:
    return state.sessions


async def get_catalog(state: StateDep) -> Catalog:
    return state.catalog


async def get_image_store(state: StateDep) -> ImageStore:
    return state.image_store


async def get_url_signer(state: StateDep) -> UrlSigner:
    return state.url_signer


async def get_generation(state: StateDep) -> GenerationService:
    return state.generation


async def get_rate_limiter(state: StateDep) -> RateLimiter:
    return state.rate_limiter


async def get_concurrency(state: StateDep) -> ConcurrencyCaps:
    return state.concurrency


async def get_job_runner(state: StateDep) -> JobRunner:
    return state.job_runner


async def get_metrics(state: StateDep) -> Metrics:
    return state.metrics


async def get_auth_cache(state: StateDep) -> AuthCache:
    return state.auth_cache


async def get_request_budget(state: StateDep) -> DecodeBudget:
    return state.request_budget


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
# The session factory, for use cases that own their transactions (idempotency, jobs).
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
ImageStoreDep = Annotated[ImageStore, Depends(get_image_store)]
UrlSignerDep = Annotated[UrlSigner, Depends(get_url_signer)]
GenerationDep = Annotated[GenerationService, Depends(get_generation)]
RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]
ConcurrencyDep = Annotated[ConcurrencyCaps, Depends(get_concurrency)]
JobRunnerDep = Annotated[JobRunner, Depends(get_job_runner)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
AuthCacheDep = Annotated[AuthCache, Depends(get_auth_cache)]
RequestBudgetDep = Annotated[DecodeBudget, Depends(get_request_budget)]


async def request_session(sessions: SessionsDep) -> AsyncIterator[AsyncSession]:
    """One session for the route: committed when it returns, rolled back when it raises.

    Function-scoped (see `SessionDep`), so the commit happens before the response is sent:
    a client never sees an answer whose writes are not durable. Never for a route that
    calls an upstream (no transaction is held across one).
    """
    async with sessions() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


SessionDep = Annotated[AsyncSession, Depends(request_session, scope="function")]


class RateLimitExceeded(GatewayError):
    status_code = 429
    code = "rate_limited"


async def authenticated(
    request: Request, response: Response, state: StateDep
) -> AsyncIterator[AuthContext]:
    """Authenticate, then rate-limit by key id and tenant (never by the raw key string).

    The limiter's headers go on the answer, success or error: on `response` (FastAPI
    copies them onto what a route returns as data; a route that builds its own Response
    passes them with `decided_headers`) and on any GatewayError raised after this point.
    """
    settings = state.settings
    with span("auth") as traced:
        authorization = _credential(request)
        auth = _cached(state, authorization)
        traced.set("imagegate.auth.cached", auth is not None)
        if auth is None:
            auth = await _look_up(request, state, authorization)
        traced.set("imagegate.tenant_id", auth.tenant_id)
        decision = await state.rate_limiter.hit(
            [f"key:{auth.api_key_id}", f"tenant:{auth.tenant_id}"],
            [
                Limit(auth.key_rate_limit or settings.rate_limit_key_per_minute),
                Limit(auth.tenant_rate_limit or settings.rate_limit_tenant_per_minute),
            ],
        )
        if not decision.allowed:
            raise _too_many(decision, f"Rate limit exceeded: {decision.limit} requests per minute.")
    headers = decision.headers()
    response.headers.update(headers)
    try:
        yield auth
    except GatewayError as error:
        error.headers = headers | error.headers  # the error's own (e.g. Retry-After) win
        raise


# Function-scoped: the route's errors pass through `authenticated` before they are rendered.
AuthDep = Annotated[AuthContext, Depends(authenticated, scope="function")]


async def caller_if_presented(request: Request, state: StateDep) -> AuthContext | None:
    """For public reads (the catalogue): None without a key and never rate-limited, but a
    key that is sent must be valid (401 otherwise, counted like any failed authentication),
    because clients such as the elizaOS plugin check their key with `GET /models`."""
    authorization = _credential(request)
    if not authorization:
        return None
    return _cached(state, authorization) or await _look_up(request, state, authorization)


CallerIfPresentedDep = Annotated[AuthContext | None, Depends(caller_if_presented)]


def _credential(request: Request) -> str | None:
    return presented_credential(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )


def _cached(state: AppState, authorization: str | None) -> AuthContext | None:
    try:
        return state.auth_cache.get(hash_key(bearer_token(authorization)))
    except Unauthorized:
        return None  # decided, and counted, by the lookup path


async def _look_up(request: Request, state: AppState, authorization: str | None) -> AuthContext:
    """The database lookup, unless the client's address has failed too often (then 429,
    before the lookup); a failure here counts against that address."""
    failures = FailedAuthLimit(state.rate_limiter, state.settings.auth_failures_per_minute)
    address = _client_address(request, state.settings)
    refused = await failures.check(address)
    if refused is not None:
        raise _too_many(refused, "Too many failed authentications from this address.")
    try:
        key_hash = hash_key(bearer_token(authorization))
        async with state.sessions() as session, session.begin():
            auth = await authenticate(session, authorization)
    except Unauthorized:
        # A request without credentials guessed nothing; only presented ones count.
        if authorization:
            await failures.failed(address)
        raise
    state.auth_cache.put(key_hash, auth)
    return auth


def _client_address(request: Request, settings: Settings) -> str:
    peer = request.client.host if request.client else None
    return client_address(
        peer, request.headers.getlist("x-forwarded-for"), settings.trusted_proxy_hops
    )


def _too_many(decision: Decision, message: str) -> RateLimitExceeded:
    headers = decision.headers()
    error = RateLimitExceeded(
        f"{message} Retry after {headers['Retry-After']} seconds.",
        retry_after=int(headers["Retry-After"]),
    )
    error.headers = headers
    return error


R = TypeVar("R", bound=Response)


def decided_headers(rendered: R, response: Response) -> R:
    """`rendered`, a Response the route built itself, with the headers its dependencies
    set on the injected `response` (the rate limit); the route's own headers win."""
    for name, value in response.headers.items():
        rendered.headers.setdefault(name, value)
    return rendered


async def external_base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


BaseUrlDep = Annotated[str, Depends(external_base_url)]
