"""Serve one upstream emulator in its own process for the benchmarks.

The emulators draw a real image per call, which would make the upstream the bottleneck
on a 2-core machine and hide what is being measured (the gateways in front of it). Their
renders are deterministic in their inputs, so here they are memoised: every answer is
still bytes the emulator would send, computed once per distinct request. The per-call
variant (a new picture per call, as the real APIs draw) is left out of the memo key, so a
repeated request gets the same picture here.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import uvicorn

T = TypeVar("T")


def create(provider: str) -> Any:
    if provider == "openai":
        from app.emulators import openai_wire
        from app.emulators.openai import create_openai_emulator

        # render() looks render_b64 up in its module at call time.
        openai_wire.render_b64 = _without_variant(openai_wire.render_b64)
        return create_openai_emulator()
    from app.emulators import gemini
    from app.emulators.gemini import create_gemini_emulator

    gemini.synthesize_png = _without_variant(gemini.synthesize_png)
    return create_gemini_emulator()


def _without_variant(render: Callable[..., T]) -> Callable[..., T]:
    """`render` memoised on every argument but the per-call `variant`."""
    cached = functools.lru_cache(maxsize=32)(render)

    def memoised(*args: Any, variant: int | None = None, **kwargs: Any) -> T:
        return cached(*args, **kwargs)

    return memoised


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
