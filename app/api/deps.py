"""Request dependencies: the process's services and the authenticated, rate-limited caller."""

from __future__ import annotations

from fastapi import Request

from app.errors import GatewayError, Unauthorized
from app.ratelimit import Decision, Limit
from app.ratelimit.failed_auth import FailedAuthLimit, client_address
from app.services import Services
from app.settings import Settings
from app.tenants.service import (
    AuthContext,
    authenticate,
    bearer_token,
    hash_key,
    presented_credential,
)


class RateLimitExceeded(GatewayError):
    status_code = 429
    code = "rate_limited"


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def authenticated(request: Request) -> AuthContext:
    """Authenticate, then rate-limit by key id and tenant (never by the raw key string)."""
    services = get_services(request)
    settings = services.settings
    authorization = _credential(request)
    auth = _cached(services, authorization)
    if auth is None:
        auth = await _look_up(request, services, authorization)
    decision = await services.rate_limiter.hit(
        [f"key:{auth.api_key_id}", f"tenant:{auth.tenant_id}"],
        [
            Limit(auth.key_rate_limit or settings.rate_limit_key_per_minute),
            Limit(auth.tenant_rate_limit or settings.rate_limit_tenant_per_minute),
        ],
    )
    # The middleware in app.main copies these onto every response, errors included.
    request.state.rate_limit_headers = decision.headers()
    if not decision.allowed:
        raise _too_many(decision, f"Rate limit exceeded: {decision.limit} requests per minute.")
    return auth


async def caller_if_presented(request: Request) -> AuthContext | None:
    """For public reads (the catalogue): None without a key and never rate-limited, but a
    key that is sent must be valid (401 otherwise, counted like any failed authentication),
    because clients such as the elizaOS plugin check their key with `GET /models`."""
    services = get_services(request)
    authorization = _credential(request)
    if not authorization:
        return None
    return _cached(services, authorization) or await _look_up(request, services, authorization)


def _credential(request: Request) -> str | None:
    return presented_credential(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )


def _cached(services: Services, authorization: str | None) -> AuthContext | None:
    try:
        return services.auth_cache.get(hash_key(bearer_token(authorization)))
    except Unauthorized:
        return None  # decided, and counted, by the lookup path


async def _look_up(request: Request, services: Services, authorization: str | None) -> AuthContext:
    """The database lookup, unless the client's address has failed too often (then 429,
    before the lookup); a failure here counts against that address."""
    failures = FailedAuthLimit(services.rate_limiter, services.settings.auth_failures_per_minute)
    address = _client_address(request, services.settings)
    refused = await failures.check(address)
    if refused is not None:
        raise _too_many(refused, "Too many failed authentications from this address.")
    try:
        key_hash = hash_key(bearer_token(authorization))
        async with services.sessions() as session, session.begin():
            auth = await authenticate(session, authorization)
    except Unauthorized:
        # A request without credentials guessed nothing; only presented ones count.
        if authorization:
            await failures.failed(address)
        raise
    services.auth_cache.put(key_hash, auth)
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


def external_base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")
