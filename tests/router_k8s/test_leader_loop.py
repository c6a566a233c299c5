"""The Router's autoscale loop: only the backend's leader scales, on local + remote demand."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from router_image import app
from router_image.app import SCALE_RETRY_S, Router
from router_image.autoscale import PodLoad
from router_image.config import AutoscaleConfig, PeersConfig, RouteConfig, RouterConfig, RouterScaleConfig, VersionConfig
from stub_api import until

pytestmark = pytest.mark.anyio


class FakeBackend:
    """Leadership and peers' demand set by the test; records every scale call."""

    def __init__(self) -> None:
        self.is_leader = False
        self.remote = 0.0
        self.count = 1
        self.routers = 2
        self.pods: list[PodLoad] = []
        self.applies = True
        self.scaled: list[tuple[str, int]] = []

    async def start(self, on_ready) -> None:
        on_ready("iris", [f"127.0.0.{n}:9" for n in range(1, self.count + 1)])  # every replica serving

    async def apply(self, versions) -> None:
        pass

    async def scale(self, deployment: str, replicas: int) -> None:
        self.scaled.append((deployment, replicas))
        if not self.applies:
            return
        if deployment == "model-router":
            self.routers = replicas
        else:
            self.count = replicas

    def replicas(self, deployment: str) -> int:
        return self.routers if deployment == "model-router" else self.count

    def synced(self) -> bool:
        return True

    def problem(self, deployment: str) -> str | None:
        return None

    def rolling(self, deployment: str) -> bool:
        return False

    def remote_demand(self, deployment: str) -> float:
        return self.remote

    def router_pods(self) -> list[PodLoad]:
        return self.pods

    async def probe(self, address: str) -> bool:
        return True

    async def stop(self) -> None:
        pass


async def metric_lines(router: Router, *prefixes: str) -> list[str]:
    """The lines of the router's /metrics that start with one of `prefixes`."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://router") as client:
        text = (await client.get("/metrics")).text
    return [line for line in text.splitlines() if line.startswith(prefixes)]


def _config(**settings) -> RouterConfig:
    autoscale = AutoscaleConfig(min_replicas=1, max_replicas=10, refresh_seconds=0.2, target_utilization=50)
    version = VersionConfig(name="v1", deployment="iris", is_default=True, autoscale=autoscale)
    return RouterConfig(routes=[RouteConfig(kind="service", name="iris", versions=[version])], **settings)


def _idle_iris(backend: FakeBackend, scale_down_delay_seconds: float) -> Router:
    autoscale = AutoscaleConfig(refresh_seconds=0.2, scale_down_delay_seconds=scale_down_delay_seconds)
    version = VersionConfig(name="v1", deployment="iris", is_default=True, autoscale=autoscale)
    return Router(RouterConfig(routes=[RouteConfig(kind="service", name="iris", versions=[version])]), backend=backend)


def _scaled_routers(secret_file: str | None = None) -> RouterConfig:
    scale = RouterScaleConfig(deployment="model-router", cpu_cores=0.5, max_routing_latency_ms=5,
                              autoscale=AutoscaleConfig(min_replicas=2, max_replicas=6, refresh_seconds=0.2,
                                                        target_utilization=50))
    return _config(backend="kubernetes", peers=PeersConfig(service="model-router-peers", secret_file=secret_file),
                   router_scale=scale)


async def test_only_the_leader_scales_on_the_peers_demand() -> None:
    backend = FakeBackend()
    backend.remote = 3.0  # 3 requests at other pods, 1 slot each at 50% target -> 6 replicas
    router = Router(_config(), backend=backend)
    await router.startup()
    try:
        await asyncio.sleep(0.6)
        assert backend.scaled == []  # a follower never scales
        backend.count = 2  # the Deployment's count when leadership arrives
        backend.is_leader = True
        await until(lambda: backend.scaled)
        assert backend.scaled[0] == ("iris", 6)
        assert router.routes[("service", "iris")].versions["v1"].autoscaler.current == 6
    finally:
        await router.shutdown()


async def test_internal_load_reports_in_flight_and_queued_per_deployment() -> None:
    router = Router(_config(), backend=FakeBackend())
    await router.startup()
    try:
        pool = router.pools["iris"]
        await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://router") as client:
            await asyncio.sleep(0.35)  # a few samples of its own load
            response = await client.get("/internal/load")
            metrics = (await client.get("/metrics")).text
        load = response.json()
        assert load["demand"] == {"iris": 2}
        assert load["cpu_cores"] >= 0 and 0 <= load["routing_latency_ms"] < 100
        # The same figures on every pod's /metrics (what benchmarks/router/routing_latency reads).
        assert re.search(r"^router_routing_latency_seconds [0-9.e-]+$", metrics, re.M)
        assert re.search(r"^router_cpu_cores [0-9.e-]+$", metrics, re.M)
        waiter.cancel()
    finally:
        await router.shutdown()


@contextlib.asynccontextmanager
async def _router_with_peers_secret(tmp_path) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """A started router whose peers' secret is a file (given back, to rotate) and a client to it."""
    secret = tmp_path / "secret"
    secret.write_text("peer-secret\n")
    router = Router(_scaled_routers(str(secret)), backend=FakeBackend())
    await router.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://router") as client:
            yield client, secret
    finally:
        await router.shutdown()


