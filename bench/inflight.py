"""In-flight capacity: thousands of slow generations held by one gateway process.

    .venv/bin/python bench/inflight.py --inflight 2000 --delay 20
    .venv/bin/python bench/inflight.py --inflight 2000 --delay 20 --db postgres
    .venv/bin/python bench/inflight.py --inflight 2000 --delay 20 --peer litellm

Default upstream: the OpenAI emulator in its own process (its b64 JSON path), the gateway
configured for it (`--provider gemini`: the Gemini emulator, in the gateway with
`--upstream emulate` or its own process). Requests arrive open-loop from bench/loadgen.py
`open` (aiohttp): `--arrivals ramp` at `--rate` per second, `burst` all at once; the
same process polls /healthz every 100 ms. (loadgen `serve` measures the loadgen itself.)

One gateway process (embedded defaults: SQLite + local directory, or embedded Postgres
from devtools/postgres.py with `--db postgres`) whose upstream emulator holds every call
for `--delay` seconds (a delay fault through the emulator's control API). `--inflight`
generations (POST /api/v1/generate-image, one 1:1 image) come from bench/loadgen.py
`open` in its own process. Measured: statuses, the gateway's peak RSS (psutil every
100 ms and the kernel's VmHWM; with `--upstream emulate` the emulator shares the
process), /healthz p50/p99 throughout, and the latency a request adds over the upstream
delay (p50/p99 of latency - delay). `--peer litellm` measures the LiteLLM proxy instead,
in front of the OpenAI emulator (bench/run.py's setup).

The limits a default gateway sets for far fewer requests are raised to let the load in
(listed in the results as `settings`): upstream attempt timeout and deadline (above the
delay), upstream in-flight calls and connections per provider, uvicorn's concurrency
limit, the tenant's and key's rate limits (CLI) and the open-file limit of this process
and its children (each request is two sockets in the gateway: client and upstream).
Results are merged by label into bench/results/inflight.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from run import (
    BENCH,
    OPENAI_BODY,
    PY,
    RESULTS,
    ROOT,
    PeakSampler,
    Server,
    base_env,
    emulator,
    ensure_litellm,
    free_port,
    litellm,
    log,
    percentile,
    provision,
    running,
)

MIB = 1024 * 1024
ADMIN_TOKEN = "bench-inflight-admin-token-0123456789"
FAULTS = "/emulators/gemini/_emulator/faults"
BODY = {"prompt": "A lighthouse on a cliff at dusk, volumetric light, 35mm photo"}
OPENAI_CONTRACT = BODY | {"model": "openai/gpt-image-1", "aspectRatio": "1:1", "numImages": 1}


def settings(concurrency: int, delay: float) -> dict[str, str]:
    """What an operator raises to hold `concurrency` slow generations in one process."""
    return {
        # Above the delay (and the queueing on top), or every call times out: a void run.
        "IMAGEGATE_UPSTREAM_ATTEMPT_TIMEOUT_SECONDS": str(delay * 3 + 60),
        "IMAGEGATE_UPSTREAM_DEADLINE_SECONDS": str(delay * 6 + 120),
        # Upstream exchanges in flight per provider, below the connection pool.
        "IMAGEGATE_UPSTREAM_MAX_IN_FLIGHT": str(concurrency + 100),
        "IMAGEGATE_UPSTREAM_MAX_CONNECTIONS": str(concurrency + 200),
        # uvicorn answers 503 past this many connections + requests.
        "IMAGEGATE_SERVER_LIMIT_CONCURRENCY": str(concurrency + 500),
        "IMAGEGATE_SERVER_BACKLOG": str(max(2048, concurrency + 500)),
        # A reservation waits for a connection behind the settles of answers queued for
        # the CPU; the default wait (10 s / 60 s) refuses it long before the deadline.
        "IMAGEGATE_DB_POOL_TIMEOUT_SECONDS": str(delay * 6 + 120),
    }


@dataclass
class Target:
    """What is loaded: its processes (the measured one first), where to send generations
    and probes, and where the upstream's delay fault is set."""

    servers: list[Server]
    post_path: str
    body: dict[str, Any]
    health_path: str
    faults_url: Callable[[], str]
    faults_auth: dict[str, str]
    headers: dict[str, str]

    @property
    def measured(self) -> Server:
        return self.servers[-1]


