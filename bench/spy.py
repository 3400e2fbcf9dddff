"""Profile the gateway under load with py-spy (`pip install py-spy`).

    python bench/spy.py [--model openai/gpt-image-1] [--requests 300] [--concurrency 20]

Starts the emulators and a gateway as bench/run.py does, samples the gateway with
`py-spy record` (all threads, idle frames excluded) while the load runs, and prints the
functions with the most samples, by own time and by cumulative time. The collapsed
stacks stay in bench/results/profile-*.txt (git-ignored) for a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import BENCH, PROMPT, emulator, gateway, loadgen, log, provision, running

# Which library a sample's innermost recognised frame belongs to.
CATEGORIES = (
    ("sqlalchemy", "SQLAlchemy (async session, execution, results)"),
    ("greenlet", "SQLAlchemy (async session, execution, results)"),
    ("aiosqlite", "aiosqlite (thread hops)"),
    ("app/db/sqlite.py", "aiosqlite (thread hops)"),
    ("openai/", "openai SDK (request build, response model)"),
    ("google/genai", "google-genai SDK"),
    ("httpx/", "httpx + httpcore (upstream HTTP)"),
    ("httpcore/", "httpx + httpcore (upstream HTTP)"),
    ("anyio/", "httpx + httpcore (upstream HTTP)"),
    ("h11/", "httpx + httpcore (upstream HTTP)"),
    ("fastapi/", "FastAPI + Starlette + uvicorn"),
    ("starlette/", "FastAPI + Starlette + uvicorn"),
    ("uvicorn/", "FastAPI + Starlette + uvicorn"),
    ("PIL/", "Pillow"),
    ("concurrent/futures", "thread pools (hand-offs)"),
    ("threading.py", "thread pools (hand-offs)"),
    ("asyncio/", "asyncio"),
    ("pydantic", "pydantic"),
    ("logging/", "logging + JSON"),
    ("json/", "logging + JSON"),
    ("(app/", "imagegate's own code"),
)


def stacks(collapsed: Path) -> list[tuple[str, int]]:
    """(stack, samples) per line of py-spy's raw output. A frame's name may itself hold a
    newline (a decoded string shown as a frame), which leaves a line without a count:
    such pieces are joined to the next line."""
    result: list[tuple[str, int]] = []
    pending = ""
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = (pending + line).rpartition(" ")
        if not stack or not count_text.isdigit():
            pending += line
            continue
        pending = ""
        result.append((stack, int(count_text)))
    return result


def categories(collapsed: Path) -> str:
    """Share of samples per library, by the innermost frame we can attribute."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for stack, count in stacks(collapsed):
        total += count
        label = "other (event loop internals, interpreter)"
        for frame in reversed(stack.split(";")):
            match = next((name for key, name in CATEGORIES if key in frame), None)
            if match and not (match == "imagegate's own code" and "app/cli.py" in frame):
                label = match
                break
        counts[label] += count
    lines = [f"-- samples by library ({total})"]
    lines += [f"{100 * n / max(total, 1):5.1f}%  {name}" for name, n in counts.most_common()]
    return "\n".join(lines)


def summarise(collapsed: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    cumulative: collections.Counter[str] = collections.Counter()
    total = 0
    for stack, count in stacks(collapsed):
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1] for f in stack.split(";")]
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            cumulative[frame] += count
    lines = [f"{total} samples"]
    for title, counter in (("own", own), ("cumulative", cumulative)):
        lines.append(f"\n-- top {top} by {title} samples")
        for frame, count in counter.most_common(top):
            lines.append(f"{100 * count / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="openai/gpt-image-1")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--num-images", type=int, default=1)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="only the thread holding the GIL")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imagegate-profile-"))
    out = BENCH / "results" / f"profile-{args.model.replace('/', '_')}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    openai, gemini = emulator("openai", work), emulator("gemini", work)
    gw = gateway("imagegate", work, openai, gemini)
    body = {
        "prompt": PROMPT,
        "model": args.model,
        "aspectRatio": "1:1",
        "numImages": args.num_images,
    }
    url = f"{gw.url}/api/v1/generate-image"
    with running(openai, gemini, gw):
        key = provision(gw)
        headers = {"authorization": f"Bearer {key}"}
        loadgen(work, url, body, concurrency=args.concurrency, requests=40, headers=headers)
        assert gw.process is not None
        spy = subprocess.Popen(
            [
                shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(gw.process.pid),
                "--format",
                "raw",
                "--threads",
                "--rate",
                str(args.rate),
                "--nonblocking",
                *(["--gil"] if args.gil else []),
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
        result = loadgen(
            work, url, body, concurrency=args.concurrency, requests=args.requests, headers=headers
        )
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        spy.wait(timeout=60)
    log(f"{len(result['latencies'])}/{args.requests} ok in {result['wall_seconds']:.1f}s")
    print(categories(out))
    print(summarise(out, args.top))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
