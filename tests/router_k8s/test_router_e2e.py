"""The whole Router on the kubernetes backend: a request reaches a replica learned from an EndpointSlice."""

from __future__ import annotations

import asyncio
import logging
import re

import httpx
import pytest
from aiohttp import web

from router_image import app
from router_image.app import Router
from router_image.backends.kubernetes import KubernetesBackend
from router_image.config import (
    AuthConfig,
    AutoscaleConfig,
    PeersConfig,
    RouteConfig,
    RouterConfig,
    RouterScaleConfig,
    VersionConfig,
)
from stub_api import endpoint_slice, serve, until

pytestmark = pytest.mark.anyio


async def _score(request: web.Request) -> web.Response:
    return web.json_response({"scored": await request.json(), "by": "fake-scorer"})


async def _ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def iris_router(api, port: int, pod: str) -> Router:
    """A router pod serving one service, iris, whose replicas listen on `port`. Not autoscaled: a sample
    taken while a request is in flight would scale it to 2 (1 slot, 70 %)."""
    version = VersionConfig(name="v1", deployment="iris", is_default=True, scorer_port=port,
                            autoscale=AutoscaleConfig(enabled=False))
    config = RouterConfig(backend="kubernetes", namespace="models", routes=[
        RouteConfig(kind="service", name="iris", auth=AuthConfig(key_enabled=False), versions=[version])])
    return Router(config, backend=KubernetesBackend(config, api.access, pod))


async def test_a_request_flows_to_an_address_from_an_endpointslice(api) -> None:
    scorer = web.Application()
    scorer.router.add_post("/score", _score)
    scorer.router.add_get("/ready", _ready)
    scorer_runner, port = await serve(scorer)
    api.scales["iris"] = 1
    api.put_slice(endpoint_slice("iris-a", "iris", [("127.0.0.1", True, "iris-1")]))
    router = iris_router(api, port, "router-0")
    await router.startup()
    try:
        await until(lambda: router.pools["iris"].ready == 1)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://router") as client:
            response = await client.post("/api/v1/service/iris/score", json={"data": [[1, 2, 3, 4]]})
        assert response.status_code == 200
        assert response.json() == {"scored": {"data": [[1, 2, 3, 4]]}, "by": "fake-scorer"}
        assert router.backend.replicas("iris") == 1  # read from deployments/iris/scale at startup
        assert await router.backend.probe(f"127.0.0.1:{port}")  # an ejected replica's way back
    finally:
        await router.shutdown()
        await scorer_runner.cleanup()


async def test_a_router_pod_is_not_ready_before_it_has_listed_its_replicas(api) -> None:
    """A new pod (rolling update, scale-out) that the API server answers late: ready, the load balancer
    would send it requests it can only answer 503 while its model has ready replicas."""
    scorer = web.Application()
    scorer.router.add_post("/score", _score)
    scorer_runner, port = await serve(scorer)
    api.refuse_lists = 1
    api.put_slice(endpoint_slice("iris-a", "iris", [("127.0.0.1", True, "iris-1")]))
    router = iris_router(api, port, "router-new")
    await router.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://router") as client:
            assert (await client.get("/readyz")).status_code == 503
            await until(lambda: router.pools["iris"].ready == 1, timeout=5)  # listed again after its pause
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.post("/api/v1/service/iris/score", json={"data": [1]})).status_code == 200
            # A version added later, listed late: this pod (and every other, reloading the same config) stays ready.
            api.refuse_lists = 1
            (version,) = router.config.routes[0].versions
            await router.backend.apply([version, version.model_copy(update={"name": "v2", "deployment": "iris-v2",
                                                                               "is_default": False})])
            assert (await client.get("/readyz")).status_code == 200
    finally:
        await router.shutdown()
        await scorer_runner.cleanup()


