"""Load generator, run in its own process so its CPU never counts against a server.

`load`: send `--requests` copies of one POST with at most `--concurrency` in flight and
write latencies (seconds), status counts and the wall time as JSON.
`probe`: GET one URL back to back (one in flight, `--interval` apart) until `--stop-file`
exists or `--max-seconds` pass, and write the latencies. Used for /healthz during load.

`open`: open-loop (aiohttp, light enough for thousands in flight): `--requests` POSTs
arriving `--rate` per second (0: all at once), each recording its latency and status,
while /healthz (`--health-url`) is polled every `--health-interval`; writes both.
`serve`: a trivial aiohttp server answering every POST after `--delay` seconds, so the
load generator's own added latency can be measured (`open` against `serve`).

Every loop is bounded in count and time; only loopback addresses are targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx


def _loopback_only(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        sys.exit(f"refusing to send load to a non-loopback address: {host}")


async def load(args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    headers = {"content-type": "application/json"}
    for item in args.header:
        name, _, value = item.partition(":")
        headers[name.strip()] = value.strip()
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
    """Arrivals on a schedule independent of the answers (open loop): a slow server
    cannot slow the offered load, so latency is the server's, not queueing in here."""
    import aiohttp

    headers = {"content-type": "application/json"}
    for item in args.header:
        name, _, value = item.partition(":")
        headers[name.strip()] = value.strip()
    latencies: list[float] = []
    lateness: list[float] = []  # how late each request left against its schedule
    statuses: dict[str, int] = {}
    samples: dict[str, str] = {}
    health: list[float] = []
    health_failures = 0
    done = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(due: float) -> None:
            started = time.perf_counter()
            lateness.append(started - due)
            try:
                async with session.post(args.url, data=body, headers=headers) as response:
                    content = await response.read()
                    status = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, content = type(exc).__name__, b""
            elapsed = time.perf_counter() - started
            statuses[status] = statuses.get(status, 0) + 1
            if status == "200":
                latencies.append(elapsed)
            samples.setdefault(status, content[:300].decode("utf-8", "replace"))

        async def poll_health() -> None:
            nonlocal health_failures
            # Its own session: a probe never waits behind the load's connections.
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as probe:
                while not done.is_set():
                    started = time.perf_counter()
                    try:
                        async with probe.get(args.health_url) as response:
                            await response.read()
                            ok = response.status == 200
                    except (aiohttp.ClientError, TimeoutError):
                        ok = False
                    if ok:
                        health.append(time.perf_counter() - started)
                    else:
                        health_failures += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(done.wait(), args.health_interval)

        poller = asyncio.create_task(poll_health()) if args.health_url else None
        started = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        for index in range(args.requests):
            due = started + (index / args.rate if args.rate > 0 else 0.0)
            pause = due - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - started
        done.set()
        if poller is not None:
            await poller
    return {
        "latencies": latencies,
        "statuses": statuses,
        "wall_seconds": wall,
        "samples": samples,
        "sample_error": next((v for k, v in samples.items() if k != "200"), None),
        "send_lateness_max_s": max(lateness, default=0.0),
        "health_latencies": health,
        "health_failures": health_failures,
    }


def serve(args: argparse.Namespace) -> None:
    """Answer every POST after `--delay` seconds with a small JSON body (and GET
    /healthz at once): the reference upstream for measuring the load generator."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(args.delay)
        return web.json_response({"ok": True})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=args.port, backlog=4096, print=None)


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
    burst = modes.add_parser("open")
    burst.add_argument("--url", required=True)
    burst.add_argument("--body", required=True, help="file holding the JSON body")
    burst.add_argument("--header", action="append", default=[], help="'Name: value'")
    burst.add_argument("--requests", type=int, required=True)
    burst.add_argument("--rate", type=float, default=0.0, help="arrivals/s; 0: all at once")
    burst.add_argument("--health-url", default="")
    burst.add_argument("--health-interval", type=float, default=0.1)
    burst.add_argument("--timeout", type=float, default=300.0)
    burst.add_argument("--out", required=True)
    upstream = modes.add_parser("serve")
    upstream.add_argument("--port", type=int, required=True)
    upstream.add_argument("--delay", type=float, required=True)
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args)
        return
    _loopback_only(args.url)
    if args.mode == "open":
        if args.requests < 1 or args.requests > 100_000 or args.rate < 0:
            sys.exit("requests must be 1..100000 and rate >= 0")
        if args.health_url:
            _loopback_only(args.health_url)
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
