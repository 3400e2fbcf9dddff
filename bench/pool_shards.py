"""CPU per upstream exchange with thousands in flight: one httpcore pool against shards.

    .venv/bin/python bench/pool_shards.py --inflight 2000 --delay 3 --rounds 4

The gateway's upstream transport (GuardedTransport over `pooled_transport`, as the
registry builds it) sends `--inflight` POSTs at once to a loopback server in its own
process (bench/loadgen.py `serve`) that answers each after `--delay` seconds, and this
process's CPU seconds per exchange are measured. Two variants in alternating rounds, in
the same process against the same server: one pool of all the connections (`shards=1`,
what the gateway had before app/providers/pool_shards.py) and the default shards.
Prints and writes bench/results/pool_shards.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from inflight import raise_open_files
from run import PY, RESULTS, Server, base_env, free_port, log, running

from app.providers.pool_shards import shard_count
from app.providers.transport import GuardedTransport, UpstreamLimits, pooled_transport

HERE = Path(__file__).resolve().parent


async def one_round(url: str, limits: UpstreamLimits, shards: int, inflight: int) -> float:
    """CPU ms per exchange of `inflight` exchanges sent at once."""
    guard = GuardedTransport("bench", lambda: pooled_transport(limits, shards), limits)
    async with httpx.AsyncClient(transport=guard, timeout=None, trust_env=False) as client:
        started = time.process_time()
        responses = await asyncio.gather(
            *(client.post(url, content=b'{"prompt": "x"}') for _ in range(inflight))
        )
        spent = time.process_time() - started
    failed = [r.status_code for r in responses if r.status_code != 200]
    if failed:
        raise SystemExit(f"{len(failed)} exchanges failed: {failed[:5]}")
    return spent * 1000 / inflight


def rounds(
    url: str, limits: UpstreamLimits, sharded: int, args: argparse.Namespace
) -> dict[str, list[float]]:
    """CPU ms per exchange of each variant per round, alternating which goes first."""
    variants = {"one pool": 1, f"{sharded} shards": sharded}
    per_round: dict[str, list[float]] = {name: [] for name in variants}
    for number in range(args.rounds):
        order = list(variants.items())
        for name, shards in order if number % 2 == 0 else reversed(order):
            ms = asyncio.run(one_round(url, limits, shards, args.inflight))
            per_round[name].append(ms)
            log(f"round {number + 1}: {name}: {ms:.2f} ms CPU per exchange")
    return per_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inflight", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    raise_open_files(4 * args.inflight)
    limits = UpstreamLimits(
        max_connections=args.inflight + 200,
        max_in_flight=args.inflight + 100,
        read_timeout=args.delay * 10 + 60,
    )
    sharded = shard_count(limits.max_connections, limits.max_in_flight)
    port = free_port()
    argv = [PY, str(HERE / "loadgen.py"), "serve", "--port", str(port), "--delay", str(args.delay)]
    with tempfile.TemporaryDirectory(prefix="pool-shards-") as tmp:
        log_path = Path(tmp) / "upstream.log"
        upstream = Server("upstream", argv, base_env(), port, log_path, ready_path="/healthz")
        with running(upstream):
            per_round = rounds(upstream.url + "/v1/images/generations", limits, sharded, args)
    medians = {name: statistics.median(values) for name, values in per_round.items()}
    one, many = medians.values()
    report = {
        "inflight": args.inflight,
        "delay_s": args.delay,
        "rounds": per_round,
        "median_ms": medians,
        "ratio": round(many / one, 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    lines = [
        "# Upstream CPU per exchange with many in flight: one pool against shards",
        "",
        f"`bench/pool_shards.py --inflight {args.inflight} --delay {args.delay:g} --rounds "
        f"{args.rounds}`, {report['measured_at']}, load average {report['load_average']}.",
        "",
        "| variant | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " | median |",
        "|---|" + "---:|" * (args.rounds + 1),
    ]
    for name, values in per_round.items():
        cells = " | ".join(f"{v:.2f}" for v in values)
        lines.append(f"| {name} | {cells} | {medians[name]:.2f} |")
    lines += ["", f"CPU ms per exchange in this process; shards / one pool = {report['ratio']}."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pool_shards.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "pool_shards.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
