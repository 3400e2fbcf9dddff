"""bench/inflight.py --gc probe|off: what CPython's cyclic collector does in the gateway.

On PYTHONPATH only for the gateway process of that bench. `probe` times every collection
(gc.callbacks) and writes counts, total and longest pause per generation to $BENCH_GC_OUT
every second, counted from when the bench creates the .reset file beside it. `off` also
disables the automatic collector from the start (the gateway's own gc.collect() +
gc.freeze() after start-up still run): the measurement of what the pauses cost. Without
it cyclic garbage is never freed, so this is no setting to run with.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from typing import Any

MODE = os.environ.get("BENCH_GC", "")
OUT = os.environ.get("BENCH_GC_OUT", "")
RESET = os.path.splitext(OUT)[0] + ".reset"  # created by the bench to start counting

if MODE in ("probe", "off") and OUT:
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    began = [0.0]

    def _timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append((time.perf_counter() - began[0]) * 1000)

    def _report() -> None:
        while True:
            time.sleep(1)
            if os.path.exists(RESET):  # the bench counts from here
                os.remove(RESET)
                for ms in pauses.values():
                    ms.clear()
            summary = {
                str(generation): {
                    "collections": len(ms),
                    "total_ms": round(sum(ms), 1),
                    "max_ms": round(max(ms, default=0.0), 1),
                    "over_50_ms": sum(1 for x in ms if x > 50),
                }
                for generation, ms in pauses.items()
            }
            summary["enabled"] = gc.isenabled()  # type: ignore[assignment]
            with open(OUT + ".tmp", "w") as out:
                json.dump(summary, out)
            os.replace(OUT + ".tmp", OUT)

    gc.callbacks.append(_timed)
    if MODE == "off":
        gc.disable()
    threading.Thread(target=_report, daemon=True).start()
