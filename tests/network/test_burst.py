"""Issue #11's reproduction over the real network, for each provider, scaled down in time.

Every upstream call is delayed past the attempt timeout; 100 concurrent 4-image requests
must each end within a couple of seconds of the deadline, all refunded; once the delays
are cleared the provider must answer again within seconds (a wedged pool never does).

"Within a couple of seconds" is measured against the machine: the same burst is first
sent with every upstream call failing at once (503, retried like a timeout), and the
slowest of those answers is what the gateway needs to turn 100 x 4 failures around on this
machine with no deadline involved; the timed-out burst may take DEADLINE_SLACK more than
the deadline plus that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.gateway import TenantHandle
from tests.support.upstreams import (
    ATTEMPT_TIMEOUT,
    DEADLINE,
    DEADLINE_SLACK,
    MODELS,
    PROVIDERS,
    NetworkGateway,
)

pytestmark = [pytest.mark.network, pytest.mark.slow]

PATH = "/api/v1/generate-image"
REQUESTS = 100
IMAGES = 4
DELAY = 5.0  # past the attempt timeout, and past the deadline
RECOVERY_SECONDS = 10.0


@pytest.fixture(scope="module")
def gateway(network_gateway_factory: Callable[..., NetworkGateway]) -> NetworkGateway:
    return network_gateway_factory()


async def _burst(
    client: httpx.AsyncClient, tenant: TenantHandle, model: str, label: str
) -> list[tuple[httpx.Response, float]]:
    return await asyncio.gather(
        *(
            _timed(client, tenant, {"prompt": f"{label} {i}", "model": model, "numImages": IMAGES})
            for i in range(REQUESTS)
        )
    )


async def _timed(
    client: httpx.AsyncClient, tenant: TenantHandle, body: dict[str, object]
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.post(PATH, json=body, headers=tenant.auth)
    return response, time.monotonic() - started


async def _recover(
    client: httpx.AsyncClient, tenant: TenantHandle, model: str
) -> tuple[httpx.Response, float]:
    """Send 4-image requests until one delivers every image or RECOVERY_SECONDS pass.

    The window lets the upstream's own state settle (BFL still counts the abandoned tasks
    as active until their delay ends); a wedged pool never recovers in it.
    """
    started = time.monotonic()
    while True:
        response = await client.post(
            PATH,
            json={"prompt": "after the storm", "model": model, "numImages": IMAGES},
            headers=tenant.auth,
        )
        waited = time.monotonic() - started
        delivered = response.status_code == 200 and len(response.json()["images"]) == IMAGES
        if delivered or waited > RECOVERY_SECONDS:
            return response, waited
        await asyncio.sleep(0.25)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_burst_of_timeouts_is_refunded_and_the_provider_recovers(
    gateway: NetworkGateway, provider: str
) -> None:
    assert DELAY > ATTEMPT_TIMEOUT
    model, price = MODELS[provider]
    emulator = gateway.emulators[provider]
    credits = REQUESTS * IMAGES * price
    tenant = gateway.new_tenant(credits=credits + 100 * price)
    files_before = gateway.stored_files()
    try:
        async with gateway.client(timeout=60, connections=REQUESTS + 10) as client:
            emulator.set_faults({"kind": "error", "status": 503, "count": 10_000})
            calibration = await _burst(client, tenant, model, "calibration")
            turnaround = max(elapsed for _, elapsed in calibration)
            emulator.set_faults({"kind": "delay", "seconds": DELAY, "count": 10_000})
            burst = await _burst(client, tenant, model, "burst")
            statuses = sorted({response.status_code for response, _ in burst})
            codes = sorted({response.json().get("code") for response, _ in burst})
            slowest = max(elapsed for _, elapsed in burst)
            files_after_burst = gateway.stored_files()
            balance_after_burst = gateway.balance(tenant)
            audit_after_burst = gateway.audit_ok()

            emulator.set_faults()  # the upstream is healthy again
            calls_before = emulator.calls()
            recovered, waited = await _recover(client, tenant, model)
    finally:
        emulator.set_faults()

    # Every finding at once: a wedge and a late deadline are different bugs.
    problems = []
    if statuses != [500] or codes != ["generation_failed"]:
        problems.append(f"burst answered {statuses} {codes}: {burst[0][0].text[:200]}")
    if {r.status_code for r, _ in calibration} != {500}:
        problems.append(f"calibration answered {calibration[0][0].text[:200]}")
    times = sorted(elapsed for _, elapsed in burst)
    late = [elapsed for elapsed in times if elapsed > DEADLINE + DEADLINE_SLACK + turnaround]
    if late:
        problems.append(
            f"{len(late)} of {REQUESTS} requests ended more than {DEADLINE_SLACK} s after the "
            f"{DEADLINE} s deadline plus the {turnaround:.1f} s this machine takes to fail the "
            f"burst at once (fastest {times[0]:.1f} s, median {times[len(times) // 2]:.1f} s, "
            f"slowest {slowest:.1f} s)"
        )
    if balance_after_burst != credits + 100 * price or not audit_after_burst:
        problems.append(f"credits: balance {balance_after_burst}, audit ok {audit_after_burst}")
    if files_after_burst != files_before:
        problems.append("the burst stored files")
    if recovered.status_code != 200 or len(recovered.json()["images"]) != IMAGES:
        problems.append(
            f"{provider} still failing {waited:.1f} s after the upstream recovered "
            f"({emulator.calls() - calls_before} upstream calls arrived meanwhile): "
            f"{recovered.status_code} {recovered.text[:200]}"
        )
    elif emulator.calls() <= calls_before:
        problems.append("recovered without calling the upstream")
    assert not problems, "\n".join(problems)
    assert gateway.audit_ok()
