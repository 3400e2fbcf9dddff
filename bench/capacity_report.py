"""Targets and tables of bench/run.py's (g) large images and (h) in-flight sections."""

from __future__ import annotations

from typing import Any

# (h)'s targets, each row of the gateway at this many in flight against them.
INFLIGHT_TARGET = 2000
MAX_PEAK_RSS_MIB = 500
MAX_HEALTHZ_P99_MS = 50
MAX_ADDED_P99_MS = 500
# (g): the gateway's decode + crop + encode against Pillow/libwebp's decode + encode.
MAX_4K_RATIO = 1.3


def large_verdicts(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    section = results.get("large")
    if not section:
        return []
    out = []
    for row in section["rows"]:
        out.append(
            (
                f"{row['input']} -> WebP <= {MAX_4K_RATIO}x Pillow/libwebp alone (CPU)",
                row["ratio_cpu"] <= MAX_4K_RATIO,
                f"{row['gateway']['cpu_s']:.3f} s vs {row['pillow_same_settings']['cpu_s']:.3f} s "
                f"= {row['ratio_cpu']:.2f}x (wall {row['ratio_wall']:.2f}x)",
            )
        )
    together = section["concurrent"]
    over, bound = together["peak_over_idle_mib"], together["budget_bound_mib"]
    out.append(
        (
            f"RSS bounded under {together['concurrent']} concurrent 4K transcodes "
            "(peak over idle <= the decode budget's bound)",
            together["done"] == together["concurrent"] and over <= bound,
            f"{together['done']}/{together['concurrent']} done, +{over:.0f} MiB over idle, "
            f"bound {bound:.0f} MiB",
        )
    )
    return out


def _peer(rows: list[dict[str, Any]], count: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["server"] == "litellm" and r["concurrency"] == count), None)


def inflight_verdicts(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    rows = [r for r in results.get("inflight", []) if r["concurrency"] == INFLIGHT_TARGET]
    peer = _peer(rows, INFLIGHT_TARGET)

    def beside(key: str, unit: str) -> str:
        return f" (LiteLLM {peer[key]}{unit})" if peer else ""

    out = []
    for row in rows:
        if row["server"] == "litellm":
            continue
        where = f"{INFLIGHT_TARGET} x {row['delay_s']:g} s in flight, {row['database']}"
        errors = row["concurrency"] - row["ok"]
        out += [
            (
                f"{where}: every request succeeds",
                errors == 0,
                f"{row['ok']}/{row['concurrency']} ok {row['statuses']}"
                + (f" (LiteLLM {peer['ok']}/{peer['concurrency']})" if peer else ""),
            ),
            (
                f"{where}: peak RSS <= {MAX_PEAK_RSS_MIB} MiB",
                row["peak_rss_mib"] <= MAX_PEAK_RSS_MIB,
                f"{row['peak_rss_mib']:.0f} MiB (idle {row['idle_rss_mib']:.0f})"
                + beside("peak_rss_mib", " MiB"),
            ),
            (
                f"{where}: /healthz p99 <= {MAX_HEALTHZ_P99_MS} ms",
                row["healthz_p99_ms"] <= MAX_HEALTHZ_P99_MS and not row["healthz_failures"],
                f"p99 {row['healthz_p99_ms']} ms, {row['healthz_failures']} failed of "
                f"{row['healthz_samples']}" + beside("healthz_p99_ms", " ms"),
            ),
            (
                f"{where}: added latency p99 <= {MAX_ADDED_P99_MS} ms",
                errors == 0 and row["added_p99_ms"] <= MAX_ADDED_P99_MS,
                f"p99 {row['added_p99_ms']:.0f} ms over the delay" + beside("added_p99_ms", " ms"),
            ),
        ]
    return out


def large_markdown(results: dict[str, Any]) -> list[str]:
    section = results.get("large")
    if not section:
        return []
    out = [
        "",
        "## (g) Large images: 4K PNG -> exact-ratio WebP, against Pillow/libwebp alone",
        "",
        "| input | gateway CPU s (wall) | Pillow same settings CPU s (wall) | ratio CPU (wall) "
        "| Pillow defaults CPU s | WebP bytes | 4K images/hour/core |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in section["rows"]:
        ours, same = row["gateway"], row["pillow_same_settings"]
        per_hour = round(3600 / ours["cpu_s"]) if ours["cpu_s"] else 0
        out.append(
            f"| {row['input']} ({row['png_bytes'] / 1e6:.1f} MB) | {ours['cpu_s']:.3f} "
            f"({ours['wall_s']:.3f}) | {same['cpu_s']:.3f} ({same['wall_s']:.3f}) "
            f"| {row['ratio_cpu']:.2f}x ({row['ratio_wall']:.2f}x) "
            f"| {row['pillow_defaults']['cpu_s']:.3f} | {ours['bytes']} | {per_hour} |"
        )
    t = section["concurrent"]
    out += [
        "",
        "| concurrent 4K transcodes | done | admitted at once | image threads | wall s | CPU s "
        "| idle RSS MiB | peak RSS MiB | peak over idle MiB | budget bound MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {t['concurrent']} | {t['done']} | {t['admitted_at_once']} | {t['image_workers']} "
        f"| {t['wall_s']} | {t['cpu_s']} | {t['idle_rss_mib']} | {t['peak_rss_mib']} "
        f"| {t['peak_over_idle_mib']} | {t['budget_bound_mib']} |",
        "",
        "Median of the repeats, one thread; the gateway crops to the exact ratio and encodes "
        "at its quality and method, Pillow decodes and encodes the same file at the same "
        "settings. The concurrent transcodes run in the image thread pool, each holding its "
        "pixels x 3 of the decode budget (default 80 MP), the others waiting in it.",
    ]
    return out


def inflight_markdown(results: dict[str, Any]) -> list[str]:
    rows = results.get("inflight")
    if not rows:
        return []
    first = rows[0]
    out = [
        "",
        f"## (h) In flight: generations whose upstream takes {first['delay_s']:g} s, one "
        "process, arrivals ramped so that all are in flight as the ramp ends",
        "",
        "| server | db | in flight | arrivals | ok | errors | peak RSS MiB (idle) "
        "| KiB per generation "
        "| /healthz p50 / p99 / max ms | added p50 / p99 / max ms | server CPU s |",
        "|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        errors = {k: v for k, v in r["statuses"].items() if k != "200"}
        shown = ", ".join(f"{v} x {k}" for k, v in errors.items()) or "none"
        out.append(
            f"| {'LiteLLM proxy' if r['server'] == 'litellm' else 'imagegate'} | {r['database']} "
            f"| {r['concurrency']} | {r['arrivals']} | {r['ok']} | {shown} "
            f"| {r['peak_rss_mib']:.0f} ({r['idle_rss_mib']:.0f}) | {r['rss_per_inflight_kib']} "
            f"| {r['healthz_p50_ms']} / {r['healthz_p99_ms']} / {r['healthz_max_ms']} "
            f"| {r['added_p50_ms']:.0f} / {r['added_p99_ms']:.0f} / {r['added_max_ms']:.0f} "
            f"| {r['gateway_cpu_s']} |"
        )
    out += [
        "",
        "bench/inflight.py per row: the OpenAI emulator in its own process holds every call "
        "for the delay; bench/loadgen.py `open` (aiohttp) sends the generations and probes "
        "/healthz (LiteLLM: /health/liveliness) every 100 ms; added = latency - delay, of "
        "the successes. Errors by HTTP status, or the client error when none came.",
    ]
    return out
