"""Serve one upstream emulator in its own process for the benchmarks.

The emulators draw a real image per call, which would make the upstream the bottleneck
on a 2-core machine and hide what is being measured (the gateways in front of it). Their
renders are deterministic in their inputs, so here they are memoised: every answer is
still the exact bytes the emulator would send, computed once per distinct request.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

import uvicorn


def create(provider: str) -> Any:
    if provider == "openai":
        from app.emulators import openai_wire
        from app.emulators.openai import create_openai_emulator

        # render() looks render_b64 up in its module at call time.
        openai_wire.render_b64 = functools.lru_cache(maxsize=32)(openai_wire.render_b64)
        return create_openai_emulator()
    from app.emulators import gemini
    from app.emulators.gemini import create_gemini_emulator

    gemini.synthesize_png = functools.lru_cache(maxsize=32)(gemini.synthesize_png)
    return create_gemini_emulator()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("provider", choices=["openai", "gemini"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create(args.provider),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
