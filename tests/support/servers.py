"""Run an ASGI app on a real loopback port in a background thread, for tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from app.emulators.faults import FaultPlan


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, *, port: int | None = None, **config_options: Any) -> Iterator[str]:
    """Serve `app` (lifespan included) until the block exits; yields its base URL.
    `config_options` go to uvicorn.Config as they are."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **config_options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("test server failed to start")
        if time.monotonic() > deadline:
            raise TimeoutError("test server did not start within 30 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class ServedEmulator:
    """An in-process emulator on a real loopback port and its fault plan."""

    url: str
    faults: FaultPlan


@contextmanager
def serve_emulator(create: Callable[[FaultPlan], Any]) -> Iterator[ServedEmulator]:
    """`create(plan)` (e.g. create_openai_emulator) served until the block exits."""
    plan = FaultPlan()
    with serve_in_thread(create(plan)) as url:
        yield ServedEmulator(url, plan)
