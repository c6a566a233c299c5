"""What benchmarks/router/run and benchmarks/router/autoscale share: ports, processes, wrk."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORK = HERE / "work"
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
KEY = "bench-primary-key-0123456789abcdef"
BODY = '{"data":[[1,2,3]]}'


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float = 0.0  # CPU of the hop in front of the scorer per request (router or nginx), microseconds
    requests: int = 0  # completed in the run
    scorer_us: float = 0.0  # CPU of the scorer (supervisor and workers) per request, when asked
    wrk_us: float = 0.0  # CPU of wrk itself per request
    busy: float = 0.0  # the share of the machine's CPU time busy during the run (all processes, 0-1)

    @property
    def cores(self) -> float:
        """How many cores the hop kept busy."""
        return self.cpu_us * self.rps / 1e6


def sh(*command: str, **kwargs: object) -> None:
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]


def ensure_packages(*tools: str) -> None:
    """Install the Debian packages of these tools when missing (apt)."""
    missing = [t for t in tools if not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists()]
    if not missing:
        return
    print("installing", " ".join(missing), "(apt)", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    sh(*sudo, "apt-get", "update", "-qq")
    sh(*sudo, "apt-get", "install", "-y", "-qq", *missing)


def project_python() -> str:
    return str(PROJECT_PYTHON if PROJECT_PYTHON.exists() else sys.executable)


# The router as its image ships it: its hot path compiled with mypyc (setup_compiled.py), built by
# `make compiled` into build/compiled and selected by these (PYTHONSAFEPATH: the working directory
# must not put the pure sources first). Its scorer replicas run pure, as the scorer image does.
COMPILED = ROOT / "build" / "compiled"
COMPILED_ENV = {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(COMPILED)}
PURE_ENV = {"PYTHONSAFEPATH": "", "PYTHONPATH": ""}


def ensure_compiled() -> None:
    """`make compiled`: builds build/compiled when missing or older than a source."""
    subprocess.run(["make", "-s", "compiled"], cwd=ROOT, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_keys(folder: Path, key_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key_id}.primary").write_text(KEY)
    (folder / f"{key_id}.secondary").write_text(KEY[::-1])


MINT = """
import sys
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from router_image.tokens import mint_token
key = ec.generate_private_key(ec.SECP256R1())
Path(sys.argv[1]).write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
print(mint_token(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), sys.argv[2])[0])
"""


def signing_token(folder: Path, audience: str) -> tuple[Path, str]:
    """An ES256 public key file for the router's token config, and a token for `audience` minted with its key
    (by the project's Python: the benchmarks run on the system's, without PyJWT)."""
    folder.mkdir(parents=True, exist_ok=True)
    public = folder / "token.pub"
    token = subprocess.run([project_python(), "-c", MINT, str(public), audience], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.strip()
    return public, token


def router_config(port: int, service: str, deployment: str, workers: int, token_key: Path | None = None) -> dict:
    """A local-backend router with one service, key auth or, given a public key file, token auth: one replica of
    trivial_score.py (N workers) with enough slots that the router never queues, so what is measured is the
    proxying."""
    return {
        "backend": "local", "host": "127.0.0.1", "port": port, "keys_dir": str(WORK / "keys"),
        "autoscale_enabled": False,
        **({"token": {"public_key_file": str(token_key)}} if token_key else {}),
        "routes": [{
            "kind": "service", "name": service,
            "auth": {"key_enabled": False, "token_enabled": True} if token_key else {"key_enabled": True},
            "versions": [{
                "name": "v1", "deployment": deployment, "is_default": True, "num_replicas": 1,
                "replica_max_concurrent_requests": 1000, "max_request_wait_time_ms": 500,
                "scorer": {"env": {"AZUREML_ENTRY_SCRIPT": str(HERE / "trivial_score.py"), "WORKER_COUNT": str(workers),
                                   **PURE_ENV},
                           "cwd": str(WORK), "log_dir": str(WORK / "replica-logs")},
            }],
        }],
    }


def nginx_config(prefix: Path, port: int, upstream_port: int) -> Path:
    """nginx in front of one scorer port as `run` measures it: 1 worker, keepalive upstream, no access log."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream scorer {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://scorer;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    return conf


