"""Prometheus metrics. One registry per app, so several apps in one process don't clash."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Generation latency spans an emulator's milliseconds to a slow model's minutes.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "imagegate_http_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.generation_seconds = Histogram(
            "imagegate_generation_seconds",
            "Wall time of one image, provider call to stored WebP, by model and provider",
            ["model", "provider"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "imagegate_upstream_errors_total",
            "Upstream call failures by provider and shared error type",
            ["provider", "type"],
            registry=self.registry,
        )
        self.upstream_in_flight = Gauge(
            "imagegate_upstream_in_flight",
            "Upstream calls in flight by provider",
            ["provider"],
            registry=self.registry,
        )
        self.credits_charged = Counter(
            "imagegate_credits_charged_total",
            "Credits captured for delivered images",
            registry=self.registry,
        )
        self.credits_refunded = Counter(
            "imagegate_credits_refunded_total",
            "Reserved credits returned (failed or undelivered images)",
            registry=self.registry,
        )
        self.images_stored = Counter(
            "imagegate_images_stored_total",
            "WebP images stored, by the model that delivered them",
            ["model"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
