"""Real Azure ML v1 entry scripts (tests/scorer/scripts/azureml_corpus, each naming its source), live on
loopback, each sent the request its notebook or page sends and held to what Azure ML's server answers.

Azure ML's answers, from azureml-inference-server-http: a value run() returns is sent as
AMLResponse(value, 200, json_str=True) (JSON, application/json); an AMLResponse of run()'s own is sent as it
is, Flask's text/html; charset=utf-8 where it names no Content-Type and is not json_str; a 5xx of run()'s
own is marked x-ms-run-function-failed: True; a @rawhttp run() gets every method it is sent, OPTIONS too.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from scorer_helpers import SCRIPTS, Scorer, StartScorer, wait_until

CORPUS = SCRIPTS / "azureml_corpus"
ROWS = [[0.0199132141783263, 0.0506801187398187, 0.104808689473925, 0.0700725447072635, -0.0359677812752396,
         -0.0266789028311707, -0.0249926566315915, -0.00259226199818282, 0.00371173823343597, 0.0403433716478807],
        [-0.0127796318808497, -0.044641636506989, 0.0606183944448076, 0.0528581912385822, 0.0479653430750293,
         0.0293746718291555, -0.0176293810234174, 0.0343088588777263, 0.0702112981933102, 0.00720651632920303]]
REGRESSION = "sklearn_regression_model.pkl"


def _save(model: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The scripts' models, tiny, in Azure ML's layouts: AZUREML_MODEL_DIR per deployment."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, 10))
    root = tmp_path_factory.mktemp("azureml-models")
    # One model registered as the file sklearn_regression_model.pkl, under a name of the same.
    _save(Ridge(alpha=0.1).fit(x, x @ np.arange(1, 11) + 150), root / "single" / REGRESSION / "1" / REGRESSION)
    # deploy-multi-model: two models, the second in two versions (the latest is the one found).
    _save(Ridge().fit(x, x[:, 0] * 100), root / "multi" / "my_first_model" / "1" / "first_model.pkl")
    _save(Ridge().fit(x, x[:, 1] * -50), root / "multi" / "my_second_model" / "1" / "second_model.pkl")
    _save(Ridge().fit(x, x[:, 1] * 50), root / "multi" / "my_second_model" / "2" / "second_model.pkl")
    # The capstone's AutoML model, a classifier of four features.
    iris = rng.normal(size=(40, 4))
    _save(LogisticRegression().fit(iris, iris[:, 0] > 0), root / "capstone" / "automl_best_model" / "3" / "model.pkl")
    return {"single": root / "single" / REGRESSION / "1", "multi": root / "multi",
            "capstone": root / "capstone" / "automl_best_model" / "3"}


def _predict(models: dict[str, Path], rows: list[list[float]]) -> list[float]:
    return joblib.load(models["single"] / REGRESSION).predict(np.array(rows)).tolist()


def _start(scorer: StartScorer, script: str, model_dir: Path | None = None) -> Scorer:
    return scorer(CORPUS / script, env={"AZUREML_MODEL_DIR": str(model_dir)} if model_dir else {})


def _json_answer(response) -> object:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-ms-run-function-failed"] == "False"
    return response.json()


def test_deploy_to_cloud_numpy_schema(module_scorer: StartScorer, models: dict[str, Path]) -> None:
    server = _start(module_scorer, "cloud_numpy_schema.py", models["single"])
    assert _json_answer(server.post(json={"data": ROWS})) == pytest.approx(_predict(models, ROWS))
    swagger = server.get("/swagger.json").json()
    assert swagger["definitions"]["ServiceInput"]["properties"]["data"]["type"] == "array"
    assert swagger["definitions"]["ServiceOutput"]["type"] == "array"
    # A row of the wrong width fails the decorator's shape check before run(): Azure ML answers that 500
    # (the decorator raises inside run()); this scorer answers 400, the client's fault (entry_script.py).
    narrow = server.post(json={"data": [[1.0, 2.0, 3.0]]})
    assert narrow.status_code == 400 and "dimension #1" in narrow.json()["error"]["message"]


def test_deploy_to_local_int_sample_converts_the_floats_sent(module_scorer: StartScorer, models: dict[str, Path]) -> None:
    server = _start(module_scorer, "local_numpy_getenv.py", models["single"])
    # The int64 sample's dtype: each value sent is made an int before the model sees it, as in Azure ML.
    assert _json_answer(server.post(json={"data": ROWS})) == pytest.approx(_predict(models, [[0] * 10, [0] * 10]))
    assert _json_answer(server.post(json={"data": [[10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]})) == pytest.approx(
        _predict(models, [[10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]))


def test_multi_model_get_model_path(module_scorer: StartScorer, models: dict[str, Path]) -> None:
    server = _start(module_scorer, "multi_model_get_model_path.py", models["multi"])
    answer = _json_answer(server.post(content=json.dumps({"data": ROWS}), headers={"content-type": "application/json"}))
    first = joblib.load(models["multi"] / "my_first_model" / "1" / "first_model.pkl").predict(np.array(ROWS))
    second = joblib.load(models["multi"] / "my_second_model" / "2" / "second_model.pkl").predict(np.array(ROWS))
    assert answer == {"prediction1": pytest.approx(first.tolist()), "prediction2": pytest.approx(second.tolist())}
    # Its own except: the exception's text, sent as a JSON string with a 200.
    assert _json_answer(server.post(json={"rows": ROWS})) == "'data'"


def test_mlopspython_get_model_path_and_request_headers(module_scorer: StartScorer, models: dict[str, Path]) -> None:
    """AZUREML_MODEL_DIR relative to the app root, the working directory, as Azure ML (and a cluster here) sets it."""
    app = models["single"].parents[2] / "app"
    app.mkdir(exist_ok=True)
    if not (app / "azureml-models").exists():
        (app / "azureml-models").symlink_to(models["single"].parents[1])
    server = module_scorer(CORPUS / "mlopspython_headers.py", env={"AZUREML_MODEL_DIR": f"azureml-models/{REGRESSION}/1"},
                           cwd=app)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    rows = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]  # its own test row
    answer = _json_answer(server.post(json={"data": rows}, headers={"X-Ms-Request-Id": "req-7", "traceparent": traceparent}))
    assert answer == {"result": pytest.approx(_predict(models, rows))}
    printed = f'{{"RequestId":"req-7", "TraceParent":"{traceparent}", "NumberOfPredictions":2}}'
    assert any(line.get("message") == printed for line in server.logs())


def test_mlopspython_constant_string(module_scorer: StartScorer) -> None:
    server = _start(module_scorer, "mlopspython_constant.py")
    response = server.post(json={"data": ROWS})
    assert _json_answer(response) == "New Model A" and response.content == b'"New Model A"'


def test_examples_logging_in_init_and_run(module_scorer: StartScorer, models: dict[str, Path]) -> None:
    server = _start(module_scorer, "examples_logging.py", models["single"])
    assert _json_answer(server.post(json={"data": ROWS})) == pytest.approx(_predict(models, ROWS))


def test_capstone_get_model_path_one_record(module_scorer: StartScorer, models: dict[str, Path]) -> None:
    server = _start(module_scorer, "capstone_get_model_path.py", models["capstone"])
    model = joblib.load(models["capstone"] / "model.pkl")
    record = [0.5, -1.0, 0.25, 2.0]
    assert _json_answer(server.post(json=record)) == model.predict([record]).tolist()
    # A record the model cannot take: run() returns sklearn's message, a 200 as in Azure ML.
    error = _json_answer(server.post(json={"age": 3}))
    assert isinstance(error, str) and error


def test_docs_rawhttp_binary(module_scorer: StartScorer) -> None:
    server = _start(module_scorer, "docs_rawhttp_binary.py")
    got = server.get("/score?name=photo.jpg")
    assert (got.status_code, got.content) == (200, b"/score?name=photo.jpg")
    assert got.headers["content-type"] == "text/html; charset=utf-8"
    image = bytes(range(256)) * 4
    posted = server.post(content=image, headers={"content-type": "application/octet-stream"})
    assert (posted.status_code, posted.content) == (200, image)
    assert posted.headers["content-type"] == "text/html; charset=utf-8"
    assert posted.headers["x-ms-run-function-failed"] == "False"


def test_docs_rawhttp_cors(module_scorer: StartScorer) -> None:
    server = _start(module_scorer, "docs_rawhttp_cors.py")
    posted = server.post(content=b'{"a": 1}', headers={"content-type": "application/json", "origin": "http://www.example.com"})
    assert (posted.status_code, posted.content) == (200, b'{"a": 1}')
    assert posted.headers["access-control-allow-origin"] == "http://www.example.com"
    # A browser's preflight reaches run(), which answers it with its 500: as in Azure ML, marked as run() failing.

    preflight = httpx.request("OPTIONS", server.url + "/score", timeout=30,
                              headers={"origin": "http://www.example.com", "access-control-request-method": "POST"})
    assert (preflight.status_code, preflight.content) == (500, b"bad request")
    assert preflight.headers["x-ms-run-function-failed"] == "True"


def test_docs_global_parameters(module_scorer: StartScorer, models: dict[str, Path]) -> None:
    server = _start(module_scorer, "docs_global_parameters.py", models["single"])
    answer = _json_answer(server.post(json={"Inputs": {"input1": ROWS, "input3": 0.0}, "GlobalParameters": 2.0}))
    assert answer == {"Results": pytest.approx([2 * p for p in _predict(models, ROWS)])}
    swagger = server.get("/swagger.json").json()
    assert set(swagger["definitions"]["ServiceInput"]["properties"]) == {"Inputs", "GlobalParameters"}
    # GlobalParameters has no default in run(): a request without it is refused before run().
    missing = server.post(json={"Inputs": {"input1": ROWS, "input3": 0.0}})
    assert missing.status_code == 400 and "GlobalParameters" in missing.json()["error"]["message"]


def test_inference_server_echo_headers(module_scorer: StartScorer) -> None:
    server = _start(module_scorer, "infsrv_echo_headers.py")
    response = server.post(content=b'{"x": 1}', headers={"content-type": "application/json", "X-Tenant": "contoso"})
    answer = _json_answer(response)
    assert answer["received_body"] == '{"x": 1}'
    assert answer["received_headers"]["X-Tenant"] == "contoso"  # Werkzeug's names, as Flask's request has them
    assert answer["received_headers"]["Content-Type"] == "application/json"
    assert response.headers["pid"] == str(answer["pid"]) and float(response.headers["x-ms-run-function-duration"]) >= 0
    failed = server.post(content=b"{}", headers={"content-type": "application/json", "Fail-With": "boom"})
    assert (failed.status_code, failed.json()) == (500, {"error": "boom"})
    assert failed.headers["content-type"] == "application/json" and failed.headers["x-ms-run-function-failed"] == "True"


def test_inference_server_binary(module_scorer: StartScorer) -> None:
    server = _start(module_scorer, "infsrv_binary.py")
    response = server.post(json={})
    assert (response.status_code, response.content) == (200, b"xd8\xe1\xb7\xeb\xa8\xe5")
    assert response.headers["content-type"] == "text/html; charset=utf-8"


def test_inference_server_echo_headers_answer_is_collected_as_json(start_scorer: StartScorer, tmp_path: Path) -> None:
    """An AMLResponse(json_str=True) with headers of its own, as this script answers: its Content-Type came after
    them, and the prediction was collected as a string of JSON text instead of the JSON itself."""
    out = tmp_path / "collected"
    server = start_scorer(CORPUS / "infsrv_echo_headers.py", env={
        "AZUREML_DATA_COLLECTION_ENABLED": "true", "AZUREML_DATA_COLLECTION_SPOOL_DIR": str(tmp_path / "spool"),
        "AZUREML_DATA_COLLECTION_SERVICE": "echo", "AZUREML_DATA_COLLECTION_MODELS": "echo:1",
        "AZUREML_DATA_COLLECTION_BATCH_SECONDS": "0.3", "AZUREML_DATA_COLLECTION_LOCAL_DIR": str(out)})
    answer = _json_answer(server.post(content=b'{"x": 1}', headers={"content-type": "application/json"}))

    def predictions() -> list[dict[str, object]]:
        return [json.loads(line) for blob in (out / "modeldata").rglob("*.jsonl") if "/predictions/" in blob.as_posix()
                for line in blob.read_bytes().splitlines()] if out.exists() else []

    wait_until(lambda: len(predictions()) == 1, 15, "the collected prediction")
    assert predictions()[0]["data"] == answer


def test_docs_troubleshoot_json_dumps_is_sent_as_a_json_string(module_scorer: StartScorer, models: dict[str, Path]) -> None:
    """run() returning json.dumps(...): Azure ML encodes that string once more, so clients json.loads twice."""
    server = _start(module_scorer, "docs_troubleshoot_json_dumps.py", models["single"])
    answer = _json_answer(server.post(json={"data": ROWS}))
    assert isinstance(answer, str) and json.loads(answer) == {"result": pytest.approx(_predict(models, ROWS))}
    error = _json_answer(server.post(json={"rows": ROWS}))
    assert json.loads(error) == {"error": "'data'"}


def test_docs_global_parameters_with_a_pandas_input(module_scorer: StartScorer, models: dict[str, Path]) -> None:
    """Runs where pandas is installed (an image whose environment adds it): the scorer's own has none."""
    pytest.importorskip("pandas")
    server = _start(module_scorer, "docs_global_parameters_pandas.py", models["single"])
    people = [{"name": "Ana", "age": 41}, {"name": "Bo", "age": 29}]
    answer = _json_answer(server.post(json={"Inputs": {"input1": ROWS, "input2": people, "input3": 0.0},
                                            "GlobalParameters": 1.0}))
    assert answer == {"Results": pytest.approx(_predict(models, ROWS)), "oldest": "Ana"}
    # A column of the wrong type does not fit the DataFrame sample: refused before run() (Azure ML: a 500).
    wrong = server.post(json={"Inputs": {"input1": ROWS, "input2": [{"name": "Ana", "age": "old"}], "input3": 0.0},
                              "GlobalParameters": 1.0})
    assert wrong.status_code == 400 and "Inputs" in wrong.json()["error"]["message"]
