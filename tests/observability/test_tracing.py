"""Traces of live gateways, read from the SDK's in-memory exporter: the span tree of one
generation, retries, failures, async jobs, trace ids in the log lines, and what no span
may carry."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from PIL import Image

from app.observability.logging import JsonFormatter
from tests.support.gateway import Stack

PATH = "/api/v1/generate-image"
MODEL = "google/gemini-2.5-flash-image"
STAGES = ["auth", "hold", "upstream.attempt", "transcode", "store", "settle"]
UNAVAILABLE_ONCE = {"kind": "error", "status": 500, "count": 1}


async def _finished(
    spans: InMemorySpanExporter, match: Callable[[ReadableSpan], bool]
) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The first finished span `match` accepts, and every finished span of its trace.
    A span ends just after the answer was sent, so it is waited for."""
    for _ in range(800):
        found = [s for s in spans.get_finished_spans() if match(s)]
        if found:
            trace_id = _ctx(found[0]).trace_id
            return found[0], [s for s in spans.get_finished_spans() if _ctx(s).trace_id == trace_id]
        await asyncio.sleep(0.025)
    raise AssertionError("no such span was exported")


def _ctx(span: ReadableSpan) -> SpanContext:
    context: SpanContext | None = span.context
    assert context is not None
    return context


def _request_span(response: httpx.Response) -> Callable[[ReadableSpan], bool]:
    request_id = response.headers["x-request-id"]
    return lambda s: (
        s.kind == SpanKind.SERVER
        and s.attributes
        == {
            **(s.attributes or {}),
            "imagegate.request_id": request_id,
        }
    )


