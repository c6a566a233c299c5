"""Prometheus metrics of the whole server, whichever worker answers the scrape.

prometheus_client's multiprocess mode: each worker writes its values to memory-mapped files
in PROMETHEUS_MULTIPROC_DIR (the supervisor sets it before any worker imports the client),
and a scrape sums the files of all workers, living and dead (counters stay monotonic across
a recycled worker; the in-flight gauge counts living ones only).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self._requests = Counter("scorer_requests", "Scoring requests answered, by HTTP status.", ["status"])
        self._latency = Histogram(
            "scorer_request_duration_seconds", "Time from request to response of /score.", buckets=_BUCKETS
        )
        self._run = Histogram("scorer_run_duration_seconds", "Time spent in the entry script's run().", buckets=_BUCKETS)
        self.in_flight = Gauge(
            "scorer_requests_in_flight", "Scoring requests being served.", multiprocess_mode="livesum"
        )
        self._by_status: dict[int, Counter] = {}

    def observe(self, status: int, seconds: float) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self._requests.labels(str(status))
        counter.inc()
        self._latency.observe(seconds)

    def observe_run(self, seconds: float) -> None:
        self._run.observe(seconds)


def scrape() -> bytes:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry)
