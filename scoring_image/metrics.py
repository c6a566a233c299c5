"""Prometheus metrics of the whole server, whichever worker answers the scrape.

Each worker counts in plain Python (a few list increments per request: prometheus_client's
multiprocess values cost an mmap write per increment, about a tenth of a trivial request
here) and publishes a snapshot file every `PUBLISH_S` seconds, only when something changed.
A scrape sums the snapshots of the living workers and the totals of those the supervisor replaced
(`retire`: each dead worker's snapshot is added to them and removed, so the files do not pile up with
every recycle), so counters stay monotonic across a replaced worker; the in-flight gauge counts living
workers only.  Values are at most `PUBLISH_S` old.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PUBLISH_S = 0.5
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)  # to scoring timeouts of minutes


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


class Recorder:
    """One worker's counts; `publish()` writes them to `<folder>/<pid>-<start ns>.json`: a worker that gets a
    dead one's pid (pids wrap) must not overwrite its snapshot, or the sums would go back."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._path = folder / f"{os.getpid()}-{time.time_ns()}.json"
        self.in_flight = 0
        self.collection_dropped = 0  # collected records that could not be spooled
        self._statuses: dict[int, int] = {}
        self._server_errors: dict[str, int] = {}  # by "<status> <code>"
        self._latency = _Histogram()
        self._run = _Histogram()
        self._published: bytes | None = None

    def observe(self, status: int, seconds: float) -> None:
        self._statuses[status] = self._statuses.get(status, 0) + 1
        self._latency.observe(seconds)

    def observe_run(self, seconds: float) -> None:
        self._run.observe(seconds)

    def count_server_error(self, status: int, code: str) -> None:
        """An answer the worker's HTTP server gave itself (scoring_image.server): a fixed code, never a client's."""
        key = f"{status} {code}"
        self._server_errors[key] = self._server_errors.get(key, 0) + 1

    def publish(self) -> None:
        snapshot = orjson.dumps({
            "pid": os.getpid(),
            "in_flight": self.in_flight,
            "statuses": {str(k): v for k, v in self._statuses.items()},
            "server_errors": self._server_errors,
            "latency": [self._latency.counts, self._latency.total],
            "run": [self._run.counts, self._run.total],
            "collection_dropped": self.collection_dropped,
        })
        if snapshot == self._published:
            return
        tmp = self._path.with_suffix(".tmp")
        tmp.write_bytes(snapshot)
        tmp.replace(self._path)
        self._published = snapshot


# The supervisor's figures, beside the workers' snapshots (not *.json: no worker's).
SHIPPER_STATS = "shipper.stats"
WORKER_EXITS = "worker_exits.stats"
RETIRED = "retired.stats"  # the replaced workers' counts, and the names of the snapshots last added to them


def _replace(path: Path, figures: dict[str, Any]) -> None:
    """Written whole, for whichever process answers a scrape: a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(figures))
    tmp.replace(path)


def publish_shipping(path: Path, spool_bytes: int, shipped: int, failed: int, full: bool) -> None:
    """The collection shipper's figures (the supervisor's thread): an outage of the store shows in them
    (failed passes, a growing spool) before records are left out."""
    _replace(path, {"spool_bytes": spool_bytes, "shipped": shipped, "failed": failed, "full": full})


def publish_worker_exits(folder: Path, exits: int) -> None:
    """The workers the supervisor replaced: a crash, a kill for memory or by the watchdog, a recycle, which the
    pod's restart count never sees."""
    _replace(folder / WORKER_EXITS, {"exits": exits})


def retire(folder: Path, pid: int) -> None:
    """The supervisor, for a worker it reaped (no process writes its snapshot again, none has its pid yet): its
    counts go to the retired totals, then its files go. Kept, every recycled worker's snapshot stayed, each read at
    every scrape, without end. The totals name the snapshots just added, for a scrape that listed them before."""
    snapshots = sorted(folder.glob(f"{pid}-*.json"))
    if snapshots:
        retired = _read_retired(folder)
        for path in snapshots:
            _add(retired, orjson.loads(path.read_bytes()))
        retired["folded"] = [path.name for path in snapshots]
        _replace(folder / RETIRED, retired)
    for path in [*snapshots, *folder.glob(f"{pid}-*.tmp")]:  # a .tmp: killed while it published
        path.unlink(missing_ok=True)


def _read_retired(folder: Path) -> dict[str, Any]:
    try:
        return orjson.loads((folder / RETIRED).read_bytes())
    except FileNotFoundError:  # none replaced yet
        empty = [[0] * (len(BUCKETS) + 1), 0.0]
        return {"statuses": {}, "server_errors": {}, "latency": empty, "run": empty, "collection_dropped": 0, "folded": []}


