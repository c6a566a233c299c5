"""The scorer's /metrics summed over its workers' snapshots: what rate() reads must never go back while the
server runs, whichever worker died or was replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scoring_image import metrics


def figures(folder: Path) -> dict[str, float]:
    return {sample.name + str(sorted(sample.labels.items())): sample.value
            for family in metrics.registry(folder).collect() for sample in family.samples}


def test_a_worker_that_gets_a_dead_workers_pid_adds_to_its_counts(tmp_path: Path) -> None:
    """Pids are reused (a pod's pid namespace wraps, faster where run() starts processes): the replacement
    overwrote its predecessor's snapshot, and the counters went back by what that one had counted."""
    dead = metrics.Recorder(tmp_path)
    for _ in range(3):
        dead.observe(200, 0.01)
    dead.publish()
    replacement = metrics.Recorder(tmp_path)  # this process's pid again
    replacement.observe(200, 0.01)
    replacement.publish()
    counted = figures(tmp_path)
    assert counted["scorer_requests_total[('status', '200')]"] == 4
    assert counted["scorer_request_duration_seconds_count[]"] == 4


def test_a_replaced_workers_counts_stay_and_its_snapshot_goes(tmp_path: Path) -> None:
    """Every worker the supervisor replaced (a recycle after each run() timeout) left its snapshot, each read at
    every scrape: the files piled up for as long as the pod ran."""
    for generation in range(1, 51):
        worker = metrics.Recorder(tmp_path)
        worker.observe(200, 0.01)
        worker.observe_run(0.01)
        worker.collection_dropped += 1
        worker.count_server_error(408, "RequestTimeout")
        worker.in_flight = 1  # when it died
        worker.publish()
        (tmp_path / f"{os.getpid()}-1.tmp").write_bytes(b"{")  # one killed while it published
        metrics.retire(tmp_path, os.getpid())
        counted = figures(tmp_path)
        assert counted["scorer_requests_total[('status', '200')]"] == generation
        assert counted["scorer_request_duration_seconds_count[]"] == generation
        assert counted["scorer_run_duration_seconds_count[]"] == generation
        assert counted["scorer_collection_dropped_records_total[]"] == generation
        assert counted["scorer_server_error_responses_total[('code', 'RequestTimeout'), ('status', '408')]"] == generation
        assert counted["scorer_requests_in_flight[]"] == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [metrics.RETIRED]


@pytest.mark.parametrize("before_the_totals", [True, False])
def test_a_snapshot_retired_while_a_scrape_reads_counts_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             before_the_totals: bool) -> None:
    """The supervisor retires a worker while another process answers a scrape, after it listed the snapshots: what
    it sums must not go back, nor count the worker twice, whether the totals it reads next have the worker or not."""
    worker = metrics.Recorder(tmp_path)
    worker.observe(200, 0.01)
    worker.publish()
    read_retired, pending = metrics._read_retired, [True]

    def retiring_meanwhile(folder: Path) -> dict:
        if pending and before_the_totals:
            metrics.retire(tmp_path, pending.pop() and os.getpid())
        totals = read_retired(folder)
        if pending:
            metrics.retire(tmp_path, pending.pop() and os.getpid())
        return totals

    monkeypatch.setattr(metrics, "_read_retired", retiring_meanwhile)
    assert figures(tmp_path)["scorer_requests_total[('status', '200')]"] == 1
    assert not pending
