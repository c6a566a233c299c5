"""The fast path (http_server.Request -> relay.Relay) over real sockets, against a replica this test controls.

The router runs in-process behind its own HTTP server (as `python -m router_image` runs it); the
replica is a small asyncio server whose answer each request's JSON body chooses: `hold` (answer
only once the test says so), `status`, `pad` (that many bytes of body), `break` (close after
half an answer or before any), `never` (no answer at all), `interim` (a 103 before the answer),
`until_close` (an HTTP/1.0 answer without a length, ended by closing the connection), `claims` (a
version header of its own).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import Fixed, free_port  # noqa: E402
from keys import write_keys  # noqa: E402

import http_server  # noqa: E402
from router_image import metrics, relay, responses  # noqa: E402
from router_image.app import Router  # noqa: E402
from router_image.config import AuthConfig, RouteConfig, RouterConfig, VersionConfig  # noqa: E402

pytestmark = pytest.mark.anyio
OFF = AuthConfig(key_enabled=False)


class Replica:
    """A scorer stand-in: echoes what it got (headers, body size) as JSON, shaped by the request body."""

    def __init__(self) -> None:
        self.release = asyncio.Event()  # answers `hold` requests
        self.seen: list[dict] = []  # each request's headers
        self.closed = asyncio.Event()  # a connection ended while a request waited on it
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                if headers.get("transfer-encoding") == "chunked":
                    body = b""
                    while (size := int((await reader.readline()).strip(), 16)) > 0:
                        body += await reader.readexactly(size)
                        await reader.readline()
                    await reader.readline()
                else:
                    body = await reader.readexactly(int(headers.get("content-length", "0")))
                headers["request-line"] = lines[0]
                self.seen.append(headers)
                asks = json.loads(body) if body.startswith(b"{") else {}
                if asks.get("never"):
                    await reader.read()  # until the router closes the connection
                    self.closed.set()
                    return
                if asks.get("hold"):
                    waiting = asyncio.ensure_future(self.release.wait())
                    gone = asyncio.ensure_future(reader.read(1))
                    await asyncio.wait([waiting, gone], return_when=asyncio.FIRST_COMPLETED)
                    if gone.done():
                        waiting.cancel()
                        self.closed.set()
                        return
                    gone.cancel()
                    await asyncio.gather(gone, return_exceptions=True)
                answer = json.dumps({"received": len(body), "id": asks.get("id"), "pad": "x" * asks.get("pad", 0),
                                     "request_id": headers.get("x-request-id"),
                                     "authorization": headers.get("authorization")}).encode()
                head = (b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\nx-request-id: %s\r\n"
                        b"connection: keep-alive\r\n%scontent-length: %d\r\n\r\n"
                        % (asks.get("status", 200), headers.get("x-request-id", "-").encode(),
                           b"azureml-model-deployment: %s\r\n" % asks["claims"].encode() if "claims" in asks else b"",
                           len(answer)))
                if asks.get("interim"):
                    writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.05)
                if asks.get("until_close"):
                    writer.write(b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n" + answer)
                    await writer.drain()
                    writer.close()
                    return
                if asks.get("break") == "before":
                    writer.close()
                    return
                if asks.get("break") == "during":
                    writer.write(head + answer[: len(answer) // 2])
                    await writer.drain()
                    writer.close()
                    return
                writer.write(head + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def routed(tmp_path):
    replica = Replica()
    await replica.start()
    write_keys(tmp_path / "keys", "service.keyed", "key-1", "key-2")
    dead = f"127.0.0.1:{free_port()}"
    config = RouterConfig(keys_dir=str(tmp_path / "keys"), autoscale_enabled=False, routes=[
        RouteConfig(kind="service", name="keyed", versions=[
            VersionConfig(name="v1", deployment="keyed", replica_max_concurrent_requests=4, scoring_timeout_ms=300)]),
        RouteConfig(kind="service", name="one", auth=OFF, versions=[
            VersionConfig(name="solo", deployment="one", max_request_wait_time_ms=300)]),
        RouteConfig(kind="service", name="pair", auth=OFF, versions=[
            VersionConfig(name="v1", deployment="pair", replica_max_concurrent_requests=8)]),
    ])
    router = Router(config, backend=Fixed({"keyed": [replica.address], "one": [replica.address],
                                           "pair": [dead, replica.address]}))
    port = free_port()
    srv = http_server.Server(router, fast=router, errors=responses.server_error)  # as __main__ serves it
    task = asyncio.create_task(srv.serve_address("127.0.0.1", port))
    for _ in range(100):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.02)
    relayed = []
    original = Router.answer

    # Router.answer, not Relay.start: under the compiled build (make test's second run) compiled callers
    # would not see a patched Relay.start; http_server calls the pure Router's answer by name.
    def counted(self, request) -> None:
        original(self, request)
        if request.handler is not None:  # a Relay took it (an error answered at once leaves none)
            relayed.append(request.handler)

    Router.answer = counted  # type: ignore[method-assign]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield {"router": router, "replica": replica, "port": port, "client": client, "relayed": relayed,
                   "dead": dead}
    finally:
        Router.answer = original  # type: ignore[method-assign]
        srv.stop()
        await asyncio.wait_for(task, 10)
        await replica.stop()


def post(route: str, body: dict, **headers: str) -> bytes:
    data = json.dumps(body).encode()
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST /api/v1/service/{route}/score HTTP/1.1\r\nhost: r\r\ncontent-type: application/json\r\n{lines}"
            f"content-length: {len(data)}\r\n\r\n").encode() + data


async def read_answers(reader: asyncio.StreamReader, n: int) -> list[tuple[bytes, dict]]:
    answers = []
    for _ in range(n):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        answers.append((head, json.loads(await reader.readexactly(length))))
    return answers


async def wait_for(check, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.01)


async def test_pipelined_requests_are_relayed_in_order_with_their_headers(routed) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", routed["port"])
    writer.write(b"".join(post("keyed", {"id": i}, authorization="Bearer key-1", **{"x-request-id": f"r{i}"})
                          for i in range(5)))
    answers = await read_answers(reader, 5)
    writer.close()
    assert [a["id"] for _, a in answers] == [0, 1, 2, 3, 4]
    for i, (head, answer) in enumerate(answers):
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"azureml-model-deployment: v1\r\n" in head and b"x-request-id: r%d\r\n" % i in head
        assert b"connection: keep-alive" not in head  # the replica's hop-by-hop header stays on its hop
        assert answer["request_id"] == f"r{i}" and answer["authorization"] is None  # credentials stay here
    assert len(routed["relayed"]) == 5  # the fast path, not ASGI
    assert routed["replica"].seen[0]["request-line"] == "POST /score HTTP/1.1"


async def test_auth_errors_come_from_the_fast_path_and_keep_the_connection(routed) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", routed["port"])
    writer.write(post("keyed", {}, authorization="Bearer wrong") + post("keyed", {"id": 7}, authorization="Bearer key-2"))
    (head, error), (_, answer) = await read_answers(reader, 2)
    writer.close()
    assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n") and b"www-authenticate: Bearer\r\n" in head
    assert error["error"]["code"] == "Unauthorized" and answer["id"] == 7
    assert len(routed["relayed"]) == 1


def errors_counted(status: str, code: str, route: str = "keyed", kind: str = "service") -> float:
    labels = {"kind": kind, "route": route, "status": status, "code": code}
    return metrics.REGISTRY.get_sample_value("router_error_responses_total", labels) or 0.0


async def test_the_http_servers_own_answers_are_counted_with_the_routers(routed, caplog) -> None:
    """A malformed request never reaches the router's code: without the server's count, a broken client or an
    attack was invisible on the dashboards. Logged under the id its answer carries."""
    caplog.set_level(logging.INFO, logger="router")
    malformed = errors_counted("400", "BadRequest", route="", kind="")
    reader, writer = await asyncio.open_connection("127.0.0.1", routed["port"])
    writer.write(b"POST /api/v1/service/one/score HTTP/1.1\r\nhost: r\r\ncontent-length: x\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    rid = answer.split(b"\r\nx-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    (line,) = [r for r in caplog.records if getattr(r, "request_id", None) == rid]
    assert "400 BadRequest: malformed request" in line.getMessage()
    assert errors_counted("400", "BadRequest", route="", kind="") == malformed + 1


async def test_an_answer_the_router_gives_itself_has_a_request_id_a_log_line_and_a_count(routed, caplog) -> None:
    """No replica saw it, so no scorer logged it: the client's x-request-id (else a new one) is on the answer
    and on the router's line, and its code is counted under its route (a storm of bad keys on one service, a
    queue that times out), the 401s of which are in no router_requests_total."""
    caplog.set_level(logging.INFO, logger="router")
    unauthorized = errors_counted("401", "Unauthorized")
    client = routed["client"]
    refused = await client.post("/api/v1/service/keyed/score", json={}, headers={"authorization": "Bearer wrong",
                                                                                  "x-request-id": "client-rid-1"})
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "client-rid-1"
    # Azure ML's body ({"message": ...}) beside the code; no client id sent: the request id, as a scorer answers.
    assert refused.json()["message"] == refused.json()["error"]["message"]
    assert refused.headers["x-ms-request-id"] == refused.headers["x-ms-client-request-id"] == "client-rid-1"
    (line,) = [r for r in caplog.records if getattr(r, "request_id", None) == "client-rid-1"]
    assert line.levelname == "INFO" and "service keyed: 401 Unauthorized" in line.getMessage()
    assert "wrong" not in line.getMessage()  # never the credential
    assert errors_counted("401", "Unauthorized") == unauthorized + 1
    for sent, expected in (({"x-ms-client-request-id": "c-1"}, ("c-1", "c-1")),
                           ({"x-ms-request-id": "legacy-1"}, ("legacy-1", "legacy-1")),
                           ({"x-ms-request-id": "legacy-1", "x-ms-client-request-id": "c-1"}, ("legacy-1", "c-1"))):
        answer = await client.post("/api/v1/service/keyed/score", json={}, headers={"authorization": "Bearer wrong", **sent})
        assert (answer.headers["x-ms-request-id"], answer.headers["x-ms-client-request-id"]) == expected, sent

    timeouts = errors_counted("504", "ScoringTimeout")
    late = await client.post("/api/v1/service/keyed/score", json={"never": True}, headers={"authorization": "Bearer key-1"})
    assert late.status_code == 504 and str(uuid.UUID(late.headers["x-request-id"])) == late.headers["x-request-id"]
    assert late.headers["x-ms-request-id"] == late.headers["x-request-id"]  # the relay's answers carry them too
    (line,) = [r for r in caplog.records if getattr(r, "request_id", None) == late.headers["x-request-id"]]
    assert line.levelname == "WARNING" and "504 ScoringTimeout" in line.getMessage()
    assert errors_counted("504", "ScoringTimeout") == timeouts + 1


async def test_the_version_header_is_the_routers_not_the_replicas(routed) -> None:
    answer = await routed["client"].post("/api/v1/service/one/score", json={"id": 5, "claims": "v9"})
    assert answer.status_code == 200 and answer.headers.get_list("azureml-model-deployment") == ["solo"]


async def test_an_interim_answer_is_not_taken_for_the_answer(routed) -> None:
    """A 103 before the answer: were it the answer, the real one would go to the next request on that connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", routed["port"])
    writer.write(post("one", {"id": 1, "interim": True}))
    [(head, answer)] = await read_answers(reader, 1)
    writer.write(post("one", {"id": 2}))
    [(_, following)] = await read_answers(reader, 1)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"link:" not in head
    assert (answer["id"], following["id"]) == (1, 2)
    assert routed["router"].pools["one"].busy_slots == 0


