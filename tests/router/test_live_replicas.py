"""Replicas that die: retried elsewhere, ejected, readmitted, replaced; and no scorer outlives its router."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import ROOT, SCRIPTS, RouterProcess, free_port, launch, processes_with, score, wait_until  # noqa: E402
from keys import self_signed, served_name  # noqa: E402

from router_image.app import Router  # noqa: E402
from router_image.backends import local  # noqa: E402
from router_image.config import AuthConfig, RouteConfig, RouterConfig, ScorerLaunch, VersionConfig  # noqa: E402
from router_image.upstream import is_ready  # noqa: E402

OFF = AuthConfig(key_enabled=False)


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def start_scorer(port: int, tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "AZUREML_ENTRY_SCRIPT": str(SCRIPTS / "echo_score.py"), "WORKER_COUNT": "1",
           "TEST_VERSION": "live", "ROUTER_TEST_MARKER": str(tmp)}
    return subprocess.Popen([sys.executable, "-m", "scoring_image", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)


class TwoAddresses:
    """A backend double that reports one refusing and one live replica as ready."""

    is_leader = True

    def __init__(self, addresses: list[str]):
        self.addresses = addresses

    async def start(self, on_ready) -> None:
        on_ready("pair", self.addresses)

    async def apply(self, versions) -> None:
        pass

    async def scale(self, deployment: str, replicas: int) -> None:
        pass

    def replicas(self, deployment: str) -> int:
        return len(self.addresses)

    def synced(self) -> bool:
        return True

    def problem(self, deployment: str) -> str | None:
        return None

    def rolling(self, deployment: str) -> bool:
        return False

    def remote_demand(self, deployment: str) -> float:
        return 0.0

    async def probe(self, address: str) -> bool:
        host, _, port = address.rpartition(":")
        return await is_ready(host, int(port))

    async def stop(self) -> None:
        pass


@pytest.mark.anyio
async def test_a_refusing_replica_is_skipped_ejected_and_readmitted(tmp_path) -> None:
    live_port, dead_port = free_port(), free_port()
    live = start_scorer(live_port, tmp_path)
    revived = None
    try:
        await asyncio.to_thread(wait_until, lambda: asyncio.run(is_ready("127.0.0.1", live_port)), 60, 0.2, "scorer")
        dead, alive = f"127.0.0.1:{dead_port}", f"127.0.0.1:{live_port}"
        config = RouterConfig(autoscale_enabled=False, routes=[RouteConfig(kind="service", name="pair", auth=OFF, versions=[
            VersionConfig(name="v1", deployment="pair", replica_max_concurrent_requests=4)])])
        router = Router(config, backend=TwoAddresses([dead, alive]))
        await router.startup()
        try:
            transport = httpx.ASGITransport(app=router)
            async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
                answers = await asyncio.gather(*(client.post("/api/v1/service/pair/score", json={}) for _ in range(12)))
                assert [a.status_code for a in answers] == [200] * 12  # none lost to the dead replica
                assert router.pools["pair"].replicas[dead].ejected
                revived = start_scorer(dead_port, tmp_path)
                await asyncio.to_thread(wait_until, lambda: not router.pools["pair"].replicas[dead].ejected, 60, 0.1,
                                        "readmission")
                pids = {(await client.post("/api/v1/service/pair/score", json={})).json()["pid"] for _ in range(8)}
                assert len(pids) == 2  # both replicas serve again
        finally:
            await router.shutdown()
    finally:
        stop(live)
        if revived is not None:
            stop(revived)


def test_a_killed_replica_is_retried_around_and_replaced(tmp_path) -> None:
    config = RouterConfig(autoscale_enabled=False, routes=[RouteConfig(kind="service", name="pair", auth=OFF, versions=[
        VersionConfig(name="v1", deployment="pair", num_replicas=2, replica_max_concurrent_requests=4,
                      scorer=launch("v1", tmp_path))])])
    router = RouterProcess(config, tmp_path)
    try:
        router.wait_ready()
        wait_until(lambda: router.version_status("v1")["ready"] == 2, 60, 0.1, "two ready replicas")
        victim = children(router.process.pid)[0]
        doomed = [*children(victim), victim]
        for pid in doomed:
            os.kill(pid, signal.SIGKILL)
        # Dead, not dying: a connection accepted in the last instant would break mid-request (a 502
        # the router must not retry, since the replica may have run it).
        wait_until(lambda: all(gone(pid) for pid in doomed), 10, 0.01, "the replica dead")
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: score(router.client, "service/pair"), range(40)))
        assert [a.status_code for a in answers] == [200] * 40
        wait_until(lambda: router.version_status("v1")["ready"] == 2, 60, 0.2, "the replica replaced")
    finally:
        router.stop()


def test_no_scorer_outlives_a_killed_router(tmp_path) -> None:
    """SIGKILL: the router cannot stop its replicas; they die with it. (After SIGTERM the router
    stops them itself: RouterProcess.stop checks that at the end of every live test.)"""
    how = signal.SIGKILL
    marker = f"orphan-check-{how.name}-{tmp_path}"
    config = RouterConfig(autoscale_enabled=False, routes=[RouteConfig(kind="service", name="s", auth=OFF, versions=[
        VersionConfig(name="v1", deployment="s", num_replicas=2, scorer=launch("v1", tmp_path, marker))])])
    router = RouterProcess(config, tmp_path)
    try:
        router.wait_ready()
        assert len(processes_with(marker)) >= 4  # 2 replicas x (supervisor + worker)
        router.process.send_signal(how)
        router.process.wait(30)
        wait_until(lambda: not processes_with(marker), 20, 0.2, "every scorer process gone")
    finally:
        router.stop()


def test_tls_and_a_renewed_certificate_is_served_without_a_restart(tmp_path) -> None:
    """cert-manager renews in place, Pulumi replaces a self-signed pair before it expires: the kubelet
    swaps the Secret's files and new handshakes must get the new pair."""
    from router_image.config import TlsConfig

    secret = tmp_path / "tls"
    self_signed(secret, "first")
    config = RouterConfig(tls=TlsConfig(cert_file=str(secret / "tls.crt"), key_file=str(secret / "tls.key")))
    router = RouterProcess(config, tmp_path)
    try:
        router.wait_ready()
        with httpx.Client(verify=ssl.create_default_context(cafile=str(secret / "tls.crt"))) as client:
            assert client.get(f"https://127.0.0.1:{router.port}/healthz").status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{router.port}/healthz", timeout=5)
        assert served_name(router.port) == "CN=first"
        self_signed(secret, "second")
        wait_until(lambda: served_name(router.port) == "CN=second", 10, 0.2, "the renewed certificate served")
        with httpx.Client(verify=ssl.create_default_context(cafile=str(secret / "tls.crt"))) as client:
            assert client.get(f"https://127.0.0.1:{router.port}/healthz").status_code == 200
        # A reload naming other files serves them; one changing what is read only at start is refused.
        other = tmp_path / "other-tls"
        self_signed(other, "third")
        router.write(config.model_copy(update={"tls": TlsConfig(cert_file=str(other / "tls.crt"),
                                                               key_file=str(other / "tls.key"))}))
        wait_until(lambda: served_name(router.port) == "CN=third", 10, 0.2, "the new files' certificate served")
        router.write(config.model_copy(update={"tls": None}))
        wait_until(lambda: "tls changed, which takes effect only when the router restarts" in router.log(), 10, 0.1,
                   "the reload turning TLS off refused")
        assert served_name(router.port) == "CN=third"
    finally:
        router.stop()


