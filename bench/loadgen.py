"""Load generator, run in its own process so its CPU never counts against a server.

`load`: send `--requests` copies of one POST with at most `--concurrency` in flight and
write latencies (seconds), status counts and the wall time as JSON.
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
    args = parser.parse_args()
    _loopback_only(args.url)
    if args.mode == "load":
        if args.requests < 1 or args.requests > 100_000 or args.concurrency < 1:
            sys.exit("requests must be 1..100000 and concurrency >= 1")
        result = asyncio.run(load(args, Path(args.body).read_bytes()))
    else:
        result = asyncio.run(probe(args))
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
