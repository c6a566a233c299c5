"""Every error of the contract: status, JSON body, and what the log says."""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import pytest

from scorer_helpers import StartScorer, wait_until


def test_malformed_json_is_400(start_scorer: StartScorer) -> None:
    server = start_scorer("sum_rows.py")
    response = server.post(content=b'{"data": [[1, 2]', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    assert "malformed JSON" in response.json()["error"]["message"]
    assert response.headers["x-ms-run-function-failed"] == "False"  # the request failed, not the script
    assert "x-ms-run-fn-exec-ms" not in response.headers  # run() never ran (Azure ML sends none either)


def test_an_undecorated_runs_body_is_checked_not_read_into_objects(start_scorer: StartScorer) -> None:
    """It gets the text, as Azure ML passes it: read into Python objects, a 40 MB body costs the worker
    ~400 MB more (and holds its loop for seconds); checked, about the body and its text."""
    server = start_scorer("peak_memory.py", workers=1)
    idle = server.post(json={"data": [[1.0]]}).json()
    row = b"[1.23, 4.56, 7.89, 0.12]"
    body = b'{"data": [' + b",".join([row] * 1_600_000) + b"]}"  # 40 MB of floats
    big = server.post(content=body, headers={"content-type": "application/json"}).json()
    assert big["pid"] == idle["pid"] and big["length"] == len(body)
    assert (big["peak_kib"] - idle["peak_kib"]) * 1024 < 4 * len(body)
    broken = server.post(content=body[:-1], headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["message"].startswith("malformed JSON: ")


def test_a_request_whose_client_left_is_logged_and_counted_as_499(start_scorer: StartScorer) -> None:
    """A router that gave up (its scoring timeout) or a client that left: run() ran, so the request is in
    the access log and the counts, under the id the client sent, as 499 (nginx's code, and the router's)."""
    server = start_scorer("sleepy.py")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/score", json={"sleep": 1.0}, timeout=0.3,
                   headers={"x-request-id": "gone-1", "x-ms-client-request-id": "client-gone-1"})

    def logged() -> list[dict]:
        return [line for line in map(json.loads, server.log_path.read_text().splitlines())
                if line.get("logger") == "scoring_image.access" and line.get("request_id") == "gone-1"]
    wait_until(lambda: logged(), 10, "the access line of the request whose client left")
    (line,) = logged()
    assert (line["status"], line["client_request_id"]) == (499, "client-gone-1") and line["duration_ms"] >= 250
    wait_until(lambda: 'scorer_requests_total{status="499"} 1.0' in server.get("/metrics").text, 10, "the 499 counted")


def test_body_over_the_limit_is_413(start_scorer: StartScorer) -> None:
    server = start_scorer("sum_rows.py", env={"SCORER_MAX_BODY_BYTES": "1000"})
    small = server.post(json={"data": [[1] * 10]})
    assert small.status_code == 200
    big = server.post(json={"data": [[1] * 1000]})
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "PayloadTooLarge" and big.json()["message"] == big.json()["error"]["message"]

    def chunks():  # no content-length: the limit holds while reading
        yield b'{"data": [['
        for _ in range(1000):
            yield b"1,"
        yield b"1]]}"

    chunked = server.post(content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413


def test_run_raising_is_500_with_the_traceback_only_in_the_log(start_scorer: StartScorer) -> None:
    server = start_scorer("failing.py")
    response = server.post(json={"x": 1}, headers={"x-request-id": "fails-1"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "ScoringError"
    assert "ValueError" in response.json()["error"]["message"]
    assert response.json()["message"] == response.json()["error"]["message"]  # where Azure ML's clients read it
    assert response.headers["x-ms-run-function-failed"] == "True"  # as Azure ML marks a failing script
    assert "secret-detail-in-traceback" not in response.text
    assert "Traceback" not in response.text

    def logged() -> bool:
        return any("secret-detail-in-traceback" in str(line.get("traceback")) for line in server.logs())

    wait_until(logged, 10, "the traceback in the log")
    line = next(line for line in server.logs() if "secret-detail-in-traceback" in str(line.get("traceback")))
    assert line["request_id"] == "fails-1"
    assert line["level"] == "ERROR"
    assert server.post(json={"x": 1}).status_code == 500  # the worker keeps serving
    slow = server.post(json={"sleep": 0.05})
    assert slow.status_code == 500 and 50 <= float(slow.headers["x-ms-run-fn-exec-ms"]) < 1000  # how long run() ran
    wait_until(lambda: "scorer_run_duration_seconds_count 3.0" in server.get("/metrics").text, 10,
               "the runs that raised, counted")


def test_timeout_is_504_and_the_worker_is_replaced(start_scorer: StartScorer) -> None:
    server = start_scorer("sleepy.py", env={"SCORING_TIMEOUT_MS": "1000"})
    before = server.post(json={"sleep": 0}).json()["pid"]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(server.post, json={"sleep": 30})
        time.sleep(0.3)
        queued = pool.submit(server.post, json={"sleep": 0})  # waits behind the stuck run()
        started = time.monotonic()
        response = stuck.result()
        assert response.status_code == 504
        assert time.monotonic() - started < 5  # the deadline, not the 30 s sleep
        # Azure ML's server's body ({"message": ...}, its words) beside this scorer's code; 504, as azureml-fe answers.
        assert response.json() == {"error": {"code": "Timeout", "message": "Scoring timeout after 1000 ms"},
                                   "message": "Scoring timeout after 1000 ms"}
        assert response.headers["x-ms-run-function-failed"] == "True"
        assert queued.result().status_code in (503, 504)

    server.wait_ready(30)
    after = server.post(json={"sleep": 0})
    assert after.status_code == 200
    assert after.json()["pid"] != before
    assert any("recycling this worker" in str(line.get("message")) for line in server.logs())
    assert any("replacing it" in str(line.get("message")) for line in server.logs())


def test_a_run_that_overran_counts_in_the_run_histogram_at_least_as_long_as_it_ran(start_scorer: StartScorer) -> None:
    """The overruns are the runs a dashboard of run()'s duration is for: they were left out of it."""
    server = start_scorer("sleepy.py", env={"SCORING_TIMEOUT_MS": "500"})
    assert server.post(json={"sleep": 5}).status_code == 504
    wait_until(lambda: server.metrics().get("scorer_run_duration_seconds_count") == 1, 10, "the overrun counted")
    values = server.metrics()
    assert values['scorer_run_duration_seconds_bucket{le="0.25"}'] == 0
    assert values['scorer_run_duration_seconds_bucket{le="2.5"}'] == 1
    assert values["scorer_run_duration_seconds_sum"] > 0.5


def test_a_run_holding_the_gil_past_the_timeout_is_ended_by_the_supervisor(start_scorer: StartScorer) -> None:
    """The worker's loop cannot answer 504 while run() holds the GIL: the supervisor kills the worker a
    grace after the deadline, so the client is let go (without an answer) in seconds, not after run().
    The kill is counted: the pod's restart count never sees a worker the supervisor replaced."""
    server = start_scorer("sleepy.py", env={"SCORING_TIMEOUT_MS": "1000"})
    before = server.post(json={"sleep": 0}).json()["pid"]
    assert server.metrics()["scorer_worker_exits_total"] == 0  # there from the start: increase() sees the first
    started = time.monotonic()
    with pytest.raises(httpx.TransportError):  # the connection closes unanswered
        server.post(json={"hold_gil": 30})
    assert time.monotonic() - started < 6  # deadline 1 s + grace 1 s + the supervisor's poll, not 30 s
    server.wait_ready(30)
    after = server.post(json={"sleep": 0})
    assert after.status_code == 200 and after.json()["pid"] != before
    assert any("holds the GIL?" in str(line.get("message")) for line in server.logs())
    assert server.metrics()["scorer_worker_exits_total"] == 1


def test_a_worker_being_replaced_leaves_the_pod_ready_while_another_serves(start_scorer: StartScorer) -> None:
    """One slow request recycles its worker; the other serves while the replacement's init() runs."""
    server = start_scorer("sleepy.py", workers=2, env={"SCORING_TIMEOUT_MS": "1000", "INIT_SECONDS": "3"})
    assert server.post(json={"sleep": 30}).status_code == 504
    seen = set()
    deadline = time.monotonic() + 4  # the replacement's init() takes 3 s
    while time.monotonic() < deadline:
        seen.add(server.get("/ready").status_code)
        time.sleep(0.1)
    assert seen == {200}
    assert any("replacing it" in str(line.get("message")) for line in server.logs())


def test_init_failure_leaves_the_server_up_but_not_ready(start_scorer: StartScorer) -> None:
    server = start_scorer("init_fails.py", workers=2, wait="live")

    def reported() -> bool:
        ready = server.get("/ready")
        return ready.status_code == 503 and ready.json()["error"]["message"].count("model file is corrupt") == 2

    wait_until(reported, 30, "both workers to report the failed init()")
    assert server.get("/").status_code == 200
    assert "RuntimeError" in server.get("/ready").json()["error"]["message"]
    score = server.post(json={"x": 1})
    assert score.status_code == 503
    assert "model file is corrupt" in score.json()["error"]["message"]
    assert any("init() failed: RuntimeError: model file is corrupt" in str(line.get("message"))
               and "Traceback" in str(line.get("traceback")) for line in server.logs())
    assert server.process.poll() is None


def test_a_failed_init_is_tried_again_by_a_new_worker(start_scorer: StartScorer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A transient failure (a store not reachable yet) heals without a restart of the container, as Azure
    ML's would only by exiting into a crash loop."""
    server = start_scorer("init_flaky.py", wait="live", env={"INIT_MARKER": str(tmp_path / "tried"),
                                                             "SCORER_INIT_RETRY_SECONDS": "1"})
    wait_until(lambda: server.get("/ready").status_code == 503, 30, "the first init() to fail")
    assert "model store not reachable yet" in server.get("/ready").json()["error"]["message"]
    server.wait_ready(30)
    assert server.post(json={}).status_code == 200
    assert any("left to have init() tried again" in str(line.get("message")) for line in server.logs())


def test_not_ready_until_every_worker_finished_init(start_scorer: StartScorer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gate = tmp_path / "go"
    script = tmp_path / "gated.py"
    script.write_text(
        "import time, pathlib\n"
        f"GATE = pathlib.Path({str(gate)!r})\n"
        "def init():\n"
        "    while not GATE.exists():\n"
        "        time.sleep(0.05)\n"
        "def run(raw_data):\n"
        "    return 'ok'\n"
    )
    server = start_scorer(script, workers=2, wait="live")
    ready = server.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "NotReady"
    assert "starting" in ready.json()["error"]["message"]
    assert server.post(json={}).status_code == 503
    gate.touch()
    server.wait_ready(30)
    assert server.post(json={}).json() == "ok"


def test_wrong_method_and_unknown_route(start_scorer: StartScorer) -> None:
    server = start_scorer("sum_rows.py")
    assert server.post("/ready").status_code == 405
    assert server.get("/missing").json()["error"]["code"] == "NotFound"


def test_a_replaced_workers_counts_stay_and_its_snapshot_is_retired(start_scorer: StartScorer, tmp_path) -> None:
    """Each worker the supervisor replaced left its metrics snapshot, read at every scrape, for as long as the pod
    ran: a worker recycled at each run() timeout piled them up."""
    server = start_scorer("sleepy.py", env={"SCORING_TIMEOUT_MS": "500", "TMPDIR": str(tmp_path)})
    assert server.post(json={"sleep": 0}).status_code == 200
    assert server.post(json={"sleep": 5}).status_code == 504  # its worker is recycled
    wait_until(lambda: server.metrics().get("scorer_worker_exits_total") == 1, 20, "the worker replaced")
    server.wait_ready(30)
    replacement = server.post(json={"sleep": 0}).json()["pid"]
    folder = next(tmp_path.glob("scorer-*/metrics"))
    wait_until(lambda: list(folder.glob(f"{replacement}-*.json")), 10, "the replacement's snapshot")
    assert [path.name.split("-")[0] for path in folder.glob("*.json")] == [str(replacement)]
    values = server.metrics()
    assert values['scorer_requests_total{status="200"}'] == 2 and values['scorer_requests_total{status="504"}'] == 1