@pytest.mark.parametrize("pad", [0, 300_000])  # whole, and streamed on (over relay.STREAM_OVER)
async def test_an_answer_the_replicas_close_ends_is_relayed_whole(routed, pad) -> None:
    answer = await routed["client"].post("/api/v1/service/one/score", json={"id": 3, "until_close": True, "pad": pad})
    assert answer.status_code == 200 and answer.json()["id"] == 3 and len(answer.json()["pad"]) == pad
    assert routed["router"].pools["one"].busy_slots == 0


async def test_a_relay_cancelled_before_its_task_ran_frees_its_slot(routed, monkeypatch) -> None:
    """A pipelined request started in the loop turn its client's connection_lost comes in."""
    router = routed["router"]
    pool = router.pools["one"]
    in_task: list[bool] = []
    original = Router.answer

    def answer_then_leave(self, request) -> None:
        original(self, request)
        in_task.append(request.handler.task is not None and pool.busy_slots == 1)
        request.abort()  # what connection_lost does: Relay.aborted cancels the task before its first step

    monkeypatch.setattr(Router, "answer", answer_then_leave)
    reader, writer = await asyncio.open_connection("127.0.0.1", routed["port"])
    writer.write(post("one", {"id": 4}))  # the first request: no idle replica connection, so a task opens one
    await wait_for(lambda: in_task)
    writer.close()
    assert in_task == [True]
    await asyncio.sleep(0.05)
    assert pool.busy_slots == 0


