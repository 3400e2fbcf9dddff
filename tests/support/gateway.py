"""A live gateway (uvicorn on loopback, emulated providers) over one of two stacks:

- "embedded": SQLite file + local image directory, the defaults a new user gets;
- "postgres": embedded Postgres + SeaweedFS S3, the production shape.

Tests act as a client over real HTTP and check the database through their own engine.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.credits import ledger
from app.credits.audit import AuditReport, audit_ledger
from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade
from app.main import create_app
from app.settings import Settings
from app.tenants import service as tenants
from devtools import postgres as devstack
from tests.support.servers import serve_in_thread

__all__ = [
    "Stack",
    "TenantHandle",
    "embedded_settings",
    "embedded_stack",
    "postgres_settings",
    "postgres_stack",
    "stack",
]

FAULTS_PATH = "/emulators/gemini/_emulator/faults"


@dataclass(frozen=True)
class TenantHandle:
    name: str
    id: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Stack:
    name: str
    settings: Settings
    base_url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    async def new_tenant(self, credits: int = 0) -> TenantHandle:
        async with self.sessions() as session, session.begin():
            tenant = await tenants.create_tenant(session, f"t-{uuid.uuid4().hex[:12]}")
            key = await tenants.create_key(session, tenant, "test")
            if credits:
                await ledger.grant(session, tenant.id, credits, note="test grant")
        return TenantHandle(tenant.name, tenant.id, key.plaintext)

    async def set_rate_limit(self, tenant: TenantHandle, per_minute: int) -> None:
        """The tenant's own requests-per-minute limit (its keys keep the default)."""
        async with self.sessions() as session, session.begin():
            row = await tenants.get_tenant(session, tenant.name)
            await tenants.set_rate_limits(session, row, per_minute=per_minute, key_per_minute=None)

    async def balance(self, tenant: TenantHandle) -> int:
        async with self.sessions() as session:
            return await ledger.get_balance(session, tenant.id)

    async def audit(self, tenant: TenantHandle | str, *more: TenantHandle | str) -> AuditReport:
        """The ledger audit of these tenants only (a str is a tenant name): the stack is shared
        by the whole session, and another test may break its own tenant's ledger on purpose."""
        async with self.sessions() as session:
            ids = [
                t.id if isinstance(t, TenantHandle) else (await tenants.get_tenant(session, t)).id
                for t in (tenant, *more)
            ]
            return await audit_ledger(session, tenant_ids=ids)

    def control_client(self) -> httpx.AsyncClient:
        """A client for the mounted emulators' `/_emulator/*` routes (admin token sent)."""
        assert self.settings.admin_token is not None, "emulator control needs an admin token"
        token = self.settings.admin_token.get_secret_value()
        return httpx.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}
        )

    async def wait_for_job(self, tenant: TenantHandle, location: str) -> dict[str, Any]:
        """The job's final body, polled at `location` until it succeeded or failed."""
        async with self.client() as client:
            for _ in range(200):
                response = await client.get(location, headers=tenant.auth)
                assert response.status_code == 200, response.text
                if response.json()["status"] in ("succeeded", "failed"):
                    return dict(response.json())
                await asyncio.sleep(0.25)
        raise AssertionError("job did not finish")

    async def set_faults(self, *faults: dict[str, Any]) -> None:
        async with self.control_client() as client:
            await client.delete(FAULTS_PATH)
            if faults:
                response = await client.post(FAULTS_PATH, json={"faults": list(faults)})
                response.raise_for_status()

    def client(self, timeout: float = 60.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=timeout)


def gateway_settings(**overrides: Any) -> Settings:
    defaults: dict[str, Any] = {
        "emulate": True,
        "retry_base_delay_seconds": 0.01,
        "retry_max_delay_seconds": 0.05,
        "upstream_deadline_seconds": 20.0,
        "url_signing_secret": "test-signing-secret",
        "bfl_poll_interval_seconds": 0.02,
        "admin_token": "test-admin-token-for-both-stacks",
    }
    defaults.update(overrides)
    return Settings(_env_file=None, **defaults)


@pytest.fixture(scope="session")
def embedded_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return gateway_settings(data_dir=tmp_path_factory.mktemp("embedded-data"))


@pytest.fixture(scope="session")
def postgres_settings(
    postgres_url: str, s3_endpoint: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    database_url = asyncio.run(create_database(postgres_url))
    upgrade(database_url)
    bucket = s3_endpoint.create_bucket("imagegate")
    # boto3 takes credentials the standard AWS way, as in production.
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = s3_endpoint.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = s3_endpoint.secret_key
    try:
        yield gateway_settings(
            data_dir=tmp_path_factory.mktemp("postgres-data"),
            database_url=database_url,
            s3_bucket=bucket,
            s3_endpoint_url=s3_endpoint.endpoint_url,
            s3_region=s3_endpoint.region,
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def create_database(server_url: str) -> str:
    """A fresh database on the server, so runs never see each other's rows."""
    return await devstack.create_database(server_url, f"imagegate_test_{uuid.uuid4().hex[:10]}")


@pytest_asyncio.fixture(scope="session")
async def embedded_stack(embedded_settings: Settings) -> AsyncIterator[Stack]:
    async for running in _run_stack("embedded", embedded_settings):
        yield running


@pytest_asyncio.fixture(scope="session")
async def postgres_stack(postgres_settings: Settings) -> AsyncIterator[Stack]:
    async for running in _run_stack("postgres", postgres_settings):
        yield running


@pytest.fixture(params=["embedded", "postgres"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """The same test on both stacks; each stack's gateway lives for the whole session."""
    running: Stack = request.getfixturevalue(f"{request.param}_stack")
    return running


async def _run_stack(name: str, settings: Settings) -> AsyncIterator[Stack]:
    with serve_in_thread(create_app(settings)) as base_url:
        engine = create_engine(settings.resolved_database_url, pool_size=5)
        try:
            yield Stack(name, settings, base_url, engine, create_sessionmaker(engine))
        finally:
            await engine.dispose()


async def stack_in_thread(settings: Settings, name: str) -> AsyncIterator[Stack]:
    """A gateway built from `settings`, served in a thread, as a Stack (for module fixtures
    that need settings of their own)."""
    with serve_in_thread(create_app(settings)) as base_url:
        engine = create_engine(settings.resolved_database_url, pool_size=2)
        try:
            yield Stack(name, settings, base_url, engine, create_sessionmaker(engine))
        finally:
            await engine.dispose()
