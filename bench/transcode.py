"""A 4K PNG -> exact-ratio WebP transcode, as the gateway does it, against Pillow's own
decode + encode of the same file.

    .venv/bin/python bench/transcode.py

Inputs: a Gemini 3 Pro 4K 16:9 frame (5504x3072 PNG; 16.9 MP), drawn twice: by the
emulators (smooth gradients and shapes, compresses well) and as photo-like noise (the
worst case for both codecs), plus the same at 1K (1376x768) for scale. For each, the
median of `--repeats` runs of: `normalise_to_webp` (decode, crop to exactly 16:9, WebP at
the gateway's quality and method), Pillow decoding and re-encoding the file at the same
settings without the crop, and Pillow at its own WebP defaults (quality 80, method 4).
Wall and CPU seconds, output bytes, and whether the default decode budget admits the
transcode. Results go to bench/results/transcode.json and .md.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from app.emulators.images import synthesize_png
from app.imaging.webp import TRANSCODE_COST, WEBP_METHOD, WEBP_QUALITY, normalise_to_webp
from app.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"4K": (5504, 3072), "1K": (1376, 768)}
MAX_PIXELS = 40_000_000


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


def measure(repeats: int, sizes: dict[str, tuple[int, int]] = SIZES) -> list[dict[str, Any]]:
    """One row per size and content (bench/run.py's transcode section reports the 4K)."""
    budget = Settings().decode_budget_pixels
    rows = []
    for label, (width, height) in sizes.items():
        for content, data in (
            ("emulator", synthesize_png("a lighthouse at dawn", width, height, variant=1)),
            ("noisy", noisy_png(width, height)),
        ):
            cost = width * height * TRANSCODE_COST
            row = {
                "size": label,
                "input": f"{width}x{height} PNG, {content}",
                "png_bytes": len(data),
                "budget_admits": cost <= budget,
                "budget_share": round(cost / budget, 2),
                "gateway": timed(
                    lambda d=data: normalise_to_webp(d, "16:9", max_pixels=MAX_PIXELS).data,
                    repeats,
                ),
                "pillow_same_settings": timed(
                    lambda d=data: pillow(d, quality=WEBP_QUALITY, method=WEBP_METHOD), repeats
                ),
                "pillow_defaults": timed(lambda d=data: pillow(d), repeats),
            }
            rows.append(row)
            print(json.dumps(row))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    budget = Settings().decode_budget_pixels
    rows = measure(args.repeats)
    report = {
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "note": "median of the repeats; wall time on a shared machine, cpu is this process",
        "repeats": args.repeats,
        "decode_budget_mpx": budget / 1_000_000,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transcode.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# 4K PNG -> WebP transcode",
        "",
        f"`bench/transcode.py`, {report['machine']}, median of {args.repeats}; "
        f"decode budget {budget / 1_000_000:g} MP.",
        "",
        "| input | gateway wall / cpu s | Pillow same settings wall / cpu s "
        "| Pillow defaults wall / cpu s | WebP bytes (gateway) | budget share |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        g, p, d = row["gateway"], row["pillow_same_settings"], row["pillow_defaults"]
        lines.append(
            f"| {row['size']} {row['input']} | {g['wall_s']} / {g['cpu_s']} "
            f"| {p['wall_s']} / {p['cpu_s']} | {d['wall_s']} / {d['cpu_s']} "
            f"| {g['bytes']} | {row['budget_share']} |"
        )
    (RESULTS / "transcode.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
