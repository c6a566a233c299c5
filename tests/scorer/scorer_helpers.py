"""Helpers of the scoring-server tests: a server process on loopback, waiting, the example model.

Imported by conftest.py (which puts this folder on sys.path) and by the test modules.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).parent / "scripts"
EXAMPLE = ROOT / "examples" / "sklearn"
AZURITE = ROOT / "node_modules" / ".bin" / "azurite-blob"
# Azurite's published development account.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _load_train():  # examples/sklearn/train.py, without putting its folder on sys.path
    spec = importlib.util.spec_from_file_location("sklearn_example_train", EXAMPLE / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _load_train()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Scorer:
    """One `python -m scoring_image` process tree on 127.0.0.1."""

    def __init__(self, log_path: Path, env: dict[str, str], args: list[str], python: str, cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [python, "-m", "scoring_image", "--host", "127.0.0.1", "--port", str(self.port), *args],
            env={**os.environ, **env},
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str = "/score", **kwargs: object) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def wait_live(self, timeout: float = 30.0) -> Scorer:
        wait_until(self._answers("/"), timeout, f"liveness of {self.url}")
        return self

    def wait_ready(self, timeout: float = 30.0) -> Scorer:
        wait_until(self._answers("/ready"), timeout, f"readiness of {self.url}")
        return self

    def _answers(self, path: str) -> Callable[[], bool]:
        def check() -> bool:
            assert self.process.poll() is None, f"server exited:\n{self.log_path.read_text()}"
            try:
                return self.get(path).status_code == 200
            except httpx.TransportError:
                return False

        return check

    def metrics(self) -> dict[str, float]:
        """/metrics as {name with its labels: value}."""
        values = {}
        for line in self.get("/metrics").text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def logs(self) -> list[dict[str, object]]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                lines.append({"raw": line})
        return lines

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def kill9(self) -> None:
        """The whole server, supervisor and workers, at once: nothing gets to clean up."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()


StartScorer = Callable[..., Scorer]


