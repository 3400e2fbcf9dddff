"""Load generator, run in its own process so its CPU never counts against a server.

`load`: send `--requests` copies of one POST with at most `--concurrency` in flight and
write latencies (seconds), status counts and the wall time as JSON.
`open`: an open-loop aiohttp generator: `--requests` POSTs arriving at `--rate` per
second (0: all at once), each timed on its own, whatever the server's pace; /healthz (or
`--probe-url`) is polled every `--probe-interval` s alongside in the same loop.
`serve`: a trivial aiohttp server answering every POST after `--delay` s, to measure what
the `open` generator itself adds (its latency over the delay).
`probe`: GET one URL back to back (one in flight, `--interval` apart) until `--stop-file`
exists or `--max-seconds` pass, and write the latencies. Used for /healthz during load.

Every loop is bounded in count and time; only loopback addresses are targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
from aiohttp import web


def _loopback_only(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        sys.exit(f"refusing to send load to a non-loopback address: {host}")


def _headers(items: list[str]) -> dict[str, str]:
    """The JSON content type plus every `--header 'Name: value'`."""
    headers = {"content-type": "application/json"}
    for item in items:
        name, _, value = item.partition(":")
        headers[name.strip()] = value.strip()
    return headers


async def load(args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    headers = _headers(args.header)
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    timeout = httpx.Timeout(args.timeout)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    sample_error: str | None = None
    sample_body: str | None = None
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def one() -> None:
            nonlocal sample_error, sample_body
            started = time.perf_counter()
            try:
                response = await client.post(args.url, content=body, headers=headers)
                status = str(response.status_code)
                content = response.content
            except httpx.HTTPError as exc:
                status, content = type(exc).__name__, b""
            elapsed = time.perf_counter() - started
            statuses[status] = statuses.get(status, 0) + 1
            if status == "200":
                latencies.append(elapsed)
                if sample_body is None:
                    sample_body = content[:120].decode("utf-8", "replace")
            elif sample_error is None:
                sample_error = f"{status}: {content[:300].decode('utf-8', 'replace')}"

        async def worker(count: int) -> None:
            for _ in range(count):
                await one()

        def spread(total: int) -> list[int]:
            share, extra = divmod(total, args.concurrency)
            return [share + (1 if i < extra else 0) for i in range(args.concurrency)]

        if args.warmup:
            await asyncio.gather(*(worker(n) for n in spread(args.warmup)))
            latencies.clear()
            statuses.clear()
        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in spread(args.requests)))
        wall = time.perf_counter() - started
    return {
        "latencies": latencies,
        "statuses": statuses,
        "wall_seconds": wall,
        "sample_error": sample_error,
        "sample_body": sample_body,
    }


async def probe(args: argparse.Namespace) -> dict[str, Any]:
    stop = os.path.exists
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + args.max_seconds
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
        while not stop(args.stop_file) and time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = await client.get(args.url)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1
            await asyncio.sleep(args.interval)
    return {"latencies": latencies, "failures": failures}


async def open_loop(args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    """Every request is started at its arrival time, never waiting for an earlier one, so
    a slow server shows as latency, not as a lower offered rate (unlike `load`)."""
    headers = _headers(args.header)
    results: list[tuple[float, float, str]] = []  # (offset sent, latency, status)
    health: list[float] = []
    health_failures = 0
    sample_error: str | None = None
    done = asyncio.Event()
    # One connection per request in flight: no pool queueing inside the generator.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        origin = time.perf_counter()

        async def one(at: float) -> None:
            nonlocal sample_error
            delay = at - (time.perf_counter() - origin)
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            try:
                async with session.post(args.url, data=body, headers=headers) as response:
                    content = await response.read()
                    status = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, content = type(exc).__name__, b""
            results.append((sent - origin, time.perf_counter() - sent, status))
            if status != "200" and sample_error is None:
                sample_error = f"{status}: {content[:300].decode('utf-8', 'replace')}"

        async def poll_health() -> None:
            nonlocal health_failures
            probe_timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(timeout=probe_timeout) as probes:
                while not done.is_set():
                    started = time.perf_counter()
                    try:
                        async with probes.get(args.probe_url) as response:
                            await response.read()
                            ok = response.status == 200
                    except (aiohttp.ClientError, TimeoutError):
                        ok = False
                    if ok:
                        health.append(time.perf_counter() - started)
                    else:
                        health_failures += 1
                    await asyncio.sleep(args.probe_interval)

        prober = asyncio.create_task(poll_health()) if args.probe_url else None
        gap = 1.0 / args.rate if args.rate > 0 else 0.0
        await asyncio.gather(*(one(i * gap) for i in range(args.requests)))
        wall = time.perf_counter() - origin
        done.set()
        if prober is not None:
            await prober
    statuses: dict[str, int] = {}
    for _, _, status in results:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "latencies": [latency for _, latency, status in results if status == "200"],
        "requests": [list(row) for row in sorted(results)],
        "statuses": statuses,
        "wall_seconds": wall,
        "sample_error": sample_error,
        "health_latencies": health,
        "health_failures": health_failures,
    }


def serve(args: argparse.Namespace) -> None:
    """Answers every POST after --delay s with a small JSON body; GET /healthz at once."""
    payload = b'{"ok": true}'

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(args.delay)
        return web.Response(body=payload, content_type="application/json")

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(body=payload, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{tail:.*}", slow)
    app.router.add_get("/healthz", healthz)
    # A backlog for a burst of thousands of connects at once.
    web.run_app(app, host="127.0.0.1", port=args.port, backlog=8192, print=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    modes = parser.add_subparsers(dest="mode", required=True)
    run = modes.add_parser("load")
    run.add_argument("--url", required=True)
    run.add_argument("--body", required=True, help="file holding the JSON body")
    run.add_argument("--header", action="append", default=[], help="'Name: value'")
    run.add_argument("--concurrency", type=int, required=True)
    run.add_argument("--requests", type=int, required=True)
    run.add_argument("--warmup", type=int, default=0)
    run.add_argument("--timeout", type=float, default=120.0)
    run.add_argument("--out", required=True)
    check = modes.add_parser("probe")
    check.add_argument("--url", required=True)
    check.add_argument("--interval", type=float, default=0.01)
    check.add_argument("--stop-file", required=True)
    check.add_argument("--max-seconds", type=float, default=600.0)
    check.add_argument("--out", required=True)
    arrivals = modes.add_parser("open")
    arrivals.add_argument("--url", required=True)
    arrivals.add_argument("--body", required=True, help="file holding the JSON body")
    arrivals.add_argument("--header", action="append", default=[], help="'Name: value'")
    arrivals.add_argument("--requests", type=int, required=True)
    arrivals.add_argument("--rate", type=float, default=0.0, help="arrivals/s; 0 = burst")
    arrivals.add_argument("--timeout", type=float, default=300.0)
    arrivals.add_argument("--probe-url", help="polled with GET alongside, e.g. /healthz")
    arrivals.add_argument("--probe-interval", type=float, default=0.1)
    arrivals.add_argument("--out", required=True)
    server = modes.add_parser("serve")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--delay", type=float, required=True)
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args)
        return
    _loopback_only(args.url)
    if args.mode == "open":
        if args.probe_url:
            _loopback_only(args.probe_url)
        if args.requests < 1 or args.requests > 100_000 or args.rate < 0:
            sys.exit("requests must be 1..100000 and rate >= 0")
        result = asyncio.run(open_loop(args, Path(args.body).read_bytes()))
    elif args.mode == "load":
        if args.requests < 1 or args.requests > 100_000 or args.concurrency < 1:
            sys.exit("requests must be 1..100000 and concurrency >= 1")
        result = asyncio.run(load(args, Path(args.body).read_bytes()))
    else:
        result = asyncio.run(probe(args))
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
