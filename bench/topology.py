"""Sections (e) production topology and (f) worker processes of bench/run.py.

(e) the overhead section's 1-image request at c=1 and c=20 through imagegate on the
embedded defaults, imagegate on Postgres + SeaweedFS S3 + Valkey (bench/stack.py), and
LiteLLM, in interleaved rounds. (f) `imagegate serve --workers 2` against one worker on
the same services at c=20 and c=40, interleaved too.

Every row also carries what else ran: the load generator's CPU, the whole machine's busy
CPU, the part of it no process of the bench spent ("others": e.g. other jobs on a shared
machine) and steal time, each per request, so a reader sees how noisy the run was.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import run as bench
from stack import Children, MachineBusy, ProductionStack, Steal, Sum, cpu_count, has_steal

Target = bench.Target
NOISE = ("loadgen", "machine", "ours", "steal")
WORKERS = 2


def contract_body() -> dict[str, Any]:
    return {"prompt": bench.PROMPT, "model": "openai/gpt-image-1", "aspectRatio": "1:1"} | {
        "numImages": 1
    }


def imagegate_target(label: str, gw: bench.Server, key: str, meters: dict[str, Any]) -> Target:
    return (
        label,
        f"{gw.url}/api/v1/generate-image",
        contract_body(),
        {"authorization": f"Bearer {key}"},
        {"gateway": gw, **meters},
    )


def interleaved(
    work: Path,
    args: argparse.Namespace,
    targets: list[Target],
    concurrencies: tuple[int, ...],
    ours: list[Any],
) -> list[bench.LoadResult]:
    """bench/run.py's interleaved rounds, each row also with the machine's noise."""
    noise = {"loadgen": Children(), "machine": MachineBusy(), "ours": Sum([*ours, Children()])}
    if has_steal():
        noise["steal"] = Steal()
    start_ms = loadgen_start_ms(work, targets[0])
    results = []
    for concurrency in concurrencies:
        for row in bench.interleaved(work, args, targets, concurrency, noise):
            cpu = row.cpu_ms_per_request
            cpu["others"] = max(0.0, cpu["machine"] - cpu["ours"])
            # Each round starts a load generator; its start-up is not per-request work.
            startup = start_ms * bench.rounds_of(args) / row.requests
            cpu["loadgen"] = max(0.0, cpu["loadgen"] - startup)
            results.append(row)
            bench.log(row.line())
    return results


def loadgen_start_ms(work: Path, target: Target) -> float:
    """CPU ms a load generator spends on one request and its own start (imports, event
    loop): the least of three runs."""
    _label, url, body, headers, _ = target
    meter, costs = Children(), []
    for _ in range(3):
        before = meter.cpu_seconds()
        bench.loadgen(work, url, body, concurrency=1, requests=1, headers=headers)
        costs.append((meter.cpu_seconds() - before) * 1000)
    bench.log(f"load generator start-up: {min(costs):.0f} ms CPU")
    return min(costs)


def worker_cap(one: dict[str, Any], workers: int, cores: int) -> dict[str, float]:
    """The most `workers` processes can gain over one, from one worker's CPU per request.

    One worker is bound by its own CPU, at most 1/g requests per second (g: the gateway's
    CPU per request). All processes of a request (g, plus o: emulator, services, load
    generator) share the cores, at most cores/(g+o). So workers/one is at most
    cores*g/(g+o) (never below 1, never above `workers`); with the other jobs on the
    machine (x per request) counted in, cores*g/(g+o+x).
    """
    cpu = one["cpu_ms_per_request"]
    g = cpu["gateway"]
    o = sum(v for k, v in cpu.items() if k not in ("gateway", "machine", "ours", "steal", "others"))
    x = cpu.get("others", 0.0)
    return {
        "gateway_ms": round(g, 2),
        "rest_ms": round(o, 2),
        "others_ms": round(x, 2),
        "cap": _bounded(cores * g / (g + o), workers) if g else 0.0,
        "cap_with_others": _bounded(cores * g / (g + o + x), workers) if g else 0.0,
    }


def _bounded(gain: float, workers: int) -> float:
    return round(min(float(workers), max(1.0, gain)), 2)


def production(
    work: Path,
    args: argparse.Namespace,
    sections: set[str],
    openai: bench.Server,
    gemini: bench.Server,
    lite_binary: Path | None,
) -> dict[str, Any]:
    """(e) and/or (f), on one set of services started here and stopped at the end."""
    stack = ProductionStack(work / "stack")
    bench.log("starting Postgres + SeaweedFS S3 + Valkey (devtools)")
    out: dict[str, Any] = {}
    try:
        services = stack.start()
        meters = stack.meters()
        on_stack = bench.gateway("imagegate-stack", work, openai, gemini, services=services)
        servers = [on_stack]
        if "topology" in sections:
            embedded = bench.gateway("imagegate-embedded", work, openai, gemini)
            lite = bench.litellm(lite_binary, work, openai) if lite_binary else None
            servers += [embedded, *([lite] if lite else [])]
        if "workers" in sections:
            two = bench.gateway(
                "imagegate-stack-2w", work, openai, gemini, services=services, workers=WORKERS
            )
            servers.append(two)
        with bench.running(*servers):
            ours = [openai, gemini, *servers, *meters.values()]
            stack_key = bench.provision(on_stack)  # one database: the 2-worker gateway's too
            with_emulator: dict[str, Any] = {"emulator": openai, **meters}
            if "topology" in sections:
                embedded_key = bench.provision(embedded)
                targets = [
                    imagegate_target("imagegate", embedded, embedded_key, {"emulator": openai}),
                    imagegate_target("imagegate-stack", on_stack, stack_key, with_emulator),
                ]
                if lite is not None:
                    lite_meters = {"gateway": lite, "emulator": openai}
                    url = f"{lite.url}/v1/images/generations"
                    targets.append(("litellm", url, bench.OPENAI_BODY, {}, lite_meters))
                rows = interleaved(work, args, targets, (1, 20), ours)
                out["topology"] = {
                    "services": stack.pids(),
                    "rows": [r.summary() for r in rows],
                }
            if "workers" in sections:
                one = imagegate_target("imagegate-1w", on_stack, stack_key, with_emulator)
                many = imagegate_target(f"imagegate-{WORKERS}w", two, stack_key, with_emulator)
                rows = interleaved(work, args, [one, many], (20, 40), ours)
                summaries = [r.summary() for r in rows]
                caps = {}
                for row in summaries:
                    if row["label"] == "imagegate-1w":
                        cap = worker_cap(row, WORKERS, cpu_count())
                        caps[str(row["concurrency"])] = cap
                        bench.log(f"workers cap at c={row['concurrency']}: {cap}")
                out["workers"] = {
                    "workers": WORKERS,
                    "cores": cpu_count(),
                    "rows": summaries,
                    "cap": caps,
                }
    finally:
        stack.stop()
    return out
