"""The kubernetes backend's tests run on asyncio (anyio's pytest plugin) against a stub API server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: make stub_api importable

from stub_api import StubApi, access, serve  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def api(tmp_path):
    """The stub API server on 127.0.0.1; `api.access` points a backend at it."""
    stub = StubApi()
    runner, port = await serve(stub.app())
    stub.access = access(port, tmp_path)
    yield stub
    await runner.cleanup()