async def test_a_client_that_leaves_frees_its_slot_and_the_replica_connection(routed) -> None:
    pool = routed["router"].pools["keyed"]
    reader, writer = await asyncio.open_connection("127.0.0.1", routed["port"])
    writer.write(post("keyed", {"hold": True}, authorization="Bearer key-1"))
    await wait_for(lambda: pool.busy_slots == 1)
    writer.close()
    await wait_for(lambda: pool.busy_slots == 0)
    await asyncio.wait_for(routed["replica"].closed.wait(), 5)  # its answer is not wanted: connection closed
    stats = routed["router"].routes[("service", "keyed")].versions["v1"].stats
    assert stats.statuses.get(relay.CLIENT_GONE) == 1


async def test_the_scoring_timeout_is_a_504_from_the_sweep(routed) -> None:
    client, pool = routed["client"], routed["router"].pools["keyed"]
    started = time.monotonic()
    answer = await client.post("/api/v1/service/keyed/score", json={"never": True}, headers={"authorization": "Bearer key-1"})
    took = time.monotonic() - started
    assert answer.status_code == 504 and answer.json()["error"]["code"] == "ScoringTimeout"
    assert 0.3 <= took < 0.3 + relay.SWEEP_S + 0.25
    assert pool.busy_slots == 0
    await asyncio.wait_for(routed["replica"].closed.wait(), 5)
    ok = await client.post("/api/v1/service/keyed/score", json={"id": 1}, headers={"authorization": "Bearer key-1"})
    assert ok.status_code == 200 and ok.json()["id"] == 1


