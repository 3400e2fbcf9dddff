"""The SDK's in-memory exporter behind the process's tracer provider, for trace tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class _WhileRecording(InMemorySpanExporter):
    """Keeps spans only during a test that asks for them (the provider outlives it)."""

    recording = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return super().export(spans) if self.recording else SpanExportResult.SUCCESS


@pytest.fixture(scope="session")
def _span_exporter() -> _WhileRecording:
    """Installed once: a process has one global tracer provider. The gateways of the
    session's stacks (served in threads of this process) export into it."""
    exporter = _WhileRecording()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(_span_exporter: _WhileRecording) -> Iterator[InMemorySpanExporter]:
    _span_exporter.clear()
    _span_exporter.recording = True
    try:
        yield _span_exporter
    finally:
        _span_exporter.recording = False
        _span_exporter.clear()
