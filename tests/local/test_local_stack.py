"""The local stack as a user runs it: `local up`, score, split, scale, collect, `local down`.

The stack is the shipped `stacks/Pulumi.local.yaml` with its ports, folders and scale-down
delay moved so the test neither collides with a running stack nor waits a minute.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from router_image.config import RouterConfig

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("sklearn_train", ROOT / "examples" / "sklearn" / "train.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
train = _module.train
CLI = [sys.executable, "-m", "components", "local"]
SAMPLE = {"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
SCALE_DOWN_DELAY_S = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"local {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def scorer_pids(marker: str) -> list[int]:
    """Processes whose command line or environment mention this test's state folder."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline or marker.encode() in environ:
            out.append(int(pid))
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local-stack")
    models = tmp / "models"
    train(models, version="1")
    train(models, version="2")
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.local.yaml").read_text())
    config = doc["config"]
    config["aks-model-serving:local"] = {"router_port": free_port(), "state_dir": str(tmp / "state"),
                                         "data_dir": str(tmp / "modeldata")}
    config["aks-model-serving:router"] = {"scale_down_delay_seconds": SCALE_DOWN_DELAY_S}
    for m in config["aks-model-serving:models"]:
        m["path"] = str(models / m["name"] / str(m["version"]))
    # Outside the project (nothing left in stacks/ if the run is killed): source folders made absolute.
    deployables = config["aks-model-serving:services"] + [
        v for e in config["aks-model-serving:endpoints"] for v in e["versions"]]
    for d in deployables:
        d["inference_config"]["source_directory"] = str(ROOT / d["inference_config"]["source_directory"])
    path = tmp / "Pulumi.test.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        up = cli("up", str(path))
        yield {"path": path, "tmp": tmp, "port": config["aks-model-serving:local"]["router_port"], "up": up.stdout}
    finally:
        cli("down", str(path), check=False)


def base(stack) -> str:
    return f"http://127.0.0.1:{stack['port']}"


def key(stack, name: str) -> str:
    return cli("keys", str(stack["path"]), name, "--primary").stdout.strip()


def replicas(stack, route: str) -> int:
    status = httpx.get(f"{base(stack)}/readyz", timeout=5).json()
    for r in status["routes"]:
        if r["name"] == route:
            return sum(v["replicas"] for v in r["versions"])
    raise KeyError(route)


def test_up_prints_uris_and_a_curl_command(stack):
    out = stack["up"]
    assert "Succeeded" in out
    assert f"{base(stack)}/api/v1/service/iris/score" in out
    assert f"{base(stack)}/api/v1/endpoint/iris-ab/score" in out
    assert "curl" in out and "local keys" in out


def test_authenticated_request_scores(stack):
    r = httpx.post(f"{base(stack)}/api/v1/service/iris/score", json=SAMPLE,
                   headers={"Authorization": f"Bearer {key(stack, 'iris')}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == [0, 2]  # setosa, virginica


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}], ids=["missing", "wrong"])
def test_missing_or_wrong_key_is_401(stack, headers):
    r = httpx.post(f"{base(stack)}/api/v1/service/iris/score", json=SAMPLE, headers=headers, timeout=30)
    assert r.status_code == 401
    assert "error" in r.json() and "WWW-Authenticate" in r.headers


def test_secondary_key_works_and_keys_command_prints_both(stack):
    keys = json.loads(cli("keys", str(stack["path"]), "iris").stdout)
    assert set(keys) == {"primaryKey", "secondaryKey"} and keys["primaryKey"] != keys["secondaryKey"]
    r = httpx.post(f"{base(stack)}/api/v1/service/iris/score", json=SAMPLE,
                   headers={"Authorization": f"Bearer {keys['secondaryKey']}"}, timeout=30)
    assert r.status_code == 200


def test_endpoint_split_is_80_20(stack):
    """800 requests: the treatment share is 20 % within +-5 points (3.5 standard deviations of 1.4 points,
    so about one run in 2,500 fails by chance; 400 within +-6, 3 of them, failed once in a few hundred)."""
    headers = {"Authorization": f"Bearer {key(stack, 'iris-ab')}"}
    served: Counter[str] = Counter()
    with httpx.Client(headers=headers, timeout=30) as client:
        for _ in range(800):
            r = client.post(f"{base(stack)}/api/v1/endpoint/iris-ab/score", json=SAMPLE)
            assert r.status_code == 200, r.text
            served[r.headers["azureml-model-deployment"]] += 1
    assert set(served) == {"control", "treatment"}
    assert abs(served["treatment"] / 800 - 0.20) <= 0.05, served


def test_collected_records_match_the_requests(stack):
    """Every request to the endpoint was collected: inputs and predictions on disk, same ids."""
    headers = {"Authorization": f"Bearer {key(stack, 'iris-ab')}"}
    sent = set()
    with httpx.Client(headers=headers, timeout=30) as client:
        for i in range(20):
            rid = f"collect-{os.getpid()}-{i}"
            r = client.post(f"{base(stack)}/api/v1/endpoint/iris-ab/score", json=SAMPLE, headers={"x-request-id": rid})
            assert r.status_code == 200
            sent.add(rid)
    deadline = time.monotonic() + 30
    found: dict[str, set[str]] = {}
    while time.monotonic() < deadline:
        found = {"inputs": set(), "predictions": set()}
        for f in (stack["tmp"] / "modeldata").rglob("*"):
            if not f.is_file():
                continue
            kind = "inputs" if "/inputs/" in str(f) else "predictions" if "/predictions/" in str(f) else None
            if kind:
                for line in f.read_text().splitlines():
                    rid = _request_id(line)
                    if rid in sent:
                        found[kind].add(rid)
        if found["inputs"] == sent and found["predictions"] == sent:
            break
        time.sleep(0.5)
    assert found["inputs"] == sent and found["predictions"] == sent
    # Requests and predictions, for the owner alone: the router and its scorers run under umask 077.
    shared = [f for f in (stack["tmp"] / "modeldata").rglob("*") if f.stat().st_mode & 0o077]
    assert shared == [], [(f, oct(f.stat().st_mode)) for f in shared]


def _request_id(line: str) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("request_id") or record.get("requestId")


