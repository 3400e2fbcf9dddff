"""/metrics, /healthz, /readyz, request ids and JSON log lines."""

from __future__ import annotations

import json
import logging

from app.observability.logging import JsonFormatter, request_id_var
from tests.support.gateway import Stack

PATH = "/api/v1/generate-image"


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample from the text exposition format."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_requests_images_and_credits(stack: Stack) -> None:
    tenant = await stack.new_tenant(credits=100)
    async with stack.client() as client:
        before = (await client.get("/metrics")).text
        ok = await client.post(PATH, json={"prompt": "m", "numImages": 2}, headers=tenant.auth)
        await stack.set_faults({"kind": "error", "status": 500, "count": 1000})
        try:
            failed = await client.post(PATH, json={"prompt": "f"}, headers=tenant.auth)
        finally:
            await stack.set_faults()
        after = (await client.get("/metrics")).text
    assert (ok.status_code, failed.status_code) == (200, 500)

    def delta(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    route = {"route": PATH, "method": "POST"}
    assert delta("imagegate_http_requests_total", status="200", **route) == 1
    assert delta("imagegate_http_requests_total", status="500", **route) == 1
    model = "google/gemini-2.5-flash-image"
    assert delta("imagegate_images_stored_total", model=model) == 2
    assert delta("imagegate_generation_seconds_count", model=model, provider="google") == 2
    assert delta("imagegate_credits_charged_total") == 8
    assert delta("imagegate_credits_refunded_total") == 4
    attempts = stack.settings.upstream_max_attempts
    assert delta("imagegate_upstream_errors_total", provider="google", type="Unavailable") == (
        attempts
    )
    assert _sample(after, "imagegate_upstream_in_flight", provider="google") == 0


async def test_request_id_is_echoed_or_generated(stack: Stack) -> None:
    async with stack.client() as client:
        echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123.x"})
        generated = await client.get("/healthz")
        unsafe = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert echoed.headers["x-request-id"] == "abc-123.x"
    assert len(generated.headers["x-request-id"]) == 32
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"


async def test_health_and_readiness(stack: Stack) -> None:
    async with stack.client() as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert health.json() == {
        "status": "ok",
        "rateLimiter": "memory",
        "concurrency": "local",
        "requestBytesInUse": 0,
        "requestsWaitingForBytes": 0,
    }
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok"}


def test_json_log_lines_carry_the_request_id() -> None:
    record = logging.makeLogRecord(
        {"name": "app.x", "levelname": "INFO", "msg": "hello %s", "args": ("world",)}
    )
    record.__dict__["attempt"] = 2
    token = request_id_var.set("req-1")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hello world"
    assert line["request_id"] == "req-1"
    assert line["attempt"] == 2
    assert line["level"] == "INFO"
