"""An upstream incident, run as an operator runs the gateway (issue #11's reproduction).

    .venv/bin/python bench/incident.py [--label after] [--root PATH] [--spy]

Starts the Gemini emulator in its own process (`uvicorn` on the app factory) and a gateway
that is NOT emulated, pointed at it (IMAGEGATE_GEMINI_BASE_URL, a fake key; attempt timeout
10 s, deadline 25 s). Then: every upstream call delayed 30 s
(`POST /_emulator/faults {"faults":[{"kind":"delay","seconds":30,"count":1200}]}`),
100 concurrent numImages=4 requests, /healthz sampled every 50 ms from another process
throughout; the faults cleared; one-image requests until the first success.

Prints the burst's wall time, per-request durations, /healthz p50/p99/max during the burst
and the time to first success after clearing, and writes them to
bench/results/incident-<label>.json. `--root` runs the gateway from another checkout
(e.g. a `git worktree` of an older revision, for before/after numbers); `--spy` records the
gateway with py-spy during the burst (bench/results/profile-incident-<label>.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PY = sys.executable
REQUESTS = 100
IMAGES = 4
ATTEMPT_TIMEOUT = 10
DEADLINE = 25
DELAY = {"faults": [{"kind": "delay", "seconds": 30, "count": 1200}]}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(message: str) -> None:
    print(f"[incident {time.strftime('%H:%M:%S')}] {message}", flush=True)


def start(argv: list[str], env: dict[str, str], cwd: Path, out: Path) -> subprocess.Popen[bytes]:
    with out.open("ab") as handle:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up in {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def cli(env: dict[str, str], cwd: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [PY, "-m", "app.cli", *args, "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def provision(env: dict[str, str], cwd: Path) -> str:
    cli(env, cwd, "tenants", "create", "bench")
    key = str(cli(env, cwd, "keys", "create", "--tenant", "bench")["key"])
    cli(env, cwd, "credits", "grant", "--tenant", "bench", "100000000")
    limits = ("--per-minute", "100000000", "--key-per-minute", "100000000")
    cli(env, cwd, "tenants", "limits", "bench", *limits)
    return key


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def burst(gateway: str, key: str) -> tuple[float, list[tuple[int | str, float]]]:
    headers = {"authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=REQUESTS + 10, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(base_url=gateway, timeout=150, limits=limits) as client:

        async def one(i: int) -> tuple[int | str, float]:
            started = time.monotonic()
            body = {"prompt": f"incident {i}", "numImages": IMAGES}
            try:
                response = await client.post("/api/v1/generate-image", json=body, headers=headers)
            except httpx.HTTPError as exc:  # e.g. no answer within the client's timeout
                return type(exc).__name__, time.monotonic() - started
            return response.status_code, time.monotonic() - started

        started = time.monotonic()
        results = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
        return time.monotonic() - started, list(results)


def first_success(gateway: str, key: str, limit: float = 120) -> tuple[float | None, int]:
    """Seconds until a one-image request succeeds (None if not within `limit`)."""
    started = time.monotonic()
    tries = 0
    with httpx.Client(base_url=gateway, timeout=DEADLINE + 30) as client:
        while time.monotonic() - started < limit:
            tries += 1
            try:
                response = client.post(
                    "/api/v1/generate-image",
                    json={"prompt": "after the incident", "numImages": 1},
                    headers={"authorization": f"Bearer {key}"},
                )
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                return time.monotonic() - started, tries
            time.sleep(0.5)
    return None, tries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", default="after")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to run the gateway from")
    parser.add_argument("--spy", action="store_true", help="record the gateway with py-spy")
    args = parser.parse_args()
    root: Path = args.root.resolve()
    RESULTS.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="imagegate-incident-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEGATE_", "GEMINI_"))}
    env["PYTHONPATH"] = str(root)
    emulator_port, gateway_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    gateway_env = env | {
        "IMAGEGATE_DATA_DIR": str(work / "data"),
        "IMAGEGATE_GEMINI_API_KEY": "bench-fake-key",
        "IMAGEGATE_GEMINI_BASE_URL": emulator_url,
        "IMAGEGATE_UPSTREAM_ATTEMPT_TIMEOUT_SECONDS": str(ATTEMPT_TIMEOUT),
        "IMAGEGATE_UPSTREAM_DEADLINE_SECONDS": str(DEADLINE),
        "IMAGEGATE_LOG_LEVEL": "WARNING",
    }
    emulator = start(
        [PY, "-m", "uvicorn", "app.emulators.gemini:create_gemini_emulator", "--factory",
         "--host", "127.0.0.1", "--port", str(emulator_port), "--log-level", "warning",
         "--no-access-log"],
        env, root, work / "emulator.log",
    )  # fmt: skip
    gateway = None
    spy = None
    try:
        wait_ready(f"{emulator_url}/_emulator/state", emulator)
        gateway = start(
            [PY, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(gateway_port)],
            gateway_env, root, work / "gateway.log",
        )  # fmt: skip
        wait_ready(f"{gateway_url}/healthz", gateway)
        key = provision(gateway_env, root)
        warm, _ = first_success(gateway_url, key, limit=60)
        log(f"warm-up request took {warm}")

        httpx.post(f"{emulator_url}/_emulator/faults", json=DELAY).raise_for_status()
        receive, send = multiprocessing.Pipe(duplex=False)
        spy_bin = shutil.which("py-spy", path=f"{Path(PY).parent}{os.pathsep}{env['PATH']}")
        if args.spy and spy_bin:
            profile = RESULTS / f"profile-incident-{args.label}.txt"  # git-ignored
            spy = subprocess.Popen(
                [spy_bin, "record", "--pid", str(gateway.pid), "--format", "raw",
                 "--output", str(profile), "--duration", str(DEADLINE + 15), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            )  # fmt: skip
        # The probe (its own process, so the load's loop does not colour it) runs exactly
        # as long as the burst: it stops when the stop file appears.
        sampler = multiprocessing.Process(target=probe, args=(gateway_url, work, send))
        sampler.start()
        log(f"burst: {REQUESTS} x numImages={IMAGES}, every upstream call delayed 30 s")
        wall, results = asyncio.run(burst(gateway_url, key))
        (work / "stop").touch()
        health: dict[str, Any] = receive.recv()
        sampler.join(timeout=30)
        if spy is not None:
            spy.wait(timeout=120)

        state = httpx.get(f"{emulator_url}/_emulator/state").json()
        httpx.delete(f"{emulator_url}/_emulator/faults").raise_for_status()
        recovery, tries = first_success(gateway_url, key)
        durations = [seconds for _, seconds in results]
        statuses: dict[str, int] = {}
        for status, _ in results:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        samples = health["samples_ms"]
        report = {
            "label": args.label,
            "root": str(root),
            "revision": _revision(root),
            "requests": REQUESTS,
            "images_per_request": IMAGES,
            "attempt_timeout_s": ATTEMPT_TIMEOUT,
            "deadline_s": DEADLINE,
            "burst_wall_s": round(wall, 2),
            "request_s": {
                "min": round(min(durations), 2),
                "median": round(statistics.median(durations), 2),
                "max": round(max(durations), 2),
            },
            "statuses": statuses,
            "healthz_ms": {
                "samples": len(samples),
                "errors": health["errors"],
                "p50": round(percentile(samples, 50), 1),
                "p99": round(percentile(samples, 99), 1),
                "max": round(max(samples), 1) if samples else None,
                # (seconds into the burst, ms) of every probe over 50 ms
                "over_50ms": health["slow"],
            },
            "upstream_calls": state.get("calls"),
            "time_to_first_success_s": None if recovery is None else round(recovery, 2),
            "recovery_tries": tries,
        }
        out = RESULTS / f"incident-{args.label}.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        log(f"wrote {out}")
    finally:
        if spy is not None and spy.poll() is None:
            spy.terminate()
        if gateway is not None:
            stop(gateway)
        stop(emulator)
        shutil.rmtree(work, ignore_errors=True)


def probe(gateway_url: str, work: Path, out: Any) -> None:
    """/healthz latency every 50 ms until `work/stop` exists; sent back through `out`."""
    samples: list[float] = []
    slow: list[tuple[float, float]] = []
    errors = 0
    began = time.perf_counter()
    with httpx.Client(timeout=30) as client:
        while not (work / "stop").exists():
            started = time.perf_counter()
            try:
                client.get(f"{gateway_url}/healthz").raise_for_status()
                samples.append((time.perf_counter() - started) * 1000)
                if samples[-1] > 50:
                    slow.append((round(started - began, 2), round(samples[-1], 1)))
            except httpx.HTTPError:
                errors += 1
            time.sleep(max(0.0, 0.05 - (time.perf_counter() - started)))
    out.send({"samples_ms": samples, "errors": errors, "slow": slow})


def _revision(root: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip()


if __name__ == "__main__":
    main()