async def test_internal_load_answers_only_peers_holding_the_secret(tmp_path) -> None:
    async with _router_with_peers_secret(tmp_path) as (client, secret):
        assert (await client.get("/internal/load")).status_code == 404
        wrong = await client.get("/internal/load", headers={"Authorization": "Bearer peer-secreT"})
        assert wrong.status_code == 404 and "peer-secret" not in wrong.text
        right = await client.get("/internal/load", headers={"Authorization": "Bearer peer-secret"})
        assert right.status_code == 200 and right.json()["demand"] == {"iris": 0}
        secret.write_text("rotated")  # a replaced Secret: no restart
        assert (await client.get("/internal/load", headers={"Authorization": "Bearer peer-secret"})).status_code == 404
        assert (await client.get("/internal/load", headers={"Authorization": "Bearer rotated"})).status_code == 200
        secret.unlink()  # unreadable: nobody reads the load
        assert (await client.get("/internal/load", headers={"Authorization": "Bearer rotated"})).status_code == 404
        secret.write_text("\n")  # mounted but empty: `Bearer ` would match it, so nobody either
        assert (await client.get("/internal/load", headers={"Authorization": "Bearer "})).status_code == 404
        assert (await client.get("/internal/load", headers={"Authorization": "Bearer"})).status_code == 404


async def test_on_a_cluster_status_details_and_metrics_are_only_for_holders_of_the_peers_secret(tmp_path) -> None:
    """They share the public port with the routes: replica addresses and load are not the internet's."""
    async with _router_with_peers_secret(tmp_path) as (client, _):
        anyone = await client.get("/readyz")
        assert anyone.status_code == 200 and anyone.json() == {"ready": True}  # what a probe needs
        peer = {"Authorization": "Bearer peer-secret"}
        assert "routes" in (await client.get("/readyz", headers=peer)).json()
        assert (await client.get("/metrics")).status_code == 404
        metrics_text = await client.get("/metrics", headers=peer)
        assert metrics_text.status_code == 200 and "router_requests" in metrics_text.text


async def test_the_leader_scales_the_router_deployment_on_its_pods_latency_and_cpu() -> None:
    backend = FakeBackend()
    backend.pods = [PodLoad(0.1, 20.0)]  # the other pod: routing 20 ms late, CPU low
    router = Router(_scaled_routers(), backend=backend)
    await router.startup()
    try:
        await asyncio.sleep(0.5)
        assert backend.scaled == []  # a follower never scales
        backend.is_leader = True
        await until(lambda: ("model-router", 3) in backend.scaled)  # mean latency over 5 ms: one pod more
        await asyncio.sleep(0.5)
        assert ("model-router", 4) not in backend.scaled  # the third pod is not ready yet
        backend.pods = [PodLoad(0.5, 1.0), PodLoad(0.5, 1.0)]  # it is; both peers at their whole CPU request
        await until(lambda: backend.routers >= 4)  # 1 core and more over 3 pods x 0.5 x 50%: out on CPU
        assert router.router_scaler is not None and router.router_scaler.current == backend.routers
    finally:
        await router.shutdown()


async def test_a_scale_the_backend_did_not_apply_is_not_believed_and_retried_later() -> None:
    backend = FakeBackend()
    backend.applies = False  # the API refuses every patch
    backend.remote = 3.0
    backend.is_leader = True
    router = Router(_config(), backend=backend)
    await router.startup()
    try:
        await until(lambda: backend.scaled)
        scaler = router.routes[("service", "iris")].versions["v1"].autoscaler
        await asyncio.sleep(0.5)
        assert backend.scaled == [("iris", 6)]  # not again at every sample
        assert scaler.current == 1  # the real count, not the refused one
        backend.applies = True
        await until(lambda: backend.count == 6, timeout=SCALE_RETRY_S + 2)  # tried again after the pause
        assert backend.scaled == [("iris", 6), ("iris", 6)] and scaler.current == 6
    finally:
        await router.shutdown()


