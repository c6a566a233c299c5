"""The Router app in-process with a backend double: readiness per backend, auth settings on reload."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import Fixed  # noqa: E402
from keys import write_keys  # noqa: E402

from router_image.app import Router  # noqa: E402
from router_image.config import RouteConfig, RouterConfig, VersionConfig  # noqa: E402
from router_image.proxy import request_head, request_lines  # noqa: E402

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


def test_the_fast_paths_one_header_pass_matches_the_asgi_paths_rules() -> None:
    """request_lines forwards what request_head forwards, and finds the pin and credentials _version
    finds (the last of each)."""
    headers = [(b"host", b"r"), (b"authorization", b"Bearer a"), (b"content-type", b"application/json"),
               (b"azureml-model-deployment", b"v1"), (b"content-length", b"2"), (b"authorization", b"Bearer b"),
               (b"connection", b"keep-alive"), (b"x-ms-client-request-id", b"42"), (b"azureml-model-deployment", b"v2")]
    lines, pinned, authorization = request_lines(headers)
    head, length = request_head(b"POST", b"/score", b"", headers)
    assert head[1] == b"\r\n" + lines and length == 2
    assert lines == (b"content-type: application/json\r\nazureml-model-deployment: v1\r\n"
                     b"x-ms-client-request-id: 42\r\nazureml-model-deployment: v2\r\n")
    assert (pinned, authorization) == ("v2", b"Bearer b")
    assert request_lines([]) == (b"", None, None)
