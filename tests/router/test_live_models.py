"""The example sklearn model behind the router with RS256 token auth; request bodies over the limit (413)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import ROOT, RouterProcess, launch, processes_with, score, wait_until  # noqa: E402
from keys import signing_key  # noqa: E402

from router_image import proxy  # noqa: E402
from router_image.app import Router  # noqa: E402
from router_image.config import (AuthConfig, RouteConfig, RouterConfig, ScorerLaunch, TokenConfig,  # noqa: E402
                                 VersionConfig)
from router_image.auth import CLOCK_SKEW_S  # noqa: E402
from router_image.tokens import mint_token  # noqa: E402
from scoring_image.config import ScorerSettings  # noqa: E402

EXAMPLE = ROOT / "examples" / "sklearn"
SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]
OFF = AuthConfig(key_enabled=False)


def _train_module():
    spec = importlib.util.spec_from_file_location("sklearn_example_train", EXAMPLE / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sklearn_launch(tmp: Path) -> ScorerLaunch:
    """The example entry script and its trained model, configured as ModelService renders a scorer."""
    _train_module().train(tmp / "models", "sklearn-iris", "1")
    settings = ScorerSettings(entry_script=str(EXAMPLE / "score.py"), model_dir=str(tmp / "models"), workers=1,
                              scoring_timeout_ms=10_000)
    env = {**settings.to_env(), "ROUTER_TEST_MARKER": str(tmp)}
    return ScorerLaunch(env=env, cwd=str(tmp), log_dir=str(tmp / "replica-logs"))


def test_sklearn_model_with_rs256_tokens(tmp_path) -> None:
    private, public = signing_key("RS256")
    (tmp_path / "token.pub").write_bytes(public)
    config = RouterConfig(
        token=TokenConfig(public_key_file=str(tmp_path / "token.pub"), algorithm="RS256"), autoscale_enabled=False,
        routes=[RouteConfig(kind="service", name="iris", auth=AuthConfig(key_enabled=False, token_enabled=True),
                            versions=[VersionConfig(name="iris", deployment="d-iris", scorer=sklearn_launch(tmp_path))])])
    router = RouterProcess(config, tmp_path)
    try:
        router.wait_ready()
        token, refresh_by = mint_token(private, "iris")
        assert jwt.get_unverified_header(token)["alg"] == "RS256" and refresh_by > time.time()
        answer = score(router.client, "service/iris", {"data": [SETOSA, VIRGINICA]}, authorization=f"Bearer {token}")
        assert answer.status_code == 200, answer.text
        assert answer.json() == [0, 2] and answer.headers["azureml-model-deployment"] == "iris"

        es_private, _ = signing_key("ES256")
        other_rsa, _ = signing_key("RS256")
        now = int(time.time())
        bad = {
            "ES256 (not the configured algorithm)": mint_token(es_private, "iris")[0],
            "RS256 by another key": mint_token(other_rsa, "iris")[0],
            "alg none": jwt.encode({"aud": "iris", "iss": "aks-model-serving", "exp": now + 60}, None, algorithm="none"),
            "wrong audience": mint_token(private, "other")[0],
            "expired": mint_token(private, "iris", lifetime_s=-CLOCK_SKEW_S - 5)[0],
        }
        for case, credential in bad.items():
            answer = score(router.client, "service/iris", {"data": [SETOSA]}, authorization=f"Bearer {credential}")
            assert answer.status_code == 401, case
            assert answer.headers["www-authenticate"].startswith('Bearer error="invalid_token"'), case
            assert answer.json()["error"]["code"] == "Unauthorized", case
    finally:
        router.stop()


@pytest.mark.anyio
async def test_bodies_over_the_limit_get_413(tmp_path, monkeypatch) -> None:
    """In process, with the limit lowered (Azure ML's 100 MB is too much to send in a unit of tests)."""
    monkeypatch.setattr(proxy, "MAX_BODY_BYTES", 64 * 1024)
    config = RouterConfig(autoscale_enabled=False, routes=[RouteConfig(kind="service", name="s", auth=OFF, versions=[
        VersionConfig(name="v1", deployment="s", scorer=launch("v1", tmp_path))])])
    router = Router(config)
    await router.startup()
    try:
        deadline = time.monotonic() + 60
        while not router.status()["ready"]:
            assert time.monotonic() < deadline, "replica not ready"
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://router") as client:
            url = "/api/v1/service/s/score"
            small = json.dumps({"blob": "y" * 1000}).encode()
            assert (await client.post(url, content=small)).status_code == 200

            # a declared length over the limit: refused before anything is read or a replica is taken
            answer = await client.post(url, content=b"x" * (64 * 1024 + 1))
            assert answer.status_code == 413 and answer.json()["error"]["code"] == "PayloadTooLarge"

            # no declared length: refused once the streamed body passes the limit
            async def chunks():
                for _ in range(8):
                    yield b" " * (16 * 1024)

            answer = await client.post(url, content=chunks())
            assert answer.status_code == 413 and answer.json()["error"]["code"] == "PayloadTooLarge"
            assert router.pools["s"].busy_slots == 0  # the slot taken for the stream is back
            assert (await client.post(url, content=small)).status_code == 200  # and the replica still serves
    finally:
        await router.shutdown()
    wait_until(lambda: not processes_with(str(tmp_path)), 20, 0.1, "every scorer process gone")