async def test_the_leader_patches_the_router_deployments_scale_when_a_peer_routes_late(api, tmp_path) -> None:
    secret = tmp_path / "peer-secret"
    secret.write_text("peer-secret")

    async def load(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer peer-secret":
            return web.Response(status=404)
        return web.json_response({"demand": {}, "cpu_cores": 0.2, "routing_latency_ms": 30.0})

    peer = web.Application()
    peer.router.add_get("/internal/load", load)
    peer_runner, peer_port = await serve(peer, "127.0.0.2")
    api.scales["model-router"] = 2
    api.put_slice(endpoint_slice("peers-a", "model-router-peers", [
        ("127.0.0.2", True, "router-1"), ("127.0.0.3", True, "router-0")]))
    scale = RouterScaleConfig(deployment="model-router", cpu_cores=0.5, max_routing_latency_ms=5,
                              autoscale=AutoscaleConfig(min_replicas=2, max_replicas=4))
    config = RouterConfig(backend="kubernetes", namespace="models", router_scale=scale,
                          peers=PeersConfig(service="model-router-peers", port=peer_port, secret_file=str(secret)))
    backend = KubernetesBackend(config, api.access, "router-0", lease_duration_s=1, renew_every_s=0.1, peer_poll_s=0.1)
    router = Router(config, backend=backend)
    await router.startup()
    path = "/apis/apps/v1/namespaces/models/deployments/model-router/scale"
    try:
        # The stub records a request before it applies it, and the router takes the answer after: wait for both.
        await until(lambda: api.scales["model-router"] == 3 and router.router_scaler.current == 3, timeout=5)
        patch = api.requests("PATCH", path)[0]
        assert patch.body["spec"] == {"replicas": 3} and patch.content_type == "application/merge-patch+json"
        assert api.requests("GET", path)  # the count it started from: the Deployment's
    finally:
        await router.shutdown()
        await peer_runner.cleanup()


async def test_requests_queued_for_a_version_whose_replicas_all_left_go_to_the_default(api) -> None:
    """Its Deployment deleted by `pulumi up` before the kubelet refreshed the router's ConfigMap (up to a
    minute): the queued request was never sent, so the default version serves it instead of a 503."""
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.json_response({"by": "treatment"})

    async def fast(request: web.Request) -> web.Response:
        return web.json_response({"by": "control"})

    treatment_app, control_app = web.Application(), web.Application()
    treatment_app.router.add_post("/score", slow)
    control_app.router.add_post("/score", fast)
    treatment_runner, treatment_port = await serve(treatment_app)
    control_runner, control_port = await serve(control_app)
    api.scales.update({"fraud-control": 1, "fraud-treatment": 1})
    api.put_slice(endpoint_slice("c-a", "fraud-control", [("127.0.0.1", True, "c-1")]))
    api.put_slice(endpoint_slice("t-a", "fraud-treatment", [("127.0.0.1", True, "t-1")]))
    off = AutoscaleConfig(enabled=False)
    control = VersionConfig(name="control", deployment="fraud-control", is_default=True, scorer_port=control_port,
                            traffic_percentile=0, autoscale=off)
    treatment = VersionConfig(name="treatment", deployment="fraud-treatment", scorer_port=treatment_port,
                              traffic_percentile=100, replica_max_concurrent_requests=1, max_request_wait_time_ms=3000,
                              autoscale=off)
    config = RouterConfig(backend="kubernetes", namespace="models", routes=[
        RouteConfig(kind="endpoint", name="fraud", auth=AuthConfig(key_enabled=False), versions=[control, treatment])])
    router = Router(config, backend=KubernetesBackend(config, api.access, "router-0"))
    await router.startup()
    try:
        await until(lambda: router.pools["fraud-control"].ready == 1 and router.pools["fraud-treatment"].ready == 1)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://router",
                                     timeout=10) as client:
            def post():
                return client.post("/api/v1/endpoint/fraud/score", json={"x": 1})
            in_flight = asyncio.create_task(post())  # holds treatment's one slot
            await until(lambda: router.pools["fraud-treatment"].busy_slots == 1)
            queued = asyncio.create_task(post())
            await until(lambda: router.pools["fraud-treatment"].queued == 1)
            api.put_slice(endpoint_slice("t-a", "fraud-treatment", [("127.0.0.1", False, "t-1")]))  # terminating
            answered = await queued
            assert (answered.status_code, answered.json()) == (200, {"by": "control"})
            assert answered.headers["azureml-model-deployment"] == "control"
            assert (await in_flight).json() == {"by": "treatment"}  # the one in flight drains where it is
    finally:
        await router.shutdown()
        await treatment_runner.cleanup()
        await control_runner.cleanup()


def autoscaled(deployment: str = "iris") -> RouterConfig:
    """Service iris, autoscaled on the kubernetes backend, its version run by `deployment`."""
    version = VersionConfig(name="v1", deployment=deployment, is_default=True,
                            autoscale=AutoscaleConfig(refresh_seconds=0.2))
    return RouterConfig(backend="kubernetes", namespace="models", routes=[
        RouteConfig(kind="service", name="iris", auth=AuthConfig(key_enabled=False), versions=[version])])


async def test_a_decision_made_while_the_count_was_unknown_does_not_shrink_the_deployment(api, monkeypatch) -> None:
    """The count was not readable when the version was applied (the API server late, the Deployment created
    after the config): its autoscaler went on from 0 and asked for min_replicas. Applied once the count was
    readable, that scaled a Deployment of 5 in to 1 at once, without the scale-down delay."""
    monkeypatch.setattr(app, "SCALE_RETRY_S", 0.3)
    config = autoscaled()
    router = Router(config, backend=KubernetesBackend(config, api.access, "router-0"))
    await router.startup()  # deployments/iris/scale answers 404
    try:
        await until(lambda: api.requests("GET", "/apis/apps/v1/namespaces/models/deployments/iris/scale")[1:])
        api.scales["iris"] = 5  # readable now, busy
        await until(lambda: router.backend.replicas("iris") != 0)
        await asyncio.sleep(0.5)
        assert api.scales["iris"] == 5 and router.table.autoscalers["iris"].current == 5
        assert api.requests("PATCH", "/apis/apps/v1/namespaces/models/deployments/iris/scale") == []
    finally:
        await router.shutdown()


