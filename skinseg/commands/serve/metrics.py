"""What /metrics exposes: every answer by route and status with its latency, refusals by reason, the
queue, open connections and the process's memory (Prometheus text, one registry per service)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from skinseg.shared.system import peak_rss_mb

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, open fds, CPU seconds
        self.requests = Counter("skinseg_requests", "HTTP answers by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("skinseg_request_seconds", "Time to answer, by route and status",
                                 ["route", "status"], buckets=BUCKETS, registry=r)
        self.refusals = Counter("skinseg_refusals", "Requests and connections refused, by reason", ["reason"],
                                registry=r)
        self.errors = Counter("skinseg_errors", "Segment requests refused or failed, by status", ["status"],
                              registry=r)
        self.images = Counter("skinseg_images", "Images segmented", registry=r)
        self.depth = Gauge("skinseg_queue_depth", "Segment requests admitted and not yet answered", registry=r)
        self.capacity = Gauge("skinseg_queue_capacity", "Segment requests admitted at most (workers + queue)",
                              registry=r)
        self.connections = Gauge("skinseg_connections", "HTTP connections open now", registry=r)
        peak = Gauge("skinseg_peak_resident_memory_bytes", "Highest resident memory of the process so far",
                     registry=r)
        peak.set_function(lambda: peak_rss_mb() * 2**20)

    def answered(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route, str(status)).observe(seconds)

    def watch_connections(self, count: Callable[[], int]) -> None:
        self.connections.set_function(count)
