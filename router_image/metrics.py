"""The router's Prometheus metrics, labelled by route, version, role (control/treatment) and status.

Per-request counts are plain integers read at scrape time (`RequestStats`): prometheus_client's
Counter and Histogram take a lock and walk the buckets in Python on every request, which showed
in the hot path's profile. Gauges are set by the 100 ms sampling loop, off the hot path.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

disable_created_metrics()  # no `_created` gauge beside each Counter and Histogram series: nothing reads them
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_start_time_seconds (a restart: counters reset), memory, fds, CPU
LABELS = ("kind", "route", "version", "role")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)  # to scoring timeouts of minutes
# As prometheus_client writes its own histograms' (`le="1.0"`): one query reads every histogram's bound.
_BOUNDS = (*map(floatToGoString, BUCKETS), "+Inf")


class RequestStats:
    """Answered requests of one version: counts by status and a latency histogram."""

    __slots__ = ("labels", "statuses", "buckets", "total_seconds")

    def __init__(self, labels: tuple[str, ...]):
        self.labels = labels
        self.statuses: dict[int, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one: over the largest bound
        self.total_seconds = 0.0

    def observe(self, status: int, seconds: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total_seconds += seconds


_STATS: dict[tuple[str, ...], RequestStats] = {}
_ERRORS: dict[tuple[tuple[str, str], int, str], int] = {}  # by (kind, route), status, code
NO_ROUTE: tuple[str, str] = ("", "")  # an error's route labels where the path names no configured route


def count_error(route: tuple[str, str], status: int, code: str) -> None:
    """One answer the router gave itself, under its route: bounded labels (configured routes, fixed codes),
    never the path or a header a client chose."""
    key = (route, status, code)
    _ERRORS[key] = _ERRORS.get(key, 0) + 1


def request_stats(labels: tuple[str, ...]) -> RequestStats:
    """The version's stats; the same object across config reloads, so counters never go back."""
    stats = _STATS.get(labels)
    if stats is None:
        stats = _STATS[labels] = RequestStats(labels)
    return stats


class _RequestCollector:
    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("router_requests", "Scoring requests that reached a version (a route's, "
                                       "its caller admitted), by status: the replica's answer, the router's own (see "
                                       "router_error_responses_total) or 499, the caller gone first.",
                                       labels=(*LABELS, "status"))
        latency = HistogramMetricFamily("router_request_duration_seconds",
                                        "Time from request to response, queueing included.", labels=LABELS)
        for stats in list(_STATS.values()):
            for status, count in list(stats.statuses.items()):
                requests.add_metric([*stats.labels, str(status)], count)
            cumulative, running = [], 0
            for bound, count in zip(_BOUNDS, stats.buckets):
                running += count
                cumulative.append((bound, running))
            latency.add_metric(list(stats.labels), cumulative, stats.total_seconds)
        yield requests
        yield latency
        errors = CounterMetricFamily(
            "router_error_responses", "Answers the router gave itself, no replica's, by route (empty where the "
            "path names none), status and code: BadRequest, RequestHeaderFieldsTooLarge, RequestTimeout, TooManyConnections "
            "(the HTTP server's, without a route), Unauthorized, UnknownVersion, MethodNotAllowed, NotFound ... before "
            "a version is chosen, counted only here; TooManyRequests (the queue's wait passed), NoReadyReplicas, "
            "ScoringTimeout, ReplicaClosedConnection ... after, in router_requests_total too.",
            labels=("kind", "route", "status", "code"))
        for ((kind, route), status, code), count in list(_ERRORS.items()):
            errors.add_metric([kind, route, str(status), code], count)
        yield errors


REGISTRY.register(_RequestCollector())  # type: ignore[arg-type]
IN_FLIGHT = Gauge("router_in_flight_requests", "Requests being scored by replicas.", LABELS, registry=REGISTRY)
QUEUED = Gauge("router_queued_requests", "Requests waiting for a free replica slot.", LABELS, registry=REGISTRY)
REPLICAS = Gauge("router_ready_replicas", "Ready replicas of a version.", LABELS, registry=REGISTRY)
DESIRED = Gauge("router_desired_replicas", "Replicas the autoscaler asks for.", LABELS, registry=REGISTRY)
UTILIZATION = Gauge("router_utilization_ratio", "Demand / all slots, averaged over the refresh period.", LABELS,
                    registry=REGISTRY)