async def test_a_change_retried_after_the_backend_did_not_make_it_is_logged_and_counted_once(monkeypatch, caplog) -> None:
    """A count the backend cannot read (it says 0) and a scale it does not apply: the same change, decided again at
    each retry, was logged and counted in router_autoscale_decisions_total every SCALE_RETRY_S, for as long as the
    API failed."""
    monkeypatch.setattr(app, "SCALE_RETRY_S", 0.2)
    caplog.set_level(logging.INFO, logger="router")
    backend = FakeBackend()
    backend.applies, backend.count, backend.is_leader = False, 0, True
    labels = {"kind": "service", "route": "iris", "version": "v1", "role": "service", "direction": "up"}
    counted = app.metrics.REGISTRY.get_sample_value("router_autoscale_decisions_total", labels) or 0.0
    router = Router(_config(), backend=backend)
    await router.startup()
    try:
        await until(lambda: len(backend.scaled) >= 3)
        assert set(backend.scaled) == {("iris", 1)}  # tried again after each pause
        assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("scale iris")] == [
            "scale iris up: 0 -> 1 replicas (min_replicas is 1)"]
        assert app.metrics.REGISTRY.get_sample_value("router_autoscale_decisions_total", labels) == counted + 1
    finally:
        await router.shutdown()


async def test_a_count_set_outside_the_router_is_where_its_autoscaler_goes_on_from() -> None:
    """kubectl scale to 0 (or a GitOps apply): the router scales from the count the backend read back, so a
    version scaled to 0 is back at once, where it stayed at 0 while the router believed its old count."""
    backend = FakeBackend()
    backend.is_leader = True
    router = Router(_config(), backend=backend)
    await router.startup()
    try:
        await asyncio.sleep(0.5)
        assert backend.scaled == []  # 1 replica, idle: nothing to do
        backend.count = 0  # what the backend read back from the API
        await until(lambda: backend.scaled == [("iris", 1)])
        assert router.routes[("service", "iris")].versions["v1"].autoscaler.current == 1
    finally:
        await router.shutdown()


async def test_a_leadership_changing_mid_delay_restarts_the_delay_rather_than_scaling_in_at_once() -> None:
    """The leader idles at 4 replicas, 0.6 s into its 1 s scale-down delay, when another pod takes the lead (a rolling
    update of the routers): the new leader has seen none of that time under the target, so it waits its own full delay
    from its first sample, then scales in; it neither scales in at once nor carries the old leader's clock over."""
    backend = FakeBackend()
    backend.count, backend.is_leader = 4, True
    router = _idle_iris(backend, scale_down_delay_seconds=1.0)
    await router.startup()
    try:
        await asyncio.sleep(0.6)
        backend.is_leader = False  # the lead moves to another pod, and back to this one as the new leader
        await asyncio.sleep(0.3)
        backend.is_leader = True
        led = asyncio.get_running_loop().time()
        await until(lambda: backend.scaled, timeout=3.0)
        assert backend.scaled == [("iris", 1)]
        assert 1.0 <= asyncio.get_running_loop().time() - led <= 2.5
    finally:
        await router.shutdown()


