"""Two gateway processes sharing one Postgres database, one S3 bucket and one Valkey.

Load is split across both replicas at once. Credits are only ever what the database
says (no replica can spend what the other already reserved) and the per-tenant rate
limit is one limit across both (counted in Valkey), not one per process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import CreditHold, Image
from tests.support.process import (
    GatewayProcess,
    ProcessTenant,
    create_tenant,
    fresh_database,
    gateway_env,
    imagegate,
    run_in_session,
)
from tests.support.services import S3Service

pytestmark = pytest.mark.slow  # two gateway processes: 13-20 s a test here

GENERATE = "/api/v1/generate-image"
PRICE = 4  # google/gemini-2.5-flash-image


@dataclass
class Replicas:
    env: dict[str, str]
    database_url: str
    bucket: str
    s3: S3Service
    gateways: tuple[GatewayProcess, GatewayProcess]

    def send(self, tenant: ProcessTenant, count: int) -> list[httpx.Response]:
        """`count` generations at once, alternating between the replicas."""

        def one(i: int) -> httpx.Response:
            gateway = self.gateways[i % 2]
            return httpx.post(
                f"{gateway.base_url}{GENERATE}",
                headers=tenant.auth,
                json={"prompt": f"replica load {i}"},
                timeout=60,
            )

        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(one, range(count)))

    def count(self, model: Any, tenant: ProcessTenant, *where: Any) -> int:
        async def work(session: AsyncSession) -> int:
            total = await session.scalar(
                select(func.count()).select_from(model).where(model.tenant_id == tenant.id, *where)
            )
            return int(total or 0)

        return run_in_session(self.database_url, work)

    def objects(self, tenant: ProcessTenant) -> int:
        page = self.s3.client().list_objects_v2(Bucket=self.bucket, Prefix=f"{tenant.id}/")
        return int(page.get("KeyCount", 0))


@pytest.fixture(scope="module")
def replicas(
    postgres_url: str,
    s3_endpoint: S3Service,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas")
    database_url = fresh_database(postgres_url)
    bucket = s3_endpoint.create_bucket("replicas")
    env = gateway_env(
        root / "data", database_url=database_url, s3=s3_endpoint, bucket=bucket, redis_url=redis_url
    )
    # Each replica has its own data dir, as on separate hosts; everything else is shared.
    first = GatewayProcess({**env, "IMAGEGATE_DATA_DIR": str(root / "a")}, root / "a.log")
    second = GatewayProcess({**env, "IMAGEGATE_DATA_DIR": str(root / "b")}, root / "b.log")
    try:
        first.launch()
        second.launch()
        first.wait_ready()
        second.wait_ready()
        yield Replicas(env, database_url, bucket, s3_endpoint, (first, second))
    finally:
        first.terminate()
        second.terminate()


def test_both_replicas_share_the_redis_limiter(replicas: Replicas) -> None:
    for gateway in replicas.gateways:
        assert gateway.health()["rateLimiter"] == "redis"


def test_concurrent_load_across_replicas_never_overspends(replicas: Replicas) -> None:
    affordable = 8
    tenant = create_tenant(replicas.env, "overspend", credits=affordable * PRICE)

    responses = replicas.send(tenant, 3 * affordable)

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: affordable, 402: 2 * affordable}, statuses
    assert all(
        r.json()["code"] == "insufficient_credits" for r in responses if r.status_code == 402
    )
    balance = imagegate(replicas.env, "credits", "balance", "--tenant", tenant.name)
    assert balance["balance"] == 0
    assert replicas.count(CreditHold, tenant, CreditHold.status == "captured") == affordable
    assert replicas.count(CreditHold, tenant, CreditHold.status == "open") == 0
    assert replicas.count(Image, tenant) == affordable
    assert replicas.objects(tenant) == affordable
    audit = imagegate(replicas.env, "credits", "audit")
    assert (audit["_exit"], audit["problems"]) == (0, [])


def test_the_tenant_rate_limit_holds_across_replicas(replicas: Replicas) -> None:
    limit = 10
    tenant = create_tenant(replicas.env, "limited", credits=10_000, per_minute=limit)

    responses = replicas.send(tenant, 3 * limit)

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, statuses
    # One limit across both processes (each counting alone would let 2 x limit through);
    # GCRA may free one more slot while the burst is in flight.
    assert limit <= statuses[200] <= limit + 1, statuses
    for response in responses:
        if response.status_code == 429:
            assert response.json()["code"] == "rate_limited"
            assert int(response.headers["Retry-After"]) >= 1
            assert response.headers["X-RateLimit-Limit"] == str(limit)
    # Only the admitted requests were billed.
    balance = imagegate(replicas.env, "credits", "balance", "--tenant", tenant.name)
    assert balance["balance"] == 10_000 - statuses[200] * PRICE
