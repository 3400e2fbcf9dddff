"""`imagegate serve` as deployments run it (#16 item 4): a graceful drain on SIGTERM, and
`--workers N` processes on one port that keep the limits shared."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Job
from tests.support.process import (
    GatewayProcess,
    create_tenant,
    fresh_database,
    gateway_env,
    imagegate,
    run_in_session,
)

GENERATE = "/api/v1/generate-image"
PRICE = 4  # google/gemini-2.5-flash-image
BODY = {"prompt": "a red bicycle leaning on a wall"}
DRAIN_DELAY = 3
DRAIN_SECONDS = 20


def _wait_for(what: str, probe: Callable[[], object], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return result


def _job(database_url: str, job_id: str) -> Job:
    async def work(session: AsyncSession) -> Job:
        job = await session.get(Job, job_id)
        assert job is not None
        return job

    return run_in_session(database_url, work)


def _draining_readiness(base_url: str) -> httpx.Response | None:
    response = httpx.get(f"{base_url}/readyz", timeout=10)
    return response if response.status_code == 503 else None


@pytest.mark.slow
def test_sigterm_drains_finishes_in_flight_and_hands_jobs_back(
    postgres_url: str, tmp_path: Path
) -> None:
    database_url = fresh_database(postgres_url)
    env = gateway_env(
        tmp_path / "data",
        database_url=database_url,
        drain_delay_seconds=DRAIN_DELAY,
        drain_seconds=DRAIN_SECONDS,
    )
    first = GatewayProcess(env, tmp_path / "first.log").start()
    second = GatewayProcess(env, tmp_path / "second.log")
    try:
        tenant = create_tenant(env, "draining", credits=40)
        # Both calls (the job's and the sync one), whichever reaches the emulator first.
        first.set_faults({"kind": "delay", "seconds": 6, "count": 2})
        with (
            httpx.Client(base_url=first.base_url, headers=tenant.auth, timeout=60) as client,
            ThreadPoolExecutor(max_workers=1) as pool,
        ):
            submitted = client.post(GENERATE, json=BODY, headers={"Prefer": "respond-async"})
            assert submitted.status_code == 202, submitted.text
            job_id = submitted.json()["id"]
            _wait_for("the job to run", lambda: _job(database_url, job_id).status == "running")
            in_flight = pool.submit(
                httpx.post,
                f"{first.base_url}{GENERATE}",
                headers=tenant.auth,
                json=BODY,
                timeout=60,
            )
            _wait_for("both generations upstream", lambda: first.emulator_calls() >= 2)

            first.send_signal(signal.SIGTERM)

            ready = _wait_for("readiness to fail", lambda: _draining_readiness(first.base_url))
            assert ready.json()["status"] == "draining"
            # A new request on the connection kept alive from the submission is refused.
            refused = client.post(GENERATE, json=BODY)
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "draining"
            assert int(refused.headers["Retry-After"]) >= 1
            # The running job went back to the queue at once, while the sync generation
            # is still in flight (not at exit): queued, unlocked, its attempt not counted.
            handed = _wait_for(
                "the job handed back",
                lambda: (job := _job(database_url, job_id)).status == "queued" and job,
            )
            assert not in_flight.done()
            assert (handed.locked_until, handed.attempts, handed.generation_id) == (None, 0, None)

            response = in_flight.result(timeout=60)
        assert response.status_code == 200, response.text  # finished within the drain
        first.wait_exit(timeout=DRAIN_DELAY + DRAIN_SECONDS + 15)  # exits by itself

        # Another replica claims the handed-back job and runs it once.
        second.start()
        done = _wait_for(
            "the job to succeed elsewhere",
            lambda: (job := _job(database_url, job_id)).status == "succeeded" and job,
        )
        assert done.attempts == 1
        balance = imagegate(env, "credits", "balance", "--tenant", tenant.name)
        assert balance["balance"] == 40 - 2 * PRICE  # the sync one and the job, once each
        audit = imagegate(env, "credits", "audit")
        assert (audit["_exit"], audit["problems"]) == (0, [])
    finally:
        first.terminate()
        second.terminate()


def test_several_workers_need_a_shared_rate_limiter(tmp_path: Path) -> None:
    """Refused before anything starts: each process counting alone would let N times
    every limit through."""
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--workers", "2", "--port", "1"],
        capture_output=True,
        text=True,
        env=gateway_env(tmp_path / "data"),
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "--workers above 1 needs IMAGEGATE_REDIS_URL" in result.stderr
    assert not (tmp_path / "data" / "imagegate.db").exists()  # nothing was set up


def _worker_pids(gateway: GatewayProcess, message: str, **fields: object) -> set[int]:
    """The processes that logged `message` (with these fields)."""
    pids = set()
    for line in gateway.logs().decode(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("message") == message and fields.items() <= entry.items():
                pids.add(int(entry["pid"]))
    return pids


@pytest.mark.slow
def test_two_workers_serve_one_port_with_one_rate_limit(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    database_url = fresh_database(postgres_url)
    env = gateway_env(tmp_path / "data", database_url=database_url, redis_url=redis_url)
    gateway = GatewayProcess(env, tmp_path / "workers.log", workers=2).start()
    try:
        ready = _wait_for(
            "both workers",
            lambda: len(pids := _worker_pids(gateway, "imagegate ready")) == 2 and pids,
        )
        assert gateway.pid not in ready  # the parent supervises, the workers serve
        limit = 5
        tenant = create_tenant(env, "workers", credits=10_000, per_minute=limit)

        def one(i: int) -> httpx.Response:
            return httpx.post(  # a new connection each: the kernel picks the worker
                f"{gateway.base_url}{GENERATE}",
                headers=tenant.auth,
                json={"prompt": f"worker load {i}"},
                timeout=60,
            )

        with ThreadPoolExecutor(max_workers=12) as pool:
            responses = list(pool.map(one, range(4 * limit)))
        statuses = Counter(r.status_code for r in responses)
        # One limit across both workers (each counting alone would admit 2 x limit);
        # GCRA frees one more slot only if the burst outlasts 60 / limit seconds.
        assert set(statuses) == {200, 429}, statuses
        assert limit <= statuses[200] <= limit + 1, statuses
        served = _worker_pids(gateway, "request", route=GENERATE)
        assert served == ready, served  # both workers answered requests
        balance = imagegate(env, "credits", "balance", "--tenant", tenant.name)
        assert balance["balance"] == 10_000 - statuses[200] * PRICE
    finally:
        gateway.terminate()