async def test_queued_requests_wait_in_order_then_get_503(routed) -> None:
    """`one`: a single slot and a 300 ms queue."""
    client, replica = routed["client"], routed["replica"]
    holder = asyncio.create_task(client.post("/api/v1/service/one/score", json={"hold": True, "id": 0}))
    await wait_for(lambda: routed["router"].pools["one"].busy_slots == 1)
    labels = {"kind": "service", "route": "one", "version": "solo", "role": "service"}
    def measured() -> tuple[float, float]:
        return tuple(metrics.REGISTRY.get_sample_value(f"router_queue_wait_seconds_{k}", labels) or 0.0 for k in ("count", "sum"))
    count_before, sum_before = measured()
    waiting = asyncio.create_task(client.post("/api/v1/service/one/score", json={"id": 1}))
    await wait_for(lambda: routed["router"].pools["one"].queued == 1)
    await asyncio.sleep(0.1)
    replica.release.set()  # the holder ends inside the queued one's 300 ms
    assert (await holder).json()["id"] == 0 and (await waiting).json()["id"] == 1
    # Its wait is measured (what an alert on saturation reads); the holder, served at once, is not counted.
    count, total = measured()
    assert count == count_before + 1 and 0.1 <= total - sum_before < 0.3
    replica.release.clear()
    holder = asyncio.create_task(client.post("/api/v1/service/one/score", json={"hold": True}))
    await wait_for(lambda: routed["router"].pools["one"].busy_slots == 1)
    rejected = await client.post("/api/v1/service/one/score", json={})
    assert rejected.status_code == 503 and rejected.headers["retry-after"] == "1"
    assert rejected.json()["error"]["code"] == "TooManyRequests"
    # Its whole wait is measured too: left out, a saturated queue, whose requests mostly wait it out, showed
    # only the few short waits that got a slot.
    count, total = measured()
    assert count == count_before + 2 and 0.1 + 0.3 <= total - sum_before < 0.3 + 0.5
    replica.release.set()
    assert (await holder).status_code == 200