async def test_a_reload_that_swaps_versions_on_a_slow_api_server_decides_nothing_for_the_one_leaving(
        api, tmp_path, caplog) -> None:
    """A blue-green swap (iris's version out, iris2's in) on an API server answering each call late: the
    outgoing version's count was dropped before the incoming one's was read, while the running table still
    scaled it, so the autoscaler took it for a Deployment scaled to 0 outside the router, decided 0 -> 1, and
    the backend logged an error for a scale it refused, every reload of that kind."""
    api.scales.update(iris=3, iris2=3)
    path = tmp_path / "router.json"
    path.write_text(autoscaled().dump())
    router = Router(autoscaled(), str(path), backend=KubernetesBackend(autoscaled(), api.access, "router-0"))
    await router.startup()
    try:
        await until(lambda: router.table.autoscalers["iris"].current == 3)
        path.write_text(autoscaled("iris2").dump())
        api.scale_read_delay_s = 0.5  # several autoscale samples while iris2's count is read
        caplog.clear()
        caplog.set_level(logging.INFO)
        assert await router.reload()
        assert router.table.autoscalers["iris2"].current == 3
        await asyncio.sleep(0.3)
        about_iris = [r.getMessage() for r in caplog.records
                      if r.name.startswith("router") and re.search(r"\biris\b", r.getMessage())]
        assert about_iris == [] and [r for r in caplog.records if r.levelno >= logging.ERROR] == []
        assert router.backend.replicas("iris") == 0 and api.scales == {"iris": 3, "iris2": 3}
    finally:
        api.scale_read_delay_s = 0.0
        await router.shutdown()


async def test_a_deployment_whose_count_stays_unreadable_is_warned_of_once_not_at_every_retry(
        api, monkeypatch, caplog) -> None:
    """A version whose Deployment is missing (deleted by hand, or not created yet) or whose scale the Role may not
    read: the autoscaler asks for min_replicas from the unknown count every SCALE_RETRY_S, and each refused scale
    logged an error, 720 an hour per version on top of the one warning that the count is not read."""
    monkeypatch.setattr(app, "SCALE_RETRY_S", 0.1)
    config = autoscaled()
    router = Router(config, backend=KubernetesBackend(config, api.access, "router-0"))
    await router.startup()  # deployments/iris/scale answers 404
    try:
        await until(lambda: len(api.requests("GET", "/apis/apps/v1/namespaces/models/deployments/iris/scale")) >= 5)
        told = [r.getMessage() for r in caplog.records if r.name == "router.kubernetes" and r.levelno >= logging.WARNING]
        assert len(told) == 1 and told[0].startswith("deployment iris: scale not read: 404")
    finally:
        await router.shutdown()


def scale_failure_series(deployment: str) -> list[str]:
    from prometheus_client import generate_latest

    return [line for line in generate_latest(app.metrics.REGISTRY).decode().splitlines()
            if line.startswith(f'router_scale_failures_total{{deployment="{deployment}"')]


async def test_a_reload_that_drops_a_deployment_forgets_what_the_router_kept_of_it(api, tmp_path, monkeypatch) -> None:
    """A Deployment the config no longer names kept its router_scale_failures_total series, and its entries in the
    router's and the backend's per-Deployment tables, until a restart: each deploy's renamed versions piled up. A
    scale of it still on its way when the reload came brought them back as it ended."""
    monkeypatch.setattr(app, "SCALE_RETRY_S", 0.1)
    api.scales["other"] = 1
    both = autoscaled()
    both.routes.append(autoscaled("other").routes[0].model_copy(update={"name": "other"}))
    other = autoscaled("other")
    path = tmp_path / "router.json"
    path.write_text(both.dump())
    router = Router(both, str(path), backend=KubernetesBackend(both, api.access, "router-0"))
    await router.startup()  # deployments/iris/scale answers 404: each scale of it fails, its count unreadable
    iris_reads = "/apis/apps/v1/namespaces/models/deployments/iris/scale"
    try:
        await until(lambda: scale_failure_series("iris") and "iris" in router._unapplied)
        api.scale_read_delay_s = 0.3
        reads = len(api.requests("GET", iris_reads))
        await until(lambda: len(api.requests("GET", iris_reads)) > reads)  # a scale of iris on its way
        path.write_text(other.dump())
        assert await router.reload()
        await asyncio.sleep(0.4)  # and ended
        assert scale_failure_series("iris") == []
        backend = router.backend
        assert isinstance(backend, KubernetesBackend)
        for table in (router._retry_at, router._unapplied, router._scaling, router._ready, backend._unread,
                      backend._replicas, backend._counted, backend._read_at):
            assert "iris" not in table
    finally:
        api.scale_read_delay_s = 0.0
        await router.shutdown()
