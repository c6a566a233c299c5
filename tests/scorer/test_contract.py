"""Azure ML's entry-script contract, live on loopback with the real scikit-learn model."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httptools
import httpx
import joblib
import numpy as np
import pytest
import werkzeug.exceptions

from scoring_image import amlcompat

from scorer_helpers import EXAMPLE, ROOT, SCRIPTS, Scorer, StartScorer, free_port, wait_until

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def expected(model_root: Path, name: str = "sklearn-iris", version: str = "1") -> list[int]:
    model = joblib.load(model_root / name / version / "model.pkl")
    return model.predict(np.array(ROWS)).tolist()


@pytest.fixture(scope="module")
def raw_scorer(module_scorer: StartScorer, model_root: Path) -> Scorer:
    return module_scorer(EXAMPLE / "score.py", env={"AZUREML_MODEL_DIR": str(model_root / "sklearn-iris" / "1")})


@pytest.fixture(scope="module")
def schema_scorer(module_scorer: StartScorer, model_root: Path) -> Scorer:
    return module_scorer(EXAMPLE / "score_schema.py", env={
        "AZUREML_MODEL_DIR": str(model_root / "sklearn-iris" / "1"),
        "AZUREML_DATA_COLLECTION_SERVICE": "iris-service",
    })


def test_raw_script_scores_with_the_model(raw_scorer: Scorer, model_root: Path) -> None:
    response = raw_scorer.post(json={"data": ROWS})
    assert response.status_code == 200
    assert response.json() == expected(model_root)
    assert len(set(expected(model_root))) > 1  # the rows are not all one class: the model did work


def test_azure_ml_headers(raw_scorer: Scorer) -> None:
    generated = raw_scorer.post(json={"data": ROWS})
    assert len(generated.headers["x-request-id"]) == 36
    assert generated.headers["x-ms-request-id"] == generated.headers["x-request-id"]
    assert generated.headers["x-ms-client-request-id"] == generated.headers["x-request-id"]
    assert float(generated.headers["x-ms-run-fn-exec-ms"]) > 0
    assert generated.headers["x-ms-run-function-failed"] == "False"

    given = raw_scorer.post(json={"data": ROWS}, headers={"x-request-id": "abc-123", "x-ms-client-request-id": "client-7",
                                                          "TraceId": "trace-1"})
    assert given.headers["x-request-id"] == "abc-123"
    assert given.headers["x-ms-client-request-id"] == given.headers["x-ms-request-id"] == "client-7"
    assert given.headers["traceid"] == "trace-1"
    # A client of the legacy header gets its id back in both, as from Azure ML's server.
    legacy = raw_scorer.post(json={"data": ROWS}, headers={"x-ms-request-id": "legacy-7"})
    assert legacy.headers["x-ms-request-id"] == legacy.headers["x-ms-client-request-id"] == "legacy-7"
    assert raw_scorer.post(json={"data": ROWS}, headers={"x-ms-client-request-id": "c" * 101}).status_code == 431
    # The legacy id is echoed back too, beside a client id as without one.
    both = raw_scorer.post(json={"data": ROWS}, headers={"x-ms-client-request-id": "client-7", "x-ms-request-id": "l" * 101})
    assert both.status_code == 431 and "x-ms-request-id is longer than 100" in both.json()["error"]["message"]
    alone = raw_scorer.post(json={"data": ROWS}, headers={"x-ms-request-id": "l" * 101})
    assert alone.status_code == 431 and "x-ms-request-id is longer than 100" in alone.json()["error"]["message"]

    too_long = raw_scorer.post(json={"data": ROWS}, headers={"x-request-id": "x" * 101})
    assert too_long.status_code == 431
    assert too_long.json()["error"]["code"] == "RequestHeaderFieldsTooLarge"
    assert raw_scorer.post(json={"data": ROWS}, headers={"x-request-id": "x" * 100}).status_code == 200


def test_routes(raw_scorer: Scorer, model_root: Path) -> None:
    assert raw_scorer.get("/").status_code == 200
    assert raw_scorer.get("/ready").json() == {"ready": True}
    # GET scores the query's parameters, read as JSON, as Azure ML's server does (liveness is /).
    assert raw_scorer.get("/score", params={"data": json.dumps(ROWS)}).json() == expected(model_root)
    assert raw_scorer.get("/score").status_code == 500  # run() gets {}: the example reads its "data"
    assert "POST" in httpx.options(raw_scorer.url + "/score").headers["allow"]
    head = httpx.head(raw_scorer.url + "/score", params={"data": json.dumps(ROWS)})  # as Flask answers HEAD on GET
    assert head.status_code == 200 and head.content == b""
    refused = httpx.delete(raw_scorer.url + "/score")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    assert refused.json()["error"]["code"] == "MethodNotAllowed"
    assert httpx.post(raw_scorer.url + "/ready").headers["allow"] == "GET, HEAD"
    assert raw_scorer.get("/nope").status_code == 404
    undeclared = raw_scorer.get("/swagger.json").json()  # no schema: empty objects, as Azure ML's server makes
    assert undeclared["definitions"]["ServiceInput"] == {"type": "object", "example": {}}


def test_keep_alive(raw_scorer: Scorer) -> None:
    """Several requests on one connection (Azure ML's server closes each one)."""
    connection = http.client.HTTPConnection("127.0.0.1", raw_scorer.port, timeout=10)
    body = json.dumps({"data": ROWS})
    for _ in range(5):
        connection.request("POST", "/score", body, {"content-type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("connection") != "close"
        response.read()
    assert connection.sock is not None  # never reconnected
    connection.close()


def test_schema_script_and_swagger(schema_scorer: Scorer, model_root: Path) -> None:
    response = schema_scorer.post(json={"data": ROWS})
    assert response.status_code == 200
    assert response.json() == expected(model_root)

    bad = schema_scorer.post(json={"rows": ROWS})
    assert bad.status_code == 400
    assert "rows" in bad.json()["error"]["message"]
    assert schema_scorer.post(content="data=1", headers={"content-type": "text/plain"}).status_code == 400

    v2 = schema_scorer.get("/swagger.json", params={"version": "2"}).json()
    assert v2["swagger"] == "2.0"
    assert v2["info"]["title"] == "iris-service"
    data_schema = v2["definitions"]["ServiceInput"]["properties"]["data"]
    assert data_schema["type"] == "array" and data_schema["items"]["items"]["type"] == "number"
    assert v2["definitions"]["ServiceInput"]["example"] == {"data": [[5.1, 3.5, 1.4, 0.2]]}
    assert v2["definitions"]["ServiceOutput"]["items"]["type"] == "integer"
    assert v2["paths"]["/score"]["post"]["parameters"][0]["schema"] == {"$ref": "#/definitions/ServiceInput"}

    v3 = schema_scorer.get("/swagger.json", params={"version": "3"}).json()
    assert v3["openapi"] == "3.0.1"
    assert v3["components"]["schemas"]["ServiceInput"]["properties"]["data"] == data_schema
    assert schema_scorer.get("/swagger.json", params={"version": "3.1"}).json()["openapi"] == "3.1.0"
    assert schema_scorer.get("/swagger.json").json()["swagger"] == "2.0"
    assert schema_scorer.get("/swagger.json", params={"version": "9"}).status_code == 404


def test_the_app_roots_own_swagger_file_is_served(start_scorer: StartScorer, tmp_path: Path) -> None:
    """Azure ML serves swagger2.json (swagger3.json, ...) from the app root as it is, decorators or not."""
    (tmp_path / "swagger2.json").write_text(json.dumps({"swagger": "2.0", "info": {"title": "hand-written"}}))
    server = start_scorer("sum_rows.py", env={"AML_APP_ROOT": str(tmp_path)})
    assert server.get("/swagger.json").json() == {"swagger": "2.0", "info": {"title": "hand-written"}}
    assert server.get("/swagger.json", params={"version": "3"}).json()["openapi"] == "3.0.1"  # no file: made


def test_the_app_roots_legacy_swagger_json_is_version_2(tmp_path: Path) -> None:
    """Azure ML's version 2 reads the app root's swagger.json (the name Azure ML v1 services used) before
    swagger2.json; a service brought over with its own swagger.json had it replaced by a generated one."""
    from scoring_image import swagger

    def run(data):  # type: ignore[no-untyped-def]
        return data

    (tmp_path / "swagger.json").write_text(json.dumps({"swagger": "2.0", "info": {"title": "legacy"}}))
    for version in ("2", "2.0"):
        assert swagger.document(run, "svc", version, tmp_path, False)["info"] == {"title": "legacy"}
    assert swagger.document(run, "svc", "3", tmp_path, False)["openapi"] == "3.0.1"  # not version 3's file
    (tmp_path / "swagger2.json").write_text(json.dumps({"swagger": "2.0", "info": {"title": "v2"}}))
    assert swagger.document(run, "svc", "2", tmp_path, False)["info"] == {"title": "legacy"}  # as Azure ML: first


def test_schema_inputs_that_do_not_fit_are_400(schema_scorer: Scorer, model_root: Path) -> None:
    """inference_schema converts the inputs before run(): a value it cannot convert is the client's fault."""
    for body in ({}, {"data": "abc"}, {"data": [["a", "b", "c", "d"]]}, {"data": {"x": 1}}):
        response = schema_scorer.post(json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "BadRequest" and "data" in response.json()["error"]["message"]
    for content_type in ("Application/JSON", "application/json; charset=utf-8"):
        response = schema_scorer.post(content=json.dumps({"data": ROWS}), headers={"content-type": content_type})
        assert response.status_code == 200 and response.json() == expected(model_root)
    # Keys run() does not declare (a client's own fields) are left out, as Azure ML's server does.
    response = schema_scorer.post(json={"data": ROWS, "client_version": "1.4"})
    assert response.status_code == 200 and response.json() == expected(model_root)
    # A GET's query parameters are the inputs, as a POST's JSON keys are.
    assert schema_scorer.get("/score", params={"data": json.dumps(ROWS)}).json() == expected(model_root)


def test_request_headers_form(start_scorer: StartScorer) -> None:
    server = start_scorer("with_headers.py")
    response = server.post(json={"a": 1}, headers={"x-tenant": "contoso"})
    assert response.json() == {"tenant": "contoso", "tenant_key": "contoso", "echo": {"a": 1}}


def test_rawhttp_form(start_scorer: StartScorer) -> None:
    server = start_scorer("raw_request.py")
    response = server.post("/score?q=1", json={"x": 1}, headers={"X-Custom": "yes"})
    assert response.status_code == 201
    assert response.headers["x-scored-by"] == "raw_request"
    assert response.json() == {"method": "POST", "got": {"x": 1}, "header": "yes"}
    assert "x-request-id" in response.headers
    got = server.get("/score", params={"q": "hello"})
    assert got.status_code == 200 and got.text == "GET with q=hello"


def test_a_chunked_body_reaches_a_rawhttp_run_whole(start_scorer: StartScorer) -> None:
    """The router forwards a body over 1 MiB (an image, a file: what raw scripts take) chunked: Werkzeug reads
    a request saying Transfer-Encoding: chunked as having no body unless its input is marked terminated, as
    Azure ML's gunicorn marks it, so run() got b'' (get_json(): a 400) for every large upload."""
    server = start_scorer("raw_request.py")
    rows = [[i, i + 0.5] for i in range(60_000)]
    encoded = json.dumps({"rows": rows}).encode()
    assert len(encoded) > 1 << 20

    def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(encoded), 256 * 1024):
            yield encoded[start:start + 256 * 1024]

    response = server.post(content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 201 and response.json()["got"] == {"rows": rows}
    request = amlcompat.AMLRequest.of({"method": "POST", "path": "/score", "query_string": b"",
                                       "headers": [(b"transfer-encoding", b"chunked")]}, b"whole")
    assert request.get_data() == b"whole" and request.headers["Transfer-Encoding"] == "chunked"


def test_azure_ml_module_names_resolve_as_dotted_paths() -> None:
    """Scripts that `import azureml.contrib.services.aml_response` use the name by its dotted path."""
    code = (
        "from scoring_image import amlcompat\n"
        "amlcompat.install()\n"
        "import azureml.contrib.services.aml_response\n"
        "import azureml_inference_server_http.api.aml_request\n"
        "assert azureml.contrib.services.aml_response.AMLResponse is amlcompat.AMLResponse\n"
        "assert azureml_inference_server_http.api.aml_request.rawhttp is amlcompat.rawhttp\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_two_models_in_one_service(start_scorer: StartScorer, model_root: Path) -> None:
    server = start_scorer("two_models.py", env={"AZUREML_MODEL_DIR": str(model_root)})
    response = server.post(json={"data": ROWS})
    assert response.json() == {
        "a": expected(model_root, "sklearn-iris", "1"),
        "b": expected(model_root, "sklearn-iris-b", "2"),
    }


def test_non_json_body_reaches_raw_run_as_text(start_scorer: StartScorer) -> None:
    server = start_scorer("with_headers.py")
    response = server.post(content='{"a": 2}', headers={"content-type": "text/plain"})
    assert response.json()["echo"] == {"a": 2}


def test_only_application_json_is_checked_as_json(start_scorer: StartScorer) -> None:
    """The media type was matched as a prefix: JSON Lines sent as application/jsonl (or x-ndjson's kin) was
    refused as malformed JSON, where Azure ML hands a raw run() the body as it is."""
    server = start_scorer("echo_text.py")
    lines = '{"a": 1}\n{"a": 2}\n'
    answered = server.post(content=lines, headers={"content-type": "application/jsonl"})
    assert answered.status_code == 200 and answered.json() == {"text": lines}
    for media_type in ("application/json", "Application/JSON; charset=utf-8", "application/json ;charset=utf-8"):
        refused = server.post(content=lines, headers={"content-type": media_type})
        assert refused.status_code == 400 and "malformed JSON" in refused.json()["error"]["message"], media_type

def test_request_id_in_every_log_line_of_the_request(start_scorer: StartScorer) -> None:
    server = start_scorer("sum_rows.py")
    assert server.post(json={"data": [[1, 2]]}, headers={"x-request-id": "trace-me-42"}).json()["sums"] == [3]
    wait_until(lambda: any(line.get("request_id") == "trace-me-42" and line.get("logger") == "scoring_image.access"
                           for line in server.logs()), 10, "access log line")
    mine = [line for line in server.logs() if line.get("request_id") == "trace-me-42"]
    assert any(line["message"] == "summing 1 row(s)" for line in mine)  # print() inside run()
    assert any(line["message"] == "POST /score 200" for line in mine)
    assert any(line.get("message") == "sum_rows ready" for line in server.logs())  # print() inside init()
    printed = [line for line in server.logs() if "summing" in str(line.get("message"))]
    assert all(line.get("request_id") == "trace-me-42" for line in printed)


def test_metrics_count_the_whole_server(start_scorer: StartScorer) -> None:
    server = start_scorer("sum_rows.py", workers=2)
    pids = set()
    for _ in range(40):  # new connections: the kernel spreads them over both workers
        pids.add(server.post(json={"data": [[1]]}).json()["pid"])
    server.post(content="{not json", headers={"content-type": "application/json"})

    wait_until(lambda: server.metrics().get("scorer_request_duration_seconds_count") == 41, 10, "metrics of 41 requests")
    values = server.metrics()
    assert len(pids) == 2, "the test needs both workers to have served"
    assert values['scorer_requests_total{status="200"}'] == 40
    assert values['scorer_requests_total{status="400"}'] == 1
    assert values["scorer_request_duration_seconds_count"] == 41
    assert values['scorer_request_duration_seconds_bucket{le="+Inf"}'] == 41
    assert values["scorer_run_duration_seconds_count"] == 40
    assert values["scorer_requests_in_flight"] == 0
    assert values['scorer_request_duration_seconds_bucket{le="300.0"}'] == 41  # timeouts of minutes are not all "+Inf"


def test_what_init_sets_in_context_variables_holds_for_run(start_scorer: StartScorer) -> None:
    """decimal's precision, numpy's error state: context variables of the run thread, where init() and every
    run() run (a copy per request would drop them)."""
    server = start_scorer("context_state.py")
    for _ in range(2):
        assert server.post(json={}).json() == {"third": "0.33333", "numpy_divide": "raise"}


def test_metrics_alone_on_a_port_of_their_own(start_scorer: StartScorer) -> None:
    """What a cluster's Prometheus scrapes: the scoring port admits the router alone, this one anyone."""
    port = free_port()
    server = start_scorer("sum_rows.py", env={"SCORER_METRICS_PORT": str(port)})
    assert server.post(json={"data": [[1]]}).status_code == 200
    metrics = f"http://127.0.0.1:{port}"
    wait_until(lambda: 'scorer_requests_total{status="200"} 1.0' in httpx.get(f"{metrics}/metrics").text, 10,
               "the request counted on the metrics port")
    assert httpx.post(f"{metrics}/score", json={"data": [[1]]}).status_code != 200  # it scores nothing
    server.stop()
    with pytest.raises(httpx.ConnectError):  # and stops with the server
        httpx.get(f"{metrics}/metrics")


def test_a_metrics_port_in_use_stops_the_start_with_one_line(start_scorer: StartScorer) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = start_scorer("sum_rows.py", env={"SCORER_METRICS_PORT": str(port)}, wait=None)
        assert server.process.wait(30) == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in server.log_path.read_text()


def test_cors(start_scorer: StartScorer) -> None:
    server = start_scorer("sum_rows.py", env={"AML_CORS_ORIGINS": "https://app.example.com"})
    preflight = httpx.options(server.url + "/score", headers={
        "origin": "https://app.example.com", "access-control-request-method": "POST",
        "access-control-request-headers": "content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    response = server.post(json={"data": [[1]]}, headers={"origin": "https://app.example.com"})
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "x-request-id" in response.headers["access-control-expose-headers"]
    other = server.post(json={"data": [[1]]}, headers={"origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers


def test_the_raw_request_reads_as_flasks_does() -> None:
    """What entry scripts written for Azure ML call on it: args, form, files, JSON, headers, url."""
    boundary = b"b0undary"
    form = (b"--b0undary\r\ncontent-disposition: form-data; name=\"label\"\r\n\r\ncat\r\n"
            b"--b0undary\r\ncontent-disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
            b"content-type: image/png\r\n\r\n\x89PNG\r\n--b0undary--\r\n")
    scope = {"method": "POST", "path": "/score", "query_string": b"n=3&id=a&id=b&bad=x", "server": ("127.0.0.1", 5001),
             "headers": [(b"content-type", b"multipart/form-data; boundary=" + boundary), (b"x-tenant", b"contoso")]}
    request = amlcompat.AMLRequest.of(scope, form)
    assert request.args.get("n", default=0, type=int) == 3 and request.args.get("bad", default=0, type=int) == 0
    assert request.args.get("id") == "a" and request.args.getlist("id") == ["a", "b"]
    assert request.args.to_dict() == {"n": "3", "id": "a", "bad": "x"}
    assert request.form["label"] == "cat" and request.files["image"].read() == b"\x89PNG"
    assert request.headers["X-Tenant"] == request.headers["x-tenant"] == "contoso"
    assert request.url == "http://127.0.0.1:5001/score?n=3&id=a&id=b&bad=x" and not request.is_json
    broken = amlcompat.AMLRequest.of({**scope, "headers": [(b"content-type", b"application/json")]}, b"\xff{not json")
    assert broken.get_data(as_text=True) == "\ufffd{not json" and broken.get_json(silent=True) is None
    with pytest.raises(werkzeug.exceptions.BadRequest):
        broken.get_json()


def test_request_headers_are_a_dict_in_werkzeugs_case_whose_lookups_ignore_case() -> None:
    headers = amlcompat.Headers([(b"x-tenant", b"contoso"), (b"content-type", b"application/json")])
    assert dict(headers) == {"X-Tenant": "contoso", "Content-Type": "application/json"}  # as dict(request.headers)
    assert headers.get("x-TENANT") == headers["X-Tenant"] == "contoso" and "x-tenant" in headers
    assert headers.pop("x-tenant") == "contoso" and "X-Tenant" not in headers
    # A repeated header: its values joined, as in the WSGI environ Azure ML's Flask reads.
    assert amlcompat.Headers([(b"x-tag", b"a"), (b"X-Tag", b"b")]) == {"X-Tag": "a,b"}


def test_a_raw_body_the_script_reads_as_json_that_is_not_json_is_400(start_scorer: StartScorer) -> None:
    server = start_scorer("raw_request.py")
    response = server.post(content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "BadRequest"


def test_the_edges_of_a_plain_script(start_scorer: StartScorer) -> None:
    server = start_scorer("edges.py")
    # Keys that are not strings, written as json.dumps writes them.
    assert server.post(json={"labels": True}).json() == {"0": "setosa", "1": "versicolor"}
    # An int over 64 bits, exact, as json.dumps writes it (orjson refuses it).
    assert server.post(json={"big": True}).content == b'{"id":1180591620717411303425}'
    # NaN, as Python's json.dumps writes it, is read as Azure ML's server reads it.
    nan = server.post(content=b'{"data": [[NaN, 1.0], [Infinity, 2.0]]}', headers={"content-type": "application/json"})
    assert nan.status_code == 200 and nan.json() == {"rows": 2}
    # sys.exit() in run(): that request's 500, at once; the worker goes on serving.
    started = time.monotonic()
    exited = server.post(json={"exit": True})
    assert exited.status_code == 500 and exited.json()["error"]["code"] == "ScoringError"
    assert exited.headers["x-ms-run-function-failed"] == "True"
    assert server.post(json={"data": [[1]]}).json() == {"rows": 1}
    assert time.monotonic() - started < 5  # not the 60 s the escaped SystemExit cost


def test_the_edges_of_a_rawhttp_script(start_scorer: StartScorer) -> None:
    server = start_scorer("raw_edges.py")
    assert server.post(json={}).json() == {"0": "a", "1": "b"}
    # The script answers its own preflight (Azure ML hands every method to a raw run()).
    preflight = httpx.options(server.url + "/score")
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert server.post("/score?echo=plain", json={}).headers["x-echo"] == "plain"
    # As Azure ML's: a 5xx of the script's own counts as the script failing; a 4xx does not.
    assert server.post("/score?status=503", json={}).headers["x-ms-run-function-failed"] == "True"
    assert server.post("/score?status=404", json={}).headers["x-ms-run-function-failed"] == "False"
    # Azure ML's AMLResponse takes run_function_failed: a script that passed it failed every request with a TypeError.
    failed = server.post("/score?failed=1", json={})
    assert failed.status_code == 409 and failed.headers["x-ms-run-function-failed"] == "True"
    aborted = server.post("/score?abort=1", json={})  # a 5xx it raised is its failure too, as a 5xx it returned
    assert aborted.status_code == 503 and aborted.headers["x-ms-run-function-failed"] == "True"
    assert aborted.json()["error"]["message"] == "the model is reloading"
    # Its headers are a Flask Response's (Werkzeug's Headers): a name in any case, added, repeated.
    headers = server.post("/score?headers=1", json={})
    assert headers.status_code == 200 and headers.headers["access-control-allow-origin"] == "*"
    assert headers.headers.get_list("content-type") == ["text/plain"] and headers.headers["x-type-was"] == "text/plain"
    assert headers.headers.get_list("vary") == ["Origin", "Accept"]
    # A status in text, as a Flask Response takes it.
    assert server.post("/score?status=201%20CREATED", json={}).status_code == 201
    # Werkzeug's send_file (Flask's is it, in Flask's app context): the file, whole.
    sent = server.post("/score?file=1", json={})
    assert sent.status_code == 200 and sent.headers["content-type"].startswith("text/x-python")
    assert sent.content == (SCRIPTS / "raw_edges.py").read_bytes()
    # A header value with a line break would end the head early: refused, not sent (response splitting).
    with httpx.Client() as client:
        forged = client.post(server.url + "/score?echo=a%0d%0aSet-Cookie:%20s=1%0d%0a%0d%0aHTTP/1.1%20200%20OK", json={})
    assert forged.status_code == 500 and "set-cookie" not in forged.headers
    assert "not a valid HTTP header" in forged.json()["error"]["message"]


def _on_one_connection(port: int, requests: list[tuple[str, str]]) -> list[tuple[int, list[tuple[bytes, bytes]], bytes]]:
    """Each (method, target) in turn on one keep-alive connection, as the router's pool reuses it, each answer
    read with the router's parser (httptools): its status, headers (names lower-cased) and body."""
    answers: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = []

    class Reader:
        headers: list[tuple[bytes, bytes]] = []
        body = b""

        def on_message_begin(self) -> None:
            self.headers, self.body = [], b""

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name.lower(), value))

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            answers.append((parser.get_status_code(), self.headers, self.body))

    parser = httptools.HttpResponseParser(Reader())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for method, target in requests:
            sock.sendall(f"{method} {target} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         f"content-length: 2\r\n\r\n{{}}".encode())
            wanted = len(answers) + 1
            while len(answers) < wanted:
                data = sock.recv(65536)
                assert data, f"the connection closed before the answer to {method} {target}"
                parser.feed_data(data)  # raises on bytes that do not parse as the next answer
    return answers


def test_what_a_rawhttp_script_answers_keeps_the_connection_framed(start_scorer: StartScorer) -> None:
    """The router reuses connections: a body after a 204, a second Content-Length or Transfer-Encoding beside
    it, or a 1xx status would have the next answer on the connection (another client's) read from the middle
    of this one, or fail."""
    server = start_scorer("raw_edges.py")
    no_content, framed, interim, four_digits, text, healthy = _on_one_connection(server.port, [
        ("POST", "/score?status=204"), ("POST", "/score?framed=1"), ("POST", "/score?status=101"),
        ("POST", "/score?status=1000"), ("POST", "/score?status=ok"), ("GET", "/")])
    assert no_content[0] == 204 and no_content[2] == b"" and b"content-length" not in dict(no_content[1])
    names = [name for name, _ in framed[1]]
    assert framed[0] == 200 and framed[2] == b"framed" and b"transfer-encoding" not in names
    assert names.count(b"content-length") == names.count(b"x-request-id") == 1 and dict(framed[1])[b"x-request-id"] != b"mine"
    for refused in interim, four_digits, text:
        assert refused[0] == 500 and dict(refused[1])[b"x-ms-run-function-failed"] == b"True"
        assert "not a final HTTP status" in json.loads(refused[2])["error"]["message"]
    assert healthy[0] == 200 and healthy[2] == b"Healthy"


def test_the_standard_streams_work_as_libraries_use_them(start_scorer: StartScorer) -> None:
    """print becomes a log record; what libraries ask of a real stream (its fd, buffer, encoding) works."""
    server = start_scorer("stdio.py")
    response = server.post(json={})
    assert response.status_code == 200 and response.json() == {"encoding": "utf-8"}
    assert any(line.get("message") == "printed by run()" and line.get("logger") == "entry_script"
               for line in server.logs())



def test_a_script_that_puts_a_handler_on_sys_stderr_at_the_root_logger_serves(start_scorer: StartScorer) -> None:
    """logging.basicConfig(force=True) puts a handler on the stand-in for sys.stderr at the root, where each printed
    line is logged: every line it wrote was logged again, without end, and the worker died of a RecursionError in
    init(), again at each restart, never ready."""
    server = start_scorer("logging_forced.py")
    assert server.post(json={}).json() == {"ok": True}
    wait_until(lambda: "printed by run()" in server.log_path.read_text(), 10, "the print in the log")
    log = server.log_path.read_text()
    assert "model loaded" in log and "scoring" in log and "RecursionError" not in log


def test_an_aml_response_of_an_int_over_64_bits_is_exact() -> None:
    assert amlcompat.AMLResponse({"id": 2**70}, 200, json_str=True).body == b'{"id": 1180591620717411303424}'


def test_an_aml_response_of_none_is_an_empty_json_object() -> None:
    response = amlcompat.AMLResponse(None, 202)
    assert (response.body, response.headers["Content-Type"], response.status_code) == (b"{}", "application/json", 202)


def test_an_aml_responses_headers_are_a_flask_responses() -> None:
    """Werkzeug's Headers, as a Flask Response's: names in any case, repeated; a Content-Type the script gave in
    lower case was sent beside the JSON one, two of them."""
    response = amlcompat.AMLResponse({"a": 1}, 200, {"content-type": "application/vnd.api+json"}, json_str=True)
    assert response.header_items() == [("content-type", "application/vnd.api+json")]
    assert response.headers["Content-Type"] == "application/vnd.api+json"
    response.headers.add("Set-Cookie", "a=1")
    response.headers.add("set-cookie", "b=2")
    assert response.headers.getlist("Set-Cookie") == ["a=1", "b=2"] and len(response.header_items()) == 3
    assert amlcompat.AMLResponse("x", 200).header_items() == [("Content-Type", "text/html; charset=utf-8")]


def test_an_aml_response_body_is_sent_as_flask_sends_it() -> None:
    """Azure ML's AMLResponse is a Flask Response: a bytearray is its bytes, and an iterable of text or bytes
    (a generator a script streams its answer from) is the parts joined; the repr of the object was sent."""
    def parts():  # type: ignore[no-untyped-def]
        yield "a"
        yield b"b"

    assert amlcompat.AMLResponse(bytearray(b"ba"), 200).body == b"ba"
    assert amlcompat.AMLResponse(parts(), 200).body == b"ab"
    assert amlcompat.AMLResponse([b"x", "\u00e9"], 200).body == "x\u00e9".encode()
    assert amlcompat.AMLResponse("text", 200).body == b"text"
    assert amlcompat.AMLResponse(3, 200).body == b"3"  # not iterable: as before, its text
    with pytest.raises(TypeError, match="not int"):  # not five zero bytes
        amlcompat.AMLResponse([5], 200)


def test_a_flask_response_from_run_is_sent_as_it_is() -> None:
    """Azure ML's server sends any Flask Response run() returns (AMLResponse is one): a script returning
    flask.Response (or Werkzeug's, which Flask's is) got a 500 'not JSON-serializable'."""
    import werkzeug.wrappers

    from scoring_image.app import _Call
    from scoring_image.entry_script import EntryScript

    def run(data):  # type: ignore[no-untyped-def]
        response = werkzeug.wrappers.Response(["made ", "here"], status=201, headers={"X-Own": "1"})
        response.headers.add("Set-Cookie", "a=1")
        response.headers.add("Set-Cookie", "b=2")
        return response

    script = EntryScript(Path("score.py"), None, run, "raw", "data", False, frozenset(), {}, ())
    result = _Call(script, "{}", None)()
    assert (result.status, result.body, result.run_failed) == (201, b"made here", False)
    assert (b"x-own", b"1") in result.headers and [v for k, v in result.headers if k == b"set-cookie"] == [b"a=1", b"b=2"]
    assert dict(result.headers)[b"content-type"] == b"text/plain; charset=utf-8"
    assert b"content-length" not in dict(result.headers)  # the server's own, added once


def test_a_response_header_outside_latin_1_is_named_not_run_raising() -> None:
    """HTTP/1.1 sends header values in Latin-1: a value beyond it cannot be sent, which is the header's fault,
    not a UnicodeEncodeError that run() raised (what the answer and the log said)."""
    from scoring_image.app import HttpError, _Call
    from scoring_image.entry_script import EntryScript

    def run(data):  # type: ignore[no-untyped-def]
        return amlcompat.AMLResponse("ok", 200, {"X-Name": "Jos\u00e9 \u20ac"})

    script = EntryScript(Path("score.py"), None, run, "raw", "data", False, frozenset(), {}, ())
    with pytest.raises(HttpError, match="not a valid HTTP header: 'X-Name'") as refused:
        _Call(script, "{}", None)()
    assert refused.value.status == 500 and refused.value.run_failed and "Latin-1" in refused.value.message


def test_a_run_returning_none_answers_an_empty_json_object() -> None:
    """Azure ML's server wraps run()'s value in AMLResponse(value, json_str=True), which answers None as {}: a
    run() that returns nothing answered null here, which a client reading the answer as an object fails on."""
    from scoring_image.app import _Call
    from scoring_image.entry_script import EntryScript

    def run(data):  # type: ignore[no-untyped-def]
        return None

    script = EntryScript(Path("score.py"), None, run, "raw", "data", False, frozenset(), {}, ())
    result = _Call(script, "{}", None)()
    assert (result.status, result.body, dict(result.headers)[b"content-type"]) == (200, b"{}", b"application/json")


def test_an_aml_response_of_text_is_html_as_from_flask() -> None:
    """Azure ML's AMLResponse is a Flask Response, whose default mimetype is text/html: a body it is given
    without a Content-Type goes as text/html; charset=utf-8 (JSON only with json_str)."""
    from scoring_image.app import _Call
    from scoring_image.entry_script import EntryScript

    def run(data):  # type: ignore[no-untyped-def]
        return amlcompat.AMLResponse(data, 200)

    script = EntryScript(Path("score.py"), None, run, "raw", "data", False, frozenset(), {}, ())
    result = _Call(script, "/score?a=1", None)()
    assert dict(result.headers)[b"content-type"] == b"text/html; charset=utf-8"
    own = amlcompat.AMLResponse("x", 200, {"Content-Type": "image/png"})
    assert own.headers["Content-Type"] == "image/png"
