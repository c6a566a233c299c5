"""The router process in front of real scorer processes: split, pin, queue, errors, auth, metrics.

One router (local backend, fixed replicas) serves every route of this module:
  service  svc   key auth            endpoint ep   blue 30 % + green default, key auth
  service  tok   token auth (ES256)  service  open  no auth   service typed  inference_schema script
  service  slow  one slot, 300 ms queue wait, 1 s scoring timeout   service  fifo  one slot, 3 s queue wait
  service  cors  key auth, CORS origin https://app.example
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jwt
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import RouterProcess, launch, score, wait_until  # noqa: E402
from keys import signing_key, write_keys  # noqa: E402

from router_image.config import AuthConfig, RouteConfig, RouterConfig, TokenConfig, VersionConfig  # noqa: E402
from router_image.auth import CLOCK_SKEW_S  # noqa: E402
from router_image.tokens import mint_token  # noqa: E402

BLUE_SHARE = 0.30
SPLIT_REQUESTS = 1000
SPLIT_TOLERANCE = 0.05  # 3.4 standard deviations of a binomial(1000, 0.3)
OFF = AuthConfig(key_enabled=False)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("router-live")
    write_keys(tmp / "keys", "service.svc", "svc-primary", "svc-secondary")
    write_keys(tmp / "keys", "endpoint.ep", "ep-primary", "ep-secondary")
    write_keys(tmp / "keys", "service.cors", "cors-primary", "cors-secondary")
    private, public = signing_key("ES256")
    (tmp / "token.pub").write_bytes(public)

    def version(name: str, **kw) -> VersionConfig:
        return VersionConfig(name=name, deployment=f"d-{name}", scorer=launch(name, tmp), **kw)

    config = RouterConfig(
        keys_dir=str(tmp / "keys"), token=TokenConfig(public_key_file=str(tmp / "token.pub")), autoscale_enabled=False,
        routes=[
            RouteConfig(kind="service", name="svc", versions=[version("svc", replica_max_concurrent_requests=8)]),
            RouteConfig(kind="endpoint", name="ep", versions=[
                version("blue", traffic_percentile=BLUE_SHARE * 100, replica_max_concurrent_requests=8),
                version("green", is_default=True, is_control=True, replica_max_concurrent_requests=8)]),
            RouteConfig(kind="service", name="tok", auth=AuthConfig(key_enabled=False, token_enabled=True),
                        versions=[version("tok")]),
            RouteConfig(kind="service", name="open", auth=OFF, versions=[version("open", replica_max_concurrent_requests=4)]),
            RouteConfig(kind="service", name="cors", cors_origins=("https://app.example",), versions=[version("cors")]),
            RouteConfig(kind="service", name="typed", auth=OFF, versions=[VersionConfig(
                name="typed", deployment="d-typed", scorer=launch("typed", tmp, script="schema_score.py"))]),
            RouteConfig(kind="service", name="fifo", auth=OFF, versions=[version(
                "fifo", replica_max_concurrent_requests=1, max_request_wait_time_ms=3000)]),
            RouteConfig(kind="service", name="slow", auth=OFF, versions=[version(
                "slow", replica_max_concurrent_requests=1, max_request_wait_time_ms=300, scoring_timeout_ms=1000)]),
        ])
    router = RouterProcess(config, tmp)
    try:
        router.wait_ready()
        yield {"router": router, "private": private, "tmp": tmp}
    finally:
        router.stop()


def test_split_proportions_and_the_version_header(live) -> None:
    router = live["router"]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: score(router.client, "endpoint/ep", authorization="Bearer ep-primary"),
                                range(SPLIT_REQUESTS)))
    assert all(a.status_code == 200 for a in answers)
    for a in answers:  # the header names the version whose replica answered
        assert a.headers["azureml-model-deployment"] == a.json()["version"]
    counts = Counter(a.json()["version"] for a in answers)
    assert set(counts) == {"blue", "green"}
    assert abs(counts["blue"] / SPLIT_REQUESTS - BLUE_SHARE) <= SPLIT_TOLERANCE, counts


def test_pinning_a_version(live) -> None:
    router = live["router"]
    for name in ("blue", "green"):
        for _ in range(20):
            answer = score(router.client, "endpoint/ep", authorization="Bearer ep-secondary",
                           **{"azureml-model-deployment": name})
            assert answer.status_code == 200 and answer.json()["version"] == name
    answer = score(router.client, "endpoint/ep", authorization="Bearer ep-primary", **{"azureml-model-deployment": "red"})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "UnknownVersion"


def slot_taken(router: RouterProcess, queued: int = 0, version: str = "slow") -> None:
    """Wait until the version's only slot is busy (and `queued` requests wait for it)."""
    wait_until(lambda: (s := router.version_status(version))["in_flight"] == 1 and s["queued"] == queued, 10, 0.01,
               "slot taken")


