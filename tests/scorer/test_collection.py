"""Model data collection: spooled before the answer, shipped in Azure ML's folder layout (a JSON Lines
blob per segment), exactly once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import csv
import io
import json
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from azure.storage.blob import ContainerClient

from scoring_image import metrics
from scoring_image.app import ScoringApp
from scoring_image.collection.batches import PART_BYTES, UPLOADS_AT_ONCE
from scoring_image.collection.destinations import BlobContainer, LocalFolder
from scoring_image.collection.shipper import Shipper
from scoring_image.collection.spool import FULL, SEALED, Spool, Usage
from scoring_image.config import ScorerSettings
from scoring_image.pids import writer_id
from scoring_image.readiness import Board
from scoring_image.runner import Runner
from scorer_helpers import ROOT, SCRIPTS, StartScorer, free_port, wait_until

MODELS = "sklearn-iris:1,sklearn-iris-b:2"


def collection_env(spool: Path, **destination: str) -> dict[str, str]:
    return {
        "AZUREML_DATA_COLLECTION_ENABLED": "true",
        "AZUREML_DATA_COLLECTION_SPOOL_DIR": str(spool),
        "AZUREML_DATA_COLLECTION_SERVICE": "iris-svc",
        "AZUREML_DATA_COLLECTION_MODELS": MODELS,
        "AZUREML_DATA_COLLECTION_BATCH_SECONDS": "0.3",
        **destination,
    }


def records(blobs: dict[str, bytes], kind: str, model: str = "sklearn-iris/1") -> list[dict[str, object]]:
    prefix = f"default/default/default/iris-svc/{model}/{kind}/"
    return [json.loads(line) for name, data in blobs.items() if name.startswith(prefix)
            for line in data.splitlines()]


def folder_blobs(root: Path) -> dict[str, bytes]:
    base = root / "modeldata"
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*.jsonl")} if base.exists() else {}


def container_blobs(connection_string: str) -> dict[str, bytes]:
    container = ContainerClient.from_connection_string(connection_string, "modeldata")
    if not container.exists():
        return {}
    return {b.name: container.download_blob(b.name).readall() for b in container.list_blobs()}


def test_records_land_in_a_local_folder_in_azure_ml_layout(start_scorer: StartScorer, tmp_path: Path) -> None:
    out = tmp_path / "collected"
    server = start_scorer("sum_rows.py", env=collection_env(tmp_path / "spool", AZUREML_DATA_COLLECTION_LOCAL_DIR=str(out)))
    ids = [server.post(json={"data": [[i, 1]]}).headers["x-request-id"] for i in range(5)]
    server.post(content=b"{bad", headers={"content-type": "application/json"})  # a 400 is not collected

    wait_until(lambda: len(records(folder_blobs(out), "predictions")) == 5, 15, "5 collected predictions")
    blobs = folder_blobs(out)
    day = time.strftime("%Y/%m/%d", time.gmtime())
    assert all(name.split("/")[7:10] == day.split("/") for name in blobs)
    inputs = {r["request_id"]: r for r in records(blobs, "inputs")}
    predictions = {r["request_id"]: r for r in records(blobs, "predictions")}
    assert set(inputs) == set(predictions) == set(ids)
    first = ids[0]
    assert inputs[first]["data"] == {"data": [[0, 1]]}
    assert predictions[first]["data"]["sums"] == [1]
    assert inputs[first]["id"] == predictions[first]["id"]
    assert {r["request_id"] for r in records(blobs, "inputs", "sklearn-iris-b/2")} == set(ids)


def test_records_land_in_blob_storage(start_scorer: StartScorer, tmp_path: Path, azurite: str) -> None:
    server = start_scorer("sum_rows.py", env=collection_env(
        tmp_path / "spool", AZUREML_DATA_COLLECTION_CONNECTION_STRING=azurite))
    ids = {server.post(json={"data": [[2, 2]]}).headers["x-request-id"] for _ in range(3)}
    wait_until(lambda: {r["request_id"] for r in records(container_blobs(azurite), "inputs")} >= ids, 20,
               "records in Azurite")
    blobs = container_blobs(azurite)
    mine = [r for r in records(blobs, "predictions") if r["request_id"] in ids]
    assert [r["data"]["sums"] for r in mine] == [[4]] * 3


@pytest.fixture
def clean_container(azurite: str) -> str:
    """Azurite with no `modeldata` container: what a test finds there, it put there."""
    container = ContainerClient.from_connection_string(azurite, "modeldata")
    if container.exists():
        container.delete_container()
    return azurite


def test_kill_9_loses_no_acknowledged_record(start_scorer: StartScorer, tmp_path: Path, clean_container: str) -> None:
    spool = tmp_path / "spool"
    env = collection_env(spool, AZUREML_DATA_COLLECTION_CONNECTION_STRING=clean_container)
    # Nothing ships before the kill: every record still sits in the spool, most in open segments.
    server = start_scorer("sum_rows.py", workers=2, env={**env, "AZUREML_DATA_COLLECTION_BATCH_SECONDS": "600"})
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: server.post(json={"data": [[i]]}), range(60)))
    acknowledged = {r.headers["x-request-id"] for r in responses if r.status_code == 200}
    assert len(acknowledged) == 60
    server.kill9()
    assert list(spool.glob("*.open")), "the records were spooled in open segments"
    assert container_blobs(clean_container) == {}

    restarted = start_scorer("sum_rows.py", workers=2, env=env)
    wait_until(lambda: not list(spool.iterdir()), 30, "the spool to drain after the restart")
    blobs = container_blobs(clean_container)
    for kind in ("inputs", "predictions"):
        for model in ("sklearn-iris/1", "sklearn-iris-b/2"):
            ids = [r["request_id"] for r in records(blobs, kind, model)]
            assert sorted(ids) == sorted(acknowledged), f"{kind} of {model}: each record exactly once"
    restarted.stop()


def test_resending_a_segment_does_not_duplicate_records(tmp_path: Path, clean_container: str) -> None:
    """A crash between upload and delete resends the segment: the same names, overwritten."""
    spool_dir = tmp_path / "spool"
    settings = ScorerSettings(
        data_collection_enabled=True, data_collection_spool_dir=str(spool_dir),
        data_collection_service="iris-svc", data_collection_models=MODELS.split(","),
        data_collection_connection_string=clean_container,
    )
    spool = Spool(spool_dir)
    for i in range(10):
        spool.append(f"req-{i}", orjson.Fragment(b'{"data":[[1]]}'), {"sums": [i]})
    spool.seal()
    segment = next(spool_dir.glob("*.jsonl"))
    kept = tmp_path / "kept"
    shutil.copy(segment, kept)
    shipper = Shipper(settings, BlobContainer(settings))
    assert shipper.ship_once() == 1
    shutil.copy(kept, segment)  # as if the delete never happened
    assert shipper.ship_once() == 1
    blobs = container_blobs(clean_container)
    ids = sorted(r["request_id"] for r in records(blobs, "predictions"))
    assert ids == sorted(f"req-{i}" for i in range(10))


def local_settings(tmp_path: Path) -> ScorerSettings:
    """Collection of model m:1 through tmp_path/spool into the local folder tmp_path/out."""
    return ScorerSettings(
        data_collection_enabled=True, data_collection_spool_dir=str(tmp_path / "spool"),
        data_collection_models=["m:1"], data_collection_local_dir=str(tmp_path / "out"),
    )


def test_a_failing_destination_keeps_the_segment_for_the_next_pass(tmp_path: Path) -> None:
    class Down:
        def put(self, name: str, data: bytes) -> None:
            raise ConnectionError("storage unreachable")

    settings = local_settings(tmp_path)
    spool = Spool(tmp_path / "spool")
    spool.append("req-1", "raw text", {"ok": True})
    spool.seal()
    with pytest.raises(ConnectionError):
        Shipper(settings, Down()).ship_once()
    assert len(list((tmp_path / "spool").glob("*.jsonl"))) == 1
    assert Shipper(settings, LocalFolder(tmp_path / "out", "modeldata")).ship_once() == 1
    assert records(folder_blobs(tmp_path / "out"), "inputs", "m/1") == []  # service is "default"
    shipped = [p for p in (tmp_path / "out").rglob("*.jsonl")]
    assert len(shipped) == 2 and all("default/m/1/" in p.as_posix() for p in shipped)


def test_a_hanging_store_holds_the_stop_only_for_the_final_upload_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """An unreachable store can hang an upload for minutes: the scorer's stop must not wait for it past
    the time its pod's terminationGracePeriodSeconds leaves for the last upload, and keeps the segment."""
    from scoring_image.collection import shipper as shipper_module

    release = threading.Event()

    class Hanging:
        def put(self, name: str, data: bytes) -> None:
            release.wait(30)
            raise ConnectionError("storage unreachable")

    monkeypatch.setattr(shipper_module, "FINAL_UPLOAD_SECONDS", 0.5)
    shipper = Shipper(local_settings(tmp_path), Hanging())
    shipper.start()
    spool = Spool(tmp_path / "spool")
    spool.append("req-1", "raw text", {"ok": True})
    spool.seal()
    started = time.monotonic()
    try:
        shipper.stop()
        took = time.monotonic() - started
    finally:
        release.set()
    assert 0.4 < took < 2.0
    assert len(list((tmp_path / "spool").glob("*.jsonl"))) == 1
    assert "1 sealed segment(s) stay in the spool" in caplog.text


