"""The Router app in-process with a backend double: readiness per backend, auth settings on reload,
a reload that fails."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import Fixed  # noqa: E402
from keys import write_keys  # noqa: E402

from router_image import app, auth  # noqa: E402
from router_image.app import Router  # noqa: E402
from router_image import __main__ as main_module  # noqa: E402
from router_image.config import (AuthConfig, AutoscaleConfig, PeersConfig, RouteConfig, RouterConfig, TokenConfig,  # noqa: E402
                                 VersionConfig)
from router_image.proxy import request_head, request_lines  # noqa: E402
from router_image.responses import HttpError  # noqa: E402

pytestmark = pytest.mark.anyio


def config(backend: str, keys_dir: str | None = None) -> RouterConfig:
    return RouterConfig(backend=backend, keys_dir=keys_dir, routes=[RouteConfig(kind="service", name="s", versions=[
        VersionConfig(name="v1", deployment="s", max_request_wait_time_ms=50)])])


@pytest.mark.parametrize("backend, status", [("local", 503), ("kubernetes", 200)])
async def test_readiness_locally_waits_for_every_version_but_a_pod_does_not(backend, status) -> None:
    router = Router(config(backend), backend=Fixed({}))
    await router.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://r") as client:
            answer = await client.get("/readyz")
            assert answer.status_code == status
            assert answer.json()["routes"][0]["versions"][0]["ready"] == 0
    finally:
        await router.shutdown()


async def test_a_reload_that_moves_the_keys_applies_them(tmp_path) -> None:
    write_keys(tmp_path / "old", "service.s", "old-1", "old-2")
    write_keys(tmp_path / "new", "service.s", "new-1", "new-2")
    path = tmp_path / "router.json"
    path.write_text(config("local", str(tmp_path / "old")).dump())
    router = Router(RouterConfig.load(path), str(path), backend=Fixed({}))
    await router.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://r") as client:
            def call(key: str):
                return client.post("/api/v1/service/s/score", headers={"authorization": f"Bearer {key}"})

            assert (await call("old-1")).status_code == 503  # admitted; no replica to answer
            path.write_text(config("local", str(tmp_path / "new")).dump())
            assert await router.reload()
            assert (await call("old-1")).status_code == 401
            assert (await call("new-2")).status_code == 503
    finally:
        await router.shutdown()


class Refusing(Fixed):
    """Fixed, whose apply raises while `refuse` is set and otherwise reports each version's addresses
    (as the kubernetes backend may, before apply returns)."""

    refuse = False

    async def start(self, on_ready) -> None:
        self.on_ready = on_ready
        await super().start(on_ready)

    async def apply(self, versions) -> None:
        if self.refuse:
            raise RuntimeError("the API server is unavailable")
        for v in versions:
            self.on_ready(v.deployment, self.addresses.get(v.deployment, []))


async def test_a_reload_that_fails_changes_nothing_and_is_retried_until_it_applies(tmp_path, monkeypatch,
                                                                                  caplog) -> None:
    monkeypatch.setattr(app, "CONFIG_POLL_S", 0.02)
    path = tmp_path / "router.json"
    path.write_text(config("local").dump())
    backend = Refusing({"s": ["127.0.0.1:1"], "t": ["127.0.0.1:2"]})
    router = Router(RouterConfig.load(path), str(path), backend=backend)
    await router.startup()
    try:
        running = router.table
        # The ConfigMap names a token key the Secret does not hold yet: nothing of it applies.
        tokens = config("local").model_copy(update={"token": TokenConfig(public_key_file=str(tmp_path / "jwt.pub"))})
        path.write_text(tokens.dump())
        await asyncio.sleep(0.2)
        assert router.table is running and router.config.token is None

        # The backend refuses the versions: the table is not swapped, the running pools keep their limits.
        backend.refuse = True
        grown = RouterConfig(routes=[RouteConfig(kind="service", name=name, versions=[
            VersionConfig(name="v1", deployment=name, max_request_wait_time_ms=900)]) for name in ("s", "t")])
        path.write_text(grown.dump())
        await asyncio.sleep(0.2)
        assert router.table is running and router.pools["s"].max_wait_s == 0.05
        assert router.status()["config_error"]  # what `local up` reads to say why, rather than wait out its timeout

        backend.refuse = False  # the same file is tried again at each poll: it applies, unchanged
        async with asyncio.timeout(3):
            while ("service", "t") not in router.routes:
                await asyncio.sleep(0.02)
        assert router.pools["s"].max_wait_s == 0.9 and router.status()["config_error"] is None
        assert list(router.pools["t"].replicas) == ["127.0.0.1:2"]  # reported during apply, before the swap
        failures = [r for r in caplog.records if r.levelno == logging.ERROR and "not applied" in r.getMessage()]
        assert len(failures) == 2  # once per file, not at every retry
    finally:
        await router.shutdown()


def test_the_fast_paths_one_header_pass_matches_the_asgi_paths_rules() -> None:
    """request_lines forwards what request_head forwards, and finds the pin and credentials _version finds;
    two Authorization headers, or two pins, are refused by both (which would a front proxy have checked?)."""
    headers = [(b"host", b"r"), (b"content-type", b"application/json"), (b"content-length", b"2"),
               (b"authorization", b"Bearer b"), (b"connection", b"keep-alive"), (b"x-ms-client-request-id", b"42"),
               (b"azureml-model-deployment", b"v2")]
    lines, pinned, authorization = request_lines(headers)
    head, length = request_head(b"POST", b"/score", b"", headers)
    assert head[1] == b"\r\n" + lines and length == 2
    assert lines == b"content-type: application/json\r\nx-ms-client-request-id: 42\r\nazureml-model-deployment: v2\r\n"
    assert (pinned, authorization) == ("v2", b"Bearer b")
    assert request_lines([]) == (b"", None, None)
    # An empty pin pins nothing, on both paths: the split decides, not a 404 for a version named "".
    empty = [(b"azureml-model-deployment", b"")]
    assert request_lines(empty)[1] is None
    router = Router(two_versions({"traffic_percentile": 100}, {"is_default": True}, "pin"),
                    backend=Fixed({"pin-v1": ["127.0.0.1:1"], "pin-v2": ["127.0.0.1:2"]}))
    for deployment, addresses in router.backend.addresses.items():
        router._on_ready(deployment, addresses)
    version, pinned = router._version(router.routes[("endpoint", "pin")], "score", empty)
    assert pinned is None and version.config.name == "v2"
    twice = [(b"authorization", b"Bearer a"), *headers]
    with pytest.raises(HttpError, match="more than one Authorization header") as caught:
        request_lines(twice)
    assert caught.value.status == 400
    with pytest.raises(HttpError, match="more than one Authorization header"):
        router._version(router.routes[("endpoint", "pin")], "score", twice)
    for pins in ((b"v1", b"v2"), (b"", b"v1"), (b"v2", b"v2")):  # the last one was taken, and both passed on
        two_pins = [(b"azureml-model-deployment", pins[0]), *headers[:-1], (b"azureml-model-deployment", pins[1])]
        with pytest.raises(HttpError, match="more than one azureml-model-deployment header") as caught:
            request_lines(two_pins)
        assert caught.value.status == 400
        with pytest.raises(HttpError, match="more than one azureml-model-deployment header"):
            router._version(router.routes[("endpoint", "pin")], "score", two_pins)


def test_headers_the_clients_connection_header_lists_stay_on_its_hop() -> None:
    """RFC 9110 7.6.1, on both paths; Proxy-Connection too."""
    headers = [(b"x-hop", b"secret"), (b"content-type", b"application/json"), (b"connection", b"keep-alive, X-Hop"),
               (b"proxy-connection", b"keep-alive"), (b"x-other", b"1"), (b"connection", b"x-other")]
    lines, _, _ = request_lines(headers)
    head, _ = request_head(b"POST", b"/score", b"", headers)
    assert lines == b"content-type: application/json\r\n" and head[1] == b"\r\n" + lines


SECRET = "sig=TOPSECRET"


async def test_a_config_that_does_not_validate_is_told_without_the_values_it_holds(tmp_path, caplog, capsys) -> None:
    """A misspelt field holding a SAS URL: pydantic's own text would quote it into the log."""
    path = tmp_path / "router.json"
    path.write_text(config("local").dump())
    router = Router(RouterConfig.load(path), str(path), backend=Fixed({}))
    await router.startup()
    try:
        broken = config("local").model_dump(mode="json")
        broken["routes"][0]["versions"][0]["scorer"] = {"environment": {"MODEL_URL": f"https://a/b?{SECRET}"}}
        path.write_text(json.dumps(broken))
        assert not await router.reload()
        [failure] = [r.getMessage() for r in caplog.records if "not applied" in r.getMessage()]
        assert "routes.0.versions.0.scorer.environment: Extra inputs are not permitted" in failure
        assert SECRET not in caplog.text
    finally:
        await router.shutdown()
    with pytest.raises(SystemExit) as exited:  # the same file at start: a message and exit 2, no traceback
        main_module.main(["--config", str(path)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Extra inputs are not permitted" in err and SECRET not in err


def test_two_versions_of_one_name_in_a_route_are_refused() -> None:
    """A pin or a split names a version: the second of one name was unreachable, yet still run."""
    doc = config("local").model_dump(mode="json")
    doc["routes"][0]["versions"].append({**doc["routes"][0]["versions"][0], "deployment": "s2"})
    with pytest.raises(ValueError, match="version names declared twice: v1"):
        RouterConfig.model_validate(doc)


async def test_a_reload_changing_what_is_read_at_start_is_refused(tmp_path, caplog) -> None:
    path = tmp_path / "router.json"
    path.write_text(config("local").dump())
    router = Router(RouterConfig.load(path), str(path), backend=Fixed({}))
    await router.startup()
    try:
        path.write_text(config("local").model_copy(update={"port": 9999, "namespace": "other"}).dump())
        assert not await router.reload()
        assert "namespace, port changed, which takes effect only when the router restarts" in caplog.text
        assert router.config.port == 8080
    finally:
        await router.shutdown()


def two_versions(v2: dict, v1: dict | None = None, name: str = "e") -> RouterConfig:
    """An endpoint of two versions (metrics are per process: a test reading them names its own endpoint)."""
    return RouterConfig(routes=[RouteConfig(kind="endpoint", name=name, auth=AuthConfig(key_enabled=False), versions=[
        VersionConfig(name="v1", deployment=f"{name}-v1", **(v1 or {})),
        VersionConfig(name="v2", deployment=f"{name}-v2", **v2)])])


async def test_a_new_default_without_a_ready_replica_leaves_the_requests_to_a_ready_version() -> None:
    """A reload making a starting version the default: the old one serves until it is ready, not 503s."""
    router = Router(two_versions({"is_default": True, "traffic_percentile": 100}), backend=Fixed({"e-v1": ["127.0.0.1:1"]}))
    await router.startup()
    try:
        route = router.routes[("endpoint", "e")]
        assert {router._pick(route, "score", None, None).config.name for _ in range(50)} == {"v1"}
        assert router._pick(route, "score", "v2", None).config.name == "v2"  # a pin is kept: it queues
        router._on_ready("e-v2", ["127.0.0.1:2"])
        assert {router._pick(route, "score", None, None).config.name for _ in range(50)} == {"v2"}
    finally:
        await router.shutdown()


async def test_a_reload_drops_the_series_of_removed_versions_and_starts_new_autoscalers_from_the_backend(
        tmp_path, caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "router.json"
    path.write_text(two_versions({"traffic_percentile": 50}, {"is_default": True}, "g").dump())
    backend = Fixed({"g-v1": ["127.0.0.1:1"], "g-v2": ["127.0.0.1:2"], "g-v3": ["127.0.0.1:3", "127.0.0.1:4"]})
    router = Router(RouterConfig.load(path), str(path), backend=backend)
    await router.startup()

    async def scraped() -> str:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://r") as client:
            return (await client.get("/metrics")).text

    try:
        await asyncio.sleep(0.3)  # a few samples: every version's gauges are set
        assert 'router_ready_replicas{kind="endpoint",role="treatment",route="g",version="v2"} 1.0' in await scraped()
        for version in router.routes[("endpoint", "g")].versions.values():  # answered, queued, scaled
            version.stats.observe(200, 0.01)
            app.metrics.queue_waited(version.labels, 0.01)
            app.metrics.SCALINGS.labels(*version.labels, "up").inc()
        # v2 goes, v3 comes (autoscaled; the backend runs 2 of it); v1 stops being autoscaled.
        grown = RouterConfig(routes=[RouteConfig(kind="endpoint", name="g", auth=AuthConfig(key_enabled=False), versions=[
            VersionConfig(name="v1", deployment="g-v1", is_default=True, autoscale=AutoscaleConfig(enabled=False)),
            VersionConfig(name="v3", deployment="g-v3", traffic_percentile=50,
                          autoscale=AutoscaleConfig(min_replicas=1, max_replicas=4))])])
        path.write_text(grown.dump())
        assert await router.reload()
        assert router.table.autoscalers["g-v3"].current == 2
        await asyncio.sleep(0.3)
        text = await scraped()
        gauges = [line for line in text.splitlines() if 'route="g"' in line and not line.startswith("router_request")]
        # Kept, every deploy's versions stayed in /metrics until a restart.
        assert [line for line in text.splitlines() if 'route="g"' in line and 'version="v2"' in line] == []
        assert 'router_requests_total{kind="endpoint",role="treatment",route="g",status="200",version="v1"} 1.0' in text
        assert 'router_queue_wait_seconds_count{kind="endpoint",role="treatment",route="g",version="v1"} 1.0' in text
        assert [line for line in gauges if 'version="v1"' in line and line.startswith(("router_desired", "router_util"))] == []
        assert 'router_ready_replicas{kind="endpoint",role="treatment",route="g",version="v3"} 2.0' in gauges
        assert "scale g-v3" not in caplog.text  # idle, at what it runs: no decision
    finally:
        await router.shutdown()


def test_a_log_line_about_a_request_names_its_id() -> None:
    record = logging.LogRecord("router", logging.INFO, __file__, 1, "service iris: %d %s", (401, "Unauthorized"), None)
    assert "request_id" not in json.loads(main_module.JsonLines().format(record))
    record.request_id = "client-rid-1"
    line = json.loads(main_module.JsonLines().format(record))
    assert (line["message"], line["request_id"]) == ("service iris: 401 Unauthorized", "client-rid-1")


class _Breaking(Fixed):
    """A backend whose demand read fails once the test says so: what an unexpected error does to the
    autoscaling loop."""

    broken = False

    def remote_demand(self, deployment: str) -> float:
        if self.broken:
            raise RuntimeError("demand read broke")
        return 0.0


async def test_a_loop_that_stops_fails_healthz_naming_it_and_is_logged_when_it_stops(caplog) -> None:
    backend = _Breaking({"s": []})
    router = Router(config("local"), backend=backend)
    await router.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://r") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            def logged() -> bool:
                return any("autoscale loop stopped" in r.getMessage() and r.exc_info is not None
                           and "demand read broke" in str(r.exc_info[1]) for r in caplog.records)

            with caplog.at_level(logging.ERROR, logger="router_image.app"):
                backend.broken = True
                for _ in range(50):  # the loop samples every SAMPLE_S (100 ms); the log line follows its end
                    await asyncio.sleep(0.05)
                    if router.stopped_loops() and logged():
                        break
            answer = await client.get("/healthz")
            assert answer.status_code == 503 and answer.json() == {"status": "failing", "stopped": ["autoscale"]}
            assert logged()
    finally:
        await router.shutdown()
    assert router.stopped_loops() == ["autoscale"]  # the others, cancelled at shutdown, did not fail


async def _peered_router(secret: Path, caplog) -> Router:
    """A started kubernetes router whose peers' secret is `secret`, its log caught from INFO."""
    peers = PeersConfig(service="model-router-peers", secret_file=str(secret))
    router = Router(config("kubernetes").model_copy(update={"peers": peers}), backend=Fixed({}))
    caplog.set_level(logging.INFO, logger="router")
    await router.startup()
    return router


async def test_a_peers_secret_that_cannot_be_read_is_warned_of_once_not_at_every_request(tmp_path, caplog) -> None:
    """/readyz, /metrics and the load are read by the kubelet, Prometheus and the peers (and anyone else): a
    missing secret file logged a warning at each, a log anyone could flood."""
    secret = tmp_path / "peers-secret"
    router = await _peered_router(secret, caplog)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://r") as client:
            guess = {"authorization": "Bearer guess"}
            for _ in range(5):
                assert "routes" not in (await client.get("/readyz", headers=guess)).json()  # nobody is a peer
            assert caplog.text.count("peers' secret not usable") == 1
            secret.write_text("s3cret")
            answer = await client.get("/readyz", headers={"authorization": "Bearer s3cret"})
            assert "routes" in answer.json() and "peers' secret usable again" in caplog.text
            secret.unlink()
            await client.get("/readyz", headers=guess)
            assert caplog.text.count("peers' secret not usable") == 2
    finally:
        await router.shutdown()


async def test_a_probe_without_credentials_gets_readiness_alone_without_the_secret_being_read(tmp_path, caplog) -> None:
    """The kubelet's probe, and anyone's, at every request: the secret file read and the whole status built
    (every route's replicas and load) only to be thrown away."""
    secret = tmp_path / "peers-secret"  # missing: a read would warn
    router = await _peered_router(secret, caplog)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://r") as client:
            answer = await client.get("/readyz")
            assert answer.json() == {"ready": router.status()["ready"]}
            assert "peers' secret not usable" not in caplog.text
    finally:
        await router.shutdown()


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", app.LOAD_PATH])
async def test_probes_metrics_and_the_load_answer_get_and_head_alone(path) -> None:
    """They answered any method: a POST or DELETE got the probe's 200, as if it had done something."""
    router = Router(config("kubernetes"), backend=Fixed({}))  # no peers' secret: /metrics and the load answer anyone
    await router.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://r") as client:
            for method in ("GET", "HEAD"):
                assert (await client.request(method, path)).status_code == 200, method
            for method in ("POST", "PUT", "DELETE", "OPTIONS"):
                answer = await client.request(method, path)
                assert answer.status_code == 405 and answer.headers["allow"] == "GET, HEAD", (method, answer)
                assert answer.json()["error"] == {"code": "MethodNotAllowed", "message": f"{method} is not allowed on {path}"}
                assert answer.headers["x-request-id"]
    finally:
        await router.shutdown()


async def test_the_routers_own_answers_count_under_their_route_and_junk_adds_no_series(tmp_path) -> None:
    """An SRE alerting on one service's refused keys needs its route on the count; what a client chooses (a
    service name, a pinned version, a path) must not become a label value, or anyone could grow the scrape."""
    write_keys(tmp_path / "keys", "service.counted", "key-1", "key-2")
    config = RouterConfig(keys_dir=str(tmp_path / "keys"), routes=[RouteConfig(kind="service", name="counted", versions=[
        VersionConfig(name="v1", deployment="counted", max_request_wait_time_ms=10)])])
    router = Router(config, backend=Fixed({}))
    await router.startup()

    def counted(route: str, status: str, code: str, kind: str = "service") -> float:
        labels = {"kind": kind, "route": route, "status": status, "code": code}
        return app.metrics.REGISTRY.get_sample_value("router_error_responses_total", labels) or 0.0

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://r") as client:
            async def junk(tag: str) -> None:
                await client.post(f"/api/v1/service/{tag}/score")
                await client.post(f"/api/v1/endpoint/{tag}/score")
                await client.get(f"/{tag}/metrics")
                await client.post("/api/v1/service/counted/score", headers={"authorization": f"Bearer {tag}"})
                await client.post("/api/v1/service/counted/score", headers={"authorization": "Bearer key-1",
                                                                             "azureml-model-deployment": tag})

            before = counted("counted", "401", "Unauthorized"), counted("", "404", "NotFound", kind="")
            await junk("first")
            assert counted("counted", "401", "Unauthorized") == before[0] + 1
            assert counted("counted", "404", "UnknownVersion") >= 1
            assert counted("", "404", "NotFound", kind="") == before[1] + 3  # no route named: no route label

            def series(text: str) -> int:
                return sum(len(family.samples) for family in text_string_to_metric_families(text))

            scraped = series((await client.get("/metrics")).text)
            for i in range(20):
                await junk(f"junk-{i}")
            assert series((await client.get("/metrics")).text) == scraped
    finally:
        await router.shutdown()


@pytest.mark.skipif(not auth.__file__.endswith(".py"), reason="a compiled Authenticator's refresh cannot be replaced")
async def test_credentials_that_do_not_reread_keep_the_last_ones_and_the_router_healthy(monkeypatch, caplog) -> None:
    """A re-read that raises (the key folder gone between its check and its listing) ended the credentials watch:
    /healthz failed and the kubelet restarted the pod. The last keys read stay in use; the failure is told once."""
    monkeypatch.setattr(app, "KEY_RELOAD_S", 0.02)
    router = Router(config("local"), backend=Fixed({}))
    failures = 0

    def refresh() -> None:
        nonlocal failures
        failures += 1
        raise FileNotFoundError(2, "No such file or directory", "/keys")

    monkeypatch.setattr(router.auth, "refresh", refresh)
    await router.startup()
    try:
        async with asyncio.timeout(3):
            while failures < 5:
                await asyncio.sleep(0.02)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://r") as client:
            assert (await client.get("/healthz")).status_code == 200
        told = [r.getMessage() for r in caplog.records if "credentials not re-read" in r.getMessage()]
        assert len(told) == 1 and "/keys" in told[0]  # once, not every period
    finally:
        await router.shutdown()
