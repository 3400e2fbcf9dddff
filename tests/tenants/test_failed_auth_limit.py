"""Failed authentications are limited per client address, over HTTP.

Each test runs its own gateway (a tight limit, its own data) so the suite's shared
gateways keep their default budget. Uvicorn runs with proxy_headers off, as `serve`
does, so the application alone decides whether X-Forwarded-For is believed. Requests
from a second address come from 127.0.0.2 (all of 127/8 is loopback on Linux).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from app.api.deps import installed_state
from app.db.engine import create_engine, create_sessionmaker
from app.main import create_app
from tests.support.gateway import Stack, TenantHandle, gateway_settings
from tests.support.servers import serve_in_thread

LIMIT = 5
CREDITS = "/api/v1/credits"


def _wrong_key() -> dict[str, str]:
    return {"Authorization": f"Bearer ig_{uuid.uuid4().hex}{uuid.uuid4().hex}"}


class KeyLookups:
    """Counts SQL statements that read API keys: what each failed lookup costs."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "api_keys" in statement and statement.lstrip().upper().startswith("SELECT"):
            self.count += 1


@asynccontextmanager
async def _gateway(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Stack, KeyLookups]]:
    settings = gateway_settings(
        data_dir=tmp_path / uuid.uuid4().hex, auth_failures_per_minute=LIMIT, **overrides
    )
    app = create_app(settings)
    with serve_in_thread(app, proxy_headers=False) as base_url:
        gateway_engine = installed_state(app).engine
        lookups = KeyLookups()
        # The gateway's own engine (it runs on the server thread's loop); the test
        # writes its tenants through an engine of its own.
        event.listen(gateway_engine.sync_engine, "before_cursor_execute", lookups)
        engine = create_engine(settings.resolved_database_url, pool_size=1)
        try:
            yield (
                Stack("failed-auth", settings, base_url, engine, create_sessionmaker(engine)),
                lookups,
            )
        finally:
            await engine.dispose()


def _from(address: str, base_url: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=30)


def _assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["code"] == "rate_limited" and "failed authentications" in body["error"]
    assert int(response.headers["retry-after"]) >= 1


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    if request.param == "memory":
        yield {}
    else:
        yield {"redis_url": request.getfixturevalue("redis_url")}


async def test_an_address_that_keeps_failing_gets_429_without_a_lookup(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with _gateway(tmp_path, **backend) as (stack, lookups):
        if backend:  # the Redis backend is deciding, not the in-process fallback
            async with stack.client() as client:
                assert (await client.get("/healthz")).json()["rateLimiter"] == "redis"
        known: TenantHandle = await stack.new_tenant(credits=10)
        other: TenantHandle = await stack.new_tenant(credits=10)
        async with _from("127.0.0.1", stack.base_url) as client:
            # A key verified before the guessing starts stays usable (auth cache).
            assert (await client.get(CREDITS, headers=known.auth)).status_code == 200
            for _ in range(LIMIT):
                assert (await client.get(CREDITS, headers=_wrong_key())).status_code == 401
            before = lookups.count
            refused = [await client.get(CREDITS, headers=_wrong_key()) for _ in range(50)]
            for response in refused:
                _assert_rate_limited(response)
            assert lookups.count == before, "a refused request still looked its key up"
            # Claiming another address changes nothing: the socket peer counts.
            _assert_rate_limited(
                await client.get(
                    CREDITS, headers={**_wrong_key(), "X-Forwarded-For": "203.0.113.7"}
                )
            )
            # The OpenAI-compatible routes are guarded too, in OpenAI's error shape.
            openai = await client.get("/v1/models", headers=_wrong_key())
            assert openai.status_code == 429, openai.text
            assert openai.json()["error"]["code"] == "rate_limited"
            assert int(openai.headers["retry-after"]) >= 1
            # A known-good key keeps working from the same address.
            assert (await client.get(CREDITS, headers=known.auth)).status_code == 200

        # Another address is not affected by these failures: its own wrong key is a
        # 401, and a valid key it has never used before works.
        async with _from("127.0.0.2", stack.base_url) as client:
            assert (await client.get(CREDITS, headers=_wrong_key())).status_code == 401
            assert (await client.get(CREDITS, headers=other.auth)).status_code == 200


async def test_requests_without_a_key_do_not_count(tmp_path: Path) -> None:
    async with _gateway(tmp_path) as (stack, _lookups), stack.client() as client:
        for _ in range(3 * LIMIT):
            assert (await client.get(CREDITS)).status_code == 401
        assert (await client.get(CREDITS, headers=_wrong_key())).status_code == 401


async def test_behind_a_proxy_the_address_the_proxy_saw_counts(tmp_path: Path) -> None:
    async with _gateway(tmp_path, trusted_proxy_hops=1) as (stack, _lookups):
        tenant = await stack.new_tenant(credits=10)
        async with stack.client() as client:

            def via_proxy(client_address: str, claimed: str | None = None) -> dict[str, str]:
                chain = f"{claimed}, {client_address}" if claimed else client_address
                return {**_wrong_key(), "X-Forwarded-For": chain}

            for _ in range(LIMIT):
                response = await client.get(CREDITS, headers=via_proxy("198.51.100.9"))
                assert response.status_code == 401
            _assert_rate_limited(await client.get(CREDITS, headers=via_proxy("198.51.100.9")))
            # What the client itself put in front of the chain is not believed.
            spoofed = via_proxy("198.51.100.9", claimed="192.0.2.1")
            _assert_rate_limited(await client.get(CREDITS, headers=spoofed))
            # Other clients of the same proxy (same socket peer) are not affected.
            other = await client.get(CREDITS, headers=via_proxy("198.51.100.10"))
            assert other.status_code == 401
            valid = await client.get(
                CREDITS, headers={**tenant.auth, "X-Forwarded-For": "198.51.100.11"}
            )
            assert valid.status_code == 200


async def test_x_api_key_failures_count_and_its_successes_are_cached_like_bearer(
    tmp_path: Path,
) -> None:
    async with _gateway(tmp_path) as (stack, lookups):
        known: TenantHandle = await stack.new_tenant(credits=10)
        async with stack.client() as client:
            # Verified once through X-API-Key, then served from the auth cache under either
            # header: the same key is one cache entry. (The balance route reads no key row
            # itself; /credits reads the key's own limit and spend.)
            balance = "/api/v1/credits/balance"
            x_api_key = {"X-API-Key": known.key}
            assert (await client.get(balance, headers=x_api_key)).status_code == 200
            verified = lookups.count
            assert (await client.get(balance, headers=known.auth)).status_code == 200
            assert (await client.get(balance, headers=x_api_key)).status_code == 200
            assert lookups.count == verified
            # Wrong keys sent as X-API-Key count against the address like Bearer ones...
            for _ in range(LIMIT - 1):
                wrong = {"X-API-Key": _wrong_key()["Authorization"].removeprefix("Bearer ")}
                assert (await client.get(CREDITS, headers=wrong)).status_code == 401
            assert (await client.get(CREDITS, headers=_wrong_key())).status_code == 401
            # ...so the limit is reached by the two headers together, on the public
            # catalogue too (a key sent there is checked).
            wrong = {"X-API-Key": _wrong_key()["Authorization"].removeprefix("Bearer ")}
            _assert_rate_limited(await client.get(CREDITS, headers=wrong))
            _assert_rate_limited(await client.get("/api/v1/models", headers=wrong))
            # The catalogue stays readable without a key.
            assert (await client.get("/api/v1/models")).status_code == 200
