"""The drain gate (#16 item 4): once draining starts, /readyz and new requests are 503 with
Retry-After and nothing reaches the routes, liveness still answers, and the drain
callbacks run once. (tests/test_serve.py drains a real `imagegate serve` by SIGTERM.)"""

from __future__ import annotations

import httpx
from starlette.types import Receive, Scope, Send

from app.api.drain import Drain, DrainGate
from app.api.errors import error_response


class _Routes:
    """Stands in for the gateway's routes: answers 200 and counts what reached it."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.reached.append(scope["path"])
        await error_response(200, "ok", "ok")(scope, receive, send)


async def test_draining_refuses_new_requests_and_readiness() -> None:
    drain = Drain()
    calls: list[str] = []
    drain.on_start(lambda: calls.append("jobs handed back"))
    routes = _Routes()
    transport = httpx.ASGITransport(app=DrainGate(routes, drain))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        assert (await client.get("/readyz")).status_code == 200
        drain.start()
        drain.start()  # idempotent: the callbacks ran once
        assert calls == ["jobs handed back"]

        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()) == (503, {"status": "draining", "checks": {}})
        assert ready.headers["Retry-After"] == "2"

        refused = await client.post("/api/v1/generate-image", json={"prompt": "a bicycle"})
        assert refused.status_code == 503
        assert refused.json()["code"] == "draining"
        assert "nothing was charged" in refused.json()["error"]
        assert refused.headers["Retry-After"] == "2"
        assert refused.headers["Connection"] == "close"

        openai = await client.post("/v1/images/generations", json={"prompt": "x"})
        assert (openai.status_code, openai.json()["error"]["code"]) == (503, "draining")

        assert (await client.get("/healthz")).status_code == 200  # alive while draining
        assert (await client.get("/metrics")).status_code == 200
    assert routes.reached == ["/readyz", "/healthz", "/metrics"]