def test_queueing_then_503_after_the_wait(live) -> None:
    """`slow`: 1 replica x 1 slot, 300 ms queue wait."""
    router = live["router"]
    results: dict[str, httpx.Response] = {}
    finished: dict[str, float] = {}

    def call(name: str, body: dict) -> None:
        with httpx.Client(base_url=router.base_url, timeout=30) as client:
            results[name] = score(client, "service/slow", body)
            finished[name] = time.monotonic()

    def start(name: str, body: dict) -> threading.Thread:
        thread = threading.Thread(target=call, args=(name, body))
        thread.start()
        return thread

    # The slot is held for 0.85 s (under the 1 s timeout): three requests queued behind it all wait too long.
    holder = start("holder", {"sleep": 0.85})
    slot_taken(router)
    started = time.monotonic()
    queued = [start(f"queued-{i}", {}) for i in range(3)]
    for t in queued:
        t.join()
    holder.join()
    assert results["holder"].status_code == 200
    for i in range(3):
        rejected = results[f"queued-{i}"]
        assert rejected.status_code == 503 and rejected.headers["retry-after"] == "1"
        assert rejected.headers["content-type"] == "application/json"
        assert rejected.json()["error"]["code"] == "TooManyRequests"
        # gave up after the 300 ms wait (plus client overhead on a busy machine), not when the slot freed
        assert 0.25 <= finished[f"queued-{i}"] - started < 1.0
        assert finished[f"queued-{i}"] < finished["holder"]

    # A request that waits less than the 300 ms is served once the slot frees up, not rejected.
    holder = start("holder", {"sleep": 0.1})
    slot_taken(router)
    call("short", {})
    holder.join()
    assert results["holder"].status_code == 200 and results["short"].status_code == 200


    # autoscale_enabled false (a dev_test cluster): the queue made no replica, the count stays fixed
    assert router.version_status("slow")["replicas"] == 1 and '"scale ' not in router.log()


def test_the_queue_is_first_come_first_served(live) -> None:
    """`fifo`: 1 slot, 3 s queue wait; requests queued one after the other are served in that order (each
    takes 0.2 s, so a busy machine delaying a client thread does not reorder their finishing times)."""
    router = live["router"]
    finished: dict[str, tuple[int, float]] = {}

    def call(name: str, body: dict) -> None:
        with httpx.Client(base_url=router.base_url, timeout=30) as client:
            status = score(client, "service/fifo", body).status_code
            finished[name] = (status, time.monotonic())

    threads = []
    for i, name in enumerate(["holder", "a", "b", "c", "d"]):
        threads.append(threading.Thread(target=call, args=(name, {"sleep": 1.5 if name == "holder" else 0.2})))
        threads[-1].start()
        slot_taken(router, queued=i, version="fifo")  # each is in line before the next one comes
    for t in threads:
        t.join()
    assert [finished[n][0] for n in ("holder", "a", "b", "c", "d")] == [200] * 5
    assert sorted(finished, key=lambda n: finished[n][1]) == ["holder", "a", "b", "c", "d"]


def test_504_on_scoring_timeout(live) -> None:
    router = live["router"]
    started = time.monotonic()
    answer = score(router.client, "service/slow", {"sleep": 2})
    assert answer.status_code == 504 and answer.json()["error"]["code"] == "ScoringTimeout"
    assert 0.95 <= time.monotonic() - started < 1.7
    time.sleep(1.5)  # the replica finishes the abandoned request
    assert score(router.client, "service/slow").status_code == 200


def test_key_auth_cases(live) -> None:
    client = live["router"].client
    assert score(client, "service/svc", authorization="Bearer svc-primary").status_code == 200
    assert score(client, "service/svc", authorization="Bearer svc-secondary").status_code == 200
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Bearer ep-primary"},
                    {"authorization": "svc-primary"}):
        answer = score(client, "service/svc", **headers)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["error"]["code"] == "Unauthorized"
    twice = client.post("/api/v1/service/svc/score", content=b"{}", headers=[
        ("content-type", "application/json"), ("authorization", "Bearer wrong"), ("authorization", "Bearer svc-primary")])
    assert twice.status_code == 400 and twice.json()["error"]["message"] == "more than one Authorization header"


