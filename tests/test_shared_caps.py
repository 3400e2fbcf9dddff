"""Two gateway processes on one Postgres and one Valkey, calling one BFL emulator in its
own process: each model's `max_concurrency` and the provider account's cap hold across
both replicas, as the upstream sees it (the emulator's most tasks active at once)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.process import (
    GatewayProcess,
    ProcessTenant,
    create_tenant,
    fresh_database,
    gateway_env,
)
from tests.support.upstreams import EmulatorProcess

pytestmark = pytest.mark.slow  # two gateway processes and an emulator process

GENERATE = "/api/v1/generate-image"
MODEL_CAP = 3  # each Kontext model's max_concurrency in this test's catalog
PROVIDER_CAP = 4  # IMAGEGATE_PROVIDER_MAX_CONCURRENCY for bfl
MODELS = ("bfl/flux-kontext-pro", "bfl/flux-kontext-max")


def _catalog(path: Path) -> Path:
    """The packaged catalog with both Kontext models capped at MODEL_CAP (below what the
    emulator itself allows, so going over would be seen, not refused with 429)."""
    data = json.loads(resources.files("app.providers").joinpath("catalog.json").read_text())
    for model in data["models"]:
        if model["id"] in MODELS:
            model["max_concurrency"] = MODEL_CAP
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def bfl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    logs = tmp_path_factory.mktemp("shared-caps-bfl")
    emulator = EmulatorProcess("bfl", logs / "bfl.log").start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def replicas(
    postgres_url: str,
    redis_url: str,
    bfl: EmulatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, str], tuple[GatewayProcess, GatewayProcess]]]:
    root = tmp_path_factory.mktemp("shared-caps")
    env = gateway_env(
        root / "data",
        database_url=fresh_database(postgres_url),
        redis_url=redis_url,
        catalog=_catalog(root / "catalog.json"),
        provider_max_concurrency=json.dumps({"bfl": PROVIDER_CAP}),
        bfl_api_key="fake-bfl-key",
        bfl_base_url=bfl.api_base_url,
        bfl_poll_interval_seconds=0.05,
        rate_limit_key_per_minute=100_000,
        rate_limit_tenant_per_minute=100_000,
        log_level="WARNING",
    )
    gateways = tuple(
        GatewayProcess(
            {**env, "IMAGEGATE_DATA_DIR": str(root / n)}, root / f"{n}.log", emulate=False
        )
        for n in ("a", "b")
    )
    first, second = gateways
    try:
        first.launch()
        second.launch()
        first.wait_ready()
        second.wait_ready()
        yield env, (first, second)
    finally:
        first.terminate()
        second.terminate()


def _send(
    gateways: tuple[GatewayProcess, ...], tenant: ProcessTenant, models: tuple[str, ...]
) -> list[httpx.Response]:
    """One generation per entry of `models` at once, alternating between the replicas."""

    def one(i: int) -> httpx.Response:
        return httpx.post(
            f"{gateways[i % len(gateways)].base_url}{GENERATE}",
            headers=tenant.auth,
            json={"prompt": f"shared cap {i}", "model": models[i]},
            timeout=120,
        )

    with ThreadPoolExecutor(max_workers=len(models)) as pool:
        return list(pool.map(one, range(len(models))))


def _peaks(
    bfl: EmulatorProcess,
    gateways: tuple[GatewayProcess, ...],
    tenant: ProcessTenant,
    models: tuple[str, ...],
) -> dict[str, Any]:
    """The emulator's most tasks active at once while `models` are generated, each task
    active for a second (callers overlap, and wait for slots)."""
    httpx.delete(f"{bfl.base_url}/_emulator/bfl", timeout=10).raise_for_status()
    bfl.set_faults({"kind": "delay", "seconds": 1.0, "count": 1000})
    try:
        responses = _send(gateways, tenant, models)
    finally:
        bfl.set_faults()
    failed = [r.text for r in responses if r.status_code != 200]
    assert failed == []
    state: dict[str, Any] = httpx.get(f"{bfl.base_url}/_emulator/bfl", timeout=10).json()
    return state


def test_two_replicas_keep_one_cap_per_model(
    replicas: tuple[dict[str, str], tuple[GatewayProcess, GatewayProcess]],
    bfl: EmulatorProcess,
) -> None:
    env, gateways = replicas
    assert [g.health()["concurrency"] for g in gateways] == ["shared", "shared"]
    tenant = create_tenant(env, "shared-model-cap", credits=10_000)

    state = _peaks(bfl, gateways, tenant, (MODELS[0],) * 8)

    # Each process capping alone would let 2 x MODEL_CAP run at once.
    assert state["max_active"]["flux-kontext-pro"] == MODEL_CAP


def test_two_replicas_keep_one_cap_per_provider_account(
    replicas: tuple[dict[str, str], tuple[GatewayProcess, GatewayProcess]],
    bfl: EmulatorProcess,
) -> None:
    env, gateways = replicas
    tenant = create_tenant(env, "shared-provider-cap", credits=10_000)

    state = _peaks(bfl, gateways, tenant, MODELS * 8)

    # Both models at once stay within the account's cap, not 2 x MODEL_CAP per replica.
    assert all(peak <= MODEL_CAP for peak in state["max_active"].values()), state
    assert state["max_active_total"] == PROVIDER_CAP
