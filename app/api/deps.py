"""Request dependencies: the process's services and the authenticated, rate-limited caller."""

from __future__ import annotations

from fastapi import Request

from app.errors import GatewayError
from app.ratelimit import Limit
from app.services import Services
from app.tenants.service import AuthContext, authenticate, bearer_token, hash_key


class RateLimitExceeded(GatewayError):
    status_code = 429
    code = "rate_limited"


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def authenticated(request: Request) -> AuthContext:
    """Authenticate, then rate-limit by key id and tenant (never by the raw key string)."""
    services = get_services(request)
    authorization = request.headers.get("authorization")
    key_hash = hash_key(bearer_token(authorization))
    auth = services.auth_cache.get(key_hash)
    if auth is None:
        async with services.sessions() as session, session.begin():
            auth = await authenticate(session, authorization)
        services.auth_cache.put(key_hash, auth)
    settings = services.settings
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
        error = RateLimitExceeded(
            f"Rate limit exceeded: {decision.limit} requests per minute. "
            f"Retry after {decision.headers()['Retry-After']} seconds.",
            retry_after=int(decision.headers()["Retry-After"]),
        )
        error.headers = decision.headers()
        raise error
    return auth


def external_base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")
