"""Peak RSS of a gateway decoding 20 concurrent near-limit source images.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/decode_memory.py --label after
    # the same against another source tree (e.g. `git archive <base> app migrations
    # alembic.ini | tar -x -C /tmp/base`), to compare:
    .venv/bin/python bench/decode_memory.py --label before --root /tmp/base

Each variant gets a fresh `imagegate serve` process (embedded defaults: SQLite + local
directory) not emulated, pointed at the Gemini emulator in its own process
(bench/emulator.py), so the gateway's RSS holds only what the gateway decodes (the
in-process emulator decodes every source image too). `--concurrency` requests, each
one image-to-image call with a 6000x6000 source (36 Mpx, under the 40 Mpx limit), are
sent at once; the gateway's RSS is sampled every 10 ms and its kernel high-water mark
(VmHWM) read at the end. Variants: "flat" (a one-colour PNG, ~120 KB, the decode bomb
of the issue) and "noisy" (random noise as a JPEG, ~6.8 MB, under the 10 MiB limit).
Results are merged by label into bench/results/decode_memory.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from run import (
    PY,
    RESULTS,
    ROOT,
    PeakSampler,
    Server,
    admin,
    base_env,
    emulator,
    free_port,
    running,
)

SIDE = 6000
MIB = 1024 * 1024


def sources(work: Path) -> dict[str, str]:
    """The two near-limit sources as data URLs (made once, kept in the work directory)."""
    flat = work / "flat.png"
    noisy = work / "noisy.jpg"
    if not flat.exists():
        Image.new("RGB", (SIDE, SIDE), (20, 140, 220)).save(flat, "PNG")
    if not noisy.exists():
        noise = Image.frombytes("RGB", (SIDE, SIDE), os.urandom(SIDE * SIDE * 3))
        noise.save(noisy, "JPEG", quality=20)
    return {
        "flat": "data:image/png;base64," + base64.b64encode(flat.read_bytes()).decode(),
        "noisy": "data:image/jpeg;base64," + base64.b64encode(noisy.read_bytes()).decode(),
    }


def gateway(root: Path, work: Path, gemini: Server, name: str, env: dict[str, str]) -> Server:
    port = free_port()
    data = work / name
    data.mkdir(parents=True, exist_ok=True)
    full_env = (
        base_env()
        | {
            "PYTHONPATH": str(root),
            "IMAGEGATE_DATA_DIR": str(data),
            "IMAGEGATE_GEMINI_API_KEY": "bench",
            "IMAGEGATE_GEMINI_BASE_URL": gemini.url,
        }
        | env
    )
    return Server(
        name,
        [PY, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        full_env,
        port,
        work / f"{name}.log",
        ready_path="/healthz",
        cwd=root,
    )


async def burst(url: str, key: str, source: str, concurrency: int) -> tuple[dict[str, int], float]:
    body = {"prompt": "the same scene, repainted", "sourceImage": source}
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.monotonic()
        responses = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/generate-image",
                    json=body,
                    headers={"Authorization": f"Bearer {key}"},
                )
                for _ in range(concurrency)
            ),
            return_exceptions=True,
        )
        wall = time.monotonic() - started
    statuses: dict[str, int] = {}
    for response in responses:
        label = (
            str(response.status_code)
            if isinstance(response, httpx.Response)
            else type(response).__name__
        )
        statuses[label] = statuses.get(label, 0) + 1
    return statuses, wall


def provision(server: Server) -> str:
    admin(server, "tenants", "create", "bench")
    key = str(admin(server, "keys", "create", "--tenant", "bench")["key"])
    admin(server, "credits", "grant", "--tenant", "bench", "1000000")
    admin(
        server, "tenants", "limits", "bench", "--per-minute", "100000", "--key-per-minute", "100000"
    )
    return key


def measure(
    root: Path, work: Path, gemini: Server, variant: str, source: str, args: argparse.Namespace
) -> dict[str, Any]:
    env = {}
    if args.budget_mpx is not None:
        env["IMAGEGATE_DECODE_BUDGET_MPX"] = str(args.budget_mpx)
    server = gateway(root, work, gemini, f"gateway-{args.label}-{variant}", env)
    with running(server):
        key = provision(server)
        # One small image-to-image request first: imports, pools and caches warmed.
        small = io.BytesIO()
        Image.new("RGB", (64, 64), (1, 2, 3)).save(small, "PNG")
        warm = "data:image/png;base64," + base64.b64encode(small.getvalue()).decode()
        asyncio.run(burst(server.url, key, warm, 1))
        idle = server.rss()
        with PeakSampler(server.rss) as sampler:
            statuses, wall = asyncio.run(burst(server.url, key, source, args.concurrency))
        after = server.rss()
        high_water = server.peak_rss()
    result = {
        "variant": variant,
        "source_bytes": len(base64.b64decode(source.split(",", 1)[1])),
        "concurrency": args.concurrency,
        "statuses": statuses,
        "wall_seconds": round(wall, 2),
        "idle_rss_mib": round(idle / MIB, 1),
        "peak_rss_mib": round(max(sampler.peak, high_water) / MIB, 1),
        "rss_after_mib": round(after / MIB, 1),
    }
    print(
        f"{args.label:>8} {variant:>6}: peak RSS {result['peak_rss_mib']} MiB "
        f"(idle {result['idle_rss_mib']}, after {result['rss_after_mib']}), "
        f"{statuses}, {result['wall_seconds']} s",
        flush=True,
    )
    return result


def write(label: str, root: Path, results: list[dict[str, Any]], budget: float | None) -> None:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "decode_memory.json"
    stored: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    stored[label] = {
        "root": str(root),
        "decode_budget_mpx": budget if budget is not None else "default",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "results": results,
    }
    path.write_text(json.dumps(stored, indent=2) + "\n")
    lines = [
        "# Peak gateway RSS, concurrent near-limit source images",
        "",
        "`bench/decode_memory.py`: 6000x6000 sources (flat PNG, noisy JPEG), each run in a",
        "fresh `imagegate serve` (embedded defaults) against the Gemini emulator in its own",
        "process. Peak = max of 10 ms RSS samples and VmHWM.",
        "",
        "| run | budget (Mpx) | source | concurrency | statuses | wall (s) "
        "| idle RSS (MiB) | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run in stored.items():
        for item in run["results"]:
            lines.append(
                f"| {name} | {run['decode_budget_mpx']} | {item['variant']} "
                f"({item['source_bytes'] // 1024} KB) | {item['concurrency']} | "
                f"{item['statuses']} | {item['wall_seconds']} | {item['idle_rss_mib']} | "
                f"{item['peak_rss_mib']} |"
            )
    (RESULTS / "decode_memory.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--label", default="after")
    parser.add_argument("--root", type=Path, default=ROOT, help="source tree of the gateway")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument(
        "--budget-mpx", type=float, help="IMAGEGATE_DECODE_BUDGET_MPX (default: unset)"
    )
    parser.add_argument("--variants", default="flat,noisy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="decode-memory-") as tmp:
        work = Path(tmp)
        images = sources(work)
        gemini = emulator("gemini", work)
        with running(gemini):
            results = [
                measure(args.root.resolve(), work, gemini, variant, images[variant], args)
                for variant in args.variants.split(",")
            ]
    write(args.label, args.root.resolve(), results, args.budget_mpx)


if __name__ == "__main__":
    main()
