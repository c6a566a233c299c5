"""Application Insights: request telemetry leaves when the connection string is set, none otherwise."""

from __future__ import annotations

import gzip
import json
import signal
import time
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scorer_helpers import StartScorer, wait_until


@pytest.fixture(autouse=True)
def own_offline_storage(tmp_path, monkeypatch) -> None:
    """The exporter keeps what it could not send under the temp folder, per instrumentation key, and a later
    exporter of that key sends it: a scorer of an earlier test (or run) sent its lines to this test's endpoint."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


@pytest.fixture
def ingestion() -> Iterator[tuple[str, list[bytes]]]:
    """A stand-in for the Application Insights ingestion endpoint that keeps what it receives."""
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(gzip.decompress(body) if self.headers.get("content-encoding") == "gzip" else body)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"itemsReceived": 1, "itemsAccepted": 1, "errors": []}')

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", received
    server.shutdown()
    server.server_close()


def test_requests_are_traced_to_application_insights(start_scorer: StartScorer, ingestion: tuple[str, list[bytes]]) -> None:
    endpoint, received = ingestion
    server = start_scorer("sum_rows.py", env={
        "APPLICATIONINSIGHTS_CONNECTION_STRING":
            f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={endpoint}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    })

    def traced() -> bool:
        # The default sampler is rate-limited (a few traces a second): keep asking until one is kept.
        assert server.post(json={"data": [[1, 2]]}).json()["sums"] == [3]
        time.sleep(0.2)
        return any(b"RequestData" in body and b"/score" in body for body in received)

    wait_until(traced, 30, "a request envelope at the ingestion endpoint")


def test_a_gets_query_the_models_input_stays_out_of_the_request_telemetry(start_scorer: StartScorer,
                                                                         ingestion: tuple[str, list[bytes]]) -> None:
    """The request's url in Application Insights carried the query, which Azure ML passes to run() as its data."""
    endpoint, received = ingestion
    server = start_scorer("sum_rows.py", env={**every_trace_to(endpoint), "OTEL_BSP_SCHEDULE_DELAY": "200"})
    answer = server.get("/score", params={"data": "[[1, 2]]", "patient": "hunter2"})
    assert answer.status_code == 200 and answer.json()["sums"] == [3]  # run() still gets the query
    wait_until(lambda: any(b"RequestData" in body and b"/score" in body for body in received), 30,
               "a request envelope at the ingestion endpoint")
    assert not [body for body in received if b"hunter2" in body]


def envelopes(received: list[bytes]) -> list[dict]:
    return [item for body in received for line in body.decode().splitlines() if line.strip()
            for item in (lambda data: data if isinstance(data, list) else [data])(json.loads(line))]


def test_what_run_prints_joins_its_requests_trace_and_probes_are_not_sent(start_scorer: StartScorer,
                                                                           ingestion: tuple[str, list[bytes]]) -> None:
    """Under the service's name (its cloud role), one request item per scored request with the lines run()
    printed in its operation; no item for the kubelet's probes, no dependency per ASGI send and receive."""
    endpoint, received = ingestion
    server = start_scorer("sum_rows.py", env={
        "APPLICATIONINSIGHTS_CONNECTION_STRING":
            f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={endpoint}",
        "OTEL_TRACES_SAMPLER": "microsoft.fixed_percentage", "OTEL_TRACES_SAMPLER_ARG": "1.0",
        "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200", "OTEL_SERVICE_NAME": "iris-svc",
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    })
    for path in ("/", "/ready", "/metrics"):
        server.get(path)
    assert server.post(json={"data": [[1, 2]]}).status_code == 200

    def kinds() -> list[str]:
        return [e["data"]["baseType"] for e in envelopes(received)]
    wait_until(lambda: "RequestData" in kinds() and "MessageData" in kinds(), 20, "the request and its printed line")
    time.sleep(0.5)  # what else the batch held
    items = envelopes(received)
    requests = [e for e in items if e["data"]["baseType"] == "RequestData"]
    assert [r["data"]["baseData"]["url"].rsplit("/", 1)[1] for r in requests] == ["score"]
    printed = [e for e in items if e["data"]["baseType"] == "MessageData" and "summing 1 row" in e["data"]["baseData"]["message"]]
    operation = requests[0]["tags"]["ai.operation.id"]
    assert printed and operation.strip("0") and {p["tags"]["ai.operation.id"] for p in printed} == {operation}
    assert {e["tags"]["ai.cloud.role"] for e in items} == {"iris-svc"}
    assert "RemoteDependencyData" not in kinds()


def test_no_connection_string_no_exporter(start_scorer: StartScorer) -> None:
    """Off, telemetry costs nothing: the worker that serves run() loaded neither OpenTelemetry nor the exporter."""
    server = start_scorer("telemetry_modules.py")
    response = server.post(json={})
    assert response.status_code == 200
    assert response.json() == []


def every_trace_to(endpoint: str) -> dict[str, str]:
    """A scorer's environment that sends Application Insights every trace (no rate-limited sampling)."""
    return {"APPLICATIONINSIGHTS_CONNECTION_STRING":
            f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={endpoint}",
            "OTEL_TRACES_SAMPLER": "microsoft.fixed_percentage", "OTEL_TRACES_SAMPLER_ARG": "1.0",
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true"}


def test_what_a_worker_traced_is_exported_when_it_stops(start_scorer: StartScorer, ingestion: tuple[str, list[bytes]]) -> None:
    """A worker leaves by os._exit, past OpenTelemetry's exit handler: up to OTEL_BSP_SCHEDULE_DELAY
    (5 s) of traces was lost at every stop and recycle, the trace of the request that caused it too."""
    endpoint, received = ingestion
    server = start_scorer("sum_rows.py", env=every_trace_to(endpoint))
    assert server.post(json={"data": [[1, 2]]}).status_code == 200
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(20) == 0
    assert any(b"RequestData" in body and b"/score" in body for body in received)


def test_an_unreachable_ingestion_endpoint_does_not_hold_up_a_stopping_worker(start_scorer: StartScorer) -> None:
    """The last export on the way out is bounded (telemetry.SHUTDOWN_S): an endpoint that never answers
    would otherwise keep a recycled worker from being replaced for the exporter's whole timeout."""
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        server = start_scorer("sum_rows.py", env=every_trace_to(f"http://127.0.0.1:{silent.getsockname()[1]}/"))
        assert server.post(json={"data": [[1, 2]]}).status_code == 200
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        assert time.monotonic() - started < 8
