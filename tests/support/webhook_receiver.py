"""A webhook receiver on a loopback port (uvicorn in a thread): records every request and
answers by path, so tests see what the gateway really sends over TCP.

- `/ok`: 200;
- `/flaky`: 500 the first time a `webhook-id` comes, then 200;
- `/fail`: always 500;
- `/redirect`: 302 to `/landing` (which records, so a followed redirect shows);
- `/stall`: 200 with 8 KiB of body, then nothing until the client hangs up.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.support.servers import serve_in_thread

STALL_BYTES = 8192


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    base_url: str = ""
    requests: list[Received] = field(default_factory=list)
    hung_up: list[str] = field(default_factory=list)  # /stall requests the client left
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return self.base_url.replace("127.0.0.1", host) + path

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def _record(self, received: Received) -> int:
        with self._lock:
            self.requests.append(received)
            return sum(
                1
                for r in self.requests
                if r.path == received.path
                and r.headers.get("webhook-id") == received.headers.get("webhook-id")
            )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        seen = self._record(Received(path, headers, body))
        if path == "/stall":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send(
                {"type": "http.response.body", "body": b"x" * STALL_BYTES, "more_body": True}
            )
            message = await asyncio.wait_for(receive(), timeout=60)
            if message["type"] == "http.disconnect":
                with self._lock:
                    self.hung_up.append(path)
            return
        status, extra = 200, []
        if path == "/fail" or (path == "/flaky" and seen == 1):
            status = 500
        elif path == "/redirect":
            status, extra = 302, [(b"location", self.url("/landing").encode())]
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": b"thanks"})


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    with serve_in_thread(receiver) as base_url:
        receiver.base_url = base_url
        yield receiver
