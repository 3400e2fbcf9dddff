"""Gateway CPU per request of two revisions, measured side by side in one run.

    .venv/bin/python bench/ab.py HEAD~1            # that revision vs the working tree
    .venv/bin/python bench/ab.py main HEAD --rounds 12 --requests 200

This machine is shared: the same code measured in two runs minutes apart differed by
40 %, far more than most changes are worth. So both gateways run at once, in front of
one OpenAI emulator, and the load alternates between them in short rounds (A B B A ...)
so that drift hits both alike. Each round sends the same 1-image request as section (a)
of bench/run.py. Prints, and writes to bench/results/ab.md, CPU ms per request of each
gateway process per round, the medians, and B/A.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from run import (
    BENCH,
    PROMPT,
    ROOT,
    Server,
    emulator,
    gateway,
    log,
    measure,
    provision,
    running,
)


def checkout(revision: str, into: Path) -> Path:
    """The tree of `revision` (the working tree for "WORKTREE"), as files under `into`."""
    if revision == "WORKTREE":
        return ROOT
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", help="base revision (git rev)")
    parser.add_argument("b", nargs="?", default="WORKTREE", help="default: the working tree")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per gateway")
    parser.add_argument("--requests", type=int, default=150, help="per round")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "ab.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imagegate-ab-"))
    trees = {"A": checkout(args.a, work / "tree-a"), "B": checkout(args.b, work / "tree-b")}
    openai, gemini = emulator("openai", work), emulator("gemini", work)
    gateways: dict[str, Server] = {}
    for name, tree in trees.items():
        gateways[name] = gateway(f"gateway-{name}", work, openai, gemini)
        gateways[name].cwd = tree
    body = {"prompt": PROMPT, "model": "openai/gpt-image-1", "aspectRatio": "1:1"}
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    with running(openai, gemini, *gateways.values()):
        keys = {name: provision(server) for name, server in gateways.items()}
        for round_no in range(args.rounds):
            order = "AB" if round_no % 2 == 0 else "BA"
            for name in order:
                server = gateways[name]
                result = measure(
                    work,
                    f"{name} round {round_no + 1}",
                    f"{server.url}/api/v1/generate-image",
                    body,
                    headers={"authorization": f"Bearer {keys[name]}"},
                    concurrency=args.concurrency,
                    requests=args.requests,
                    warmup=args.requests // 5 if round_no == 0 else 0,
                    measured={"gateway": server},
                    quiet=True,
                )
                if result.ok != args.requests:
                    sys.exit(f"{name}: {result.ok}/{args.requests} ok: {result.statuses}")
                cpu[name].append(result.cpu_ms_per_request["gateway"])
            log(f"round {round_no + 1}: A {cpu['A'][-1]:.2f} ms, B {cpu['B'][-1]:.2f} ms")

    median = {name: statistics.median(values) for name, values in cpu.items()}
    b_wins = sum(b < a for a, b in zip(cpu["A"], cpu["B"], strict=True))
    lines = [
        f"# A/B: gateway CPU ms per 1-image request, concurrency {args.concurrency}",
        "",
        f"A = `{args.a}`, B = `{args.b}`; {args.rounds} rounds of {args.requests} requests "
        "per gateway, alternating.",
        "",
        "| round | A | B |",
        "|---:|---:|---:|",
        *(
            f"| {i + 1} | {a:.2f} | {b:.2f} |"
            for i, (a, b) in enumerate(zip(cpu["A"], cpu["B"], strict=True))
        ),
        f"| median | {median['A']:.2f} | {median['B']:.2f} |",
        "",
        f"B/A = {median['B'] / median['A']:.3f}; B used less CPU in {b_wins} of "
        f"{args.rounds} rounds.",
    ]
    report = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