def test_load_burst_scales_up_then_down_after_the_quiet_period(stack):
    """16 clients keep every slot busy: replicas rise above 1; once idle they return to 1."""
    headers = {"Authorization": f"Bearer {key(stack, 'iris')}"}
    assert replicas(stack, "iris") == 1
    stop = time.monotonic() + 8
    peak = 1

    def client():
        with httpx.Client(headers=headers, timeout=30) as c:
            while time.monotonic() < stop:
                c.post(f"{base(stack)}/api/v1/service/iris/score", json=SAMPLE)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    while time.monotonic() < stop:
        peak = max(peak, replicas(stack, "iris"))
        time.sleep(0.25)
    for t in threads:
        t.join()
    assert peak > 1, "the burst did not scale the service up"
    deadline = time.monotonic() + SCALE_DOWN_DELAY_S + 20
    while time.monotonic() < deadline and replicas(stack, "iris") > 1:
        time.sleep(0.5)
    assert replicas(stack, "iris") == 1


def test_status_and_logs(stack):
    status = cli("status", str(stack["path"]))
    assert "ready" in status.stdout and "iris" in status.stdout
    logs = cli("logs", str(stack["path"]), "iris")
    assert logs.stdout.strip()


def test_token_auth_and_down_leaves_no_process_behind(tmp_path):
    """A second stack of its own (its service on token auth), so that stopping it cannot
    disturb the module's one."""
    models = tmp_path / "models"
    train(models, version="1")
    train(models, version="2")
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.local.yaml").read_text())
    config = doc["config"]
    marker = str(tmp_path / "state")
    config["aks-model-serving:local"] = {"router_port": free_port(), "state_dir": marker, "data_dir": str(tmp_path / "data")}
    for m in config["aks-model-serving:models"]:
        m["path"] = str(models / m["name"] / str(m["version"]))
    config["aks-model-serving:services"][0] |= {"auth_enabled": False, "token_auth_enabled": True}
    for d in config["aks-model-serving:services"] + [v for e in config["aks-model-serving:endpoints"] for v in e["versions"]]:
        d["inference_config"]["source_directory"] = str(ROOT / d["inference_config"]["source_directory"])
    path = tmp_path / "Pulumi.down.yaml"  # not in the project's stacks/: a run killed here would leave it for git
    path.write_text(yaml.safe_dump(doc))
    port = config["aks-model-serving:local"]["router_port"]
    try:
        cli("up", str(path))
        minted = cli("token", str(path), "iris")
        token = minted.stdout.strip()
        assert "refresh_by" in minted.stderr
        url = f"http://127.0.0.1:{port}/api/v1/service/iris/score"
        assert httpx.post(url, json=SAMPLE, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 200
        assert httpx.post(url, json=SAMPLE, headers={"Authorization": f"Bearer {token}x"}, timeout=30).status_code == 401
        assert len(scorer_pids(marker)) >= 4  # the router and a scorer per version
        assert "stopped" in cli("down", str(path)).stdout
        assert scorer_pids(marker) == []
        assert "not running" in cli("status", str(path), check=False).stdout
    finally:
        cli("down", str(path), check=False)


def _idle_stack(tmp_path: Path, port: int) -> Path:
    """The shipped local stack with its port and state moved here; never started by these tests."""
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.local.yaml").read_text())
    doc["config"]["aks-model-serving:local"] = {"router_port": port, "state_dir": str(tmp_path / "state"),
                                                "data_dir": str(tmp_path / "data")}
    path = tmp_path / "Pulumi.idle.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_up_refuses_a_port_another_server_holds(tmp_path):
    """Else the new router dies on the taken port and whatever holds it answers /readyz: `up` said it succeeded."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        path = _idle_stack(tmp_path, holder.getsockname()[1])
        result = cli("up", str(path), check=False)
    assert result.returncode == 1 and "is taken" in result.stdout
    assert not (tmp_path / "state" / "router.pid").exists()


@contextlib.contextmanager
def _router_answering(readyz: object, status: int = 200):
    """A stand-in for a router on a loopback port, its /readyz answering `readyz`; yields the port."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Readyz(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps(readyz).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def test_up_whose_router_exits_at_start_says_why_and_leaves_no_pid_file(tmp_path, monkeypatch):
    """A program that took the port between `up`'s look and the router's bind: the router exited, and `up`
    ended in a ProcessLookupError traceback (stopping a router already gone), leaving its pid file, and
    had not said why beyond an exit code."""
    from components import local
    from components.stackfile import load_stack

    port = free_port()
    path = _script_stack(tmp_path, [{"name": "echo", **ECHO}], port=port)
    monkeypatch.setattr(local, "_port_taken", lambda port: False)  # free when `up` looked
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the router it starts runs this checkout
    out = io.StringIO()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        try:
            assert local.up(load_stack(path), out=out) == 1
            said = out.getvalue()
            assert f"Failed: the router exited with code 1; the end of {tmp_path / 'state' / 'logs' / 'router.log'}:" in said
            assert f"address ('127.0.0.1', {port}): address already in use" in said, said
            assert not (tmp_path / "state" / "router.pid").exists()
            assert scorer_pids(str(tmp_path / "state")) == []
        finally:
            cli("down", str(path), check=False)


def test_down_without_a_recorded_router_but_one_on_its_port_says_so(tmp_path):
    """After `state_dir` was edited, `down` said "not running" (exit 0) beside the stack's router, still up;
    something else on the port (no router's /readyz) is not this stack's."""
    with _router_answering({"ready": True, "routes": []}) as port:
        path = _idle_stack(tmp_path, port)
        result = cli("down", str(path), check=False)
    assert result.returncode == 1 and f"a router answers on port {port}" in result.stdout, result.stdout
    with socket.socket() as holder:  # a listener of another kind: it answers no /readyz
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the server's closed connections linger
        holder.bind(("127.0.0.1", port))
        holder.listen()
        other = cli("down", str(path), check=False)
        status = cli("status", str(path), check=False)
    # A router too busy to answer in time is told apart from a free port, not just "not running".
    assert other.returncode == 0 and "not running" in other.stdout, other.stdout
    assert f"port {port} is held by a program that did not answer /readyz" in other.stdout, other.stdout
    assert status.returncode == 3 and f"port {port} is held by a program" in status.stdout, status.stdout
    free = cli("down", str(path)).stdout
    assert "not running" in free and "is held" not in free, free  # the port free: nothing of it runs
    for answer in (None, "routes"):  # a service whose /readyz is JSON, but not a router's object: a traceback
        with _router_answering(answer) as port:
            other = cli("down", str(_idle_stack(tmp_path, port)), check=False)
        assert other.returncode == 0 and "not running" in other.stdout, other.stdout + other.stderr
    with socketserver.TCPServer(("127.0.0.1", 0), _Greeter) as ssh:  # a server that speaks first, not HTTP
        threading.Thread(target=ssh.serve_forever, daemon=True).start()
        other = cli("down", str(_idle_stack(tmp_path, ssh.server_address[1])), check=False)
        ssh.shutdown()
    assert other.returncode == 0 and "not running" in other.stdout, other.stdout + other.stderr


class _Greeter(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")


def test_a_stale_pid_file_naming_another_process_is_not_the_router(tmp_path):
    """After a kill -9 or a reboot the pid may belong to anything: `down` must not signal it."""
    path = _idle_stack(tmp_path, free_port())
    # In a session of its own: `down` signals the router's whole process group.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "router.pid").write_text(str(other.pid))
        assert "is not running" in cli("down", str(path)).stdout
        assert other.poll() is None  # still alive
        assert "is not running" in cli("status", str(path), check=False).stdout
    finally:
        other.kill()
        other.wait()


def test_a_stale_pid_file_naming_another_users_process_is_not_the_router(tmp_path, monkeypatch):
    """After a reboot the pid may be a system daemon's: signalling it is refused (EPERM), and every command
    ended in a PermissionError traceback. (Run as root here, so the refusal is stood in for.)"""
    from components import local
    from components.stackfile import load_stack

    path = _idle_stack(tmp_path, free_port())
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "router.pid").write_text("1")

    def refused(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(local.os, "kill", refused)
    stack = load_stack(path)
    for command, code in ((local.status, 1), (local.down, 0)):  # status: dead, its pid file left
        out = io.StringIO()
        assert command(stack, out=out) == code
        assert "is not running" in out.getvalue()


def test_status_of_a_router_that_does_not_answer_says_so_rather_than_not_ready(tmp_path):
    """A router starting, or too busy to answer /readyz in time, was reported "not ready", as if its replicas were down."""
    path = _idle_stack(tmp_path, free_port())
    with _silent_router(tmp_path / "state") as silent:
        said = cli("status", str(path), check=False)
        assert said.returncode == 1
        assert f"router pid {silent.pid} on http://127.0.0.1:" in said.stdout and "not ready" not in said.stdout
        assert "no answer to /readyz within 2 s" in said.stdout, said.stdout
        assert f"its log: {tmp_path / 'state' / 'logs' / 'router.log'}" in said.stdout


@contextlib.contextmanager
def _silent_router(state: Path):
    """A process the state folder's pid file names, taken for the stack's router (its command line names the
    module and config) but listening nowhere; yields it, killed after."""
    state.mkdir()
    silent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "router_image",
                               str(state / "router.json")], start_new_session=True)
    try:
        (state / "router.pid").write_text(str(silent.pid))
        yield silent
    finally:
        silent.kill()
        silent.wait()