async def test_a_refusing_replica_is_retried_around(routed) -> None:
    client = routed["client"]
    answers = await asyncio.gather(*(client.post("/api/v1/service/pair/score", json={"id": i}) for i in range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert routed["router"].pools["pair"].replicas[routed["dead"]].ejected


async def test_a_replica_that_breaks_the_connection_is_a_502(routed) -> None:
    client = routed["client"]
    for when in ("before", "during"):
        answer = await client.post("/api/v1/service/one/score", json={"break": when})
        assert answer.status_code == 502 and answer.json()["error"]["code"] == "ReplicaClosedConnection", when
    assert routed["router"].pools["one"].busy_slots == 0


async def test_a_large_answer_streams_and_a_large_body_takes_the_asgi_path(routed) -> None:
    client = routed["client"]
    answer = await client.post("/api/v1/service/one/score", json={"pad": 3 * relay.STREAM_OVER})
    assert answer.status_code == 200 and len(answer.json()["pad"]) == 3 * relay.STREAM_OVER
    assert len(routed["relayed"]) == 1
    big = json.dumps({"blob": "y" * http_server.WHOLE_BODY_MAX}).encode()
    answer = await client.post("/api/v1/service/one/score", content=big)
    assert answer.status_code == 200 and answer.json()["received"] == len(big)
    assert len(routed["relayed"]) == 1  # the ASGI path took it (passed on as it came)


async def test_http_1_0_is_answered_then_closed(routed) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", routed["port"])
    writer.write(post("one", {"id": 3}).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    out = await asyncio.wait_for(reader.read(), 5)  # until the router closes
    writer.close()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close\r\n" in out
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["id"] == 3


async def test_a_request_waiting_on_a_version_a_reload_removes_is_routed_again_on_the_asgi_path(tmp_path) -> None:
    """The coroutine path's turn of the live test: queued on `old`, which a reload removes, it is answered
    by `new` (and counted there), not by a 503 after the wait."""
    replica = Replica()
    await replica.start()

    def endpoint(*versions: VersionConfig) -> RouterConfig:
        return RouterConfig(autoscale_enabled=False, routes=[RouteConfig(kind="endpoint", name="ep", auth=OFF,
                                                                         versions=list(versions))])

    old = VersionConfig(name="old", deployment="ep-old", traffic_percentile=100, max_request_wait_time_ms=10_000)
    new = VersionConfig(name="new", deployment="ep-new", is_default=True)
    path = tmp_path / "router.json"
    path.write_text(endpoint(new, old).dump())
    router = Router(RouterConfig.load(path), str(path),
                    backend=Fixed({"ep-old": [replica.address], "ep-new": [replica.address]}))
    await router.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://r",
                                     timeout=10) as client:
            holding = asyncio.create_task(client.post("/api/v1/endpoint/ep/score", json={"hold": True}))
            await wait_for(lambda: router.pools["ep-old"].busy_slots == 1)
            queued = asyncio.create_task(client.post("/api/v1/endpoint/ep/score", json={"id": 2}))
            await wait_for(lambda: router.pools["ep-old"].queued == 1)
            served_by_new = router.routes[("endpoint", "ep")].versions["new"].stats.statuses.get(200, 0)
            path.write_text(endpoint(new).dump())
            assert await router.reload()
            answer = await asyncio.wait_for(queued, 5)
            assert answer.status_code == 200 and answer.headers["azureml-model-deployment"] == "new"
            assert router.routes[("endpoint", "ep")].versions["new"].stats.statuses[200] == served_by_new + 1
            replica.release.set()
            assert (await asyncio.wait_for(holding, 5)).headers["azureml-model-deployment"] == "old"
    finally:
        await router.shutdown()
        await replica.stop()


@pytest.mark.parametrize("kept", [["new"], []])
async def test_a_request_whose_version_a_reload_removes_while_its_body_comes_is_routed_again(tmp_path, kept) -> None:
    """The fast path claims a request at its head and relays it once its body is in: a reload in between
    that removes its version (or its whole endpoint) must not leave it to the removed version's replicas,
    which the router no longer tracks. As on the ASGI path: the new config's version answers, or a 404."""
    replica = Replica()
    await replica.start()
    versions = {"old": VersionConfig(name="old", deployment="ep-old", traffic_percentile=100),
                "new": VersionConfig(name="new", deployment="ep-new", is_default=True)}

    def config(*names: str) -> RouterConfig:
        routes = [RouteConfig(kind="endpoint", name="ep", auth=OFF, versions=[versions[n] for n in names])] if names else []
        return RouterConfig(autoscale_enabled=False, routes=routes)

    path = tmp_path / "router.json"
    path.write_text(config("old", "new").dump())
    router = Router(RouterConfig.load(path), str(path),
                    backend=Fixed({"ep-old": [replica.address], "ep-new": [replica.address]}))
    port = free_port()
    srv = http_server.Server(router, fast=router)
    task = asyncio.create_task(srv.serve_address("127.0.0.1", port))
    try:
        await wait_for(lambda: router.pools["ep-old"].any_ready())
        for _ in range(100):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.02)
        body = b'{"id": 7}'
        writer.write(b"POST /api/v1/endpoint/ep/score HTTP/1.1\r\nhost: r\r\ncontent-length: %d\r\n\r\n" % len(body))
        await wait_for(lambda: any(c._queue for c in srv.connections))  # the head is parsed: claimed
        path.write_text(config(*kept).dump())
        assert await router.reload()
        writer.write(body)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        if kept:
            assert head.startswith(b"HTTP/1.1 200 ") and b"azureml-model-deployment: new\r\n" in head, head
        else:
            assert head.startswith(b"HTTP/1.1 404 "), head
        assert [r["request-line"] for r in replica.seen] == (["POST /score HTTP/1.1"] if kept else [])
    finally:
        srv.stop()
        await asyncio.wait_for(task, 10)
        await replica.stop()


async def test_head_is_answered_wherever_get_is(routed) -> None:
    """RFC 9110 9.3.2, and load balancers probe with HEAD: the same status and headers as GET, no body. A replica
    is asked GET (the router reads a HEAD's answer as one with a body)."""
    client = routed["client"]
    for path in ("/healthz", "/readyz", "/api/v1/service/one/swagger.json"):
        got, head = await client.get(path), await client.head(path)
        assert (head.status_code, head.headers["content-length"], head.content) == (
            got.status_code, got.headers["content-length"], b""), path
    assert routed["replica"].seen[-1]["request-line"] == "GET /swagger.json HTTP/1.1"
    refused = await client.put("/api/v1/service/one/swagger.json")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
