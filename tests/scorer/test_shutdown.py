"""Stopping the server (SIGTERM, as Kubernetes does): a request in flight still gets its answer."""

from __future__ import annotations

import concurrent.futures
import signal
import time

from scorer_helpers import StartScorer


def test_sigterm_lets_a_run_in_flight_finish_within_the_scoring_timeout(start_scorer: StartScorer) -> None:
    # Longer than a fixed 10 s kill: the supervisor must wait as long as its workers drain (the scoring timeout).
    server = start_scorer("sleepy.py", env={"SCORING_TIMEOUT_MS": "30000"})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(server.post, json={"sleep": 11})
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        response = in_flight.result()
    assert response.status_code == 200 and "pid" in response.json()
    assert server.process.wait(10) == 0
