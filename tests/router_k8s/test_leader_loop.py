"""The Router's autoscale loop: only the backend's leader scales, on local + remote demand."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from router_image.app import Router
from router_image.config import AutoscaleConfig, RouteConfig, RouterConfig, VersionConfig
from stub_api import until

pytestmark = pytest.mark.anyio


class FakeBackend:
    """Leadership and peers' demand set by the test; records every scale call."""

    def __init__(self) -> None:
        self.is_leader = False
        self.remote = 0.0
        self.count = 1
        self.scaled: list[tuple[str, int]] = []

    async def start(self, on_ready) -> None:
        on_ready("iris", ["127.0.0.1:9"])

    async def apply(self, versions) -> None:
        pass

    async def scale(self, deployment: str, replicas: int) -> None:
        self.scaled.append((deployment, replicas))
        self.count = replicas

    def replicas(self, deployment: str) -> int:
        return self.count

    def remote_demand(self, deployment: str) -> float:
        return self.remote

    async def probe(self, address: str) -> bool:
        return True

    async def stop(self) -> None:
        pass


def _config() -> RouterConfig:
    autoscale = AutoscaleConfig(min_replicas=1, max_replicas=10, refresh_seconds=0.2, target_utilization=50)
    version = VersionConfig(name="v1", deployment="iris", is_default=True, autoscale=autoscale)
    return RouterConfig(routes=[RouteConfig(kind="service", name="iris", versions=[version])])


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
            response = await client.get("/internal/load")
        assert response.json() == {"iris": 2}
        waiter.cancel()
    finally:
        await router.shutdown()