def _add(into: dict[str, Any], snapshot: dict[str, Any]) -> None:
    for counts in ("statuses", "server_errors"):
        for key, count in snapshot[counts].items():
            into[counts][key] = into[counts].get(key, 0) + count
    into["collection_dropped"] += snapshot["collection_dropped"]
    for name in ("latency", "run"):
        (counts, total), (more, more_total) = into[name], snapshot[name]
        into[name] = [[a + b for a, b in zip(counts, more, strict=True)], total + more_total]


def _read_all(folder: Path) -> dict[str, Any]:
    """The retired totals plus every living worker's snapshot. Listed first, then the totals read: a snapshot
    retired in between is named in them, or gone when read, and the whole is read again."""
    while True:
        names = [path.name for path in folder.glob("*.json")]
        whole = _read_retired(folder)
        whole["in_flight"] = 0
        try:
            for name in names:
                if name not in whole["folded"]:
                    snapshot = orjson.loads((folder / name).read_bytes())
                    _add(whole, snapshot)
                    whole["in_flight"] += snapshot["in_flight"]
        except FileNotFoundError:
            continue
        return whole


class _Collector:
    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def collect(self) -> Iterator[Metric]:
        whole = _read_all(self._folder)
        statuses: dict[str, int] = whole["statuses"]
        in_flight, dropped = whole["in_flight"], whole["collection_dropped"]
        histograms = {name: _Histogram() for name in ("latency", "run")}
        for name, histogram in histograms.items():
            histogram.counts, histogram.total = whole[name]

        requests = CounterMetricFamily("scorer_requests", "Scoring requests by the status answered (499: the caller "
                                       "left first).", labels=["status"])
        for status, count in sorted(statuses.items()):
            requests.add_metric([status], count)
        yield requests
        yield _histogram_family("scorer_request_duration_seconds", "Time from request to response of /score.",
                                histograms["latency"])
        yield _histogram_family("scorer_run_duration_seconds", "Time spent in the entry script's run() (one past "
                                "scoring_timeout_ms: as long as it ran until its 504).", histograms["run"])
        errors = CounterMetricFamily("scorer_server_error_responses", "Answers a worker's HTTP server gave itself, the "
                                     "app never seeing the request: 400 (it did not parse), 408 (it did not arrive in "
                                     "time), 431 (a head too large), 501, 503 TooManyConnections (over the connection "
                                     "cap), 500 (the app failed).", labels=["status", "code"])
        for key, count in sorted(whole["server_errors"].items()):
            errors.add_metric(key.split(" ", 1), count)
        yield errors
        yield GaugeMetricFamily("scorer_requests_in_flight", "Scoring requests being served.", value=in_flight)
        yield CounterMetricFamily("scorer_collection_dropped_records", "Collected records that could not be spooled "
                                  "(their predictions were answered).", value=dropped)
        try:
            exits = orjson.loads((self._folder / WORKER_EXITS).read_bytes())["exits"]
        except FileNotFoundError:  # none yet
            exits = 0
        yield CounterMetricFamily("scorer_worker_exits", "Worker processes that exited and were replaced: crashed, "
                                  "killed (for memory; by the supervisor, run() holding the GIL past its timeout), "
                                  "recycled after a run() timeout, or left to try init() again.", value=exits)
        try:
            shipping = orjson.loads((self._folder / SHIPPER_STATS).read_bytes())
        except FileNotFoundError:  # no collection
            return
        yield GaugeMetricFamily("scorer_collection_spool_bytes", "Disk the spool's segments take, waiting to be shipped.",
                                value=shipping["spool_bytes"])
        yield CounterMetricFamily("scorer_collection_shipped_segments", "Spool segments shipped to the store.",
                                  value=shipping["shipped"])
        yield CounterMetricFamily("scorer_collection_failed_passes", "Shipping passes that failed (the store unreachable "
                                  "or refusing); their segments stay in the spool for the next.", value=shipping["failed"])
        yield GaugeMetricFamily("scorer_collection_spool_full", "1 while new records are left out: from when the spool "
                                "holds its budget until it is well under it again.", value=int(shipping["full"]))


def _histogram_family(name: str, documentation: str, histogram: _Histogram) -> HistogramMetricFamily:
    cumulative, running = [], 0
    for bound, count in zip([*map(floatToGoString, BUCKETS), "+Inf"], histogram.counts, strict=True):
        running += count
        cumulative.append((bound, running))
    return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=histogram.total)


def registry(folder: Path) -> CollectorRegistry:
    """The whole server's metrics, read from the workers' snapshots at each collect."""
    found = CollectorRegistry(auto_describe=False)
    found.register(_Collector(folder))
    return found


def scrape(folder: Path) -> bytes:
    return generate_latest(registry(folder))