SCALINGS = Counter("router_autoscale_decisions_total", "Replica count changes decided.", (*LABELS, "direction"),
                   registry=REGISTRY)
QUEUE_WAIT = Histogram("router_queue_wait_seconds", "How long requests that found every slot busy waited in the "
                       "version's queue, however the wait ended: a slot, a 503 (TooManyRequests, NoReadyReplicas in "
                       "router_error_responses_total) or the caller gone.", LABELS,
                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=REGISTRY)
ROUTER_CPU = Gauge("router_cpu_cores", "CPU cores this router pod used, over the last seconds.", registry=REGISTRY)
ROUTING_LATENCY = Gauge("router_routing_latency_seconds",
                        "How late this router's event loop runs a timer: the wait before a request is read.",
                        registry=REGISTRY)
LEADER = Gauge("router_leader", "1 on the router pod that makes the scaling decisions (the Lease holder; a lone "
               "router always), 0 on the others.", registry=REGISTRY)
# By the router Deployment: a label is what lets a pod that loses the lead drop the figure (clear()) rather than
# keep its last one beside the new leader's.
ROUTER_DESIRED = Gauge("router_desired_pods", "Router pods the scaling leader asks for.", ("deployment",),
                       registry=REGISTRY)
ROUTER_SCALINGS = Counter("router_pod_scalings_total", "Router pod count changes decided.", ("direction",),
                          registry=REGISTRY)
# Decisions are counted when made: a leader whose every patch fails (RBAC, an API server refusing or not answering)
# still counted them, and only its log said that nothing was scaled.
SCALE_FAILURES = Counter("router_scale_failures_total", "Scale calls of the leader the API server did not carry out, "
                         "by Deployment and reason: its HTTP status, timeout, connection, or count unreadable (the "
                         "count to scale from could not be read).", ("deployment", "reason"), registry=REGISTRY)


def queue_waited(labels: tuple[str, ...], seconds: float) -> None:
    """A version a reload removed while the request waited for it is not counted: its series went (forget)."""
    if labels in _STATS:
        QUEUE_WAIT.labels(*labels).observe(seconds)


def forget(gone: set[tuple[str, str, str, str]], unscaled: set[tuple[str, str, str, str]],
           routes_gone: set[tuple[str, str]]) -> None:
    """Versions (and routes) a reload removed, or stopped scaling: their gauges go rather than stay at their last
    value, and a removed one's counters and histograms go with it: kept, every deploy's versions stayed in /metrics
    until a restart. (A version that stays keeps its counts: its counters never go back.)"""
    for metric in (IN_FLIGHT, QUEUED, REPLICAS, DESIRED, UTILIZATION, QUEUE_WAIT, SCALINGS):
        for labels in gone | (unscaled if metric in (DESIRED, UTILIZATION) else set()):
            for series in ([(*labels, "up"), (*labels, "down")] if metric is SCALINGS else [labels]):
                try:
                    metric.remove(*series)
                except KeyError:  # never set
                    pass
    for labels in gone:
        _STATS.pop(labels, None)
    for key in [key for key in _ERRORS if key[0] in routes_gone]:
        del _ERRORS[key]


def forget_deployments(gone: set[str]) -> None:
    """Deployments a reload removed (a version's, or the router's own no longer scaled): their scale failures' series
    go, which forget() could not find by version; kept, every deploy's renamed Deployments stayed until a restart."""
    for family in SCALE_FAILURES.collect():
        for sample in family.samples:
            if sample.name == "router_scale_failures_total" and sample.labels["deployment"] in gone:
                SCALE_FAILURES.remove(sample.labels["deployment"], sample.labels["reason"])
