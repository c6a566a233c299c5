"""The router's Prometheus metrics, labelled by route, version, role (control/treatment) and status."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
LABELS = ("kind", "route", "version", "role")

REQUESTS = Counter("router_requests_total", "Scoring requests by outcome.", (*LABELS, "status"), registry=REGISTRY)
LATENCY = Histogram("router_request_duration_seconds", "Time from request to response, queueing included.", LABELS,
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                    registry=REGISTRY)
IN_FLIGHT = Gauge("router_in_flight_requests", "Requests being scored by replicas.", LABELS, registry=REGISTRY)
QUEUED = Gauge("router_queued_requests", "Requests waiting for a free replica slot.", LABELS, registry=REGISTRY)
REPLICAS = Gauge("router_ready_replicas", "Ready replicas of a version.", LABELS, registry=REGISTRY)
DESIRED = Gauge("router_desired_replicas", "Replicas the autoscaler asks for.", LABELS, registry=REGISTRY)
UTILIZATION = Gauge("router_utilization_ratio", "Busy slots / all slots, averaged over the refresh period.", LABELS,
                    registry=REGISTRY)
SCALINGS = Counter("router_autoscale_decisions_total", "Replica count changes decided.", (*LABELS, "direction"),
                   registry=REGISTRY)