class SlowScale(FakeBackend):
    """An API that hangs on scaling `iris` until released; each version's count on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.counts: dict[str, int] = {}

    async def scale(self, deployment: str, replicas: int) -> None:
        self.scaled.append((deployment, replicas))
        if deployment == "iris":
            await self.release.wait()
        self.counts[deployment] = replicas

    def replicas(self, deployment: str) -> int:
        return self.counts.get(deployment, 1)


async def test_a_slow_scale_of_one_deployment_holds_back_no_other_decision() -> None:
    """A scale call may take the API's 10 s timeout: awaited in the sampling loop, it held every other version
    (and the router's own pods) at its count, however busy, until it returned."""
    autoscale = AutoscaleConfig(min_replicas=1, max_replicas=10, refresh_seconds=0.2, target_utilization=50)
    routes = [RouteConfig(kind="service", name=name, versions=[
        VersionConfig(name="v1", deployment=name, is_default=True, autoscale=autoscale)]) for name in ("iris", "wine")]
    backend = SlowScale()
    backend.remote = 3.0  # on each version: 6 replicas
    backend.is_leader = True
    router = Router(RouterConfig(routes=routes), backend=backend)
    await router.startup()
    try:
        await until(lambda: backend.counts.get("wine") == 6, timeout=1.0)
        assert backend.scaled.count(("iris", 6)) == 1  # still being applied: not decided again meanwhile
        assert "iris" not in backend.counts
        backend.release.set()
        await until(lambda: backend.counts.get("iris") == 6)
        assert router.routes[("service", "iris")].versions["v1"].autoscaler.current == 6
    finally:
        backend.release.set()
        await router.shutdown()


async def test_a_pod_that_lost_the_lead_exports_no_utilization_or_desired_count() -> None:
    """A follower's scalers do not sample: its gauges stayed at what it last decided, beside the new leader's, so
    a dashboard or alert over the pods saw a utilization and a count of long ago."""
    backend = FakeBackend()
    backend.remote = 3.0
    backend.is_leader = True
    router = Router(_config(), backend=backend)
    await router.startup()

    async def scaling_gauges() -> list[str]:
        return [line for line in await metric_lines(router, "router_desired_replicas{", "router_utilization")
                if 'route="iris"' in line]

    try:
        await until(lambda: backend.scaled)
        await asyncio.sleep(0.3)
        assert any(line.startswith("router_desired_replicas{") and line.endswith(" 6.0") for line in await scaling_gauges())
        backend.is_leader = False
        await asyncio.sleep(0.3)
        assert await scaling_gauges() == []
    finally:
        await router.shutdown()


async def test_a_pod_that_lost_the_lead_exports_no_desired_router_pods() -> None:
    """`router_desired_pods` had no labels to remove: a pod that had led kept its last figure beside the new leader's,
    and one that never led exported 0, so a max() over the pods read a count of long ago."""
    backend = FakeBackend()
    backend.pods = [PodLoad(0.1, 20.0)]  # routing 20 ms late: one pod more
    backend.is_leader = True
    router = Router(_scaled_routers(), backend=backend)
    await router.startup()

    try:
        await until(lambda: ("model-router", 3) in backend.scaled)
        await asyncio.sleep(0.3)
        assert await metric_lines(router, "router_desired_pods") == ['router_desired_pods{deployment="model-router"} 3.0']
        backend.is_leader = False
        await asyncio.sleep(0.3)
        assert await metric_lines(router, "router_desired_pods") == []
    finally:
        await router.shutdown()


class Starting(FakeBackend):
    """4 replicas of which only the first serves until `serve_all`: the others still load their model."""

    async def start(self, on_ready) -> None:
        self.on_ready = on_ready
        on_ready("iris", ["127.0.0.1:9"])

    def serve_all(self) -> None:
        self.on_ready("iris", [f"127.0.0.{n}:9" for n in range(1, 5)])


async def test_replicas_still_starting_are_not_scaled_in_until_they_serve() -> None:
    """Idle, 1 of 4 replicas serving: the 3 starting count as busy (75% over the 70% target), so the leader waits
    for them; once they serve, the idle version comes down after its delay."""
    backend = Starting()
    backend.count, backend.is_leader = 4, True
    router = _idle_iris(backend, scale_down_delay_seconds=0.5)
    await router.startup()
    try:
        await asyncio.sleep(1.5)  # three delays
        assert backend.scaled == []
        backend.serve_all()
        await until(lambda: backend.scaled, timeout=3.0)
        assert backend.scaled == [("iris", 1)]
    finally:
        await router.shutdown()


async def test_router_leader_says_which_pod_leads() -> None:
    """Nothing said which pod held the Lease but its log: `router_leader` is 1 while it leads, 0 once it lost the
    lead (or stopped, handing it over)."""
    backend = FakeBackend()
    router = Router(_config(), backend=backend)
    await router.startup()
    stopped = False
    try:
        await asyncio.sleep(0.25)
        assert await metric_lines(router, "router_leader ") == ["router_leader 0.0"]
        backend.is_leader = True
        await asyncio.sleep(0.25)
        assert await metric_lines(router, "router_leader ") == ["router_leader 1.0"]
        backend.is_leader = False
        await asyncio.sleep(0.25)
        assert await metric_lines(router, "router_leader ") == ["router_leader 0.0"]
        backend.is_leader = True
        await asyncio.sleep(0.25)
        await router.shutdown()
        stopped = True
        assert await metric_lines(router, "router_leader ") == ["router_leader 0.0"]
    finally:
        if not stopped:
            await router.shutdown()
