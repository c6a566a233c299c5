"""The whole Router on the kubernetes backend: a request reaches a replica learned from an EndpointSlice."""

from __future__ import annotations

import httpx
import pytest
from aiohttp import web

from router_image.app import Router
from router_image.backends.kubernetes import KubernetesBackend
from router_image.config import AuthConfig, RouteConfig, RouterConfig, VersionConfig
from stub_api import endpoint_slice, serve, until

pytestmark = pytest.mark.anyio


async def _score(request: web.Request) -> web.Response:
    return web.json_response({"scored": await request.json(), "by": "fake-scorer"})


async def _ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


async def test_a_request_flows_to_an_address_from_an_endpointslice(api) -> None:
    scorer = web.Application()
    scorer.router.add_post("/score", _score)
    scorer.router.add_get("/ready", _ready)
    scorer_runner, port = await serve(scorer)
    api.scales["iris"] = 1
    api.put_slice(endpoint_slice("iris-a", "iris", [("127.0.0.1", True, "iris-1")]))
    version = VersionConfig(name="v1", deployment="iris", is_default=True, scorer_port=port)
    config = RouterConfig(backend="kubernetes", namespace="models", routes=[
        RouteConfig(kind="service", name="iris", auth=AuthConfig(key_enabled=False), versions=[version])])
    router = Router(config, backend=KubernetesBackend(config, api.access, "router-0"))
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