class Store:
    """A loopback port in front of Azurite that is down (nothing listens), hangs (accepts and reads
    forever, never answering), throttles (answers each request 503 with a Retry-After) or passes through
    to Azurite."""

    def __init__(self, azurite: str) -> None:
        self._azurite = int(azurite.split("127.0.0.1:")[1].split("/")[0])
        self.port = free_port()
        self.connection_string = azurite.replace(f"127.0.0.1:{self._azurite}", f"127.0.0.1:{self.port}")
        self._sockets: list[socket.socket] = []
        self.throttled: list[float] = []  # when each throttled request came (time.monotonic)
        self.throttled_lines: list[bytes] = []  # and its request line (method and path)
        self.throttled_changed = threading.Condition()

    def throttle(self, retry_after_s: int) -> None:
        def busy(client: socket.socket) -> None:
            try:
                with client.makefile("rb") as reader:
                    while True:
                        head = b""
                        while not head.endswith(b"\r\n\r\n"):
                            line = reader.readline()
                            if not line:
                                return
                            head += line
                        length = next((int(h.split(b":")[1]) for h in head.lower().split(b"\r\n")
                                       if h.startswith(b"content-length:")), 0)
                        reader.read(length)
                        with self.throttled_changed:
                            self.throttled.append(time.monotonic())
                            self.throttled_lines.append(head.split(b"\r\n", 1)[0])
                            self.throttled_changed.notify_all()
                        client.sendall(b"HTTP/1.1 503 Server Busy\r\nRetry-After: %d\r\nContent-Length: 0\r\n\r\n"
                                       % retry_after_s)
            except OSError:  # closed by down(), a store coming up or going away
                return

        self._serve(busy)

    def wait_throttled(self, count: int, timeout: float) -> bool:
        with self.throttled_changed:
            return self.throttled_changed.wait_for(lambda: len(self.throttled) >= count, timeout)

    def down(self) -> None:
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on it, which close() alone does not
            except OSError:  # not connected
                pass
            s.close()
        self._sockets.clear()

    def hang(self) -> None:
        self._serve(lambda client: self._pump(client, None))

    def up(self) -> None:
        def forward(client: socket.socket) -> None:
            upstream = socket.create_connection(("127.0.0.1", self._azurite))
            self._sockets.append(upstream)
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
            self._pump(client, upstream)

        self._serve(forward)

    def _serve(self, handle: Callable[[socket.socket], None]) -> None:
        self.down()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._sockets.append(listener)

        def accept() -> None:
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:  # closed by down()
                    return
                self._sockets.append(client)
                threading.Thread(target=handle, args=(client,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket | None) -> None:
        try:
            while data := source.recv(65536):
                if sink is not None:
                    sink.sendall(data)
        except OSError:
            pass
        if sink is not None:
            sink.close()


def store_settings(tmp_path: Path, store: Store, **more: float) -> ScorerSettings:
    """Collection of model sklearn-iris:1 through tmp_path/spool into the blob store behind `store`."""
    return ScorerSettings(
        data_collection_enabled=True, data_collection_spool_dir=str(tmp_path / "spool"),
        data_collection_service="iris-svc", data_collection_models=["sklearn-iris:1"],
        data_collection_connection_string=store.connection_string, **more,
    )


def test_a_store_down_or_never_answering_fails_a_pass_in_seconds_and_the_next_ships_once(
        tmp_path: Path, clean_container: str) -> None:
    """The SDK retried for 87 s against a closed port (and over 150 s against a store that never answers)
    before the shipper, which retries on its next pass anyway, saw the error: the spool filled meanwhile and
    the final upload at shutdown was spent waiting."""
    store = Store(clean_container)
    settings = store_settings(tmp_path, store)
    spool = Spool(tmp_path / "spool")
    for i in range(3):
        spool.append(f"req-{i}", {"data": [[i]]}, {"sums": [i]})
    spool.seal()
    shipper = Shipper(settings, BlobContainer(settings))
    try:
        for fail in (store.down, store.hang):
            fail()
            started = time.monotonic()
            with pytest.raises(Exception):
                shipper.ship_once()
            assert time.monotonic() - started < 15, fail.__name__
            assert len(list((tmp_path / "spool").glob(f"*{SEALED}"))) == 1, fail.__name__
        store.up()
        assert shipper.ship_once() == 1
    finally:
        store.down()
    assert list((tmp_path / "spool").iterdir()) == []
    blobs = container_blobs(clean_container)
    for kind in ("inputs", "predictions"):
        assert sorted(r["request_id"] for r in records(blobs, kind)) == ["req-0", "req-1", "req-2"]


def test_a_throttling_store_is_not_asked_again_before_its_retry_after(tmp_path: Path, clean_container: str) -> None:
    """A store that answers 503 Server Busy with a Retry-After was asked again at the next pass, every
    data_collection_batch_seconds, and by every replica: the throttling went on."""
    store = Store(clean_container)
    settings = store_settings(tmp_path, store, data_collection_batch_seconds=0.05)
    spool = Spool(tmp_path / "spool")
    spool.append("req-0", {"data": [[0]]}, {"sums": [0]})
    spool.seal()
    shipper = Shipper(settings, BlobContainer(settings))
    store.throttle(retry_after_s=2)
    shipper.start()
    try:
        # A pass asks at most twice (the inputs' and the predictions' uploads, each answered 503, the second not
        # started where the first failed before it): the third request is the next pass's.
        assert store.wait_throttled(3, 15), store.throttled
        assert store.throttled[2] - store.throttled[0] >= 1.9, "the next pass came before the store's Retry-After"
        store.up()
        wait_until(lambda: not list((tmp_path / "spool").iterdir()), 15, "the segment shipped once the store takes it")
    finally:
        shipper.stop()
        store.down()
    assert [r["request_id"] for r in records(container_blobs(clean_container), "inputs")] == ["req-0"]


def test_a_throttled_upload_is_not_retried_by_the_sdk_within_a_pass(tmp_path: Path, clean_container: str) -> None:
    """The SDK's own quick retry (after 0-2 s) asked a store that answered 503 with a Retry-After again at once, which the
    shipper's next pass then waits out: one retry policy, the shipper's, which honours it."""
    store = Store(clean_container)
    settings = store_settings(tmp_path, store)
    spool = Spool(tmp_path / "spool")
    spool.append("req-0", {"data": [[0]]}, {"sums": [0]})
    spool.seal()
    store.throttle(retry_after_s=30)
    try:
        with pytest.raises(Exception) as caught:
            Shipper(settings, BlobContainer(settings)).ship_once()
    finally:
        store.down()
    assert caught.value.response.headers["Retry-After"] == "30"  # type: ignore[attr-defined]
    assert store.throttled_lines and len(set(store.throttled_lines)) == len(store.throttled_lines), store.throttled_lines


def test_stop_ships_what_the_stopped_workers_sealed(tmp_path: Path) -> None:
    settings = local_settings(tmp_path).model_copy(update={"data_collection_batch_seconds": 60.0})
    shipper = Shipper(settings, LocalFolder(tmp_path / "out", "modeldata"))
    shipper.start()
    spool = Spool(tmp_path / "spool")
    spool.append("req-1", {"a": 1}, {"ok": 1})
    spool.seal()
    shipper.stop()
    assert len(list((tmp_path / "out").rglob("*.jsonl"))) == 2
    assert list((tmp_path / "spool").glob("*.jsonl")) == []


def test_a_segment_whose_pid_a_new_process_took_is_shipped(tmp_path: Path) -> None:
    """After a container restart the spool (an emptyDir) is still there and pids start over: the dead
    worker's segment must not pass for the new process's that took its pid."""
    settings = local_settings(tmp_path)
    spool = Spool(tmp_path / "spool")
    spool.append("req-1", {"a": 1}, {"ok": 1})  # left open, as a killed worker leaves it
    ours = next((tmp_path / "spool").glob("*.open"))
    assert ours.stem.endswith("-" + writer_id())
    pid, started = writer_id().split("_")
    before_restart = ours.with_name(ours.name.replace(f"-{pid}_{started}", f"-{pid}_{int(started) - 1}"))
    ours.rename(before_restart)
    spool = Spool(tmp_path / "spool")
    spool.append("req-2", {"a": 2}, {"ok": 2})  # this process's own, still open

    assert Shipper(settings, LocalFolder(tmp_path / "out", "modeldata")).ship_once() == 1
    shipped = [json.loads(line) for p in (tmp_path / "out").rglob("*.jsonl") if "/inputs/" in p.as_posix()
               for line in p.read_bytes().splitlines()]
    assert [r["request_id"] for r in shipped] == ["req-1"]
    assert [p.stem.rsplit("-", 1)[1] for p in (tmp_path / "spool").iterdir()] == [writer_id()]


def test_pretty_printed_json_is_collected(start_scorer: StartScorer, tmp_path: Path) -> None:
    """Line breaks in a JSON body or an AMLResponse's JSON answer must not split a spool record."""
    out = tmp_path / "collected"
    env = collection_env(tmp_path / "spool", AZUREML_DATA_COLLECTION_LOCAL_DIR=str(out))
    server = start_scorer("pretty_json.py", env=env)
    sent = {str(i): {"data": [[i, 1]], "note": "a\nb"} for i in range(4)}
    for i, value in sent.items():
        body = json.dumps(value, indent=2 if i != "2" else None)
        if i == "3":  # PowerShell's ConvertTo-Json, a Windows client: CRLF, which line readers also split on
            body = body.replace("\n", "\r\n")
        response = server.post(content=body, headers={"content-type": "application/json", "x-request-id": i})
        assert response.status_code == 200 and b"\n" in response.content

    # Inputs and predictions are shipped apart, and a shipped segment leaves the spool just after: all three awaited.
    wait_until(lambda: all(len(records(folder_blobs(out), kind)) == 4 for kind in ("inputs", "predictions"))
               and not list((tmp_path / "spool").iterdir()), 15, "4 collected inputs and predictions, the spool empty")
    blobs = folder_blobs(out)
    assert not any(b"\r" in data for data in blobs.values())
    assert {r["request_id"]: r["data"] for r in records(blobs, "inputs")} == sent
    assert {r["request_id"]: r["data"] for r in records(blobs, "predictions")} == sent


def test_a_cors_preflight_a_raw_script_answers_is_not_collected(start_scorer: StartScorer, tmp_path: Path) -> None:
    """A browser asks OPTIONS before each cross-origin POST (the router passes preflights on): recorded, the
    preflights stood in the inputs and predictions beside the scoring requests, as empty inputs."""
    out = tmp_path / "collected"
    server = start_scorer("raw_request.py", env=collection_env(tmp_path / "spool", AZUREML_DATA_COLLECTION_LOCAL_DIR=str(out)))
    preflight = httpx.options(server.url + "/score", timeout=30, headers={"origin": "https://app.example", "access-control-request-method": "POST",
                                                   "x-request-id": "preflight"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
    response = server.post(json={"a": 1}, headers={"x-request-id": "post"})
    assert response.status_code == 201
    wait_until(lambda: all(records(folder_blobs(out), kind) for kind in ("inputs", "predictions")), 15,
               "the POST's input and prediction collected")
    blobs = folder_blobs(out)
    assert [r["request_id"] for r in records(blobs, "inputs")] == ["post"]
    assert [r["request_id"] for r in records(blobs, "predictions")] == ["post"]


def test_a_large_body_collected_for_an_undecorated_run_is_not_read_into_objects(start_scorer: StartScorer,
                                                                               tmp_path: Path) -> None:
    """Collected as the text it came as (its line breaks made spaces): read into Python objects, a 40 MB
    body cost the worker ~550 MB more."""
    out = tmp_path / "collected"
    server = start_scorer("peak_memory.py", workers=1,
                          env=collection_env(tmp_path / "spool", AZUREML_DATA_COLLECTION_LOCAL_DIR=str(out)))
    idle = server.post(json={"data": [[1.0]]}, headers={"x-request-id": "idle"}).json()
    body = b'{"data": [\n' + b",\n".join([b"[1.23, 4.56, 7.89, 0.12]"] * 1_600_000) + b"]}"
    big = server.post(content=body, headers={"content-type": "application/json", "x-request-id": "big"}).json()
    assert big["length"] == len(body) and (big["peak_kib"] - idle["peak_kib"]) * 1024 < 4 * len(body)
    wait_until(lambda: {r["request_id"] for r in records(folder_blobs(out), "inputs")} == {"idle", "big"}, 30,
               "both inputs collected")
    (collected,) = [r for r in records(folder_blobs(out), "inputs") if r["request_id"] == "big"]
    assert collected["data"] == json.loads(body)


def test_json_only_pythons_json_reads_is_answered_and_collected(start_scorer: StartScorer, tmp_path: Path) -> None:
    """NaN, ints over 64 bits, nesting past orjson's limit: Azure ML's server reads and writes them. Each is
    answered 200 and its record shipped, never a 500 after run() ran nor a record the shipper must skip."""
    out = tmp_path / "collected"
    server = start_scorer("edges.py", env=collection_env(tmp_path / "spool", AZUREML_DATA_COLLECTION_LOCAL_DIR=str(out)))
    json_header = {"content-type": "application/json"}
    sent = {
        "nan-lines": server.post(content='{"data": [1],\n"x": NaN}', headers={**json_header, "x-request-id": "nan-lines"}),
        "nan": server.post(content='{"data": [1], "x": NaN}', headers={**json_header, "x-request-id": "nan"}),
        "big-answer": server.post(json={"data": [1], "big": True}, headers={"x-request-id": "big-answer"}),
        "deep-query": httpx.get(server.url + "/score", params={"data": "[1]", "deep": "[" * 5000 + "]" * 5000},
                                headers={"x-request-id": "deep-query"}),
        "big-query": httpx.get(server.url + "/score", params={"data": "[1]", "n": str(2**70)},
                               headers={"x-request-id": "big-query"}),
    }
    assert {k: r.status_code for k, r in sent.items()} == dict.fromkeys(sent, 200)
    assert sent["big-answer"].content == b'{"id":%d}' % (2**70 + 1)

    wait_until(lambda: len(records(folder_blobs(out), "predictions")) == len(sent), 15, "every prediction collected")
    inputs = {r["request_id"]: r["data"] for r in records(folder_blobs(out), "inputs")}
    assert inputs["nan-lines"] == '{"data": [1],\n"x": NaN}' and inputs["nan"] == '{"data": [1], "x": NaN}'
    assert inputs["big-query"] == '{"data":[1],"n":%d}' % 2**70 and inputs["deep-query"]["deep"].startswith("[[[")
    assert "skipping unreadable record" not in server.log_path.read_text()


def test_a_json_answer_that_is_not_utf8_is_collected_as_text_and_the_blob_stays_utf8(start_scorer: StartScorer,
                                                                                     tmp_path: Path) -> None:
    """An AMLResponse's JSON answer is spooled as it is once the shipper's decoder reads it, which never looks
    at a string's bytes: Latin-1 bytes in it made the shipped blob, every other record's line with it, not
    UTF-8 (JSON Lines readers refuse the whole blob)."""
    out = tmp_path / "collected"
    server = start_scorer("raw_edges.py", env=collection_env(tmp_path / "spool", AZUREML_DATA_COLLECTION_LOCAL_DIR=str(out)))
    response = server.post("/score?latin1=1", content=b"{}", headers={"x-request-id": "latin1"})
    assert response.status_code == 200 and response.content == b'{"name": "Jos\xe9"}'
    wait_until(lambda: folder_blobs(out), 15, "the record shipped")
    for data in folder_blobs(out).values():
        data.decode()  # raises where the blob is not UTF-8
    (prediction,) = records(folder_blobs(out), "predictions")
    assert prediction["data"] == '{"name": "Jos\ufffd"}'


def test_json_nested_deeper_than_the_shippers_decoder_goes_is_answered_and_collected(start_scorer: StartScorer,
                                                                                   tmp_path: Path) -> None:
    """A schema run()'s body is read by orjson (1024 levels), an AMLResponse's JSON answer was read back into
    objects for the spool: a body past the shipper's decoder (~990 levels) was spooled as JSON the shipper had
    to skip, and an answer past 254 levels, which orjson cannot write, was a 500 after run() had answered.
    Both are collected, as text where the shipper cannot read them as JSON."""
    out = tmp_path / "collected"
    server = start_scorer("deep_json.py", env=collection_env(tmp_path / "spool", AZUREML_DATA_COLLECTION_LOCAL_DIR=str(out)))
    body = b'{"data": ' + b"[" * 1010 + b"]" * 1010 + b"}"
    response = server.post(content=body, headers={"content-type": "application/json", "x-request-id": "deep"})
    assert response.status_code == 200 and response.content.startswith(b"[[[")

    wait_until(lambda: records(folder_blobs(out), "predictions"), 15, "the prediction collected")
    (record,) = records(folder_blobs(out), "inputs")
    assert record["request_id"] == "deep" and record["data"] == body.decode()
    assert "skipping unreadable record" not in server.log_path.read_text()

def test_an_unreadable_record_is_skipped_and_the_rest_shipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = local_settings(tmp_path)
    spool = Spool(tmp_path / "spool")
    spool.append("req-1", {"a": 1}, {"ok": 1})
    spool.seal()
    segment = next((tmp_path / "spool").glob("*.jsonl"))
    good = segment.read_bytes()
    # What a torn or foreign line may look like: JSON that is no record, or no JSON at all.
    segment.write_bytes(b'{\n  "data": [\n1]}\n"text"\n[1, 2]\n{"time": "today"}\n{"time": 1}\n{bad\n' + good)
    later = Spool(tmp_path / "spool")
    later.append("req-2", {"a": 2}, {"ok": 2})
    later.seal()

    shipper = Shipper(settings, LocalFolder(tmp_path / "out", "modeldata"))
    assert shipper.ship_once() == 2
    assert list((tmp_path / "spool").iterdir()) == []
    shipped = [json.loads(line) for p in (tmp_path / "out").rglob("*.jsonl") if "/inputs/" in p.as_posix()
               for line in p.read_bytes().splitlines()]
    assert sorted(r["request_id"] for r in shipped) == ["req-1", "req-2"]
    assert sum("skipping unreadable record" in r.getMessage() for r in caplog.records) == 8



def test_a_record_nested_deeper_than_the_decoder_goes_does_not_stop_shipping(tmp_path: Path) -> None:
    """orjson reads 1024 levels, the shipper's decoder fewer: its RecursionError left the pass, every pass,
    and no later segment was ever shipped (the spool then filled to its budget, and collection stopped)."""
    settings = local_settings(tmp_path)
    deep = Spool(tmp_path / "spool")
    assert deep.append("deep", orjson.Fragment(b"[" * 1024 + b"]" * 1024), "ok")
    deep.seal()
    later = Spool(tmp_path / "spool")
    later.append("later", {"a": 2}, {"ok": 2})
    later.seal()

    assert Shipper(settings, LocalFolder(tmp_path / "out", "modeldata")).ship_once() == 2
    shipped = [json.loads(line)["request_id"] for p in (tmp_path / "out").rglob("*.jsonl") if "/inputs/" in p.as_posix()
               for line in p.read_bytes().splitlines()]
    assert shipped == ["later"]

_SHIP_ONE = """
import re, sys
from pathlib import Path
from scoring_image.collection.destinations import LocalFolder
from scoring_image.collection.shipper import Shipper
from scoring_image.config import ScorerSettings

spool, root = Path(sys.argv[1]), Path(sys.argv[2])
settings = ScorerSettings(data_collection_spool_dir=str(spool), data_collection_service="iris-svc",
                          data_collection_models=["sklearn-iris:1"])
shipper = Shipper(settings, LocalFolder(root, "modeldata"))
def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))

Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from now
before = peak_kib()
shipper.ship_once()
print((peak_kib() - before) * 1024)
"""


def test_a_large_record_is_shipped_as_its_text_not_read_into_objects(tmp_path: Path) -> None:
    """Its data and prediction go on as the spool holds them: read into Python objects, a 20 MB record
    cost the supervisor (which shares the pod's memory) ~300 MB more."""
    spool, root = tmp_path / "spool", tmp_path / "out"
    spool.mkdir()
    body = b'{"data": [' + b",".join([b"[1.23, 4.56, 7.89, 0.12]"] * 850_000) + b"]}"
    line = orjson.dumps({"id": "a" * 32, "request_id": "r-1", "time": 1.7e9, "data": orjson.Fragment(body),
                         "prediction": [0.5] * 10}) + b"\n"
    (spool / f"00000000000000000001-{writer_id()}{SEALED}").write_bytes(line)
    rise = int(subprocess.run([sys.executable, "-c", _SHIP_ONE, str(spool), str(root)], capture_output=True, text=True,
                              check=True).stdout)
    assert rise < 5 * len(body)  # its lines, the line shipped, the batch: ~3x; read into objects, ~15x
    (inputs,) = records(folder_blobs(root), "inputs")
    assert inputs["data"] == json.loads(body) and inputs["request_id"] == "r-1"


def test_a_stray_open_file_in_the_spool_is_left_alone_and_the_rest_shipped(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A file the spool did not write (no writer in its name) used to raise in every pass: nothing shipped."""
    settings = local_settings(tmp_path)
    spool = Spool(tmp_path / "spool")
    spool.append("req-1", {"a": 1}, {"ok": 1})
    spool.seal()
    for stray in ("notes.open", "x-abc.open"):
        (tmp_path / "spool" / stray).write_text("?")
    shipper = Shipper(settings, LocalFolder(tmp_path / "out", "modeldata"))
    assert shipper.ship_once() == 1 and shipper.ship_once() == 0
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["notes.open", "x-abc.open"]
    assert sum("names no writer" in r.getMessage() for r in caplog.records) == 2  # once each, not every pass


def test_a_full_disk_drops_whole_records_and_still_answers(start_scorer: StartScorer, tmp_path: Path) -> None:
    """Files limited to 64 KiB (ulimit -f; Python ignores SIGXFSZ, so writes fail with EFBIG) as a full disk
    would: every prediction is answered, the records that did not fit are counted, and the spool holds
    only whole ones (a torn line would have spoiled the next record too). The records are large, so that
    the spool fills long before the scorer's log, a file here too."""
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/bash\nulimit -f 64\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    spool = tmp_path / "spool"
    env = collection_env(spool, AZUREML_DATA_COLLECTION_LOCAL_DIR=str(tmp_path / "collected"),
                         AZUREML_DATA_COLLECTION_BATCH_SECONDS="3600")  # nothing shipped: the segment keeps growing
    server = start_scorer("sum_rows.py", env=env, python=str(wrapper))
    padding = "x" * 4000
    answers = [server.post(json={"data": [[i, 1]], "note": padding}) for i in range(40)]
    assert all(a.status_code == 200 for a in answers) and answers[-1].json()["sums"] == [40]
    segments = [p for p in spool.rglob("*") if p.is_file() and p.suffix in (".open", ".jsonl")]
    lines = [line for p in segments for line in p.read_bytes().split(b"\n") if line]
    kept = [orjson.loads(line) for line in lines]  # every line a whole record
    assert 0 < len(kept) < 40
    wait_until(lambda: f"scorer_collection_dropped_records_total {40 - len(kept)}.0" in server.get("/metrics").text,
               10, "the dropped records counted")
    assert any("could not be spooled" in str(line.get("message")) for line in server.logs())


def test_the_spool_stops_at_its_budget_while_shipping_fails_and_collects_again_after(start_scorer: StartScorer,
                                                                                       tmp_path: Path) -> None:
    """Storage unreachable (here a file where the destination folder should be): segments piled up without
    bound, on a node's disk in a pod, until the kubelet evicted pods. At the budget, new records are left out
    and counted, predictions still answered; once shipping works again, records are collected again."""
    spool, out = tmp_path / "spool", tmp_path / "collected"
    out.write_text("not a folder")
    env = collection_env(spool, AZUREML_DATA_COLLECTION_LOCAL_DIR=str(out), AZUREML_DATA_COLLECTION_SPOOL_MAX_MB="0.03")
    server = start_scorer("sum_rows.py", env=env)
    padding = "x" * 4000

    def send(count: int) -> list[str]:
        answers = [server.post(json={"data": [[1, 1]], "note": padding}) for _ in range(count)]
        assert all(a.status_code == 200 for a in answers)
        return [a.headers["x-request-id"] for a in answers]

    def held() -> int:
        return sum(p.stat().st_size for p in spool.iterdir() if p.suffix in (".open", ".jsonl"))

    send(10)  # ~80 KiB: past the 30 KiB budget
    wait_until(lambda: (spool / "full").exists(), 10, "the spool marked full")
    time.sleep(1.5)  # every worker has looked
    before = held()
    send(20)
    assert held() == before

    def dropped() -> float:
        line = next(x for x in server.get("/metrics").text.splitlines() if x.startswith("scorer_collection_dropped_records_total"))
        return float(line.split()[1])

    wait_until(lambda: dropped() >= 20, 10, "the records left out counted")
    out.unlink()  # storage is back
    wait_until(lambda: not (spool / "full").exists(), 15, "the spool under its budget again")
    time.sleep(1.5)
    later = send(3)
    wait_until(lambda: set(later) <= {r["request_id"] for r in records(folder_blobs(out), "predictions")}, 15,
               "the records sent after recovery collected")


def test_the_budget_counts_what_segments_take_on_the_disk_not_their_length(tmp_path: Path) -> None:
    """A quiet service seals a segment of a record or two every few seconds, each taking a whole block (4 KiB on
    ext4, the node's disk an emptyDir is on, as the kubelet counts it) for a few hundred bytes: counted by length,
    a store down for days let the spool take several times its budget of the node's disk."""
    class Down:
        def put(self, name: str, data: bytes) -> None:
            raise ConnectionError("storage unreachable")

    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    for i in range(100):
        spool.append(f"req-{i}", {"a": i}, {"ok": i})
        spool.seal()
    segments = [p.stat() for p in spool_dir.iterdir()]
    length, taken = sum(s.st_size for s in segments), sum(s.st_blocks * 512 for s in segments)
    if taken < 4 * length:
        pytest.skip("this filesystem keeps small files in less than a block each")
    assert Usage(spool_dir).held() == taken
    budget_mb = (length + taken) / 2 / 2**20
    shipper = Shipper(local_settings(tmp_path).model_copy(update={"data_collection_spool_max_mb": budget_mb}), Down())
    shipper.start()
    try:
        assert (spool_dir / FULL).exists()
    finally:
        shipper.stop()


def test_a_spool_of_many_segments_costs_the_supervisor_little_cpu_while_the_store_is_down(tmp_path: Path) -> None:
    """A store down for days leaves a quarter of a million sealed segments (a budget of 4 KiB blocks): measuring
    the spool every second stat'ed each (0.25 s of CPU at 50,000) and each pass listed them as sorted paths
    (0.3 s) to fail on the first, CPU the supervisor takes from the pod's workers. A sealed segment never
    changes: measured once; and the pass lists names."""
    class Down:
        def put(self, name: str, data: bytes) -> None:
            raise ConnectionError("storage unreachable")

    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    names = [f"{i:020d}-{writer_id()}{SEALED}" for i in range(20_000)]
    for name in names:
        (spool_dir / name).write_bytes(b'{"id":"a","request_id":"r","time":1.7e9,"data":1,"prediction":2}\n')
    shipper = Shipper(local_settings(tmp_path), Down())
    shipper.start()  # measures the spool once
    shipper.stop()

    def cpu(work: Callable[[], object]) -> float:
        started = time.process_time()
        work()
        return time.process_time() - started

    every_stat = min(cpu(lambda: [(spool_dir / name).stat() for name in names]) for _ in range(3))
    measure = min(cpu(shipper._measure) for _ in range(3))
    a_failing_pass = min(cpu(lambda: pytest.raises(ConnectionError, shipper.ship_once)) for _ in range(3))
    assert measure < every_stat / 3 and a_failing_pass < every_stat / 3, (measure, a_failing_pass, every_stat)
    assert len(list(spool_dir.glob(f"*{SEALED}"))) == len(names)


def write_segment(spool: Path, size: int, record_bytes: int) -> list[str]:
    """A sealed segment of `size` bytes in records of about `record_bytes`; returns their request ids."""
    spool.mkdir(parents=True, exist_ok=True)
    data = b'{"data": [' + b",".join([b"[1.23, 4.56, 7.89, 0.12]"] * (record_bytes // 25)) + b"]}"
    ids: list[str] = []
    with (spool / f"{time.time_ns():020d}-{writer_id()}{SEALED}").open("wb") as segment:
        while segment.tell() < size:
            ids.append(f"r-{len(ids)}")
            segment.write(orjson.dumps({"id": "a" * 32, "request_id": ids[-1], "time": 1.7e9,
                                        "data": orjson.Fragment(data), "prediction": [0.5]}) + b"\n")
    return ids


def test_a_large_segment_is_shipped_holding_a_few_parts_not_the_segment(tmp_path: Path) -> None:
    """Batches were built whole in memory and written at once: a 200 MiB segment cost the supervisor (which
    shares the pod's memory) ~450 MiB more. Now each batch holds at most a part (PART_BYTES) of its lines."""
    spool, root = tmp_path / "spool", tmp_path / "out"
    size = 80 * 2**20
    ids = write_segment(spool, size, 40_000)
    rise = int(subprocess.run([sys.executable, "-c", _SHIP_ONE, str(spool), str(root)], capture_output=True, text=True,
                              check=True).stdout)
    assert rise < 8 * PART_BYTES  # 2 batches (inputs, predictions) of a part each, and copies; whole: ~2x the segment
    assert [r["request_id"] for r in records(folder_blobs(root), "inputs", "sklearn-iris/1")] == ids
    assert [p.name for p in root.rglob("*") if p.is_file() and p.suffix != SEALED] == []  # no part file left


def test_a_batch_over_a_part_is_committed_from_blocks_and_appears_whole_or_not_at_all(tmp_path: Path,
                                                                                       clean_container: str) -> None:
    """Blocks of at most PART_BYTES, committed once: a send that fails half-way leaves no blob behind, and
    the resend writes it whole."""
    spool = tmp_path / "spool"
    ids = write_segment(spool, 10 * 2**20, 40_000)
    settings = ScorerSettings(
        data_collection_enabled=True, data_collection_spool_dir=str(spool), data_collection_service="iris-svc",
        data_collection_models=["sklearn-iris:1"], data_collection_connection_string=clean_container,
    )

    class FailsAtTheSecondPart(BlobContainer):
        def stage(self, name: str, index: int, part: bytes) -> None:
            if index == 1:
                raise ConnectionError("storage unreachable")
            super().stage(name, index, part)

    with pytest.raises(ConnectionError):
        Shipper(settings, FailsAtTheSecondPart(settings)).ship_once()
    assert container_blobs(clean_container) == {}
    assert Shipper(settings, BlobContainer(settings)).ship_once() == 1
    blobs = container_blobs(clean_container)
    assert [r["request_id"] for r in records(blobs, "inputs")] == ids
    container = ContainerClient.from_connection_string(clean_container, "modeldata")
    (inputs,) = [name for name in blobs if "/inputs/" in name]
    committed, _ = container.get_blob_client(inputs).get_block_list()
    assert len(committed) >= 3 and all(block.size <= PART_BYTES for block in committed)


def test_blobs_are_written_several_at_once_on_daemon_threads(tmp_path: Path) -> None:
    """One after the other, 50 models' blobs behind a store 10 ms away took ~3.7 s a segment. Daemon threads:
    an upload hanging on an unreachable store must not hold the process's exit."""
    lock, running = threading.Lock(), [0]
    most, daemons = [0], set()

    class Slow:
        def put(self, name: str, data: bytes) -> None:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
                daemons.add(threading.current_thread().daemon)
            time.sleep(0.02)
            with lock:
                running[0] -= 1

    settings = local_settings(tmp_path).model_copy(update={"data_collection_models": [f"m{i}:1" for i in range(50)]})
    spool = Spool(tmp_path / "spool")
    spool.append("req-1", {"a": 1}, {"ok": 1})
    spool.seal()
    assert Shipper(settings, Slow()).ship_once() == 1
    assert most[0] == UPLOADS_AT_ONCE and daemons == {True}


def test_shippers_sharing_a_spool_ship_each_segment_once_and_quietly(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The local stack's replicas of a deployment share its spool: each shipper shipped every segment, and
    the one that found it gone (moved or deleted by the other) logged an ERROR with a traceback."""
    written: dict[str, int] = {}
    lock = threading.Lock()

    class Counting(LocalFolder):
        def put(self, name: str, data: bytes) -> None:
            time.sleep(0.005)  # a store a little away: the shippers' passes overlap
            super().put(name, data)
            with lock:
                written[name] = written.get(name, 0) + 1

    settings = local_settings(tmp_path).model_copy(update={"data_collection_batch_seconds": 0.01,
                                                           "data_collection_service": "iris-svc"})
    spool_dir = tmp_path / "spool"
    pid, started = writer_id().split("_")
    sent = []
    for i in range(30):
        spool = Spool(spool_dir)
        spool.append(f"req-{i}", {"a": i}, {"ok": i})
        sent.append(f"req-{i}")
        if i % 5:
            spool.seal()
        else:  # left open by a worker that died: each shipper tries to seal it
            (segment,) = spool_dir.glob(f"*-{pid}_{started}.open")
            segment.rename(segment.with_name(segment.name.replace(f"-{pid}_{started}", f"-{pid}_{int(started) - 1}")))
    shippers = [Shipper(settings, Counting(tmp_path / "out", "modeldata")) for _ in range(2)]
    for shipper in shippers:
        shipper.start()
    try:
        wait_until(lambda: not [p for p in spool_dir.iterdir() if p.suffix in (".open", SEALED)], 15,
                   "the spool drained")
    finally:
        for shipper in shippers:
            shipper.stop()
    assert len(written) == 2 * 30 and set(written.values()) == {1}
    shipped = [r["request_id"] for r in records(folder_blobs(tmp_path / "out"), "inputs", "m/1")]
    assert sorted(shipped) == sorted(sent)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


class Switchable:
    """A local folder as a store that is down (each write fails) until `down` is set False."""

    def __init__(self, folder: Path) -> None:
        self.down = True
        self._folder = LocalFolder(folder, "modeldata")

    def put(self, name: str, data: bytes) -> None:
        if self.down:
            raise ConnectionError("storage unreachable")
        self._folder.put(name, data)


def test_the_shippers_figures_are_in_metrics_so_an_outage_can_be_alerted_on(tmp_path: Path) -> None:
    """A store down for hours showed only in the supervisor's log, until records began to be left out."""
    from scoring_image import metrics

    folder = tmp_path / "metrics"
    folder.mkdir()
    store = Switchable(tmp_path / "out")
    settings = local_settings(tmp_path).model_copy(update={"data_collection_batch_seconds": 0.1})
    shipper = Shipper(settings, store, stats=folder / metrics.SHIPPER_STATS)
    spool = Spool(tmp_path / "spool")
    spool.append("req-1", "raw text", {"ok": True})
    spool.seal()
    figures = lambda: {s.name: s.value for m in metrics.registry(folder).collect() for s in m.samples}  # noqa: E731
    shipper.start()
    try:
        wait_until(lambda: figures().get("scorer_collection_failed_passes_total", 0) >= 2, 5)
        assert figures()["scorer_collection_spool_bytes"] >= 4096  # a sealed segment waiting
        assert figures()["scorer_collection_shipped_segments_total"] == 0
        assert figures()["scorer_collection_spool_full"] == 0
        store.down = False
        wait_until(lambda: figures().get("scorer_collection_shipped_segments_total") == 1, 5)
        wait_until(lambda: figures()["scorer_collection_spool_bytes"] == 0, 5)
    finally:
        shipper.stop()


def test_a_segment_another_shipper_deleted_before_the_lock_is_not_shipped_again(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Between opening a segment and locking it, the other shipper on the spool may ship and delete it: the lock is
    then on a file no longer there, and shipping it again would write its records twice (or fail the pass)."""
    from scoring_image.collection import shipper as shipper_module

    spool = Spool(tmp_path / "spool")
    spool.append("req-1", {"a": 1}, {"ok": 1})
    spool.seal()
    (segment,) = (tmp_path / "spool").glob(f"*{SEALED}")
    real = shipper_module.fcntl.flock

    def the_other_shipper_was_first(fd: int, operation: int) -> None:
        segment.unlink(missing_ok=True)  # shipped and deleted by the other one, after our open
        real(fd, operation)

    monkeypatch.setattr(shipper_module.fcntl, "flock", the_other_shipper_was_first)
    assert Shipper(local_settings(tmp_path), LocalFolder(tmp_path / "out", "modeldata")).ship_once() == 0
    assert list((tmp_path / "out").rglob("*.jsonl")) == []


def test_the_budget_counts_the_segments_still_being_written(tmp_path: Path) -> None:
    """A busy worker's open segment is most of what a spool holds between seals: left out, the spool ran past its
    budget by the size of every worker's open segment."""
    spool = Spool(tmp_path / "spool")
    spool.append("req-1", {"a": "x" * 100_000}, {"ok": 1})
    assert list((tmp_path / "spool").glob("*.open")) and Usage(tmp_path / "spool").held() >= 100_000


def test_segments_are_shipped_oldest_first(tmp_path: Path) -> None:
    """After an outage the oldest records go first (a segment is named by its start), whatever order the directory
    lists them in."""
    from scoring_image.collection.spool import named

    stamps = [f"{time.time_ns() - i * 10**9:020d}" for i in range(20)]  # made newest first
    for stamp in stamps:
        (tmp_path / f"{stamp}-1_1{SEALED}").write_bytes(b"")
    assert named(tmp_path, SEALED) == [f"{stamp}-1_1{SEALED}" for stamp in sorted(stamps)]


def test_a_record_written_in_part_is_cut_back_and_the_next_one_is_whole(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that fills mid-record takes part of the line: left there, the next record was appended to the torn
    one, and the shipper skipped both as one unreadable line."""
    from scoring_image.collection import spool as spool_module

    spool = Spool(tmp_path / "spool")
    assert spool.append("req-1", {"a": 1}, {"ok": 1})
    real = spool_module.os.writev
    monkeypatch.setattr(spool_module.os, "writev", lambda fd, parts: real(fd, [b"".join(parts)[:10]]))
    assert not spool.append("req-2", {"a": 2}, {"ok": 2})
    monkeypatch.undo()
    assert spool.append("req-3", {"a": 3}, {"ok": 3})
    spool.seal()
    (segment,) = (tmp_path / "spool").glob(f"*{SEALED}")
    assert [json.loads(line)["request_id"] for line in segment.read_bytes().splitlines()] == ["req-1", "req-3"]


def test_after_a_failed_upload_no_new_one_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store down fails every upload, each after its timeout: trying the rest of a pass's hundreds of blobs
    (models x kinds x days) held the pass, and the spool's segments, for minutes instead of one timeout."""
    from scoring_image.collection import batches

    monkeypatch.setattr(batches, "UPLOADS_AT_ONCE", 1)
    started: list[int] = []

    def upload(i: int) -> None:
        started.append(i)
        if i == 0:
            raise ConnectionError("store down")

    with pytest.raises(ConnectionError, match="store down"):
        batches.run_all([lambda i=i: upload(i) for i in range(5)])
    assert started == [0]


def test_a_segment_that_fails_every_pass_does_not_hold_back_the_others(tmp_path: Path) -> None:
    """A pass ends at its first failed segment (a store down fails them all), and began with the oldest: one
    segment the store refused every time (too large for the link, an immutable blob it would overwrite) was
    tried first on every pass and nothing after it was shipped again, the spool filling until collection stopped."""
    spool_dir = tmp_path / "spool"
    write_segment(spool_dir, 100, 50)
    (poison,) = (p.stem for p in spool_dir.glob(f"*{SEALED}"))
    out = LocalFolder(tmp_path / "out", "modeldata")

    class RefusesOne:
        def put(self, name: str, data: bytes) -> None:
            if poison in name:
                raise ConnectionError("the store refuses this segment")
            out.put(name, data)

    later = [write_segment(spool_dir, 100, 50) for _ in range(2)]
    shipper = Shipper(local_settings(tmp_path), RefusesOne())  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(ConnectionError):
            shipper.ship_once()
    shipped = {p.stem for p in (tmp_path / "out").rglob(f"*{SEALED}")}  # an inputs and a predictions blob each
    assert len(shipped) == len(later) and poison not in shipped
    assert [p.stem for p in spool_dir.glob(f"*{SEALED}")] == [poison]


def test_a_store_down_is_told_once_with_its_traceback_then_once_a_minute_and_its_return_told(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every failing pass logged the store's error with its traceback, every data_collection_batch_seconds (5 s):
    a store down for a day left some 17,000 of them per replica, burying the rest of the log."""
    from scoring_image.collection import shipper as shipper_module

    caplog.set_level(logging.INFO, "scoring_image.collection")
    clock = [1000.0]
    monkeypatch.setattr(shipper_module.time, "monotonic", lambda: clock[0])
    store = Switchable(tmp_path / "out")
    shipper = Shipper(local_settings(tmp_path), store)  # type: ignore[arg-type]
    spool = Spool(tmp_path / "spool")
    spool.append("req-1", "raw text", {"ok": True})
    spool.seal()
    told = lambda: [r for r in caplog.records if r.name == "scoring_image.collection"]  # noqa: E731
    for _ in range(12):  # a minute of passes
        shipper._pass()
        clock[0] += 5
    assert [(r.levelno, r.exc_info is not None) for r in told()] == [(logging.ERROR, True)]
    shipper._pass()
    assert [(r.levelno, r.exc_info is not None) for r in told()][1:] == [(logging.ERROR, False)]
    assert "13 passes" in told()[-1].getMessage() and "storage unreachable" in told()[-1].getMessage()
    store.down = False
    shipper._pass()
    assert "after 13 failed passes" in told()[-2].getMessage() and told()[-2].levelno == logging.WARNING
    assert "shipped 1 spool segment(s)" in told()[-1].getMessage()


def test_a_stop_ships_every_acknowledged_record_those_in_flight_too(start_scorer: StartScorer, tmp_path: Path) -> None:
    """SIGTERM, as Kubernetes stops a pod whose spool (an emptyDir) goes with it: what the workers answered, the
    requests still running when it came included, is shipped before the scorer exits."""
    out, spool = tmp_path / "collected", tmp_path / "spool"
    env = collection_env(spool, AZUREML_DATA_COLLECTION_LOCAL_DIR=str(out), AZUREML_DATA_COLLECTION_BATCH_SECONDS="600")
    server = start_scorer("sleepy.py", workers=2, env=env)  # nothing ships before the stop
    acknowledged = {server.post(json={"n": i}).headers["x-request-id"] for i in range(10)}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running = [pool.submit(server.post, json={"sleep": 1.0}) for _ in range(4)]
        time.sleep(0.5)
        server.stop()
        answers = [f.result() for f in running]
    assert [a.status_code for a in answers] == [200] * 4
    acknowledged |= {a.headers["x-request-id"] for a in answers}
    assert list(spool.iterdir()) == []
    for kind in ("inputs", "predictions"):
        assert sorted(r["request_id"] for r in records(folder_blobs(out), kind)) == sorted(acknowledged), kind


def test_a_stop_whose_last_upload_failed_tells_what_stays_in_the_spool(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The spool goes with the pod: a last upload that failed (a store down) loses what it held, and the stop said
    so only when the upload was still running at its bound, not when it failed before it."""
    class Down:
        def put(self, name: str, data: bytes) -> None:
            raise ConnectionError("storage unreachable")

    settings = local_settings(tmp_path).model_copy(update={"data_collection_batch_seconds": 60.0})
    shipper = Shipper(settings, Down())  # type: ignore[arg-type]
    spool = Spool(tmp_path / "spool")
    spool.append("req-1", "raw text", {"ok": True})
    spool.seal()
    shipper._pass()  # the store was down before the stop too
    shipper.start()
    shipper.stop()
    assert "1 sealed segment(s) stay in the spool" in caplog.text


def test_collection_resumes_once_the_spool_is_well_under_its_budget_not_at_each_segment_shipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """While shipping only kept pace with the records (a slow link), each segment shipped took the spool just under
    its budget: writers were let in for a second and filled it again, the spool flapping full and not (two log
    lines) every second or two."""
    spool_dir = tmp_path / "spool"
    for _ in range(10):
        write_segment(spool_dir, 110 * 2**10, 1000)
    segments = sorted(spool_dir.iterdir())
    shipper = Shipper(local_settings(tmp_path).model_copy(update={"data_collection_spool_max_mb": 1.0}), LocalFolder(
        tmp_path / "out", "modeldata"))
    shipper._measure()
    assert (spool_dir / FULL).exists()
    segments[0].unlink()  # one shipped: just under the budget
    shipper._measure()
    assert (spool_dir / FULL).exists()
    for segment in segments[1:3]:
        segment.unlink()
    shipper._measure()
    assert not (spool_dir / FULL).exists()
    assert [r.levelno for r in caplog.records if r.name == "scoring_image.collection"] == [logging.ERROR, logging.WARNING]


# Azure ML's correlation columns, in its order (azureml.monitoring's ModelDataCollector).
CORRELATION_HEADERS = ["$aml_dc_correlation_id", "$aml_dc_scoring_timestamp", "$aml_dc_boundary", "$aml_workspace",
                       "$aml_service_name", "$aml_model_name", "$aml_model_version", "$aml_request_id"]


def csv_blobs(connection_string: str, prefix: str) -> dict[str, list[dict[str, str]]]:
    """The CSV blobs under `prefix`, each as its rows (read under its header)."""
    return {name: list(csv.DictReader(io.StringIO(data.decode())))
            for name, data in container_blobs(connection_string).items() if name.startswith(prefix) and name.endswith(".csv")}


def test_a_scripts_model_data_collector_lands_as_azure_mls_csv_in_its_folders_and_survives_a_kill_9(
        start_scorer: StartScorer, tmp_path: Path, clean_container: str) -> None:
    """An Azure ML v1 script's ModelDataCollector: its rows as CSV under its header and the $aml_dc_* columns, in
    Azure ML's folders (workspace lowercased, the model's deployed version), spooled before the answer; the
    automatic records are left out, as Azure ML collects only what the script collects."""
    spool = tmp_path / "spool"
    env = {**collection_env(spool, AZUREML_DATA_COLLECTION_CONNECTION_STRING=clean_container),
           "AZUREML_DATA_COLLECTION_WORKSPACE": "Sub-1/My-RG/ws1"}
    server = start_scorer("model_data_collector.py", env={**env, "AZUREML_DATA_COLLECTION_BATCH_SECONDS": "600"})
    answers = {}
    for i in range(3):
        response = server.post(json={"data": [[i, 10]]})
        assert response.status_code == 200, response.text
        answers[response.headers["x-request-id"]] = response.json()
    server.kill9()
    assert container_blobs(clean_container) == {}

    start_scorer("model_data_collector.py", env=env)
    wait_until(lambda: not list(spool.iterdir()), 30, "the spool to drain after the restart")
    day = time.strftime("%Y/%m/%d", time.gmtime())
    folder = "sub-1/my-rg/ws1/iris-svc/sklearn-iris/1"
    inputs = csv_blobs(clean_container, f"{folder}/inputs/{day}/data-")
    predictions = csv_blobs(clean_container, f"{folder}/predictions/{day}/data-")
    assert len(inputs) == len(predictions) == 1, container_blobs(clean_container).keys()
    assert not [name for name in container_blobs(clean_container) if name.endswith(".jsonl")]
    [input_rows] = inputs.values()
    [prediction_rows] = predictions.values()
    assert list(input_rows[0]) == ["feat1", "feat2", *CORRELATION_HEADERS]
    assert list(prediction_rows[0]) == ["prediction1", *CORRELATION_HEADERS]
    assert {r["$aml_request_id"] for r in input_rows} == {r["$aml_request_id"] for r in prediction_rows} == set(answers)
    for row in input_rows:
        answer = answers[row["$aml_request_id"]]
        assert row["$aml_dc_correlation_id"] == answer["correlations"]["$aml_dc_correlation_id"]
        assert (row["$aml_workspace"], row["$aml_service_name"], row["$aml_model_name"], row["$aml_model_version"],
                row["$aml_dc_boundary"]) == ("sub-1/my-rg/ws1", "iris-svc", "sklearn-iris", "1", "1440")
        [prediction] = [p for p in prediction_rows if p["$aml_request_id"] == row["$aml_request_id"]]
        assert prediction["$aml_dc_correlation_id"] == row["$aml_dc_correlation_id"]
        assert int(prediction["prediction1"]) == int(row["feat1"]) + int(row["feat2"]) == answer["sums"][0]


def test_a_model_data_collector_where_the_service_does_not_collect_collects_nothing(start_scorer: StartScorer) -> None:
    """As Azure ML's when collection is not enabled: collect() returns None, and the script still answers."""
    server = start_scorer("model_data_collector.py")
    response = server.post(json={"data": [[1, 2]]})
    assert response.status_code == 200, response.text
    assert response.json() == {"sums": [3], "correlations": None}


def test_the_model_data_collector_stands_in_only_where_azureml_monitoring_is_missing(tmp_path: Path) -> None:
    code = ("from scoring_image import amlcompat\n"
            "amlcompat.install()\n"
            "from azureml.monitoring import ModelDataCollector\n"
            "print(ModelDataCollector.__module__)\n")
    ours = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(ROOT)})
    assert ours.stdout.strip() == "scoring_image.collection.modeldatacollector"
    installed = tmp_path / "site" / "azureml" / "monitoring"  # azureml-monitoring's package, in the azureml namespace
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("class ModelDataCollector:\n    pass\n")
    theirs = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": f"{ROOT}:{tmp_path / 'site'}"})
    assert theirs.stdout.strip() == "azureml.monitoring"


def test_a_large_record_is_spooled_off_the_event_loop_and_before_the_answer(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A 50 MB record held the worker's event loop ~164 ms while it was encoded and written (its liveness probes and
    every other request's reads and answers waited): it is written on the run thread, after run(), and still
    before the answer. A write that takes 0.3 s (a slow disk; os.write lets go of the GIL, as this sleep does)."""
    settings = ScorerSettings(**{**local_settings(tmp_path).model_dump(), "app_root": str(SCRIPTS),
                                 "entry_script": "sum_rows.py"})
    spool = Spool(tmp_path / "spool")
    write = Spool.write

    def slow_write(self: Spool, *parts: bytes) -> bool:
        time.sleep(0.3)
        return write(self, *parts)

    monkeypatch.setattr(Spool, "write", slow_write)
    spooled_at_answer: list[bytes] = []

    async def serve() -> list[float]:
        loop = asyncio.get_running_loop()
        runner = Runner(loop, 5)
        (tmp_path / "metrics").mkdir()
        app = ScoringApp(settings, runner, Board(tmp_path, 1), metrics.Recorder(tmp_path / "metrics"), spool,
                         lambda: None, None)
        await runner.submit(app.initialize, bounded=False)
        gaps: list[float] = []
        scored = asyncio.Event()

        async def tick() -> None:
            last = time.perf_counter()
            while not scored.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b'{"data": [[1, 2]]}', "more_body": False}

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                assert message["status"] == 200
                spooled_at_answer.extend(p.read_bytes() for p in (tmp_path / "spool").glob("*.open"))

        ticker = asyncio.create_task(tick())
        await app({"type": "http", "path": "/score", "method": "POST", "query_string": b"",
                   "headers": [(b"content-type", b"application/json"), (b"x-request-id", b"big")]}, receive, send)
        scored.set()
        await ticker
        return gaps

    gaps = asyncio.run(serve())
    assert max(gaps) < 0.15, f"the loop was held {max(gaps) * 1000:.0f} ms"
    [line] = b"".join(spooled_at_answer).splitlines()
    assert orjson.loads(line)["request_id"] == "big" and orjson.loads(line)["prediction"]["sums"] == [3]


def test_a_collect_outside_a_request_is_spooled_without_a_request(start_scorer: StartScorer, tmp_path: Path) -> None:
    """What a collector was handed in init() (or on a thread of the script's own) was dropped, with a warning; Azure
    ML's collector writes it, its $aml_request_id all zeros."""
    out = tmp_path / "collected"
    server = start_scorer("collects_in_init.py", env=collection_env(tmp_path / "spool",
                                                                    AZUREML_DATA_COLLECTION_LOCAL_DIR=str(out)))
    request_id = server.post(json={"data": [[1, 1]]}).headers["x-request-id"]

    def rows() -> list[dict[str, str]]:
        base = out / "modeldata"
        return [row for p in base.rglob("*.csv") for row in csv.DictReader(io.StringIO(p.read_text()))] if base.exists() else []

    wait_until(lambda: len(rows()) == 2, 15, "both rows shipped")
    by_request = {row["$aml_request_id"]: row for row in rows()}
    assert set(by_request) == {"00000000-0000-0000-0000-000000000000", request_id}
    assert by_request["00000000-0000-0000-0000-000000000000"]["feat1"] == "0"
    assert "not collected" not in server.log_path.read_text()