def test_help() -> None:
    out = subprocess.run([sys.executable, "-m", "router_image", "--help"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "--config" in out.stdout


def test_a_replica_that_dies_at_start_is_restarted_with_a_growing_pause(tmp_path) -> None:
    broken = launch("v1", tmp_path).model_copy(update={"env": {**launch("v1", tmp_path).env, "WORKER_COUNT": "0"}})
    config = RouterConfig(autoscale_enabled=False, routes=[RouteConfig(kind="service", name="b", auth=OFF, versions=[
        VersionConfig(name="v1", deployment="b", scorer=broken, max_request_wait_time_ms=100)])])
    router = RouterProcess(config, tmp_path)
    try:
        wait_until(lambda: router.log().count("after its start") >= 2, 30, 0.1, "two early exits")
        time.sleep(3)
        starts = router.log().count("started replica b-")
        assert 3 <= starts <= 5, router.log()  # pauses of 1, 2, 4 s: not one start every 0.2 s
        answer = score(router.client, "service/b")
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "NoReadyReplicas"
    finally:
        router.stop()


@pytest.mark.anyio
async def test_a_replicas_port_cannot_be_taken_before_it_listens(tmp_path, monkeypatch) -> None:
    """The replica serves on a socket the router bound and handed over: a program binding that port
    meanwhile (any other taking a free port) cannot make it exit at start and fail `local up`."""
    squatted: list[socket.socket | None] = []
    spawn = local.LocalBackend._spawn

    def spawn_then_squat(self, v):
        replica = spawn(self, v)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", replica.port))
        except OSError:
            s.close()
            squatted.append(None)
        else:
            squatted.append(s)
        return replica

    monkeypatch.setattr(local.LocalBackend, "_spawn", spawn_then_squat)
    ready: dict[str, list[str]] = {}
    backend = local.LocalBackend()
    await backend.start(lambda deployment, addresses: ready.__setitem__(deployment, addresses))
    env = {"AZUREML_ENTRY_SCRIPT": str(SCRIPTS / "echo_score.py"), "WORKER_COUNT": "1"}
    try:
        await backend.apply([VersionConfig(name="v1", deployment="echo", num_replicas=1,
                                           scorer=ScorerLaunch(env=env, cwd=str(ROOT), log_dir=str(tmp_path)))])
        deadline = time.monotonic() + 60
        while not ready.get("echo"):
            assert backend.problem("echo") is None and time.monotonic() < deadline
            await asyncio.sleep(0.1)
        host, _, port = ready["echo"][0].rpartition(":")
        assert await is_ready(host, int(port))
    finally:
        await backend.stop()
        for s in squatted:
            if s is not None:
                s.close()
    assert squatted == [None]