def test_score_of_a_token_service_the_running_stack_has_not_applied_says_so(tmp_path):
    """Token auth turned on in the file of a running stack, before `up` applied it: no signing key yet, and
    `score` ended in a FileNotFoundError traceback where `token` said to run `local up`."""
    path = _script_stack(tmp_path, [{"name": "echo", **ECHO, "auth_enabled": False, "token_auth_enabled": True}])
    with _silent_router(tmp_path / "state"):
        said = cli("score", str(path), check=False)
    assert said.returncode == 2 and "Traceback" not in said.stderr
    assert "echo: no signing key yet; run `local up` first" in said.stderr


def test_down_reaps_a_router_this_process_started_instead_of_waiting_on_its_zombie(tmp_path):
    """`up`'s failure path stops the router it started: exited but not reaped, it kept the process
    group alive in `down`'s eyes for 15 s, then got a SIGKILL it no longer needed."""
    import io

    from components import local
    from components.stackfile import load_stack

    stack = load_stack(_idle_stack(tmp_path, free_port()))
    state = local.state_of(stack)
    state.pid.parent.mkdir(parents=True, exist_ok=True)
    state.config.write_text(RouterConfig(backend="local").dump())
    # Passes for the router: its command line names router_image and the stack's router config.
    router = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "router_image", str(state.config)],
                              start_new_session=True)
    try:
        state.pid.write_text(str(router.pid))
        deadline = time.monotonic() + 5  # right after the fork, /proc/<pid>/cmdline may still read empty
        while b"router_image" not in Path(f"/proc/{router.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        said = io.StringIO()
        local.down(stack, out=said)
        assert "stopped" in said.getvalue(), said.getvalue()
        assert time.monotonic() - started < 5
        assert router.poll() is not None  # reaped by `down` (Popen then reads it as 0), not running
    finally:
        router.kill()
        router.wait()


def test_up_refuses_a_secret_variable_it_cannot_decrypt(tmp_path):
    """No Pulumi here to decrypt it: the scorer would get "<secure>" as the value."""
    path = _idle_stack(tmp_path, free_port())
    doc = yaml.safe_load(path.read_text())
    service = doc["config"]["aks-model-serving:services"][0]
    service["inference_config"]["environment"] = {"environment_variables": {"DB_PASSWORD": {"secure": "v1:abc"}}}
    path.write_text(yaml.safe_dump(doc))
    result = cli("up", str(path), check=False)
    assert result.returncode != 0
    assert ("services[0].inference_config.environment.environment_variables.DB_PASSWORD: a secret (secure:), which the "
            "local stack cannot decrypt") in result.stdout + result.stderr
    assert not (tmp_path / "state" / "router.pid").exists()


def _script_stack(tmp_path: Path, services: list[dict], port: int | None = None) -> Path:
    """A stack of test scripts (tests/router/scripts, tests/scorer/scripts): no model to train."""
    doc = {"config": {
        "aks-model-serving:local": {"router_port": port or free_port(), "state_dir": str(tmp_path / "state"),
                                    "data_dir": str(tmp_path / "data")},
        "aks-model-serving:services": [
            {"auth_enabled": False, "num_replicas": 1, "autoscale_enabled": False,
             **{k: v for k, v in s.items() if k not in ("script", "folder")},
             "inference_config": {"entry_script": s["script"], "source_directory": str(ROOT / s["folder"])}}
            for s in services],
    }}
    path = tmp_path / "Pulumi.scripts.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


ECHO = {"script": "echo_score.py", "folder": "tests/router/scripts"}


def test_up_fails_at_once_naming_why_a_replica_is_not_ready(tmp_path):
    """A failing init() kept `up` printing dots for 180 s, then it named the router's log, which does not say."""
    path = _script_stack(tmp_path, [{"name": "broken", "script": "init_fails.py", "folder": "tests/scorer/scripts"}])
    try:
        started = time.monotonic()
        result = cli("up", str(path), check=False)
        assert result.returncode == 1
        assert time.monotonic() - started < 60
        assert "service broken, version broken: replica broken-0" in result.stdout
        assert "init() failed: RuntimeError: model file is corrupt" in result.stdout
        assert f"log: {tmp_path / 'state' / 'logs' / 'broken-0.log'}" in result.stdout
        assert scorer_pids(str(tmp_path / "state")) == []  # what `up` started, it stopped
    finally:
        cli("down", str(path), check=False)


def test_two_ups_at_once_start_one_stack_that_down_stops(tmp_path):
    """The second `up` waits for the first: both passed the checks at once, and the one whose router lost
    the port cleaned up by the other's pid file, leaving a stack that no command could stop; one started
    while the other's stack came up said "already running" and returned before anything was ready."""
    path = _script_stack(tmp_path, [{"name": "echo", **ECHO}])
    port = yaml.safe_load(path.read_text())["config"]["aks-model-serving:local"]["router_port"]
    marker = str(tmp_path / "state")
    try:
        first = subprocess.Popen([*CLI, "up", str(path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert "Starting" in first.stdout.readline()  # its router is starting: pid file written, nothing ready
        second = cli("up", str(path))
        assert "waiting for it" in second.stdout and "already running" in second.stdout
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        assert first.wait(60) == 0
        assert "stopped" in cli("down", str(path)).stdout
        assert scorer_pids(marker) == []
    finally:
        cli("down", str(path), check=False)


def test_status_of_a_stack_whose_router_was_killed_says_it_ended_and_shows_its_log(tmp_path):
    """A router killed or crashed read "not running", as a stack never started: not why, nor where to look."""
    path = _script_stack(tmp_path, [{"name": "echo", **ECHO}])
    marker = str(tmp_path / "state")
    try:
        cli("up", str(path))
        pid = int((tmp_path / "state" / "router.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and scorer_pids(marker):  # its replicas die with it
            time.sleep(0.1)
        said = cli("status", str(path), check=False)
        assert said.returncode == 1, said.stdout  # LSB: dead, its pid file left
        assert f"its router (pid {pid}) ended without `local down`" in said.stdout
        assert f"the end of {tmp_path / 'state' / 'logs' / 'router.log'}:" in said.stdout
        assert "replica echo-0 ready" in said.stdout
        assert "is not running" in cli("down", str(path)).stdout
        assert cli("status", str(path), check=False).returncode == 3  # now as never started
    finally:
        cli("down", str(path), check=False)


def test_each_run_starts_its_logs_and_keeps_the_last_runs_beside_them(tmp_path):
    """Logs were appended to run after run: they grew without end, and `local logs` printed every run."""
    path = _script_stack(tmp_path, [{"name": "echo", **ECHO}])
    logs = tmp_path / "state" / "logs"
    try:
        cli("up", str(path))
        cli("down", str(path))
        first = (logs / "echo-0.log").read_text()
        cli("up", str(path))
        shown = cli("logs", str(path), "echo").stdout
        assert shown.count("listening on 127.0.0.1") == 1 and "echo-0.log.1" not in shown, shown
        assert (logs / "echo-0.log.1").read_text() == first
        assert (logs / "router.log").read_text().count("started replica echo-0") == 1
        assert (logs / "router.log.1").exists()
        cli("up", str(path))  # of the running stack: its logs go on
        assert (logs / "router.log").read_text().count("started replica echo-0") == 1
    finally:
        cli("down", str(path), check=False)


def test_the_stacks_state_and_logs_are_the_owners_alone_and_logs_tail_shows_their_end(tmp_path):
    """Under the user's umask (022), the router's config, its logs and every replica's were readable by any
    user of the machine; `local logs` printed whole files, days of them."""
    path = _script_stack(tmp_path, [{"name": "echo", **ECHO, "auth_enabled": True}])
    state = tmp_path / "state"
    try:
        cli("up", str(path))
        made = [state, state / "router.json", state / "logs", state / "logs" / "router.log", state / "logs" / "echo-0.log",
                state / "keys"]
        assert {p.name: oct(p.stat().st_mode & 0o077) for p in made} == {p.name: "0o0" for p in made}
        shown = cli("logs", str(path), "router", "--tail", "2").stdout.splitlines()
        assert shown[0] == "==> router.log <==" and len(shown) == 3, shown
        assert shown[1:] == (state / "logs" / "router.log").read_text().splitlines()[-2:]
    finally:
        cli("down", str(path), check=False)


def test_up_of_a_running_stack_applies_the_edited_file_and_score_covers_token_auth(tmp_path):
    """`up` after an edit said "already running" and printed the new service's URL, which answered 404."""
    path = _script_stack(tmp_path, [{"name": "echo", **ECHO}])
    try:
        cli("up", str(path))
        port = yaml.safe_load(path.read_text())["config"]["aks-model-serving:local"]["router_port"]
        _script_stack(tmp_path, [{"name": "echo", **ECHO},
                                 {"name": "echo2", **ECHO, "auth_enabled": False, "token_auth_enabled": True}], port)
        again = cli("up", str(path))
        assert "applying the changed stack file" in again.stdout and "Succeeded" in again.stdout
        scored = cli("score", str(path)).stdout
        assert "/api/v1/service/echo/score" in scored and "/api/v1/service/echo2/score" in scored
        assert scored.count("-> 200") == 2, scored
        assert "as its file says" in cli("up", str(path)).stdout
    finally:
        cli("down", str(path), check=False)
    stopped = cli("score", str(path), check=False)
    assert stopped.returncode == 2 and "stack is not running; `local up" in stopped.stderr
    assert "Traceback" not in stopped.stderr


def test_up_after_a_config_the_router_refused_is_judged_on_its_own_file(tmp_path):
    """The router's error about the file an edit replaced was still in /readyz when `up` first asked (the router
    reads its file once a second): `up` failed at once, naming the error its own file had fixed."""
    path = _script_stack(tmp_path, [{"name": "echo", **ECHO}])
    port = yaml.safe_load(path.read_text())["config"]["aks-model-serving:local"]["router_port"]
    config = tmp_path / "state" / "router.json"
    try:
        cli("up", str(path))
        refused = json.loads(config.read_text()) | {"host": "127.0.0.2"}  # a restart's change: refused by a reload
        config.with_name("router.json.tmp").write_text(json.dumps(refused))
        config.with_name("router.json.tmp").replace(config)
        deadline = time.monotonic() + 10
        while not httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json().get("config_error"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        said = cli("up", str(path)).stdout
        assert "applying the changed stack file" in said and "Succeeded" in said, said
    finally:
        cli("down", str(path), check=False)


def test_a_running_router_whose_config_this_release_refuses_is_still_updated_and_stopped(tmp_path):
    """The project updated while the stack ran (its config schema changed): `up` and `down` ended in a
    validation traceback, and nothing but a kill by hand stopped the stack."""
    path = _script_stack(tmp_path, [{"name": "echo", **ECHO}])
    config = tmp_path / "state" / "router.json"

    def written_by_another_release() -> None:
        fields = json.loads(config.read_text()) | {"a_setting_of_another_release": 1}
        config.with_name("router.json.tmp").write_text(json.dumps(fields))
        config.with_name("router.json.tmp").replace(config)

    try:
        cli("up", str(path))
        written_by_another_release()
        assert "applying the changed stack file" in cli("up", str(path)).stdout
        written_by_another_release()
        said = cli("down", str(path)).stdout
        assert f"{config} does not read as this release's router config (a_setting_of_another_release:" in said
        assert "stopped the scripts stack" in said
        assert scorer_pids(str(tmp_path / "state")) == []
    finally:
        cli("down", str(path), check=False)


def test_up_of_a_running_stack_judges_the_edit_on_its_own_replicas_and_status_says_why_they_fail(tmp_path):
    """`up` after an edit whose init() fails said Succeeded (exit 0) on the replicas it replaced, before the
    router had even read the file; `status` said ready and exit 0 beside the failure in /readyz; the next
    edit, a fix, said Failed at once on the failure it replaced."""
    path = _script_stack(tmp_path, [{"name": "echo", **ECHO}])
    try:
        cli("up", str(path))
        port = yaml.safe_load(path.read_text())["config"]["aks-model-serving:local"]["router_port"]
        _script_stack(tmp_path, [{"name": "echo", "script": "init_fails.py", "folder": "tests/scorer/scripts"}], port)
        again = cli("up", str(path), check=False)
        assert again.returncode == 1 and "Succeeded" not in again.stdout, again.stdout
        assert "init() failed: RuntimeError: model file is corrupt" in again.stdout
        status = cli("status", str(path), check=False)
        assert status.returncode == 1 and "1 version(s) failing" in status.stdout, status.stdout
        assert "init() failed: RuntimeError: model file is corrupt" in status.stdout
        # Fixed again: the failure of the replicas it replaces is not this edit's (it said Failed at once).
        _script_stack(tmp_path, [{"name": "echo", **ECHO}], port)
        fixed = cli("up", str(path), check=False)
        assert fixed.returncode == 0 and "Succeeded" in fixed.stdout, fixed.stdout
    finally:
        cli("down", str(path), check=False)


def test_ctrl_c_during_up_stops_what_it_started(tmp_path):
    """Ctrl-C while `up` waited printed a traceback and left the router and its scorers running unsaid."""
    path = _script_stack(tmp_path, [{"name": "slow", "script": "sleepy.py", "folder": "tests/scorer/scripts"}])
    doc = yaml.safe_load(path.read_text())
    service = doc["config"]["aks-model-serving:services"][0]
    service["inference_config"]["environment"] = {"environment_variables": {"INIT_SECONDS": "60"}}
    # What `up` waits at most before it kills what it started (drain: wait + scoring timeout, then the scorer's
    # stop grace) kept under this test's 60 s: once in a few dozen runs a worker outlived its SIGTERM there.
    service["scoring_timeout_ms"] = 5000
    path.write_text(yaml.safe_dump(doc))
    try:
        up = subprocess.Popen([*CLI, "up", str(path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert "Starting" in up.stdout.readline()
        deadline = time.monotonic() + 30
        while not (tmp_path / "state" / "logs" / "slow-0.log").exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # its replica started
        up.send_signal(signal.SIGINT)
        said = up.communicate(timeout=60)[0]
        assert up.returncode == 130 and "Interrupted" in said and "Traceback" not in said, said
        assert scorer_pids(str(tmp_path / "state")) == []
        assert "not running" in cli("status", str(path), check=False).stdout
    finally:
        cli("down", str(path), check=False)


def _sleepy_stack(tmp_path: Path, init_seconds: int) -> Path:
    """A service whose init() takes init_seconds, beside one ready at once."""
    path = _script_stack(tmp_path, [{"name": "slow", "script": "sleepy.py", "folder": "tests/scorer/scripts"},
                                    {"name": "quick", **ECHO}])
    doc = yaml.safe_load(path.read_text())
    service = doc["config"]["aks-model-serving:services"][0]
    service["inference_config"]["environment"] = {"environment_variables": {"INIT_SECONDS": str(init_seconds)}}
    service["scoring_timeout_ms"] = 5000  # `up`'s stop of what it started: drain, then the scorer's grace
    path.write_text(yaml.safe_dump(doc))
    return path


def test_up_that_times_out_names_the_version_not_ready_and_shows_the_end_of_its_log(tmp_path, monkeypatch):
    """An init() still loading at the timeout got "not ready after 180 s" and the router's log, which says
    nothing of it: which version it was and what its scorer wrote last were left to find. The timeout is
    --timeout's, and the message names the option."""
    path = _sleepy_stack(tmp_path, 60)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the router it starts runs this checkout
    try:
        started = time.monotonic()
        result = cli("up", str(path), "--timeout", "8", check=False)
        said = result.stdout
        assert result.returncode == 1 and time.monotonic() - started < 60, said
        log = tmp_path / "state" / "logs" / "slow-0.log"
        assert ("Failed: not ready after 8 s (`local up --timeout SECONDS` waits longer)\n"
                "  service slow, version slow: 0/1 ready\n") in said, said
        assert f"    the end of {log}:\n" in said and '"message":"worker 0 started' in said, said
        assert "quick" not in said.split("Failed")[1], said
        assert scorer_pids(str(tmp_path / "state")) == []
    finally:
        cli("down", str(path), check=False)


def test_up_with_a_longer_timeout_waits_for_an_init_slower_than_the_default(tmp_path, monkeypatch):
    """`up` gave up after 180 s whatever the model: one whose init() takes longer could never run locally."""
    from components import local

    path = _sleepy_stack(tmp_path, 4)
    monkeypatch.setattr(local, "READY_TIMEOUT_S", 1)  # the default, shorter than the init()
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the router it starts runs this checkout
    try:
        assert local.main(["up", str(path), "--timeout", "60"]) == 0
        assert cli("status", str(path), check=False).returncode == 0
    finally:  # in this process, the router's parent, which reaps it: another `down` waited 130 s on its zombie
        local.main(["down", str(path)])


@pytest.mark.parametrize("timeout", ["0", "-5", "soon", "nan", "inf"])
def test_up_refuses_a_timeout_that_is_not_a_positive_number_of_seconds(timeout):
    result = cli("up", "stacks/Pulumi.local.yaml", "--timeout", timeout, check=False)
    assert result.returncode == 2
    assert f"argument --timeout: must be a positive number of seconds, not '{timeout}'" in result.stderr, result.stderr


def test_the_end_of_a_long_log_is_its_last_whole_lines(tmp_path):
    from components.local import TAIL_BYTES, _tail

    log = tmp_path / "slow-0.log"
    log.write_text("".join(f"line {i} " + "x" * 97 + "\n" for i in range(2 * TAIL_BYTES // 100)))
    lines = log.read_text().splitlines()
    assert _tail(log, 3) == lines[-3:]
    read = _tail(log, 10_000)  # as much as the end's 64 KiB holds, whole lines only
    assert read == lines[-len(read):] and TAIL_BYTES // 110 < len(read) < TAIL_BYTES // 100


def test_down_lets_a_request_in_flight_finish(tmp_path):
    """`down` sent SIGKILL 15 s after SIGTERM, cutting off requests well inside their scoring timeout."""
    path = _script_stack(tmp_path, [{"name": "slow", "script": "sleepy.py", "folder": "tests/scorer/scripts"}])
    port = yaml.safe_load(path.read_text())["config"]["aks-model-serving:local"]["router_port"]
    answer: dict = {}

    def call() -> None:
        answer["r"] = httpx.post(f"http://127.0.0.1:{port}/api/v1/service/slow/score", json={"sleep": 18}, timeout=60)

    try:
        cli("up", str(path))
        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(1)
        assert "stopped" in cli("down", str(path)).stdout
        caller.join(30)
        assert answer["r"].status_code == 200
    finally:
        cli("down", str(path), check=False)


def test_ctrl_c_during_down_stops_the_stack_at_once(tmp_path):
    """`down` waits for the requests in flight, silently (76 s at most by default): Ctrl-C there ended in a
    KeyboardInterrupt traceback, leaving the router draining and `status` calling it "starting, or too busy"."""
    path = _script_stack(tmp_path, [{"name": "slow", "script": "sleepy.py", "folder": "tests/scorer/scripts"}])
    port = yaml.safe_load(path.read_text())["config"]["aks-model-serving:local"]["router_port"]
    marker = str(tmp_path / "state")
    caller = threading.Thread(target=_post_quietly, args=(f"http://127.0.0.1:{port}/api/v1/service/slow/score",))
    try:
        cli("up", str(path))
        caller.start()
        time.sleep(1)  # the request is in flight
        down = subprocess.Popen([*CLI, "down", str(path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(2)
        down.send_signal(signal.SIGINT)
        said, _ = down.communicate(timeout=10)
        assert down.returncode == 130, said
        assert "Interrupted" in said and "Traceback" not in said
        assert not (tmp_path / "state" / "router.pid").exists()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and scorer_pids(marker):
            time.sleep(0.1)
        assert scorer_pids(marker) == []
    finally:
        cli("down", str(path), check=False)
        caller.join(60)


def _post_quietly(url: str, seconds: float = 30) -> None:
    """A request held `seconds`, its failure expected (the stack may be stopped under it)."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url, json={"sleep": seconds}, timeout=60)


def test_up_during_a_down_waits_for_it_and_starts_the_stack_again(tmp_path):
    """`up` while `down` waited for a request in flight took the stopping router for a running one: "already
    running", exit 0, and then nothing ran."""
    path = _script_stack(tmp_path, [{"name": "slow", "script": "sleepy.py", "folder": "tests/scorer/scripts"}])
    port = yaml.safe_load(path.read_text())["config"]["aks-model-serving:local"]["router_port"]
    caller = threading.Thread(target=_post_quietly, args=(f"http://127.0.0.1:{port}/api/v1/service/slow/score", 5))
    try:
        cli("up", str(path))
        first = int((tmp_path / "state" / "router.pid").read_text())
        caller.start()
        time.sleep(1)  # the request is in flight
        down = subprocess.Popen([*CLI, "down", str(path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert "stopping" in down.stdout.readline()
        again = cli("up", str(path))
        assert "waiting for it" in again.stdout and "Succeeded" in again.stdout, again.stdout
        assert down.wait(30) == 0 and "stopped" in down.stdout.read()
        assert int((tmp_path / "state" / "router.pid").read_text()) != first
        assert cli("status", str(path), check=False).returncode == 0
    finally:
        cli("down", str(path), check=False)
        caller.join(60)


def test_logs_of_a_service_leave_out_a_service_whose_name_extends_it(tmp_path):
    path = _script_stack(tmp_path, [{"name": "iris", **ECHO}, {"name": "iris-2", **ECHO}])
    logs = tmp_path / "state" / "logs"
    logs.mkdir(parents=True)
    (logs / "iris-0.log").write_text("mine\n")
    (logs / "iris-2-0.log").write_text("not mine\n")
    out = cli("logs", str(path), "iris").stdout
    assert "iris-0.log" in out and "iris-2-0.log" not in out


def test_two_stacks_on_one_state_folder_are_told_apart(tmp_path):
    """Every stack without local settings ran from .local on port 8890: `up` of a second one took over the
    first's router, and `down` of either stopped it. The folder is now per stack by default, and one
    holding another stack file's keys and processes is refused."""
    first = _script_stack(tmp_path, [{"name": "echo", **ECHO}])
    doc = yaml.safe_load(first.read_text())
    second = tmp_path / "Pulumi.other.yaml"
    doc["config"]["aks-model-serving:local"]["router_port"] = free_port()
    second.write_text(yaml.safe_dump(doc))
    try:
        up = cli("up", str(first))
        assert "Succeeded" in up.stdout
        assert "router.log" in cli("logs", str(first), "router").stdout
        refused = cli("up", str(second), check=False)
        assert refused.returncode == 2
        assert (f"local.state_dir: {tmp_path / 'state'} holds the stack {first}'s keys and processes; give "
                "Pulumi.other.yaml a state_dir (and router_port) of its own") in refused.stderr
    finally:
        cli("down", str(first), check=False)
    undeclared = {"config": {k: v for k, v in doc["config"].items() if k != "aks-model-serving:local"}}
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "Pulumi.yaml").write_text("name: p\nruntime: python\n")
    for name in ("a", "b"):
        (tmp_path / "project" / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(undeclared))
    from components import local
    from components.stackfile import load_stack

    roots = {local.state_of(load_stack(tmp_path / "project" / f"Pulumi.{n}.yaml")).root for n in ("a", "b")}
    assert roots == {tmp_path / "project" / ".local" / "a", tmp_path / "project" / ".local" / "b"}


def test_a_command_whose_packages_are_missing_says_how_to_install_them(tmp_path):
    """`make local` installs only what `local` needs: plan was a ModuleNotFoundError traceback."""
    blocker = tmp_path / "pulumi"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError('no pulumi here', name='pulumi')\n")
    result = subprocess.run([*CLI[:-1], "plan", str(ROOT / "stacks" / "Pulumi.dev.yaml")], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "python -m components plan needs pulumi, which this environment lacks; `make setup` installs" in result.stderr


@pytest.mark.parametrize("readyz,said", [
    ({"ready": True, "routes": [], "config": "0123456789abcdef",  # the digest of the config it kept
      "config_error": "version v1 (echo): scorer cwd /x is not a folder"},
     "the router did not apply the stack's config: version v1 (echo): scorer cwd /x is not a folder"),
    ({"ready": True, "routes": []}, "the running router is of an older release of this project"),
], ids=["config-refused", "older-router"])
def test_up_says_at_once_why_the_router_does_not_run_the_stack(tmp_path, readyz, said):
    """A config the running router refuses (it keeps the one it had), or a router left running from before an
    upgrade (it tells no config digest), left `up` waiting out its 180 s."""
    import io

    from components import local
    from components.stackfile import load_stack

    with _router_answering(readyz, 503) as port:
        stack = load_stack(_script_stack(tmp_path, [{"name": "echo", **ECHO}], port=port))
        out = io.StringIO()
        started = time.monotonic()
        assert local.wait_ready(stack, RouterConfig(), None, out) is False
        assert time.monotonic() - started < 5
        assert said in out.getvalue(), out.getvalue()


def test_a_stacks_state_folder_never_enters_an_image_context(tmp_path):
    """It holds the stack's keys: an .amlignore (which replaces .gitignore and its `.local/`) or a state_dir
    outside .local put them in the image of an app whose source_directory is the project."""
    from components import local
    from components.image import context_files
    from components.stackfile import load_stack

    stack = load_stack(_script_stack(tmp_path, [{"name": "echo", **ECHO, "auth_enabled": True}]))
    local.render(stack, local.state_of(stack))
    assert sorted(p.name for p in (tmp_path / "state" / "keys").iterdir()) == ["service.echo.primary", "service.echo.secondary"]
    (tmp_path / ".amlignore").write_text("data/\n")
    files = context_files(tmp_path)
    assert "Pulumi.scripts.yaml" in files and [f for f in files if f.startswith("state/")] == []


def test_without_a_source_directory_a_replica_runs_the_entry_script_alone(tmp_path):
    """As the cluster's image holds it: a neighbour importable here and not there would pass locally only."""
    from components import local
    from components.stackfile import load_stack

    doc = yaml.safe_load(_script_stack(tmp_path, [{"name": "echo", **ECHO}]).read_text())
    doc["config"]["aks-model-serving:services"][0]["inference_config"] = {
        "entry_script": str(ROOT / "tests" / "router" / "scripts" / "echo_score.py")}
    path = tmp_path / "Pulumi.alone.yaml"
    path.write_text(yaml.safe_dump(doc))
    stack = load_stack(path)
    launch = local.render(stack, local.state_of(stack)).routes[0].versions[0].scorer
    assert launch.env["AZUREML_ENTRY_SCRIPT"] == "echo_score.py"
    assert [p.name for p in Path(launch.cwd).iterdir()] == ["echo_score.py"] == [p.name for p in Path(launch.env["AML_APP_ROOT"]).iterdir()]


READS_ITS_MODELS = '''
import os
from pathlib import Path

found = {}


def init():
    root = Path(os.environ["AZUREML_MODEL_DIR"])
    found["listing"] = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    found["weights"] = (root / os.environ["WEIGHTS"]).read_text()


def run(raw_data):
    return found
'''


def test_a_model_that_is_a_file_is_in_its_version_folder_as_on_the_cluster(tmp_path):
    """Azure ML's own sample registers model_path="sklearn_regression_model.pkl" and its init() opens
    AZUREML_MODEL_DIR/sklearn_regression_model.pkl, as the cluster's replica finds it (its file alone in
    <name>/<version>/). Locally AZUREML_MODEL_DIR was the file itself, so that init() failed here alone."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "score.py").write_text(READS_ITS_MODELS)
    (tmp_path / "trained").mkdir()
    (tmp_path / "trained" / "weights.txt").write_text("w1")
    (tmp_path / "trained" / "other.txt").write_text("w2")
    (tmp_path / "trained" / "notes.md").write_text("not a model")
    port = free_port()
    app = {"entry_script": "score.py", "source_directory": str(tmp_path / "app")}
    doc = {"config": {
        "aks-model-serving:local": {"router_port": port, "state_dir": str(tmp_path / "state"), "data_dir": str(tmp_path / "data")},
        "aks-model-serving:models": [{"name": "w", "version": 1, "path": str(tmp_path / "trained" / "weights.txt")},
                                     {"name": "o", "version": 2, "path": str(tmp_path / "trained" / "other.txt")}],
        "aks-model-serving:services": [
            {"name": name, "models": models, "auth_enabled": False, "num_replicas": 1, "autoscale_enabled": False,
             "inference_config": {**app, "environment": {"environment_variables": {"WEIGHTS": weights}}}}
            for name, models, weights in (("one", ["w:1"], "weights.txt"), ("two", ["w:1", "o:2"], "o/2/other.txt"))],
    }}
    path = tmp_path / "Pulumi.files.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        cli("up", str(path))
        one = httpx.post(f"http://127.0.0.1:{port}/api/v1/service/one/score", json={}, timeout=30).json()
        assert one == {"listing": ["weights.txt"], "weights": "w1"}  # alone: not the files beside it
        two = httpx.post(f"http://127.0.0.1:{port}/api/v1/service/two/score", json={}, timeout=30).json()
        assert two == {"listing": ["o", "o/2", "o/2/other.txt", "w", "w/1", "w/1/weights.txt"], "weights": "w2"}
    finally:
        cli("down", str(path), check=False)


@pytest.mark.parametrize("command", ["up", "status", "down"])
def test_a_state_dir_that_cannot_be_a_folder_is_named_not_a_traceback(tmp_path, command):
    """A state_dir under a file (or one this user may not write): every command ended in a traceback."""
    path = _script_stack(tmp_path, [{"name": "echo", **ECHO}])
    doc = yaml.safe_load(path.read_text())
    (tmp_path / "a-file").write_text("")
    doc["config"]["aks-model-serving:local"]["state_dir"] = str(tmp_path / "a-file" / "state")
    path.write_text(yaml.safe_dump(doc))
    said = cli(command, str(path), check=False)
    assert said.returncode == 2 and "Traceback" not in said.stderr, said.stderr
    assert f"local.state_dir: {tmp_path / 'a-file' / 'state'} cannot hold the stack's state: Not a directory" in said.stderr


def test_a_data_dir_that_cannot_be_a_folder_stops_up_before_anything_starts(tmp_path):
    """`up` succeeded; each replica found out when it first shipped collected records, in a log line retried
    for ever, and no record reached the folder."""
    (tmp_path / "model").mkdir()
    (tmp_path / "a-file").write_text("")
    path = _script_stack(tmp_path, [{"name": "echo", **ECHO, "collect_model_data": True, "models": ["m:1"]}])
    doc = yaml.safe_load(path.read_text())
    doc["config"]["aks-model-serving:models"] = [{"name": "m", "version": 1, "path": str(tmp_path / "model")}]
    doc["config"]["aks-model-serving:local"]["data_dir"] = str(tmp_path / "a-file" / "data")
    path.write_text(yaml.safe_dump(doc))
    try:
        said = cli("up", str(path), check=False)
        assert said.returncode == 2, said.stdout
        assert (f"local.data_dir: {tmp_path / 'a-file' / 'data'} cannot hold collected data: Not a directory"
                in said.stderr)
        assert not (tmp_path / "state" / "router.pid").exists()
    finally:
        cli("down", str(path), check=False)


def test_up_of_a_running_stack_rolls_the_replicas_of_an_edited_entry_script(tmp_path):
    """Azure ML's LocalWebservice.reload() runs the edited score.py; here `up` said "already running as its file
    says" and the replicas went on running the code they had loaded."""
    app = tmp_path / "app"
    app.mkdir()
    script = app / "score.py"
    script.write_text("def init():\n    pass\n\n\ndef run(raw_data):\n    return {'v': 1}\n")
    path = _script_stack(tmp_path, [{"name": "echo", "script": "score.py", "folder": str(app)}])
    url = f"http://127.0.0.1:{yaml.safe_load(path.read_text())['config']['aks-model-serving:local']['router_port']}/api/v1/service/echo/score"
    try:
        cli("up", str(path))
        assert httpx.post(url, json={}, timeout=30).json() == {"v": 1}
        assert "already running" in cli("up", str(path)).stdout  # nothing edited: nothing rolls
        script.write_text(script.read_text().replace("'v': 1", "'v': 2"))
        later = script.stat().st_mtime + 2  # a file system whose mtimes are coarse
        os.utime(script, (later, later))
        applied = cli("up", str(path))
        assert "applying the changed stack file or app" in applied.stdout and "Succeeded" in applied.stdout
        assert httpx.post(url, json={}, timeout=30).json() == {"v": 2}
    finally:
        cli("down", str(path), check=False)


def test_ctrl_c_during_score_ends_it_without_a_traceback(tmp_path):
    """A slow run(): `score` waits up to 30 s for it, and Ctrl-C there printed a KeyboardInterrupt traceback."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "slow.py").write_text("import time\n\n\ndef init():\n    pass\n\n\ndef run(raw_data):\n    time.sleep(8)\n")
    path = _script_stack(tmp_path, [{"name": "slow", "script": "slow.py", "folder": str(tmp_path / "app"),
                                     "scoring_timeout_ms": 60000}])
    try:
        cli("up", str(path))
        score = subprocess.Popen([*CLI, "score", str(path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        score.send_signal(signal.SIGINT)
        out, err = score.communicate(timeout=10)
        assert score.returncode == 130 and "Traceback" not in err, err
        assert "Interrupted" in err
    finally:
        cli("down", str(path), check=False)


def test_an_empty_key_file_is_made_again_by_up(tmp_path):
    """A key file written empty (a full disk, an up killed mid-write) was kept as made: `local keys` printed
    nothing and no key opened the service, for good."""
    path = _script_stack(tmp_path, [{"name": "echo", **ECHO, "auth_enabled": True}])
    port = yaml.safe_load(path.read_text())["config"]["aks-model-serving:local"]["router_port"]
    keys = tmp_path / "state" / "keys"
    keys.mkdir(parents=True)
    (keys / "service.echo.primary").write_text("")
    try:
        cli("up", str(path))
        key = cli("keys", str(path), "echo", "--primary").stdout.strip()
        assert len(key) > 20
        assert (keys / "service.echo.primary").stat().st_mode & 0o777 == 0o600
        answer = httpx.post(f"http://127.0.0.1:{port}/api/v1/service/echo/score", json={},
                            headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert answer.status_code == 200
    finally:
        cli("down", str(path), check=False)