def test_a_rotated_key_applies_without_a_restart(live) -> None:
    router, client = live["router"], live["router"].client
    write_keys(live["tmp"] / "keys", "service.svc", "svc-primary-2", "svc-secondary")
    deadline = time.monotonic() + 2.5  # the key files are re-read at most once a second
    while score(client, "service/svc", authorization="Bearer svc-primary-2").status_code != 200:
        assert time.monotonic() < deadline, "the new key was not taken up"
        time.sleep(0.1)
    assert score(client, "service/svc", authorization="Bearer svc-primary").status_code == 401
    assert score(client, "service/svc", authorization="Bearer svc-secondary").status_code == 200
    assert "svc-primary" not in router.log() and "svc-secondary" not in router.log()


def test_token_auth_cases(live) -> None:
    client, private = live["router"].client, live["private"]
    token, _ = mint_token(private, "tok")
    assert score(client, "service/tok", authorization=f"Bearer {token}").status_code == 200
    other, _ = signing_key("ES256")
    now = int(time.time())
    bad = {
        "missing": None,
        "alg none": jwt.encode({"aud": "tok", "iss": "aks-model-serving", "exp": now + 60}, None, algorithm="none"),
        "wrong key": mint_token(other, "tok")[0],
        "wrong audience": mint_token(private, "svc")[0],
        "expired": mint_token(private, "tok", lifetime_s=-CLOCK_SKEW_S - 5)[0],
        "a key": "svc-secondary",
    }
    for case, credential in bad.items():
        headers = {"authorization": f"Bearer {credential}"} if credential else {}
        answer = score(client, "service/tok", **headers)
        assert answer.status_code == 401, case
        assert answer.headers["www-authenticate"].startswith("Bearer"), case
    assert token not in live["router"].log()


def test_auth_off(live) -> None:
    assert score(live["router"].client, "service/open").status_code == 200


def test_unknown_routes_methods_and_health(live) -> None:
    client = live["router"].client
    for path in ("/api/v1/service/nope/score", "/api/v1/model/svc/score", "/api/v1/service/svc/predict", "/nope"):
        answer = client.post(path)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "NotFound", path
    answer = client.put("/api/v1/service/open/score")
    assert answer.status_code == 405 and answer.headers["allow"] == "POST, GET, OPTIONS"
    assert answer.json()["error"]["code"] == "MethodNotAllowed"
    answer = client.post("/api/v1/service/open/swagger.json")
    assert answer.status_code == 405 and answer.headers["allow"] == "GET, HEAD"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True


def test_swagger_passes_through_without_auth(live) -> None:
    client = live["router"].client
    answer = client.get("/api/v1/service/typed/swagger.json", params={"version": "3"})
    assert answer.status_code == 200 and answer.json()["openapi"].startswith("3.0")
    assert answer.headers["azureml-model-deployment"] == "typed"
    # a script without a schema gets empty object schemas (as from Azure ML's server); an unknown version,
    # the replica's own 404, comes through as it is
    answer = client.get("/api/v1/endpoint/ep/swagger.json")
    assert answer.status_code == 200 and answer.json()["definitions"]["ServiceInput"] == {"type": "object", "example": {}}
    assert answer.headers["azureml-model-deployment"] == "green"  # the default version's
    answer = client.get("/api/v1/endpoint/ep/swagger.json", params={"version": "9"})
    assert answer.status_code == 404 and "not valid" in answer.json()["error"]["message"]


