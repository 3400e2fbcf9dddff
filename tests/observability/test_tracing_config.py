"""When tracing is on, where its spans go (a real OTLP/HTTP receiver on loopback), and a
gateway without the `otel` packages installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.observability.tracing import ExportConfig, build_provider, export_config
from tests.deploy.files import REPO
from tests.support.servers import serve_in_thread

BASE = "http://collector:4318"


@pytest.mark.parametrize(
    ("endpoint", "environ", "expected"),
    [
        (None, {}, None),
        (BASE, {}, ExportConfig(f"{BASE}/v1/traces")),
        (BASE + "/", {}, ExportConfig(f"{BASE}/v1/traces")),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": BASE}, ExportConfig(None)),
        (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{BASE}/v1/traces"}, ExportConfig(None)),
        # The setting wins over the standard variable; the standard switches win over both.
        (BASE, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1"}, ExportConfig(f"{BASE}/v1/traces")),
        (BASE, {"OTEL_SDK_DISABLED": "true"}, None),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": BASE, "OTEL_SDK_DISABLED": "TRUE"}, None),
        (BASE, {"OTEL_TRACES_EXPORTER": "none"}, None),
        (BASE, {"OTEL_SDK_DISABLED": "false"}, ExportConfig(f"{BASE}/v1/traces")),
    ],
)
def test_tracing_is_on_only_with_an_endpoint_and_not_disabled(
    endpoint: str | None, environ: dict[str, str], expected: ExportConfig | None
) -> None:
    assert export_config(endpoint, environ) == expected


@contextmanager
def _collector() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """An OTLP/HTTP receiver: records (path, content type, body) of each POST."""
    received: list[tuple[str, str, bytes]] = []

    async def record(request: Request) -> Response:
        received.append(
            (request.url.path, request.headers.get("content-type", ""), await request.body())
        )
        return Response(b"", media_type="application/x-protobuf")

    app = Starlette(routes=[Route("/v1/traces", record, methods=["POST"])])
    with serve_in_thread(app) as base_url:
        yield base_url, received


@pytest.mark.parametrize("service_name", [None, "gateway-eu"])
def test_spans_reach_the_otlp_endpoint_named_by_the_setting(
    monkeypatch: pytest.MonkeyPatch, service_name: str | None
) -> None:
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    if service_name:
        monkeypatch.setenv("OTEL_SERVICE_NAME", service_name)
    with _collector() as (base_url, received):
        config = export_config(base_url, {})
        assert config is not None
        provider = build_provider(config)
        try:
            with provider.get_tracer("test").start_as_current_span("GET /healthz"):
                pass
            assert provider.force_flush()
        finally:
            provider.shutdown()
    ((path, content_type, body),) = received
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    export = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = export.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == (service_name or "imagegate")
    names = [span.name for scope in resource_spans.scope_spans for span in scope.spans]
    assert names == ["GET /healthz"]


def _run(script: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
    return result


def test_the_tracing_helpers_are_no_ops_without_opentelemetry() -> None:
    """FastAPI before 0.16x does not pull in opentelemetry-api: nothing may need it."""
    _run(
        """
        import json, logging, sys
        sys.modules["opentelemetry"] = None  # `import opentelemetry...` raises ImportError
        from app.observability import tracing
        from app.observability.logging import JsonFormatter
        assert not tracing.AVAILABLE
        with tracing.root_span("job.run", {"a": 1}) as root, tracing.span("x") as span:
            span.set("b", 2)
            span.fail("E")
            tracing.current_span().fail("E")
            assert tracing.current_trace_id() is None
            line = json.loads(JsonFormatter().format(logging.makeLogRecord({"msg": "m"})))
            assert "trace_id" not in line
        tracing.configure_tracing("http://127.0.0.1:9")
        tracing.flush_tracing()
        print("ok")
        """
    )


def test_the_gateway_answers_without_the_otel_extra(tmp_path: Any) -> None:
    """opentelemetry-api alone (what FastAPI brings), no SDK or exporter: an endpoint that
    is configured anyway only warns, and a generation succeeds without a trace id."""
    result = _run(
        f"""
        import asyncio, sys
        for name in ("opentelemetry.sdk", "opentelemetry.exporter"):
            sys.modules[name] = None
        from fastapi.testclient import TestClient
        from app.credits import ledger
        from app.db.engine import create_engine, create_sessionmaker
        from app.main import create_app
        from app.settings import Settings
        from app.tenants import service
        settings = Settings(
            _env_file=None, data_dir={str(tmp_path)!r}, emulate=True,
            otel_exporter_otlp_endpoint="http://127.0.0.1:9",
        )

        async def key():
            engine = create_engine(settings.resolved_database_url)
            async with create_sessionmaker(engine)() as session, session.begin():
                tenant = await service.create_tenant(session, "t")
                made = await service.create_key(session, tenant, "k")
                await ledger.grant(session, tenant.id, 100, note="test")
            await engine.dispose()
            return made.plaintext

        with TestClient(create_app(settings)) as client:
            plaintext = asyncio.run(key())
            answer = client.post(
                "/api/v1/generate-image", json={{"prompt": "p"}},
                headers={{"Authorization": "Bearer " + plaintext}},
            )
            assert answer.status_code == 200, answer.text
        print("ok")
        """
    )
    assert "tracing needs opentelemetry-sdk" in result.stderr
