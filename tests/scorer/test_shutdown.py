"""The server's life: stopping (SIGTERM, as Kubernetes does) answers what it holds; workers that die are
replaced, soon or after a pause; start-up failures say why."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from scorer_helpers import SCRIPTS, StartScorer, free_port, wait_until


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


def test_after_sigterm_a_new_connection_is_refused_at_once(start_scorer: StartScorer) -> None:
    """The supervisor kept its copy of the socket through the drain: a new connection was accepted by the
    kernel, never read, and reset when the drain ended; refused, the router tries another replica."""
    server = start_scorer("sleepy.py", env={"SCORING_TIMEOUT_MS": "10000"})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(server.post, json={"sleep": 3})
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        started = time.monotonic()
        with pytest.raises(httpx.ConnectError):
            httpx.post(server.url + "/score", json={}, timeout=5)
        assert time.monotonic() - started < 1
        assert in_flight.result().status_code == 200


def test_requests_still_queued_when_the_drain_ends_get_a_503_not_a_disconnect(start_scorer: StartScorer) -> None:
    """One worker, 3 s to drain from SIGTERM: two 1.2 s runs finish, the two queued behind them cannot;
    they are answered (retry elsewhere) before the drain ends instead of having their connection closed."""
    server = start_scorer("sleepy.py", env={"SCORING_TIMEOUT_MS": "3000"})
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        calls = []
        for _ in range(4):
            calls.append(pool.submit(server.post, json={"sleep": 1.2}))
            time.sleep(0.05)  # queued in this order
        time.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        answers = [c.result() for c in calls]
    assert [a.status_code for a in answers] == [200, 200, 503, 503]
    assert answers[3].json()["error"]["code"] == "WorkerStopping"
    assert server.process.wait(10) == 0


def test_a_worker_that_dies_on_a_request_is_replaced_at_once_every_time(start_scorer: StartScorer) -> None:
    """The pause before a replacement grew with deaths soon after a start (1, 3, 7 s...): a worker that
    was ready and died on a request left a one-worker pod with nothing serving for that long."""
    server = start_scorer("crashes.py")
    for _ in range(4):
        started = time.monotonic()
        with pytest.raises(httpx.TransportError):
            server.post(json={"exit": True})
        server.wait_ready()
        assert time.monotonic() - started < 2.5
    assert server.post(json={}).status_code == 200


def test_a_replacement_whose_init_failed_takes_no_connection_while_another_serves(start_scorer: StartScorer,
                                                                                  tmp_path: Path) -> None:
    """A replacement waits for its init() before it accepts, so that it takes no request it cannot score; one
    whose init() failed accepted anyway (the least busy, it took most new connections) and answered them 503
    until its retry, though the other worker served."""
    server = start_scorer("replacement_init_fails.py", workers=2, env={"INIT_MARKER": str(tmp_path / "held"),
                                                                        "SCORER_INIT_RETRY_SECONDS": "30"})
    with pytest.raises(httpx.TransportError):
        server.post(json={"die": True})
    wait_until(lambda: "CUDA out of memory" in server.get("/ready").text, 30, "the replacement's init() to fail")
    assert {server.post(json={}).status_code for _ in range(30)} == {200}


def test_a_worker_that_dies_before_it_is_ready_is_replaced_after_a_growing_pause(start_scorer: StartScorer) -> None:
    """Killed in init() (as for memory) more than a second after its start, it was restarted at once,
    forever, loading the model each time."""
    server = start_scorer("crashes.py", env={"INIT_DIES_AFTER": "1.2"}, wait="live")
    time.sleep(7)
    lines = [str(line.get("message", "")) for line in server.logs()]
    assert sum("worker 0 started" in line for line in lines) <= 3, lines
    assert any("before it was ready; replacing it in 1 s" in line for line in lines), lines
    assert any("before it was ready; replacing it in 3 s" in line for line in lines), lines


def test_one_worker_answers_liveness_while_its_replacement_runs_init(start_scorer: StartScorer) -> None:
    """A replacement accepted nothing until its init() finished: with no other worker, the liveness probe
    went unanswered through a long init() and restarted the container."""
    server = start_scorer("sleepy.py", env={"SCORING_TIMEOUT_MS": "1000", "INIT_SECONDS": "3"})
    assert server.post(json={"sleep": 2}).status_code == 504  # the worker is recycled
    time.sleep(0.5)
    for _ in range(4):
        assert httpx.get(server.url + "/", timeout=0.5).status_code == 200
        not_ready = httpx.get(server.url + "/ready", timeout=0.5)
        assert not_ready.status_code == 503 and "error" in not_ready.json()
        time.sleep(0.2)
    server.wait_ready()


def test_a_segfault_in_run_leaves_its_traceback_in_the_log(start_scorer: StartScorer) -> None:
    server = start_scorer("crashes.py")
    with pytest.raises(httpx.TransportError):
        server.post(json={"segfault": True})
    server.wait_ready()
    log = server.log_path.read_text()
    assert "Fatal Python error: Segmentation fault" in log and 'crashes.py", line' in log


def test_a_port_in_use_is_one_line_and_leaves_no_state_behind(tmp_path) -> None:
    state = tmp_path / "tmp"
    state.mkdir()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "scoring_image", "--host", "127.0.0.1", "--port", str(port)],
                                env={**os.environ, "AZUREML_ENTRY_SCRIPT": str(SCRIPTS / "sleepy.py"), "TMPDIR": str(state)},
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert list(state.iterdir()) == []


def test_it_serves_on_a_socket_handed_over_and_refuses_one_not_listening(tmp_path) -> None:
    """--fd: the local backend binds the port and hands it over, so nothing can take it in between."""
    env = {**os.environ, "AZUREML_ENTRY_SCRIPT": str(SCRIPTS / "sleepy.py"), "WORKER_COUNT": "1"}
    with socket.socket() as idle:
        result = subprocess.run([sys.executable, "-m", "scoring_image", "--fd", str(idle.fileno())], env=env,
                                pass_fds=(idle.fileno(),), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is not a listening socket" in result.stdout + result.stderr
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        process = subprocess.Popen([sys.executable, "-m", "scoring_image", "--fd", str(listening.fileno())], env=env,
                                   pass_fds=(listening.fileno(),), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/ready", timeout=30).status_code == 200, 60)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
    finally:
        process.terminate()
        process.wait(30)


def test_the_supervisor_as_pid_1_starts_its_workers(tmp_path) -> None:
    """Where tini is bypassed (a command override), the supervisor is pid 1: its workers took that
    parent for a dead one and exited, again and again."""
    if subprocess.run(["unshare", "-Urpf", "--mount-proc", "true"], capture_output=True).returncode != 0:
        pytest.skip("no user and pid namespaces here")
    port = free_port()
    log = (tmp_path / "scorer.log").open("wb")
    process = subprocess.Popen(["unshare", "-Urpf", "--mount-proc", sys.executable, "-m", "scoring_image",
                                "--host", "127.0.0.1", "--port", str(port)],
                               env={**os.environ, "AZUREML_ENTRY_SCRIPT": str(SCRIPTS / "sleepy.py"), "WORKER_COUNT": "1"},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: _status(f"http://127.0.0.1:{port}/ready") == 200, 20, "a ready worker under pid 1")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
        log.close()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.TransportError:
        return 0


def test_a_slow_replacement_is_not_killed_for_the_deadline_its_predecessor_left(start_scorer: StartScorer, tmp_path) -> None:
    """A worker that died in run() left its deadline in the shared slot; a replacement slow to start (a
    throttled CPU, here a sitecustomize that sleeps) was killed as a worker stuck in run()."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys, time\nif 'scoring_image.worker' in sys.orig_argv:\n    time.sleep(1.6)\n")
    server = start_scorer("crashes.py", env={"SCORING_TIMEOUT_MS": "300", "PYTHONPATH": str(tmp_path)})
    with pytest.raises(httpx.TransportError):
        server.post(json={"exit": True})
    server.wait_ready()
    assert server.post(json={}).status_code == 200
    assert not [line for line in server.logs() if "holds the GIL" in str(line.get("message", ""))]
