"""Optional OpenTelemetry traces: a span per request, children for each stage.

Everything here works without the `otel` extra installed: `span()` then yields a span that
records nothing. With `opentelemetry-api` importable, spans go to whatever tracer provider
the process has: the one `configure_tracing` installs (OTLP over HTTP, when an endpoint is
configured), or a test's in-memory one.

Attributes name stages, models, attempt numbers, outcomes and sizes; never a prompt, a key,
image bytes or their base64. Exceptions are not recorded as events (their messages may
quote an upstream's answer): a failed span carries its error type only.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the `otel` extra is not installed: spans record nothing
    trace = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

AVAILABLE = trace is not None
TRACER_NAME = "imagegate"
AttributeValue = str | bool | int | float
_configured = False


@functools.cache
def _tracer() -> Any:
    """A proxy until a provider is installed, then the provider's tracer (OpenTelemetry's
    own pattern: the provider may be installed after this module is imported)."""
    return trace.get_tracer(TRACER_NAME)


class Span:
    """A span, or nothing when tracing is unavailable; only what the gateway needs."""

    __slots__ = ("_span",)

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set(self, key: str, value: AttributeValue) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)

    def fail(self, error: str) -> None:
        """Error status, described by an error type or code (never a message)."""
        if self._span is not None:
            self._span.set_attribute("error.type", error)
            self._span.set_status(Status(StatusCode.ERROR, error))


@contextmanager
def span(name: str, attributes: Mapping[str, AttributeValue] | None = None) -> Iterator[Span]:
    """A child of the current span; an exception leaving it marks it failed (its type)."""
    if trace is None:
        yield Span()
        return
    with _tracer().start_as_current_span(
        name,
        attributes=dict(attributes or {}),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        wrapped = Span(current)
        try:
            yield wrapped
        except BaseException as exc:
            wrapped.fail(type(exc).__name__)
            raise


@contextmanager
def server_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, AttributeValue]
) -> Iterator[tuple[Span, Any]]:
    """The request's span (kind SERVER), continuing a caller's W3C `traceparent`. Yields
    the span and the raw one (to rename once the route is known)."""
    if trace is None:
        yield Span(), None
        return
    parent = propagate.extract(dict(headers))
    with _tracer().start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.SERVER,
        attributes=dict(attributes),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        wrapped = Span(current)
        try:
            yield wrapped, current
        except BaseException as exc:
            wrapped.fail(type(exc).__name__)
            raise


@contextmanager
def root_span(name: str, attributes: Mapping[str, AttributeValue]) -> Iterator[Span]:
    """A span that starts a trace of its own (an async job's run), whatever is current."""
    if trace is None:
        yield Span()
        return
    token = otel_context.attach(otel_context.Context())
    try:
        with span(name, attributes) as current:
            yield current
    finally:
        otel_context.detach(token)


def current_span() -> Span:
    """The active span (to mark it failed where an error is handled, not raised)."""
    return Span(trace.get_current_span()) if trace is not None else Span()


def rename(raw: Any, name: str) -> None:
    if raw is not None:
        raw.update_name(name)


def current_trace_id() -> str | None:
    """The active span's trace id (32 hex digits), or None outside any recording span."""
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


# --------------------------------------------------------------------------- exporting


@dataclass(frozen=True, slots=True)
class ExportConfig:
    """Where spans go: `endpoint` is the full traces URL, or None to let the exporter read
    the standard OTEL_EXPORTER_OTLP_* variables itself."""

    endpoint: str | None


def export_config(endpoint: str | None, environ: Mapping[str, str]) -> ExportConfig | None:
    """None when tracing is off: no endpoint configured (`endpoint` is the setting
    IMAGEGATE_OTEL_EXPORTER_OTLP_ENDPOINT), or the standard switches say so."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    if endpoint:
        # A base URL, like OTEL_EXPORTER_OTLP_ENDPOINT: the traces path is appended.
        return ExportConfig(endpoint.rstrip("/") + "/v1/traces")
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        return ExportConfig(None)
    return None


def build_provider(config: ExportConfig) -> Any:
    """An SDK tracer provider batching spans to OTLP over HTTP. The service name is
    OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES), else "imagegate";
    the sampler follows OTEL_TRACES_SAMPLER."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "imagegate"}))
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=config.endpoint) if config.endpoint else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def configure_tracing(endpoint: str | None) -> None:
    """Install the OTLP exporter for this process, once, if an endpoint is configured."""
    global _configured
    config = export_config(endpoint, os.environ)
    if config is None or _configured:
        return
    if trace is None:
        log.warning("tracing is configured but the otel extra is not installed: no spans")
        return
    try:
        provider = build_provider(config)
    except ImportError:
        log.warning("tracing needs opentelemetry-sdk and its OTLP HTTP exporter: no spans")
        return
    trace.set_tracer_provider(provider)
    _configured = True
    log.info("tracing to OTLP over HTTP")


def flush_tracing() -> None:
    """Send what is batched (at shutdown); spans of other apps in the process are kept."""
    if trace is None:
        return
    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if flush is not None:
        flush()
