"""Hostile upstream bodies over the real network, for each provider.

A reset mid-body, a body dripped slower than the read timeout or past the deadline, a
body far above the upstream cap (declared or chunked) and a gzip bomb: each ends in the
contract's 500 generation_failed within the deadline, with nothing charged, nothing
stored, the gateway's memory bounded, and the gateway serving normally afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.upstreams import (
    DEADLINE,
    DEADLINE_SLACK,
    MODELS,
    PROVIDERS,
    UPSTREAM_BODY_CAP,
    NetworkGateway,
)

pytestmark = pytest.mark.network

PATH = "/api/v1/generate-image"
MiB = 1024 * 1024
# Headroom over the gateway's idle memory for one capped body and its decoding.
MEMORY_HEADROOM = 128 * MiB

FAULTS: dict[str, dict[str, object]] = {
    "reset_mid_body": {"kind": "reset", "after_bytes": 4096},
    "slow_past_read_timeout": {"kind": "slow_body", "chunk_bytes": 64, "interval_seconds": 2.0},
    "slow_past_deadline": {"kind": "slow_body", "chunk_bytes": 16, "interval_seconds": 0.25},
    "oversized": {"kind": "oversized", "total_bytes": 10 * UPSTREAM_BODY_CAP},
    "oversized_chunked": {
        "kind": "oversized",
        "total_bytes": 10 * UPSTREAM_BODY_CAP,
        "declare_length": False,
    },
    "gzip_bomb": {"kind": "gzip_bomb", "inflated_bytes": 2 * 1024 * MiB},
}
CASES = [(provider, name, FAULTS[name]) for provider in PROVIDERS for name in FAULTS] + [
    # BFL has three answers: spoil the submit answer and the sample download too.
    ("bfl", "oversized_submit", {**FAULTS["oversized"], "stage": "submit"}),
    ("bfl", "gzip_bomb_submit", {**FAULTS["gzip_bomb"], "stage": "submit"}),
    ("bfl", "reset_sample", {**FAULTS["reset_mid_body"], "stage": "sample"}),
    ("bfl", "gzip_bomb_sample", {**FAULTS["gzip_bomb"], "stage": "sample"}),
]


@pytest.fixture(scope="module")
def gateway(network_gateway_factory: Callable[..., NetworkGateway]) -> NetworkGateway:
    return network_gateway_factory()


@pytest.mark.parametrize(
    ("provider", "name", "fault"), CASES, ids=[f"{p}-{n}" for p, n, _ in CASES]
)
async def test_hostile_body_is_a_refunded_500_and_memory_stays_bounded(
    gateway: NetworkGateway, provider: str, name: str, fault: dict[str, object]
) -> None:
    model, price = MODELS[provider]
    emulator = gateway.emulators[provider]
    tenant = gateway.new_tenant(credits=10 * price)
    files_before = gateway.stored_files()
    gateway.reset_peak_rss()
    baseline = gateway.rss()
    # Every attempt (retries included) draws the fault.
    emulator.set_faults({**fault, "count": 100})
    problems: list[str] = []
    try:
        async with gateway.client(timeout=30) as client:
            started = time.monotonic()
            try:
                response: httpx.Response | None = await client.post(
                    PATH, json={"prompt": f"hostile {name}", "model": model}, headers=tenant.auth
                )
            except httpx.TimeoutException:
                response = None
            elapsed = time.monotonic() - started
            peak = gateway.peak_rss()
            emulator.set_faults()
            after = await client.post(
                PATH, json={"prompt": "healthy again", "model": model}, headers=tenant.auth
            )
    finally:
        emulator.set_faults()

    if response is None:
        problems.append(f"no answer in {elapsed:.0f} s")
    elif response.status_code != 500 or response.json().get("code") != "generation_failed":
        problems.append(f"answered {response.status_code} {response.text[:200]}")
    if elapsed > DEADLINE + DEADLINE_SLACK:
        problems.append(f"ended {elapsed:.1f} s after it began (deadline {DEADLINE} s)")
    if peak - baseline > MEMORY_HEADROOM:
        problems.append(
            f"gateway RSS grew {(peak - baseline) / MiB:.0f} MiB (from {baseline / MiB:.0f} MiB)"
        )
    balance = gateway.balance(tenant)
    if after.status_code == 200:
        balance += price  # the healthy request after it is charged, the hostile one not
    else:
        problems.append(f"afterwards the gateway answered {after.status_code} {after.text[:200]}")
    if balance != 10 * price or not gateway.audit_ok():
        problems.append(f"charged: balance {balance} of {10 * price}")
    stored = [p for p in gateway.stored_files() if p not in files_before]
    if len(stored) > (1 if after.status_code == 200 else 0):
        problems.append(f"stored {len(stored)} files")
    assert not problems, "\n".join(problems)
