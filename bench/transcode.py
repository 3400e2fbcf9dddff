"""A 4K PNG -> exact-ratio WebP transcode, as the gateway does it, against Pillow's own
decode + encode of the same file.

    .venv/bin/python bench/transcode.py

Inputs: a Gemini 3 Pro 4K 16:9 frame (5504x3072 PNG; 16.9 MP), drawn twice: by the
emulators (smooth gradients and shapes, compresses well) and as photo-like noise (the
worst case for both codecs), plus the same at 1K (1376x768) for scale. For each, the
median of `--repeats` runs of: `normalise_to_webp` (decode, crop to exactly 16:9, WebP at
the gateway's quality and method), Pillow decoding and re-encoding the file at the same
settings without the crop, and Pillow at its own WebP defaults (quality 80, method 4).
Wall and CPU seconds, output bytes, the gateway/Pillow ratio, and whether the default
decode budget admits the transcode. A 4096x4096 1:1 frame (16.8 MP, the other 4K shape)
is measured the same way.

`--concurrent N` (default 20) then runs N transcodes of one 4K input at once the way the
gateway runs them: each reserves its `TRANSCODE_COST` pixels from a `DecodeBudget` of the
default size and runs in a thread pool of `image_workers` threads (app/lifespan.py,
app/generation/producer.py). This process's RSS is sampled every 10 ms; the peak over
the idle RSS (the input already in memory) is compared with the budget's bound (its
pixels at ~4 bytes each). Results go to bench/results/transcode.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from PIL import Image
from run import PeakSampler

from app.emulators.images import synthesize_png
from app.generation.decode_budget import DecodeBudget
from app.imaging.webp import TRANSCODE_COST, WEBP_METHOD, WEBP_QUALITY, normalise_to_webp
from app.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
# label: (width, height, the exact ratio the gateway crops to)
SIZES = {
    "4K": (5504, 3072, "16:9"),
    "4K-square": (4096, 4096, "1:1"),
    "1K": (1376, 768, "16:9"),
}
MAX_PIXELS = 40_000_000
MIB = 1024 * 1024


def noisy_png(width: int, height: int) -> bytes:
    """Photo-like: a gradient under per-pixel noise, so neither codec finds it easy."""
    noise = Image.effect_noise((width, height), 48).convert("RGB")
    ramp = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    Image.blend(noise, ramp, 0.5).save(out, "PNG", compress_level=1)
    return out.getvalue()


def pillow(data: bytes, **params: Any) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, "WEBP", **params)
        return out.getvalue()


def timed(run: Callable[[], bytes], repeats: int) -> dict[str, float]:
    walls, cpus, size = [], [], 0
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        size = len(run())
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {
        "wall_s": round(statistics.median(walls), 3),
        "cpu_s": round(statistics.median(cpus), 3),
        "bytes": size,
    }


def measure(
    repeats: int, sizes: dict[str, tuple[int, int]] | dict[str, tuple[int, int, str]] = SIZES
) -> list[dict[str, Any]]:
    """One row per size and content (bench/run.py's transcode section reports the 4K)."""
    budget = Settings().decode_budget_pixels
    rows = []
    for label, size in sizes.items():
        width, height = size[0], size[1]
        ratio = str(size[2]) if len(size) > 2 else "16:9"
        for content, data in (
            ("emulator", synthesize_png("a lighthouse at dawn", width, height, variant=1)),
            ("noisy", noisy_png(width, height)),
        ):
            cost = width * height * TRANSCODE_COST
            row: dict[str, Any] = {
                "size": label,
                "input": f"{width}x{height} PNG, {content}",
                "png_bytes": len(data),
                "budget_admits": cost <= budget,
                "budget_share": round(cost / budget, 2),
                "gateway": timed(
                    lambda d=data, r=ratio: normalise_to_webp(d, r, max_pixels=MAX_PIXELS).data,
                    repeats,
                ),
                "pillow_same_settings": timed(
                    lambda d=data: pillow(d, quality=WEBP_QUALITY, method=WEBP_METHOD), repeats
                ),
                "pillow_defaults": timed(lambda d=data: pillow(d), repeats),
            }
            same = row["pillow_same_settings"]
            row["ratio_wall"] = round(row["gateway"]["wall_s"] / same["wall_s"], 2)
            row["ratio_cpu"] = round(row["gateway"]["cpu_s"] / max(same["cpu_s"], 1e-3), 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def concurrent(count: int, label: str) -> dict[str, Any]:
    """`count` transcodes of one input at once, through the decode budget and the image
    thread pool as the gateway's producer runs them."""
    width, height, ratio = SIZES[label]
    settings = Settings()
    data = synthesize_png("a lighthouse at dawn", width, height, variant=1)
    cost = width * height * TRANSCODE_COST
    budget = DecodeBudget(settings.decode_budget_pixels)
    workers = settings.resolved_image_workers

    async def burst(pool: ThreadPoolExecutor) -> list[int]:
        async def one() -> int:
            encoded = await budget.run(
                cost,
                lambda: normalise_to_webp(data, ratio, max_pixels=MAX_PIXELS),
                wait_seconds=3600,
                executor=pool,
            )
            return len(encoded.data)

        return await asyncio.gather(*(one() for _ in range(count)))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="encode") as pool:
        pool.submit(normalise_to_webp, data, ratio, max_pixels=MAX_PIXELS).result()  # warm
        idle = psutil.Process().memory_info().rss
        wall, cpu = time.perf_counter(), time.process_time()
        with PeakSampler(lambda: psutil.Process().memory_info().rss) as sampler:
            sizes = asyncio.run(burst(pool))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    bound = settings.decode_budget_pixels * 4  # ~4 bytes a pixel (app/settings.py)
    row = {
        "input": f"{width}x{height} PNG, emulator ({len(data)} bytes, one copy shared)",
        "concurrent": count,
        "image_workers": workers,
        "admitted_at_once": min(count, settings.decode_budget_pixels // cost),
        "done": len(sizes),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "per_image_wall_s": round(wall / count, 3),
        "images_per_hour_per_core": round(3600 * count / cpu) if cpu else None,
        "idle_rss_mib": round(idle / MIB, 1),
        "peak_rss_mib": round(sampler.peak / MIB, 1),
        "peak_over_idle_mib": round((sampler.peak - idle) / MIB, 1),
        "budget_bound_mib": round(bound / MIB, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default=",".join(SIZES), help="labels of SIZES")
    parser.add_argument("--concurrent", type=int, default=20, help="0: skip")
    parser.add_argument("--concurrent-size", default="4K", choices=sorted(SIZES))
    args = parser.parse_args()
    budget = Settings().decode_budget_pixels
    rows = measure(args.repeats, {label: SIZES[label] for label in args.sizes.split(",")})
    together = concurrent(args.concurrent, args.concurrent_size) if args.concurrent else None
    report = {
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "note": "median of the repeats; wall time on a shared machine, cpu is this process",
        "repeats": args.repeats,
        "decode_budget_mpx": budget / 1_000_000,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
        "concurrent": together,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transcode.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# 4K PNG -> WebP transcode",
        "",
        f"`bench/transcode.py`, {report['machine']}, median of {args.repeats}; "
        f"decode budget {budget / 1_000_000:g} MP; load average {report['load_average']} "
        "(a shared machine: compare the cpu columns).",
        "",
        "| input | gateway wall / cpu s | Pillow same settings wall / cpu s "
        "| gateway / Pillow (wall, cpu) | Pillow defaults wall / cpu s | WebP bytes (gateway) "
        "| budget share |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        g, p, d = row["gateway"], row["pillow_same_settings"], row["pillow_defaults"]
        lines.append(
            f"| {row['size']} {row['input']} | {g['wall_s']} / {g['cpu_s']} "
            f"| {p['wall_s']} / {p['cpu_s']} | {row['ratio_wall']}x, {row['ratio_cpu']}x "
            f"| {d['wall_s']} / {d['cpu_s']} "
            f"| {g['bytes']} | {row['budget_share']} |"
        )
    if together is not None:
        t = together
        lines += [
            "",
            f"## {t['concurrent']} concurrent transcodes through the decode budget",
            "",
            f"{t['input']}; {t['image_workers']} image worker thread(s); the budget admits "
            f"{t['admitted_at_once']} at once, the rest wait in it.",
            "",
            "| done | wall s | cpu s | per image wall s | images/hour/core (cpu) "
            "| idle RSS MiB | peak RSS MiB | peak over idle MiB | budget bound MiB |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {t['done']} | {t['wall_s']} | {t['cpu_s']} | {t['per_image_wall_s']} "
            f"| {t['images_per_hour_per_core']} | {t['idle_rss_mib']} | {t['peak_rss_mib']} "
            f"| {t['peak_over_idle_mib']} | {t['budget_bound_mib']} |",
        ]
    (RESULTS / "transcode.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
