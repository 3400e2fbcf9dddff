"""Targets, the markdown table and the chart for bench/run.py's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABELS = {"direct": "direct to emulator", "imagegate": "imagegate", "litellm": "LiteLLM proxy"}


def _find(results: dict[str, Any], label: str, concurrency: int) -> dict[str, Any] | None:
    for row in results.get("overhead", []):
        if row["label"] == label and row["concurrency"] == concurrency:
            return dict(row)
    return None


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """PASS/FAIL per target; ratios come from rows of the same run."""
    verdicts: list[dict[str, Any]] = []

    def add(target: str, ok: bool, detail: str) -> None:
        verdicts.append({"target": target, "pass": bool(ok), "detail": detail})

    for concurrency in (1, 20):
        ours, theirs = (
            _find(results, "imagegate", concurrency),
            _find(results, "litellm", concurrency),
        )
        if ours and theirs:
            mine = ours["cpu_ms_per_request"]["gateway"]
            peer = theirs["cpu_ms_per_request"]["gateway"]
            add(
                f"gateway CPU/request <= 0.5x LiteLLM's (c={concurrency})",
                mine <= 0.5 * peer,
                f"{mine:.1f} ms vs {peer:.1f} ms = {mine / peer:.2f}x",
            )
    ours, theirs = _find(results, "imagegate", 20), _find(results, "litellm", 20)
    if ours and theirs:
        add(
            "throughput at c=20 >= 2x LiteLLM's",
            ours["rps"] >= 2 * theirs["rps"],
            f"{ours['rps']:.1f} vs {theirs['rps']:.1f} req/s = {ours['rps'] / theirs['rps']:.2f}x",
        )
    if "transcode" in results:
        health = results["transcode"]["healthz"]
        add(
            "/healthz p99 < 20 ms during transcode load",
            health["p99_ms"] < 20,
            f"p99 {health['p99_ms']:.1f} ms over {health['probes']} probes",
        )
        encode = results["transcode"]["encode"]
        add(
            "WebP encode <= 60 ms per 1024x1024",
            encode["normalise_ms"] <= 60,
            f"{encode['normalise_ms']:.1f} ms decode+encode "
            f"(encode alone {encode['encode_ms']:.1f} ms)",
        )
    if "memory" in results:
        peak = results["memory"]["peak_rss_mib"]
        add("peak RSS <= 400 MiB (50 x 4-image)", peak <= 400, f"{peak:.0f} MiB")
    if "ledger" in results:
        ledger = results["ledger"]
        add(
            "ledger overspend == 0",
            ledger["overspend"] == 0 and ledger["consistent"] and ledger["audit_ok"],
            f"overspend {ledger['overspend']}, {ledger['succeeded']} of "
            f"{ledger['reservations']} reservations held, audit "
            f"{'clean' if ledger['audit_ok'] else 'BROKEN'}",
        )
    return verdicts


def _overhead_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| path | concurrency | requests/s | p50 ms | p95 ms | p99 ms | gateway CPU ms/req "
        "| emulator CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results.get("overhead", []):
        cpu = row["cpu_ms_per_request"]
        gateway = f"{cpu['gateway']:.1f}" if "gateway" in cpu else "-"
        failed = row["requests"] - row["ok"]
        note = f" ({failed} failed)" if failed else ""
        lines.append(
            f"| {LABELS.get(row['label'], row['label'])}{note} | {row['concurrency']} "
            f"| {row['rps']:.1f} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} "
            f"| {row['p99_ms']:.1f} | {gateway} | {cpu['emulator']:.1f} |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    config = results["config"]
    out = [
        "# imagegate benchmark results",
        "",
        f"{config['date']}, {config['machine']}, load average {config['load_average']:.1f} "
        f"at start; {config['requests']} requests per overhead row after "
        f"{config['warmup']} unmeasured, in {config.get('rounds', 1)} rounds interleaved with "
        f"the other paths; peer: `{config['litellm'] or 'skipped'}`.",
        "",
    ]
    if config["quick"]:
        out += ["**Quick (scaled-down) run: not the committed numbers.**", ""]
    out += ["## Targets", "", "| target | result | measured |", "|---|---|---|"]
    for verdict in results.get("targets", []):
        out.append(
            f"| {verdict['target']} | {'PASS' if verdict['pass'] else '**FAIL**'} "
            f"| {verdict['detail']} |"
        )
    if "overhead" in results:
        out += [
            "",
            "## (a) Gateway overhead: 1-image requests, OpenAI emulator returning a 1024x1024 WebP",
            "",
            *_overhead_table(results),
        ]
    if "transcode" in results:
        t = results["transcode"]
        load, health, encode = t["load"], t["healthz"], t["encode"]
        out += [
            "",
            "## (b) Transcode path: Gemini emulator PNG 1024x1024 -> WebP, concurrency 20",
            "",
            "| requests | requests/s | p50 ms | p99 ms | gateway CPU ms/image "
            "| WebP normalise ms (encode alone) | /healthz p50 / p99 / max ms |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {load['ok']}/{load['requests']} | {load['rps']:.1f} | {load['p50_ms']:.1f} "
            f"| {load['p99_ms']:.1f} | {load['cpu_ms_per_request']['gateway']:.1f} "
            f"| {encode['normalise_ms']:.1f} ({encode['encode_ms']:.1f}) "
            f"| {health['p50_ms']:.1f} / {health['p99_ms']:.1f} / {health['max_ms']:.1f} |",
            "",
            f"WebP quality {encode['webp_quality']}, method {encode['webp_method']}: "
            f"{encode['png_bytes'] // 1024} KiB PNG -> {encode['webp_bytes'] // 1024} KiB WebP; "
            "normalise = decode + crop + encode on one thread, median of 15.",
        ]
    if "ledger" in results:
        ledger = results["ledger"]
        out += [
            "",
            "## (c) Ledger contention on Postgres: concurrent reservations against one account",
            "",
            "| reservations | reservations/s | held | refused (402) | overspend | audit |",
            "|---:|---:|---:|---:|---:|---|",
            f"| {ledger['reservations']} x {ledger['amount']} credits "
            f"(balance {ledger['initial_balance']}) | {ledger['reservations_per_second']:.0f} "
            f"| {ledger['succeeded']} | {ledger['refused']} | {ledger['overspend']} "
            f"| {'clean' if ledger['audit_ok'] else 'broken'} |",
        ]
    if "memory" in results:
        memory = results["memory"]
        load = memory["load"]
        out += [
            "",
            "## (d) Memory: 50 concurrent 4-image requests (Gemini PNG -> WebP)",
            "",
            "| requests | images | ok | RSS before MiB | peak RSS MiB | wall s |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {memory['requests']} | {memory['requests'] * memory['images_per_request']} "
            f"| {load['ok']} | {memory['baseline_rss_mib']:.0f} | {memory['peak_rss_mib']:.0f} "
            f"| {load['wall_seconds']:.1f} |",
        ]
    return "\n".join(out) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results.get("overhead", [])
    labels = [label for label in LABELS if any(r["label"] == label for r in rows)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    width = 0.38
    for offset, concurrency in ((-width / 2, 1), (width / 2, 20)):
        picked = [_find(results, label, concurrency) for label in labels]
        xs = [i + offset for i in range(len(labels))]
        axes[0].bar(xs, [r["rps"] if r else 0 for r in picked], width, label=f"c={concurrency}")
        axes[1].bar(xs, [r["p99_ms"] if r else 0 for r in picked], width, label=f"c={concurrency}")
        cpu = [(r["cpu_ms_per_request"].get("gateway", 0.0) if r else 0.0) for r in picked]
        axes[2].bar(xs, cpu, width, label=f"c={concurrency}")
    titles = ("requests/s (higher is better)", "p99 latency ms", "gateway CPU ms per request")
    for axis, title in zip(axes, titles, strict=True):
        axis.set_title(title)
        axis.set_xticks(range(len(labels)))
        axis.set_xticklabels([LABELS[label] for label in labels], fontsize=9)
        axis.legend(fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    fig.suptitle("1-image requests against the OpenAI emulator (same run, one worker each)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


README_START = "<!-- bench:results:start -->"
README_END = "<!-- bench:results:end -->"


def update_readme(results: dict[str, Any], readme: Path) -> bool:
    """Put the tables of a full run between the README's markers; True if it did."""
    text = readme.read_text()
    if results["config"]["quick"] or README_START not in text or README_END not in text:
        return False
    body = markdown(results).split("\n", 2)[2].replace("\n## ", "\n#### ")
    head, _, rest = text.partition(README_START)
    _, _, tail = rest.partition(README_END)
    readme.write_text(
        f"{head}{README_START}\n{body.strip()}\n\n![benchmark chart](bench/results/chart.png)\n"
        f"{README_END}{tail}"
    )
    return True


def write_report(results: dict[str, Any], out: Path) -> None:
    (out / "results.md").write_text(markdown(results))
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if results.get("overhead"):
        chart(results, out / "chart.png")
