"""The scorer's /metrics summed over its workers' snapshots: what rate() reads must never go back while the
server runs, whichever worker died or was replaced."""

from __future__ import annotations

from pathlib import Path

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
