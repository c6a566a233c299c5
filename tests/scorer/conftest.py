"""Fixtures for the scoring server: real processes on loopback, a real model, Azurite.

Every server a test starts is stopped when the test ends (SIGTERM, then SIGKILL), and so is
Azurite.  Server output goes to a file so tests can read the JSON log lines.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: make scorer_helpers importable

from scorer_helpers import AZURITE, AZURITE_KEY, ROOT, SCRIPTS, Scorer, StartScorer, free_port, train, wait_until  # noqa: E402


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two trained models in Azure ML's layout: sklearn-iris/1 and sklearn-iris-b/2."""
    root = tmp_path_factory.mktemp("models")
    train.train(root, "sklearn-iris", "1")
    train.train(root, "sklearn-iris-b", "2")
    return root


def _starter(tmp_path: Path) -> Iterator[StartScorer]:
    started: list[Scorer] = []

    def start(script: str | Path, *, env: dict[str, str] | None = None, args: list[str] | None = None,
              workers: int | None = 1, python: str = sys.executable, cwd: Path = ROOT,
              wait: str | None = "ready") -> Scorer:
        script = Path(script)
        if not script.is_absolute():
            script = SCRIPTS / script
        server = Scorer(
            tmp_path / f"scorer-{len(started)}.log",
            {"AZUREML_ENTRY_SCRIPT": str(script), **({"WORKER_COUNT": str(workers)} if workers else {}), **(env or {})},
            args or [],
            python,
            cwd,
        )
        started.append(server)
        if wait == "ready":
            server.wait_ready()
        elif wait == "live":
            server.wait_live()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_scorer(tmp_path: Path) -> Iterator[StartScorer]:
    """Start servers for one test: `start_scorer("script.py", env={...}, workers=2)`."""
    yield from _starter(tmp_path)


@pytest.fixture(scope="module")
def module_scorer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartScorer]:
    """Like start_scorer, for servers shared by the tests of one module."""
    yield from _starter(tmp_path_factory.mktemp("scorers"))


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Azurite blob endpoint on a free port; yields its connection string.

    `--skipApiVersionCheck`: azure-storage-blob speaks a newer API version than Azurite 3 knows.
    """
    if not AZURITE.exists():
        pytest.fail(f"{AZURITE} is missing: run `make test` (it installs it with npm) or `npm install`")
    port = free_port()
    log = (tmp_path_factory.mktemp("azurite") / "azurite.log").open("wb")
    process = subprocess.Popen(
        [str(AZURITE), "--silent", "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck",
         "--blobHost", "127.0.0.1", "--blobPort", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, 30, "azurite")
        yield (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
