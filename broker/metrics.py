"""Prometheus metrics, in a registry of their own per application (no process globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "citycall_http_requests",
            "HTTP requests served, by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "citycall_http_request_seconds",
            "HTTP request latency, by route",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.open_sockets = Gauge(
            "citycall_open_websockets", "Signaling WebSockets open", registry=self.registry
        )
        self.logins = Counter(
            "citycall_logins", "Login attempts, by outcome", ["outcome"], registry=self.registry
        )

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
