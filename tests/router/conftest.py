"""Helpers for the router tests: a real router process on loopback with real scorer replicas."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from router_image.config import RouterConfig, ScorerLaunch

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(version: str, tmp: Path, marker: str = "", script: str = "echo_score.py") -> ScorerLaunch:
    """How the local backend starts a replica of a test script, tagged with its version."""
    env = {"AZUREML_ENTRY_SCRIPT": str(SCRIPTS / script), "WORKER_COUNT": "1", "TEST_VERSION": version,
           "ROUTER_TEST_MARKER": marker or str(tmp)}
    return ScorerLaunch(env=env, cwd=str(tmp), log_dir=str(tmp / "replica-logs"))


def processes_with(marker: str) -> list[int]:
    """Processes whose environment carries ROUTER_TEST_MARKER=`marker` (the scorers a test started)."""
    needle = b"\0ROUTER_TEST_MARKER=" + marker.encode() + b"\0"
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            if needle in b"\0" + Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def wait_until(check, timeout: float, every: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{message} not met within {timeout} s")


class RouterProcess:
    """`python -m router_image --config <file>` on a free loopback port; stopped by `stop()`."""

    def __init__(self, config: RouterConfig, tmp: Path):
        self.port = free_port()
        self.tmp = tmp
        self.config_path = tmp / "router.json"
        self.write(config.model_copy(update={"host": "127.0.0.1", "port": self.port}))
        self.log_path = tmp / "router.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "router_image", "--config", str(self.config_path)],
                                        cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        scheme = "https" if config.tls else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.base_url, timeout=30, verify=False)

    def write(self, config: RouterConfig) -> None:
        """Replace the config file in one step (as a Kubernetes ConfigMap update does)."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(config.model_copy(update={"host": "127.0.0.1", "port": self.port}).dump())
        os.replace(tmp, self.config_path)

    def status(self) -> dict:
        return self.client.get("/readyz").json()

    def version_status(self, version: str) -> dict:
        """That version's entry in /readyz; {} until the config declaring it is loaded."""
        return next((v for r in self.status()["routes"] for v in r["versions"] if v["name"] == version), {})

    def wait_ready(self, timeout: float = 90) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"router exited {self.process.returncode}:\n{self.log()}")
            try:
                return self.client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False
        wait_until(ready, timeout, 0.1, "router ready")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, check_scorers: bool = True) -> None:
        """SIGTERM, then check that no scorer replica of the default marker (str(tmp)) is left."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        if check_scorers:
            wait_until(lambda: not processes_with(str(self.tmp)), 20, 0.1, "every scorer process gone")


def score(client: httpx.Client, route: str, body: dict | None = None, **headers: str) -> httpx.Response:
    return client.post(f"/api/v1/{route}/score", content=json.dumps(body or {}),
                       headers={"content-type": "application/json", **headers})


class Fixed:
    """A backend double: each deployment's replicas are the addresses given."""

    is_leader = True

    def __init__(self, addresses: dict[str, list[str]]):
        self.addresses = addresses

    async def start(self, on_ready) -> None:
        for deployment, addresses in self.addresses.items():
            on_ready(deployment, addresses)

    async def apply(self, versions) -> None:
        pass

    async def scale(self, deployment: str, replicas: int) -> None:
        pass

    def replicas(self, deployment: str) -> int:
        return len(self.addresses.get(deployment, []))

    def synced(self) -> bool:
        return True

    def problem(self, deployment: str) -> str | None:
        return None

    def rolling(self, deployment: str) -> bool:
        return False

    def remote_demand(self, deployment: str) -> float:
        return 0.0

    async def probe(self, address: str) -> bool:
        return False

    async def stop(self) -> None:
        pass