def gateway(
    work: Path,
    args: argparse.Namespace,
    database_url: str | None,
    upstream: Server | None,
) -> Server:
    port = free_port()
    data = work / "gateway"
    data.mkdir(parents=True, exist_ok=True)
    env = (
        base_env()
        | {
            "IMAGEGATE_DATA_DIR": str(data),
            "IMAGEGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            "IMAGEGATE_DRAIN_DELAY_SECONDS": "0",
            "IMAGEGATE_LOG_LEVEL": "WARNING",
        }
        | settings(args.concurrency, args.delay)
    )
    if database_url is not None:
        env["IMAGEGATE_DATABASE_URL"] = database_url
    if args.gc_thresholds:
        env["IMAGEGATE_GC_THRESHOLDS"] = args.gc_thresholds
    if args.gc:  # bench/gcprobe/sitecustomize.py, in the gateway process only
        env |= {"BENCH_GC": args.gc, "BENCH_GC_OUT": str(work / "gc.json")}
        env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{BENCH / 'gcprobe'}"
    argv = [PY, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if upstream is None:
        argv.append("--emulate")
    elif args.provider == "openai":
        env["IMAGEGATE_OPENAI_API_KEY"] = "sk-bench"
        env["IMAGEGATE_OPENAI_BASE_URL"] = f"{upstream.url}/v1"
    else:
        env["IMAGEGATE_GEMINI_API_KEY"] = "bench"
        env["IMAGEGATE_GEMINI_BASE_URL"] = upstream.url
    return Server("gateway", argv, env, port, work / "gateway.log", ready_path="/healthz")


def upstream_name(args: argparse.Namespace) -> str:
    return "openai" if args.provider == "openai" else f"gemini-{args.upstream}"


def raise_open_files(wanted: int) -> int:
    """The soft open-file limit up to `wanted` (at most the hard one); children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def set_delay(target: Target, seconds: float) -> None:
    url, auth = target.faults_url(), target.faults_auth
    httpx.delete(url, headers=auth, timeout=10).raise_for_status()
    fault = {"kind": "delay", "seconds": seconds, "count": 10_000}  # the API's largest
    httpx.post(url, json={"faults": [fault]}, headers=auth, timeout=10).raise_for_status()


def target(args: argparse.Namespace, work: Path, database_url: str | None) -> Target:
    if args.peer == "litellm":
        openai = emulator("openai", work)
        lite = litellm(ensure_litellm(), work, openai)
        return Target(
            [openai, lite], "/v1/images/generations", OPENAI_BODY, "/health/liveliness",
            lambda: openai.url + "/_emulator/faults", {}, {},
        )  # fmt: skip
    if args.provider == "openai" or args.upstream == "process":
        name, body = ("openai", OPENAI_CONTRACT) if args.provider == "openai" else ("gemini", BODY)
        upstream = emulator(name, work)
        server = gateway(work, args, database_url, upstream)
        return Target(
            [upstream, server], "/api/v1/generate-image", body, "/healthz",
            lambda: upstream.url + "/_emulator/faults", {}, {},
        )  # fmt: skip
    server = gateway(work, args, database_url, None)
    return Target(
        [server], "/api/v1/generate-image", BODY, "/healthz",
        lambda: server.url + FAULTS, {"Authorization": f"Bearer {ADMIN_TOKEN}"}, {},
    )  # fmt: skip


def measure(args: argparse.Namespace, work: Path, database_url: str | None) -> dict[str, Any]:
    goal = target(args, work, database_url)
    try:
        return _measure(args, work, goal)
    finally:
        # The gateway's log outlives the work directory, for the errors behind a status.
        for server in goal.servers:
            if server.log_path.exists():
                keep = Path(tempfile.gettempdir()) / f"inflight-{args.label}-{server.name}.log"
                keep.write_bytes(server.log_path.read_bytes())


def _measure(args: argparse.Namespace, work: Path, goal: Target) -> dict[str, Any]:
    server = goal.measured
    with running(*goal.servers):
        if args.peer == "null":
            goal.headers["Authorization"] = f"Bearer {provision(server)}"
        headers = [f"--header={name}: {value}" for name, value in goal.headers.items()]
        body = work / "body.json"
        body.write_text(json.dumps(goal.body))
        # Warm-up without the delay: imports, pools, the emulator's first render.
        warm = work / "warm.json"
        subprocess.run(
            [PY, str(BENCH / "loadgen.py"), "load", "--url", server.url + goal.post_path,
             "--body", str(body), *headers,
             "--concurrency", "4", "--requests", "8", "--out", str(warm)],
            check=True,
        )  # fmt: skip
        set_delay(goal, args.delay)
        collections_so_far(work, args, reset=True)
        idle = server.rss()
        load_out = work / "load.json"
        log(f"{args.label}: {args.concurrency} generations, upstream delay {args.delay:g} s")
        cpu_before = server.cpu_seconds()
        # RSS just before the upstream answers: what holding the requests costs, before
        # the answers (buffered while they wait for the image thread) add theirs.
        waiting: list[int] = []
        timer = threading.Timer(args.delay * 0.9, lambda: waiting.append(server.rss()))
        timer.start()
        rate = args.rate if args.arrivals == "ramp" else 0.0
        with PeakSampler(server.rss, 0.1) as sampler:
            load = subprocess.run(
                [PY, str(BENCH / "loadgen.py"), "open",
                 "--url", server.url + goal.post_path, "--body", str(body), *headers,
                 "--requests", str(args.concurrency), "--rate", str(rate),
                 "--health-url", server.url + goal.health_path, "--health-interval", "0.1",
                 "--timeout", str(args.delay * 10 + 120), "--out", str(load_out)],
                check=False,
            )  # fmt: skip
        cpu = server.cpu_seconds() - cpu_before
        pauses = collections_so_far(work, args, reset=False)  # before the shutdown's
        high_water = server.peak_rss()
        alive = server.process is not None and server.process.poll() is None
    result = json.loads(load_out.read_text()) if load.returncode == 0 else {}
    health = {
        "latencies": result.get("health_latencies", []),
        "failures": result.get("health_failures", 0),
    }
    peak = max(sampler.peak, high_water)
    latencies = [s * 1000 for s in result.get("latencies", [])]
    added = [ms - args.delay * 1000 for ms in latencies]
    health_ms = [s * 1000 for s in health["latencies"]]
    statuses = result.get("statuses", {})
    row = {
        "label": args.label,
        "arrivals": f"ramp {args.rate:g}/s" if args.arrivals == "ramp" else "burst",
        "provider": "openai" if args.peer == "litellm" else args.provider,
        "send_lateness_max_s": round(result.get("send_lateness_max_s", 0.0), 3),
        "server": "litellm" if args.peer == "litellm" else f"gateway, {upstream_name(args)}",
        "database": args.db if args.peer != "litellm" else "none",
        "concurrency": args.concurrency,
        "delay_s": args.delay,
        "statuses": statuses,
        "ok": statuses.get("200", 0),
        "sample_error": result.get("sample_error"),
        "wall_s": round(result.get("wall_seconds", 0.0), 2),
        "gateway_alive_after": alive,
        "idle_rss_mib": round(idle / MIB, 1),
        "peak_rss_mib": round(peak / MIB, 1),
        "waiting_rss_mib": round(waiting[0] / MIB, 1) if waiting else None,
        "rss_per_inflight_kib": round((peak - idle) / 1024 / args.concurrency, 1),
        "gateway_cpu_s": round(cpu, 1),
        "healthz_samples": len(health_ms),
        "healthz_failures": health["failures"],
        "healthz_p50_ms": round(percentile(health_ms, 50), 1),
        "healthz_p99_ms": round(percentile(health_ms, 99), 1),
        "healthz_max_ms": round(max(health_ms, default=0.0), 1),
        "added_p50_ms": round(percentile(added, 50), 1),
        "added_p99_ms": round(percentile(added, 99), 1),
        "added_max_ms": round(max(added, default=0.0), 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "gc": {"mode": args.gc, "thresholds": args.gc_thresholds or "default", "pauses": pauses}
        if args.gc
        else None,
        "settings": {}
        if args.peer == "litellm"
        else settings(args.concurrency, args.delay) | {"tenant/key per minute (CLI)": "1000000"},
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def write(row: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "inflight.json"
    stored: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    row["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    row["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    stored[row["label"]] = row
    path.write_text(json.dumps(stored, indent=2) + "\n")
    lines = [
        "# In-flight capacity: slow generations held by one gateway process",
        "",
        "`bench/inflight.py` (bench/run.py section (h) runs the first six): one gateway",
        "process in front of the OpenAI emulator in its own process (or the Gemini emulator,",
        "inside it or apart), or the LiteLLM proxy in front of the OpenAI emulator; every",
        "upstream call delayed; generations sent open-loop by bench/loadgen.py `open`",
        "(arrivals in the results: ramped or all at once); /healthz (LiteLLM:",
        "/health/liveliness) probed every 100 ms throughout. Added = latency - upstream delay",
        "(successes only). Load average is the machine's (1, 5, 15 min) at the end of the run.",
        "`gc` rows: full (generation 2) collections in the gateway, their count, longest and",
        "total pause (`--gc probe`), or the automatic collector disabled (`--gc off`).",
        "",
        "| run | server | db | in flight | delay (s) | statuses | peak RSS (MiB) "
        "| RSS at 0.9 x delay (MiB) | idle RSS (MiB) "
        "| KiB per request | /healthz p50 / p99 / max (ms) | added p50 / p99 / max (ms) "
        "| gateway CPU (s) | load average | gc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in stored.items():
        lines.append(
            f"| {name} | {r.get('server', 'gateway, upstream emulate')} | {r['database']} "
            f"| {r['concurrency']} | {r['delay_s']:g} | {r['statuses']} "
            f"| {r['peak_rss_mib']} | {r.get('waiting_rss_mib') or '-'} | {r['idle_rss_mib']} "
            f"| {r['rss_per_inflight_kib']} "
            f"| {r['healthz_p50_ms']} / {r['healthz_p99_ms']} / {r['healthz_max_ms']} "
            f"| {r['added_p50_ms']} / {r['added_p99_ms']} / {r['added_max_ms']} "
            f"| {r['gateway_cpu_s']} | {r['load_average']} | {_collector(r.get('gc'))} |"
        )
    (RESULTS / "inflight.md").write_text("\n".join(lines) + "\n")


def collections_so_far(work: Path, args: argparse.Namespace, *, reset: bool) -> Any:
    """The gateway's collections (bench/gcprobe) since the last reset, None without --gc;
    `reset` starts the count afresh (after start-up and warm-up: the imports run on
    CPython's thresholds, before the lifespan sets the gateway's)."""
    if not args.gc:
        return None
    report = work / "gc.json"
    if reset:
        report.with_suffix(".reset").touch()
    time.sleep(1.5)  # the probe reports (and takes a reset) every second
    return json.loads(report.read_text()) if report.exists() else None


def _collector(gc: dict[str, Any] | None) -> str:
    if not gc:
        return "-"
    full = (gc.get("pauses") or {}).get("2", {})
    return (
        f"{gc['mode']} {gc.get('thresholds', '')}: {full.get('collections', 0)} full, "
        f"longest {full.get('max_ms', 0)} ms, "
        f"{full.get('total_ms', 0)} ms in all"
    )


def command_line() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--inflight", "--concurrency", dest="concurrency", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=20.0)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--provider", choices=["openai", "gemini"], default="openai")
    parser.add_argument("--arrivals", choices=["ramp", "burst"], default="ramp")
    parser.add_argument("--rate", type=float, default=100.0, help="ramp arrivals per second")
    parser.add_argument(
        "--upstream",
        choices=["emulate", "process"],
        default="emulate",
        help="the Gemini emulator inside the gateway (serve --emulate) or in its own "
        "process (bench/emulator.py, renders memoised: only the gateway is measured)",
    )
    parser.add_argument(
        "--peer",
        choices=["null", "litellm"],
        default="null",
        help="litellm: the same load through the LiteLLM proxy (bench/run.py's setup) in "
        "front of the OpenAI emulator in its own process",
    )
    parser.add_argument(
        "--gc",
        choices=["", "probe", "off"],
        default="",
        help="probe: time the gateway's garbage collections (bench/gcprobe); off: the same "
        "with the automatic collector disabled, to measure what its pauses cost",
    )
    parser.add_argument(
        "--gc-thresholds",
        default="",
        help="IMAGEGATE_GC_THRESHOLDS for the gateway, e.g. '[700, 10, 10]' (CPython's own)",
    )
    parser.add_argument("--label", help="row name (default: server-db-concurrency)")
    return parser


def main() -> None:
    write(run(command_line().parse_args()))


def options(**given: Any) -> argparse.Namespace:
    """The command line's defaults with `given` over them (bench/run.py's section)."""
    return argparse.Namespace(**(vars(command_line().parse_args([])) | given))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One measured row: the server (and embedded Postgres with --db postgres) started
    in a scratch directory and stopped after."""
    args.postgres = args.db == "postgres" and args.peer != "litellm"
    server = "litellm" if args.peer == "litellm" else f"gateway-{upstream_name(args)}-{args.db}"
    gc_mode = f"-gc-{args.gc}" if args.gc else ""
    if args.gc_thresholds:
        gc_mode += "-" + "-".join(str(n) for n in json.loads(args.gc_thresholds))
    args.label = args.label or f"{server}-{args.concurrency}{gc_mode}"
    raise_open_files(4 * args.concurrency + 1024)
    with tempfile.TemporaryDirectory(prefix="inflight-") as tmp:
        work = Path(tmp)
        if not args.postgres:
            return measure(args, work, None)
        sys.path.insert(0, str(ROOT))  # devtools/ is not an installed package
        from app.db.migrate import upgrade
        from devtools.postgres import Postgres

        postgres = Postgres(work / "postgres")
        try:
            url = postgres.start()
            upgrade(url)  # `serve` migrates SQLite only; Postgres is `imagegate migrate`
            return measure(args, work, url)
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