def haproxy_config(prefix: Path, port: int, upstream_port: int, service: str) -> Path:
    """HAProxy carrying the router's per-request rules for one key-auth service of one version, as config:
    what a native data plane under the Python router would run (`run` measures it beside the router).

    Each rule is the router's: the route's path, else 404; the key compared as a SHA-256 of the
    Authorization header against the primary's and secondary's (no early exit on a secret: only hashes
    are compared), else 401 JSON with WWW-Authenticate; per replica `maxconn` =
    replica_max_concurrent_requests (1000, as router_config), queued first come first served for
    `timeout queue` = max_request_wait_time, then 503 JSON with Retry-After; least busy replica; a retry on
    another replica only when the connection failed (nothing sent); `timeout server` = scoring_timeout
    (504); the answer names its version; keep-alive connections to the replicas. One thread (nginx 1
    worker, the router 1 process), no log."""
    prefix.mkdir(parents=True, exist_ok=True)
    keys = prefix / "keys.lst"
    keys.write_text("".join(hashlib.sha256(f"Bearer {k}".encode()).hexdigest() + "\n" for k in (KEY, KEY[::-1])))
    busy = json.dumps({"error": {"code": "ServiceUnavailable", "message": "every replica slot stayed busy"}})
    (prefix / "503.http").write_bytes(f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                                      f"retry-after: 1\r\ncontent-length: {len(busy)}\r\n\r\n{busy}".encode())
    error = lambda code, message: json.dumps({"error": {"code": code, "message": message}})  # noqa: E731
    conf = prefix / "haproxy.cfg"
    conf.write_text(f"""
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 65s
    timeout http-request 10s
    timeout http-keep-alive 65s
    timeout server 60s
    timeout queue 500ms
    http-reuse always
frontend router
    bind 127.0.0.1:{port}
    acl route path /api/v1/service/{service}/score
    acl key req.hdr(authorization),sha2(256),hex,lower -m str -f {keys}
    http-request return status 404 content-type application/json string '{error("NotFound", "no such route")}' unless route
    http-request return status 401 content-type application/json string '{error("Unauthorized", "a valid key is required")}' hdr www-authenticate 'Bearer realm="{service}"' unless key
    use_backend {service}-v1
backend {service}-v1
    balance leastconn
    retries 2
    option redispatch 1
    retry-on conn-failure
    http-request set-path /score
    http-response set-header azureml-model-deployment v1
    errorfile 503 {prefix}/503.http
    server replica 127.0.0.1:{upstream_port} maxconn 1000
""")
    return conf


def haproxy_version() -> str:
    out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
    return "HAProxy " + out.split()[2]


def nginx_version() -> str:
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return "nginx " + out.rsplit("/", 1)[-1]


def wait_answer(url: str, headers: dict[str, str], what: str, process: Process | None = None, timeout: float = 60) -> None:
    """Until a scoring POST of BODY to `url` answers 200 (`process`, if given, must stay up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise SystemExit(f"{what} exited; see {process.log_path}")
        try:
            request = urllib.request.Request(url, BODY.encode(), {"Content-Type": "application/json", **headers})
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} does not answer {url}")


class Process:
    """A child in its own process group, output to WORK/<name>.log; stop() ends it (SIGTERM, then SIGKILL).

    Not in a session of its own: the kernel's autogroup scheduling shares the CPU per session, so
    a proxy in its own session would get half the cores against wrk's whatever it needs.
    """

    def __init__(self, name: str, command: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = WORK / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})}, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, process_group=0)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


class Router(Process):
    """`python -m router_image --config WORK/<name>.json`, as the local stack runs it, but compiled as the
    router image ships it (COMPILED_ENV; built first if missing or stale)."""

    def __init__(self, name: str, config: dict) -> None:
        self.port = config["port"]
        self.config_path = WORK / f"{name}.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        ensure_compiled()
        super().__init__(name, [project_python(), "-m", "router_image", "--config", str(self.config_path)],
                         env=COMPILED_ENV)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get_json(self, path: str, timeout: float = 2) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise SystemExit(f"router exited; see {self.log_path}")
            try:
                if self.get_json("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"router not ready within {timeout} s; see {self.log_path}")

    def log_lines(self) -> list[dict]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def replica_ports(self) -> list[int]:
        """Ports of the scorer replicas the local backend started (from its log lines)."""
        return [int(m.group(1)) for line in self.log_lines()
                if (m := re.search(r"started replica \S+ on port (\d+)", line.get("message", "")))]


def children(pid: int) -> list[int]:
    """The direct children of a process (nginx's master: its workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return pids


def cpu_seconds(pid: int, with_children_of: bool = False) -> float:
    """user+sys CPU seconds of a process (and, when asked, of its direct children: nginx's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid, *(children(pid) if with_children_of else [])]
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def to_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def lua_script(name: str, body: str, headers: dict[str, str]) -> Path:
    lines = ["wrk.method = 'POST'", f"wrk.body = '{body}'"]
    lines += [f"wrk.headers['{k}'] = '{v}'" for k, v in headers.items()]
    path = WORK / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def machine_ticks() -> tuple[int, int]:
    """Busy and all CPU ticks of the machine so far (/proc/stat; idle and iowait count as not busy). The
    first eight columns only, user to steal: the kernel counts guest and guest_nice in user and nice already."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def wrk(url: str, lua: Path, connections: int, seconds: float, threads: int = 2,
        cpu_of: Callable[[], float] | None = None, scorer_of: Callable[[], float] | None = None) -> Result:
    """One wrk run; with `cpu_of` (the hop's CPU seconds) and `scorer_of` (the scorer's), their CPU per request.
    wrk's own CPU and how busy the machine was are measured on every run: where the CPU of a request goes."""
    cpu_before = cpu_of() if cpu_of else 0.0
    scorer_before = scorer_of() if scorer_of else 0.0
    wrk_before, (busy_before, all_before) = os.times(), machine_ticks()
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    wrk_after, (busy_after, all_after) = os.times(), machine_ticks()
    per_request = 1e6 / max(requests, 1)
    cpu_us = (cpu_of() - cpu_before) * per_request if cpu_of else 0.0
    scorer_us = (scorer_of() - scorer_before) * per_request if scorer_of else 0.0
    wrk_us = (wrk_after.children_user + wrk_after.children_system
              - wrk_before.children_user - wrk_before.children_system) * per_request
    return Result(rps, p50, p99, errors, cpu_us, requests, scorer_us, wrk_us,
                  (busy_after - busy_before) / max(all_after - all_before, 1))


def cpu_name() -> str:
    return next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                 if l.startswith("model name")), "unknown CPU")
