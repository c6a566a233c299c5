"""The Router app in-process with a backend double: readiness per backend, auth settings on reload,
a reload that fails."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import Fixed  # noqa: E402
from keys import write_keys  # noqa: E402

from router_image import app  # noqa: E402
from router_image.app import Router  # noqa: E402
from router_image.config import RouteConfig, RouterConfig, TokenConfig, VersionConfig  # noqa: E402
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

        backend.refuse = False  # the same file is tried again at each poll: it applies, unchanged
        async with asyncio.timeout(3):
            while ("service", "t") not in router.routes:
                await asyncio.sleep(0.02)
        assert router.pools["s"].max_wait_s == 0.9
        assert list(router.pools["t"].replicas) == ["127.0.0.1:2"]  # reported during apply, before the swap
        failures = [r for r in caplog.records if r.levelno == logging.ERROR and "not applied" in r.getMessage()]
        assert len(failures) == 2  # once per file, not at every retry
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


def test_headers_the_clients_connection_header_lists_stay_on_its_hop() -> None:
    """RFC 9110 7.6.1, on both paths; Proxy-Connection too."""
    headers = [(b"x-hop", b"secret"), (b"content-type", b"application/json"), (b"connection", b"keep-alive, X-Hop"),
               (b"proxy-connection", b"keep-alive"), (b"x-other", b"1"), (b"connection", b"x-other")]
    lines, _, _ = request_lines(headers)
    head, _ = request_head(b"POST", b"/score", b"", headers)
    assert lines == b"content-type: application/json\r\n" and head[1] == b"\r\n" + lines