def _children(parent: ReadableSpan, trace: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    span_id = _ctx(parent).span_id
    return sorted(
        (s for s in trace if s.parent is not None and s.parent.span_id == span_id),
        key=lambda s: s.start_time or 0,
    )


def _attempts(trace: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    attempts = [s for s in trace if s.name == "upstream.attempt"]
    return sorted(attempts, key=lambda s: int(s.attributes["imagegate.attempt"]))  # type: ignore[index, arg-type]


class _Lines(logging.Handler):
    """Formats at emit time, in the emitting thread, where its span is current."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@contextmanager
def _access_lines() -> Iterator[_Lines]:
    logger = logging.getLogger("app.access")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_one_generation_is_one_trace_with_a_span_per_stage(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    tenant = await stack.new_tenant(credits=100)
    with _access_lines() as access:
        async with stack.client() as client:
            response = await client.post(PATH, json={"prompt": "a kite"}, headers=tenant.auth)
        assert response.status_code == 200, response.text
        server, trace = await _finished(spans, _request_span(response))

    assert server.name == f"POST {PATH}" and server.parent is None
    assert server.attributes is not None
    assert server.attributes["http.route"] == PATH
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.response.status_code"] == 200
    assert server.status.status_code == StatusCode.UNSET
    children = _children(server, trace)
    assert [s.name for s in children] == STAGES  # in the order they started
    assert all(s.status.status_code != StatusCode.ERROR for s in children)
    (attempt,) = _attempts(trace)
    assert attempt.attributes == {
        "imagegate.model": MODEL,
        "imagegate.provider": "google",
        "imagegate.image_index": 0,
        "imagegate.attempt": 1,
        "imagegate.outcome": "ok",
    }
    (settle,) = [s for s in children if s.name == "settle"]
    assert settle.attributes is not None
    assert settle.attributes["imagegate.credits.charged"] == response.json()["creditsCharged"]
    # The access line of this request carries its trace id.
    (line,) = [e for e in access.lines if e.get("request_id") == response.headers["x-request-id"]]
    assert line["trace_id"] == format(server.context.trace_id, "032x")


async def _generate_with_faults(stack: Stack, fault: dict[str, object]) -> httpx.Response:
    tenant = await stack.new_tenant(credits=100)
    await stack.set_faults(fault)
    try:
        async with stack.client() as client:
            return await client.post(PATH, json={"prompt": "faulty"}, headers=tenant.auth)
    finally:
        await stack.set_faults()


async def test_a_retried_upstream_call_shows_two_numbered_attempts(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    response = await _generate_with_faults(stack, UNAVAILABLE_ONCE)
    assert response.status_code == 200, response.text
    server, trace = await _finished(spans, _request_span(response))
    first, second = _attempts(trace)
    for attempt in (first, second):
        assert attempt.parent is not None
        assert attempt.parent.span_id == server.context.span_id
    assert first.attributes is not None and second.attributes is not None
    assert (first.attributes["imagegate.attempt"], second.attributes["imagegate.attempt"]) == (1, 2)
    assert first.attributes["imagegate.outcome"] == "Unavailable"
    assert first.status.status_code == StatusCode.ERROR
    assert second.attributes["imagegate.outcome"] == "ok"
    assert second.status.status_code == StatusCode.UNSET
    assert server.status.status_code == StatusCode.UNSET


async def test_a_failed_generation_marks_its_spans_as_errors(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    response = await _generate_with_faults(stack, {"kind": "error", "status": 500, "count": 1000})
    assert response.status_code == 500, response.text
    server, trace = await _finished(spans, _request_span(response))
    assert server.status.status_code == StatusCode.ERROR
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 500
    attempts = [s for s in _attempts(trace) if s.attributes["imagegate.model"] == MODEL]  # type: ignore[index]
    assert len(attempts) == stack.settings.upstream_max_attempts
    for attempt in attempts:
        assert attempt.status.status_code == StatusCode.ERROR
        assert attempt.attributes is not None
        assert attempt.attributes["error.type"] == "Unavailable"
    # Nothing was transcoded or stored; the hold was still settled (for nothing).
    names = [s.name for s in _children(server, trace)]
    assert "transcode" not in names and "store" not in names
    assert "settle" in names


async def test_a_client_error_is_not_a_server_error(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    async with stack.client() as client:
        response = await client.post(PATH, json={"prompt": "x"}, headers={"X-API-Key": "nope"})
    assert response.status_code == 401
    server, trace = await _finished(spans, _request_span(response))
    assert server.status.status_code == StatusCode.UNSET
    (auth,) = _children(server, trace)
    assert auth.name == "auth" and auth.status.status_code == StatusCode.ERROR
    assert auth.attributes is not None and auth.attributes["error.type"] == "Unauthorized"


async def test_a_callers_traceparent_is_the_parent(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    async with stack.client() as client:
        response = await client.get(
            "/healthz", headers={"traceparent": f"00-{trace_id}-{span_id}-01"}
        )
    server, _ = await _finished(spans, _request_span(response))
    assert server.name == "GET /healthz"
    assert format(server.context.trace_id, "032x") == trace_id
    assert server.parent is not None and format(server.parent.span_id, "016x") == span_id


async def test_an_async_job_runs_in_a_trace_of_its_own(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    tenant = await stack.new_tenant(credits=100)
    async with stack.client() as client:
        submitted = await client.post(
            PATH,
            json={"prompt": "a job"},
            headers={**tenant.auth, "Prefer": "respond-async"},
        )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    done = await stack.wait_for_job(tenant, submitted.headers["location"])
    assert done["status"] == "succeeded"
    request, request_trace = await _finished(spans, _request_span(submitted))
    run, trace = await _finished(
        spans,
        lambda s: s.name == "job.run" and (s.attributes or {}).get("imagegate.job_id") == job_id,
    )
    assert run.parent is None
    assert run.context.trace_id != request.context.trace_id
    assert [s.name for s in _children(run, trace)] == STAGES[1:]  # no auth: the runner
    assert "upstream.attempt" not in {s.name for s in request_trace}


def _noise_png() -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (96, 64), os.urandom(96 * 64 * 3)).save(out, format="PNG")
    return out.getvalue()


def _fragments(data: bytes, size: int = 16) -> list[str]:
    encoded = base64.b64encode(data).decode()
    return [encoded[i : i + size] for i in range(0, len(encoded) - size, size)]


def _everything_exported(spans: InMemorySpanExporter) -> str:
    """Every name, attribute, event, link, status and resource value of every span."""
    parts: list[str] = []
    for span in spans.get_finished_spans():
        parts += [span.name, str(span.status.description)]
        parts += [f"{k}={v!r}" for k, v in (span.attributes or {}).items()]
        parts += [f"{k}={v!r}" for k, v in span.resource.attributes.items()]
        for event in span.events:
            parts += [event.name, *(f"{k}={v!r}" for k, v in (event.attributes or {}).items())]
        for link in span.links:
            parts += [f"{k}={v!r}" for k, v in (link.attributes or {}).items()]
    return "\n".join(parts)


async def test_no_span_carries_the_prompt_the_key_or_image_data(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    tenant = await stack.new_tenant(credits=100)
    prompt = f"a lighthouse painted by {uuid.uuid4().hex}"
    source = _noise_png()
    body = {
        "prompt": prompt,
        "sourceImage": "data:image/png;base64," + base64.b64encode(source).decode(),
    }
    async with stack.client() as client:
        ok = await client.post(PATH, json=body, headers=tenant.auth)
        assert ok.status_code == 200, ok.text
        image = (await client.get(ok.json()["images"][0]["url"])).content
        await stack.set_faults({"kind": "error", "status": 500, "count": 1000})
        try:
            failed = await client.post(PATH, json=body, headers={"X-API-Key": tenant.key})
        finally:
            await stack.set_faults()
    assert failed.status_code == 500
    await _finished(spans, _request_span(ok))
    await _finished(spans, _request_span(failed))

    exported = _everything_exported(spans)
    assert "upstream.attempt" in exported and MODEL in exported  # the scan sees the spans
    assert prompt not in exported and "lighthouse" not in exported
    assert tenant.key not in exported and tenant.key[-12:] not in exported
    assert len(image) > 1000
    leaked = [f for f in _fragments(source) + _fragments(image) if f in exported]
    assert not leaked
