"""The router's exposition as a scraper reads it: the same label values for the same bounds in every
histogram, so one query (an SLO's `le="1.0"`) reads them all."""

from __future__ import annotations

from prometheus_client.utils import floatToGoString

from router_image import metrics


def bounds(name: str) -> set[str]:
    return {sample.labels["le"] for family in metrics.REGISTRY.collect() for sample in family.samples
            if sample.name == f"{name}_bucket"}


def test_every_histogram_writes_its_bounds_as_prometheus_does() -> None:
    """The request histogram wrote `le="1"`, the queue wait (prometheus_client's) `le="1.0"` and the scorer's too:
    in Prometheus 2 those are different series, and a query naming one bound missed the other histograms."""
    labels = ("service", "bounds", "v1", "service")
    metrics.request_stats(labels).observe(200, 0.5)
    metrics.QUEUE_WAIT.labels(*labels).observe(0.5)
    for name in ("router_request_duration_seconds", "router_queue_wait_seconds"):
        written = bounds(name)
        assert "1.0" in written and "+Inf" in written
        assert written == {floatToGoString(float(le)) for le in written}, name


def test_no_counter_adds_a_created_series() -> None:
    """prometheus_client's Counter and Histogram add a `_created` gauge beside each series in the text format the
    router serves: a series each for nothing a dashboard reads, and only on some of the counters."""
    metrics.SCALINGS.labels("service", "created", "v1", "service", "up").inc()
    metrics.QUEUE_WAIT.labels("service", "created", "v1", "service").observe(0.1)
    assert [s.name for f in metrics.REGISTRY.collect() for s in f.samples if s.name.endswith("_created")] == []


def test_the_process_figures_tell_a_restart_and_the_memory() -> None:
    """The router's counters go back only when it restarts: process_start_time_seconds says when it did, and its
    memory (process_resident_memory_bytes) what a leak alert reads."""
    names = {s.name for f in metrics.REGISTRY.collect() for s in f.samples}
    assert {"process_start_time_seconds", "process_resident_memory_bytes", "process_open_fds"} <= names


def test_a_removed_version_and_route_leave_no_series_and_a_late_queue_wait_makes_none_again() -> None:
    """A router that sees many deploys grew its /metrics without bound: a removed version's counts stayed until a
    restart, and a request that waited for it, ending after the reload, made its queue's series again."""
    gone, kept = ("service", "gone", "v1", "service"), ("service", "kept", "v1", "service")
    for labels in (gone, kept):
        metrics.request_stats(labels).observe(200, 0.01)
        metrics.queue_waited(labels, 0.01)
        metrics.SCALINGS.labels(*labels, "down").inc()
        metrics.count_error(labels[:2], 503, "TooManyRequests")
    metrics.forget({gone}, {gone}, {gone[:2]})
    metrics.queue_waited(gone, 0.01)
    series = [(s.name, s.labels) for f in metrics.REGISTRY.collect() for s in f.samples]
    assert [s for s in series if s[1].get("route") == "gone"] == []
    kept_series = {name for name, labels in series if labels.get("route") == "kept"}
    assert {"router_requests_total", "router_request_duration_seconds_count", "router_queue_wait_seconds_count",
            "router_autoscale_decisions_total", "router_error_responses_total"} <= kept_series