def test_large_bodies_stream_both_ways(live) -> None:
    client = live["router"].client
    big = {"blob": "y" * (20 * 1024 * 1024), "pad": 5 * 1024 * 1024}
    body = json.dumps(big).encode()

    def chunks():  # no length: the router passes it on chunked
        for i in range(0, len(body), 256 * 1024):
            yield body[i:i + 256 * 1024]

    answer = client.post("/api/v1/service/open/score", content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["received"] == len(body) and len(answer.json()["pad"]) == 5 * 1024 * 1024


def test_metrics(live) -> None:
    client = live["router"].client
    assert score(client, "service/open").status_code == 200
    for name in ("blue", "green"):
        assert score(client, "endpoint/ep", authorization="Bearer ep-primary",
                     **{"azureml-model-deployment": name}).status_code == 200
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=live["router"].base_url, timeout=30) as other:
        # one request holds the only slot, the other waits 300 ms for it: a 503
        holder = pool.submit(score, other, "service/slow", {"sleep": 0.5})
        slot_taken(live["router"])
        assert score(client, "service/slow").status_code == 503
        assert holder.result().status_code == 200
    text = client.get("/metrics").text
    assert 'router_requests_total{kind="service",role="service",route="open",status="200",version="open"}' in text
    assert 'router_requests_total{kind="endpoint",role="treatment",route="ep",status="200",version="blue"}' in text
    assert 'router_requests_total{kind="endpoint",role="control",route="ep",status="200",version="green"}' in text
    assert 'router_requests_total{kind="service",role="service",route="slow",status="503",version="slow"}' in text
    assert "router_request_duration_seconds_bucket" in text and "router_ready_replicas" in text
    assert 'le="300.0"' in text  # scoring timeouts of minutes are not all "+Inf"
    # The router's own answers by their code: the queue's 503 above, and a bad key.
    assert 'router_error_responses_total{code="TooManyRequests",kind="service",route="slow",status="503"}' in text
    assert score(client, "endpoint/ep", authorization="Bearer wrong").status_code == 401
    assert 'router_error_responses_total{code="Unauthorized",kind="endpoint",route="ep",status="401"}' in client.get("/metrics").text
    # Swagger is no scoring request.
    open_200 = re.compile(r'router_requests_total\{kind="service",role="service",route="open",status="200",version="open"\} (\S+)')
    before = open_200.search(text).group(1)
    assert client.get("/api/v1/service/open/swagger.json").status_code == 200
    assert open_200.search(client.get("/metrics").text).group(1) == before


def test_get_reaches_the_scorer_with_its_query_and_credentials(live) -> None:
    """Azure ML's raw (rawhttp) scripts answer GET, query and all: the router answered it 405, so such a script
    worked against the scorer and not through the router. GET needs the route's key as POST does."""
    client = live["router"].client
    assert client.get("/api/v1/service/svc/score", params={"sleep": "0"}).status_code == 401
    answer = client.get("/api/v1/service/svc/score", params={"sleep": "0"},
                        headers={"Authorization": "Bearer svc-secondary"})  # the primary is rotated above
    assert answer.status_code == 200 and answer.json()["version"] == "svc"
    assert answer.json()["received"] == len('{"sleep":0}')  # the query, as the scorer reads it for run()


PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"}


def test_the_router_answers_cors_preflights_from_the_routes_origins(live) -> None:
    """A browser asks OPTIONS, without credentials, before each cross-origin call: passed on, each was an anonymous
    request taking a replica's slot, so anyone could queue the paying requests into 503s and scale the version up.
    The router answers them from the route's origins (the scorer's AML_CORS_ORIGINS), as the scorer would."""
    client = live["router"].client
    requests = re.compile(r'router_requests_total\{kind="service",role="service",route="cors",status="200",version="cors"\} (\S+)')
    assert score(client, "service/cors", authorization="Bearer cors-primary").status_code == 200
    before = requests.search(client.get("/metrics").text).group(1)

    answer = client.options("/api/v1/service/cors/score", headers=PREFLIGHT)
    assert answer.status_code == 200 and "azureml-model-deployment" not in answer.headers  # no replica asked
    assert answer.headers["access-control-allow-origin"] == "https://app.example" and answer.headers["vary"] == "Origin"
    assert answer.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    assert answer.headers["access-control-allow-headers"] == "authorization, content-type"
    for refused in ({"Origin": "https://evil.example"}, {"Access-Control-Request-Method": "DELETE"}):
        answer = client.options("/api/v1/service/cors/score", headers=PREFLIGHT | refused)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "CorsPreflightRefused"
    assert requests.search(client.get("/metrics").text).group(1) == before  # no scoring request counted

    # Not a preflight (one header short, or a body, which browsers never send with one): a call like the others.
    for headers, extra in (({"Origin": "https://app.example"}, {}), (PREFLIGHT, {"content": b'{"sleep": 0}'}),
                           (PREFLIGHT, {"content": iter([b'{"sleep": 0}'])})):
        answer = client.request("OPTIONS", "/api/v1/service/cors/score", headers=headers, **extra)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "Unauthorized"
    # A route with no origins has no CORS: its OPTIONS needs credentials, preflight or not.
    assert client.options("/api/v1/service/svc/score", headers=PREFLIGHT).status_code == 401
