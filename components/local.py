"""`python -m components local ...`: the stack's router and scorers as processes on loopback.

Azure ML tells its users to debug a deployment locally before deploying it; here the same stack
file runs on one machine. `up` renders the router's config from the stack (the same routes
ModelRouter renders for a cluster, with the `local` backend), starts the router detached, waits
until every service has a ready replica, and prints how to call each one. Everything lives in
the stack's `local.state_dir`: the config, keys, token signing key, pid file and logs.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import http.client
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from components import logcap
from components.ignore import STATE_MARKER, context_files
from components.routes import routes
from components.sources import app_context, missing_models, source_problems
from components.spec import SECURE, Deployable, InferenceConfigSpec, StackSpec, deployment_name
from components.stackfile import Stack, StackError, load_stack
from router_image.config import ConfigError, RouterConfig, ScorerLaunch, TokenConfig
from scoring_image.config import ScorerSettings

READY_TIMEOUT_S = 180  # `up --timeout` sets another: a model whose init() takes longer
STOP_MARGIN_S = 5  # after the router's drain and its scorers' stop: the processes exiting


@dataclass(frozen=True)
class State:
    """Where a local stack keeps what it made."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "router.json"

    @property
    def pid(self) -> Path:
        return self.root / "router.pid"

    @property
    def lock(self) -> Path:
        return self.root / "up.lock"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def token_key(self) -> Path:
        return self.root / "token" / "signing-key.pem"

    @property
    def token_public(self) -> Path:
        return self.root / "token" / "signing-key.pub.pem"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def models(self) -> Path:
        return self.root / "model-dirs"


def state_of(stack: Stack) -> State:
    """The stack's folder, refused when another stack file's is there: they would share keys, and one
    stack's `down` would stop the other's router."""
    state = State(stack.resolve(stack.spec.local.state_dir or f".local/{stack.name}"))
    owner = state.root / STATE_MARKER
    try:
        path = owner.read_text()
    except FileNotFoundError:
        return state
    except OSError as exc:  # under a file, or not this user's to read
        raise _unusable(state, exc) from None
    if path != str(stack.path.resolve()):
        raise StackError([f"local.state_dir: {state.root} holds the stack {path}'s keys and processes; give "
                          f"{stack.path.name} a state_dir (and router_port) of its own under aks-model-serving:local"])
    return state


def _unusable(state: State, exc: OSError) -> StackError:
    return StackError([f"local.state_dir: {state.root} cannot hold the stack's state: {exc.strerror}; "
                       "name another under aks-model-serving:local"])


# ------------------------------------------------------------------ rendering


def model_paths(stack: Stack, dep: Deployable) -> list[Path]:
    """The deployment's models here, a folder or a file each (a local stack's models all have a path)."""
    return [stack.resolve(stack.spec.model(ref).path) for ref in dep.models]  # type: ignore[arg-type]


def model_dir(stack: Stack, state: State, deployment: str, dep: Deployable) -> Path | None:
    """AZUREML_MODEL_DIR as Azure ML lays it out: one model -> its version folder; several -> a root
    holding <name>/<version>/ (links to the models' folders here). A model that is a file is alone in its
    version folder, as the cluster's replica has it: Azure ML's samples open AZUREML_MODEL_DIR/<file>."""
    models = [stack.spec.model(ref) for ref in dep.models]
    if not models:
        return None
    paths = model_paths(stack, dep)
    if len(models) == 1 and paths[0].is_dir():
        return paths[0]
    root = state.models / deployment
    shutil.rmtree(root, ignore_errors=True)  # links a changed model list or a folder now a file would keep
    for m, path in zip(models, paths):
        folder = root / m.name / str(m.version)
        if path.is_file():
            folder.mkdir(parents=True)
            (folder / path.name).symlink_to(path.resolve())
        else:
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.symlink_to(path.resolve())
    return root if len(models) > 1 else root / models[0].name / str(models[0].version)


def app_folder(stack: Stack, state: State, deployment: str, ic: InferenceConfigSpec) -> Path:
    """The app a replica runs, as its image holds it: the source directory, else a folder of the entry
    script alone (its neighbours would import here and not on the cluster)."""
    if ic.source_directory:
        return stack.resolve(ic.source_directory)
    folder = state.root / "apps" / deployment
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy2(app_context(stack, ic) / ic.app_entry_script, folder / ic.app_entry_script)
    return folder


def scorer_launch(stack: Stack, state: State):
    def launch(deployment: str, dep: Deployable) -> ScorerLaunch:
        ic = dep.inference_config
        assert ic is not None  # the spec requires one
        source = app_folder(stack, state, deployment, ic)
        mdir = model_dir(stack, state, deployment, dep)
        settings = ScorerSettings(
            entry_script=ic.app_entry_script,
            app_root=str(source),
            model_dir=str(mdir) if mdir else None,
            host="127.0.0.1",
            workers=1,
            scoring_timeout_ms=dep.scoring_timeout_ms,
            data_collection_enabled=dep.collect_model_data,
            data_collection_spool_dir=str(state.root / "spool" / deployment),
            data_collection_service=deployment,
            data_collection_models=[stack.spec.model(ref).ref for ref in dep.models],
            data_collection_local_dir=str(stack.resolve(stack.spec.local.data_dir)) if dep.collect_model_data else None,
        )
        secrets = {k: v.get_secret_value() for k, v in ic.environment.secret_variables.items()}
        env = settings.to_env() | ic.environment.image_variables | secrets
        return ScorerLaunch(env=env, cwd=str(source), log_dir=str(state.logs), stop_grace_seconds=settings.stop_grace_seconds,
                            files_stamp=files_stamp(source, model_paths(stack, dep)))

    return launch


def files_stamp(app: Path, models: list[Path]) -> str:
    """What a replica loads, as sizes and mtimes: its app's files as its image holds them, and its models'.
    A new stamp rolls the replicas: an edited entry script (Azure ML's LocalWebservice.reload()) or a model
    trained again in place was applied by no `up`, the replicas running on what they had loaded."""
    files = [app / rel for rel in context_files(app)]
    for path in models:
        files += [path] if path.is_file() else [Path(root, f) for root, _, names in os.walk(path) for f in names]
    digest = hashlib.sha256()
    for f in sorted(files):
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile, or a link to nothing
            st = f.stat()
            digest.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def _claim(stack: Stack, state: State) -> None:
    """Name the stack file in its folder: another stack file's is refused (state_of), and no image's
    build context takes the folder in (components.image)."""
    owner = state.root / STATE_MARKER
    if not owner.exists():
        state.root.mkdir(parents=True, exist_ok=True)
        _write(owner, str(stack.path.resolve()))


def ensure_keys(spec: StackSpec, state: State) -> None:
    """Keys are made once and kept: `<kind>.<name>.primary|secondary`, readable by the owner only."""
    state.keys.mkdir(parents=True, exist_ok=True)
    os.chmod(state.keys, 0o700)
    routes_ = [("service", s) for s in spec.services] + [("endpoint", e) for e in spec.endpoints]
    for kind, r in routes_:
        for which in ("primary", "secondary"):
            path = state.keys / f"{kind}.{r.name}.{which}"
            given = getattr(r, f"{which}_key")
            value = given.get_secret_value() if given is not None and given.get_secret_value() != SECURE else None
            if value is not None or not _filled(path):
                _write(path, value or secrets.token_urlsafe(32), 0o600)


def _filled(path: Path) -> bool:
    """A key file there and not blank: one left empty (a full disk) opened nothing, and was kept as made."""
    try:
        return bool(path.read_bytes().strip())
    except FileNotFoundError:
        return False


def ensure_token_key(state: State) -> None:
    if _filled(state.token_key):
        return
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    state.token_key.parent.mkdir(parents=True, exist_ok=True)
    _write(state.token_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()), 0o600)
    state.token_public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _data_dir_problems(stack: Stack) -> list[str]:
    """The collected data's folder, made before anything starts: a replica found it unusable only when it
    first shipped records, in a log line it retried for ever."""
    if not any(dep.collect_model_data for _, dep in stack.spec.deployments()):
        return []
    folder = stack.resolve(stack.spec.local.data_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [f"local.data_dir: {folder} cannot hold collected data: {exc.strerror}"]
    return []


def render(stack: Stack, state: State) -> RouterConfig:
    spec = stack.spec
    missing = source_problems(stack, local=True) + missing_models(stack, local=True) + _data_dir_problems(stack)
    if missing:
        raise StackError(missing)
    _claim(stack, state)  # before its first key
    ensure_keys(spec, state)
    token = None
    if any(r.token_auth_enabled for r in [*spec.services, *spec.endpoints]):
        ensure_token_key(state)
        token = TokenConfig(public_key_file=str(state.token_public))
    return RouterConfig(
        backend="local",
        host="127.0.0.1",
        port=spec.local.router_port,
        keys_dir=str(state.keys),
        token=token,
        routes=routes(spec, launch=scorer_launch(stack, state)),
    )


# ------------------------------------------------------------------ processes


def _pid(state: State) -> int | None:
    """The stack's router, when its pid file names a live process that is that router: a pid file
    left by a killed router or a reboot may name some other process by now (not to be signalled),
    another user's among them (a system daemon's after a reboot), which refuses the look."""
    try:
        pid = int(state.pid.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    if not Path("/proc").is_dir():  # no procfs (macOS): the live pid is taken at its word
        return pid
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if b"router_image" in args and str(state.config).encode() in args else None


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the router binds: TIME_WAIT is no owner
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


READYZ_TIMEOUT_S = 2.0


def _get(url: str, timeout: float = READYZ_TIMEOUT_S) -> tuple[int, dict]:
    """The status and JSON object of a GET; {} for a body that is not one (another program on the port)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            code, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        code, body = exc.code, exc.read()
    except (OSError, http.client.HTTPException):  # refused, timed out, or not HTTP at all
        return 0, {}
    try:
        found = json.loads(body or b"{}")
    except ValueError:
        return code, {}
    return code, found if isinstance(found, dict) else {}


def base_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.spec.local.router_port}"


@contextlib.contextmanager
def _exclusive(state: State, out, wait: bool = True):
    """One `up` of a stack at a time: two at once would both pass the checks, and the one whose
    router lost the port would clean up by the other's pid file. `down` holds it too, not waiting
    (wait=False: the router an `up` is starting is stopped under it, and that `up` says so): an `up`
    meanwhile took the stopping router for a running one."""
    try:
        state.root.mkdir(parents=True, exist_ok=True)
        lock = open(state.lock, "w")
    except OSError as exc:
        raise _unusable(state, exc) from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if wait:
                print("another `local up` or `down` of this stack is under way; waiting for it", file=out, flush=True)
                fcntl.flock(lock, fcntl.LOCK_EX)
        yield


INTERRUPTED = 130  # a shell's code for a command ended by Ctrl-C


@contextlib.contextmanager
def _private() -> Iterator[None]:
    """umask 077 while `up` makes the stack's state and starts its router, whose scorers inherit it: keys, logs
    (which show requests) and collected data (requests and predictions) are the owner's alone."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def up(stack: Stack, out=sys.stdout, timeout_s: float = READY_TIMEOUT_S) -> int:
    """Start the stack, or apply its edited file to the running one, and wait at most timeout_s for it."""
    state = state_of(stack)
    with _private(), _exclusive(state, out):
        if (pid := _pid(state)) is not None:
            return _apply(stack, state, pid, out, timeout_s)
        if _port_taken(stack.spec.local.router_port):  # the router would die, and whatever holds it answer /readyz
            print(f"port {stack.spec.local.router_port} is taken (another stack's router?); stop it or set "
                  "aks-model-serving:local.router_port", file=out)
            return 1
        config = render(stack, state)
        _start_logs(state.logs)
        _write(state.config, config.dump())
        # In a session of its own, as the router: no Ctrl-C of this terminal's reaches it; it ends with the router's.
        writer = subprocess.Popen([sys.executable, logcap.__file__, str(state.logs / "router.log")],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        assert writer.stdin is not None  # stdin=PIPE
        with _ctrl_c() as interrupted:  # from the start: a router started and not yet in its pid file is stopped too
            try:
                proc = subprocess.Popen([sys.executable, "-m", "router_image", "--config", str(state.config)],
                                        stdout=writer.stdin, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=stack.project_dir, start_new_session=True)
            finally:
                writer.stdin.close()  # the router's alone now: the writer ends when it (and its session) has
            _write(state.pid, str(proc.pid))
            print(f"Starting the {stack.name} stack: router on {base_url(stack)} (pid {proc.pid}), logs in {state.logs}", file=out)
            ready: bool | None = wait_ready(stack, config, proc, out, interrupted, timeout_s, writer)
        if interrupted.is_set():  # nothing half-started is left behind
            print("\nInterrupted", file=out)
            ready = None
        if not ready:
            print(f"Stopping what was started (the router's log: {state.logs / 'router.log'})", file=out)
            if _stop(proc.pid, _stop_seconds(config)):
                ready = None
            state.pid.unlink(missing_ok=True)
            return INTERRUPTED if ready is None else 1
    for line in summary(stack):
        print(line, file=out)
    return 0


def _start_logs(logs: Path) -> None:
    """Each run's logs begin empty, the last run's kept beside them as <name>.log.1: appended to run after
    run, they grew without end, and `local logs` printed every run the stack ever had."""
    logs.mkdir(parents=True, exist_ok=True)
    for f in logs.glob("*.log"):
        f.replace(f.with_name(f"{f.name}.1"))


def _apply(stack: Stack, state: State, pid: int, out, timeout_s: float) -> int:
    """`up` of a running stack applies its file as it now reads: the router reloads its config
    on change, so an added, changed or removed service needs no restart."""
    running = state.config.read_text()
    config = render(stack, state)
    if config.port != json.loads(running).get("port"):  # as any release wrote it: the router may be of another
        print(f"the {stack.name} stack's router listens on another port; `local down` first to move it to "
              f"{config.port}", file=out)
        return 1
    if config.dump() == running:
        print(f"the {stack.name} stack is already running (router pid {pid}) as its file says, its app and models unchanged; "
              "`local down` stops it", file=out)
    else:
        _write(state.config, config.dump())
        print(f"the {stack.name} stack is running (router pid {pid}); its router is applying the changed stack file or app", file=out)
        with _ctrl_c() as interrupted:
            ready = wait_ready(stack, config, None, out, interrupted, timeout_s)
        if interrupted.is_set():
            print(f"\nInterrupted; the router goes on applying the file (`local status` shows where it is, "
                  "`local down` stops the stack)", file=out)
            return INTERRUPTED
        if not ready:
            return 1
    for line in summary(stack):
        print(line, file=out)
    return 0


@contextlib.contextmanager
def _ctrl_c() -> Iterator[threading.Event]:
    """Ctrl-C as a flag that `wait_ready` checks, not a KeyboardInterrupt: one raised inside a finalizer the
    collector runs (a closed connection's) is printed and dropped, and the wait went on."""
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _write(path: Path, data: str | bytes, mode: int = 0o666) -> None:
    """Whole or not at all: the router re-reads its config and keys when they change (and reads no dot-file as
    a key). `mode` is before the umask: 0o600 for a secret, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)  # one a killed writer of this pid left, with whatever mode it had
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    tmp.replace(path)


CONFIG_READ_S = 2.0  # the router reads its config file once a second (router_image.app.CONFIG_POLL_S)


def wait_ready(stack: Stack, config: RouterConfig, proc: subprocess.Popen | None, out,
               interrupted: threading.Event | None = None, timeout_s: float = READY_TIMEOUT_S,
               log_writer: subprocess.Popen | None = None) -> bool:
    """Progress as Azure ML's wait_for_deployment(show_output=True): dots, then the outcome. Ready
    once the router runs this very config (its digest in /readyz: an edit is judged on its own replicas,
    not on those it replaces), each route with a ready replica; failed at once when a replica's init()
    failed or it exited at start (the reason and its log named, once `log_writer` has written its last words)."""
    written = time.monotonic()
    deadline = written + timeout_s
    digest = config.digest()
    print("Running", end="", flush=True, file=out)
    stop = interrupted or threading.Event()
    body: dict = {}
    while time.monotonic() < deadline:
        if stop.is_set():
            return False
        if proc is not None and proc.poll() is not None:
            if log_writer is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    log_writer.wait(LOG_WRITER_END_S)
            router_log = state_of(stack).logs / "router.log"
            print(f"\nFailed: the router exited with code {proc.returncode}; the end of {router_log}:", file=out)
            for line in _tail(router_log, LOG_TAIL_LINES):
                print(f"  {line}", file=out)
            return False
        code, body = _get(base_url(stack) + "/readyz")
        # The router keeps running the config it had. Until it has read the file again, its error may be the
        # replaced file's, which the edit being applied may have fixed.
        if body.get("config_error") and time.monotonic() - written > CONFIG_READ_S:
            print(f"\nFailed: the router did not apply the stack's config: {body['config_error']}", file=out)
            return False
        if "routes" in body and "config" not in body:  # a router of an older release: it tells no digest
            print("\nFailed: the running router is of an older release of this project, which does not say what it "
                  f"runs; restart it: python -m components local down {stack.path}, then local up", file=out)
            return False
        routes = body.get("routes", [])
        if body.get("config") == digest:
            problems = [f"{r['kind']} {r['name']}, version {v['name']}: {v['problem']}"
                        for r in routes for v in r["versions"] if v.get("problem")]
            if problems:
                print("\nFailed: " + "\n        ".join(problems), file=out)
                return False
            if code == 200 and not any(v.get("rolling") for r in routes for v in r["versions"]):
                print("\nSucceeded: every service has a ready replica", file=out)
                return True
        print(".", end="", flush=True, file=out)
        stop.wait(0.5)
    print(f"\nFailed: not ready after {timeout_s:g} s (`local up --timeout SECONDS` waits longer)", file=out)
    for line in _not_ready(config, body if body.get("config") == digest else {}):
        print(line, file=out)
    return False


LOG_TAIL_LINES = 10
TAIL_BYTES = 64 * 1024
LOG_WRITER_END_S = 2.0  # a router gone at its start: its log's writer ends as soon as it has written the rest


def _not_ready(config: RouterConfig, body: dict) -> list[str]:
    """Each version still without a ready replica, and the end of its replicas' logs: an init() that
    is still loading, or hangs, says so there, and the router's log (named next) does not."""
    if not body:
        return ["  the router did not say it runs the stack's config (its log says why)"]
    launches = {(r.name, v.name): (v.deployment, v.scorer) for r in config.routes for v in r.versions}
    lines = []
    for route in body.get("routes", []):
        for v in route["versions"]:
            if v["ready"]:
                continue
            lines.append(f"  {route['kind']} {route['name']}, version {v['name']}: {v['ready']}/{v['replicas']} ready")
            deployment, launch = launches[(route["name"], v["name"])]
            for f in _log_files(Path(launch.log_dir), deployment) if launch and launch.log_dir else []:
                lines.append(f"    the end of {f}:")
                lines += [f"      {line}" for line in _tail(f, LOG_TAIL_LINES)]
    return lines


def _log_files(logs: Path, deployment: str) -> list[Path]:
    """A version's replicas' logs (<deployment>-<n>.log), not those of a version whose name extends its own."""
    name = re.compile(rf"{re.escape(deployment)}-\d+\.log")
    return sorted(f for f in logs.glob("*.log") if name.fullmatch(f.name))


def _tail(path: Path, lines: int) -> list[str]:
    """The last lines of a log, read from its end: a scorer's log may hold days of output."""
    with open(path, "rb") as f:
        start = max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES)
        f.seek(start)
        found = f.read().decode(errors="replace").splitlines()
    return (found[1:] if start else found)[-lines:]  # not the line the read's start cut


def _cli(stack: Stack) -> str:
    """How the user calls this CLI again: the project's venv python, by a path relative to here."""
    exe = Path(sys.executable)
    try:
        exe = exe.relative_to(Path.cwd())
    except ValueError:
        pass
    return f"{exe} -m components local"


def summary(stack: Stack) -> list[str]:
    spec = stack.spec
    cli = _cli(stack)
    lines = []
    for kind, r in [("service", s) for s in spec.services] + [("endpoint", e) for e in spec.endpoints]:
        uri = f"{base_url(stack)}/api/v1/{kind}/{r.name}/score"
        lines.append(f"{kind} {r.name}: {uri}")
        auth = ""
        if r.token_auth_enabled:
            lines.append(f"  token: {cli} token {stack.path} {r.name}")
            auth = f' -H "Authorization: Bearer $({cli} token {stack.path} {r.name})"'
        elif r.auth_enabled:
            lines.append(f"  key:   {cli} keys {stack.path} {r.name}")
            auth = f' -H "Authorization: Bearer $({cli} keys {stack.path} {r.name} --primary)"'
        lines.append(f"  curl -s{auth} -H 'Content-Type: application/json' -d '{SAMPLE}' {uri}")
    return lines


SAMPLE = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})


def down(stack: Stack, out=sys.stdout) -> int:
    """Stop the router and with it every scorer: the router's session holds them all. It first
    finishes the requests in flight, as a router pod does, so this may take up to their timeouts."""
    state = state_of(stack)
    pid = _pid(state)
    if pid is None:
        state.pid.unlink(missing_ok=True)
        # A router answers on the stack's port: its file was edited (state_dir) after `up`, most likely.
        if "routes" in _get(base_url(stack) + "/readyz")[1]:
            print(f"the {stack.name} stack has no router recorded in {state.root}, but a router answers on port "
                  f"{stack.spec.local.router_port}: if it is this stack's, started before its state_dir changed, "
                  "run `local down` with the file as it was then; if its state folder was removed, end the process "
                  f"listening on port {stack.spec.local.router_port} (it stops its scorers)", file=out)
            return 1
        asked = f"that did not answer /readyz as a router within {READYZ_TIMEOUT_S:g} s"
        print(f"the {stack.name} stack is not running{_held(stack, 'down', asked)}", file=out)
        return 0
    with _exclusive(state, out, wait=False):
        wait_s = _running_stop_seconds(state, out)
        print(f"stopping the {stack.name} stack: its requests in flight finish first (at most {wait_s:g} s; "
              "Ctrl-C stops it at once)", file=out, flush=True)
        interrupted = _stop(pid, wait_s)
        state.pid.unlink(missing_ok=True)
    if interrupted:
        print(f"Interrupted: the {stack.name} stack was stopped at once, its requests in flight cut off", file=out)
        return INTERRUPTED
    print(f"stopped the {stack.name} stack", file=out)
    return 0


def _held(stack: Stack, command: str, program: str) -> str:
    """What "not running" adds when the stack's port is held all the same (`program`: what is known of its
    holder): a router too busy to answer in time looks like any other program holding the port."""
    port = stack.spec.local.router_port
    if not _port_taken(port):
        return ""
    return f"; port {port} is held by a program {program} (if it is this stack's router, busy, run `local {command}` again)"


def _stop_seconds(config: RouterConfig) -> float:
    """The router's drain, then its scorers' own stop."""
    graces = [v.scorer.stop_grace_seconds for r in config.routes for v in r.versions if v.scorer is not None]
    return config.drain_seconds + max(graces, default=0.0) + STOP_MARGIN_S


UNREAD_STOP_S = 120.0  # the default settings' drain and scorer stop take 76 s


def _running_stop_seconds(state: State, out) -> float:
    """How long the running router may take to stop, by the config it runs. One this release refuses (the
    project was updated while the stack ran) must not keep `down` from stopping it: it gets a bound."""
    try:
        return _stop_seconds(RouterConfig.load(state.config))
    except (ConfigError, OSError) as exc:
        print(f"{state.config} does not read as this release's router config ({exc}); the router gets "
              f"{UNREAD_STOP_S:g} s to stop", file=out)
        return UNREAD_STOP_S


def _stop(pid: int, wait_s: float) -> bool:
    """SIGTERM to the router, SIGKILL to its whole session (it leads it) if it outlasts wait_s or Ctrl-C
    cuts the wait short (True then): whoever presses it wants the stack gone now, requests in flight and
    all. A router that exited already (at its start, or just now) may leave scorers stopping: they are
    waited for too."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    with _ctrl_c() as interrupted:
        while time.monotonic() < deadline and _alive_group(pid) and not interrupted.is_set():
            with contextlib.suppress(ChildProcessError):  # `up` stopping the router it started: reaped, no zombie
                os.waitpid(pid, os.WNOHANG)               # is left to count as the group being alive
            interrupted.wait(0.1)
    with contextlib.suppress(ProcessLookupError):  # its last one may exit between the look and the kill
        os.killpg(pid, signal.SIGKILL)
    return interrupted.is_set()


def _alive_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def status(stack: Stack, out=sys.stdout) -> int:
    state = state_of(stack)
    pid = _pid(state)
    if pid is None:
        print(f"the {stack.name} stack is not running{_held(stack, 'status', 'this stack has no record of')}", file=out)
        ended = _ended_unstopped(state)
        for line in ended:
            print(line, file=out)
        return 1 if ended else 3  # LSB: dead with its pid file left, else not running
    code, body = _get(base_url(stack) + "/readyz")
    if not code:  # nothing is known of its replicas: "not ready" would say they are down
        print(f"router pid {pid} on {base_url(stack)}: no answer to /readyz within {READYZ_TIMEOUT_S:g} s (starting, "
              f"or too busy; its log: {state.logs / 'router.log'})", file=out)
        return 1
    problems = [v for route in body.get("routes", []) for v in route.get("versions", []) if v.get("problem")]
    print(f"router pid {pid} on {base_url(stack)}: {'ready' if code == 200 else 'not ready'}"
          f"{f', {len(problems)} version(s) failing' if problems else ''}", file=out)
    if body.get("config_error"):
        print(f"  the stack file's latest config is not applied: {body['config_error']}", file=out)
    for route in body.get("routes", []):
        versions = ", ".join(f"{v['name']} {v['ready']}/{v['replicas']} ready{' (rolling out)' if v.get('rolling') else ''}"
                             for v in route.get("versions", []))
        print(f"  {route['kind']} {route['name']}: {versions}", file=out)
        for v in route.get("versions", []):
            if v.get("problem"):
                print(f"    {v['name']}: {v['problem']}", file=out)
    return 0 if code == 200 and not problems and not body.get("config_error") else 1


def _ended_unstopped(state: State) -> list[str]:
    """What is known of a router that ended without `local down` (its pid file is left): killed, crashed, or
    the machine restarted; the end of its log says which. Nothing when `down` stopped it or none started."""
    try:
        pid = state.pid.read_text().strip()
    except FileNotFoundError:
        return []
    log = state.logs / "router.log"
    lines = [f"  its router (pid {pid}) ended without `local down` (killed, crashed, or the machine restarted); "
             "`local up` starts it again"]
    if log.exists():
        lines += [f"  the end of {log}:", *(f"    {line}" for line in _tail(log, LOG_TAIL_LINES))]
    return lines


def key_of(stack: Stack, name: str, which: str) -> str:
    kind = "service" if any(s.name == name for s in stack.spec.services) else "endpoint"
    path = state_of(stack).keys / f"{kind}.{name}.{which}"
    if not path.exists():
        raise StackError([f"{name}: no {which} key; is {name} a key-auth service of a stack that was started?"])
    return path.read_text()


def route_of(stack: Stack, name: str):
    for r in [*stack.spec.services, *stack.spec.endpoints]:
        if r.name == name:
            return r
    raise StackError([f"{name}: no service or endpoint of that name in {stack.path}"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m components local", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status", "score"):
        p = sub.add_parser(name)
        p.add_argument("stack", type=Path)
        if name == "up":
            p.add_argument("--timeout", type=_seconds, default=READY_TIMEOUT_S, metavar="SECONDS",
                           help=f"how long to wait for every service to be ready (default {READY_TIMEOUT_S}); "
                                "longer for a model whose init() takes longer")
    for name in ("logs", "keys", "token"):
        p = sub.add_parser(name)
        p.add_argument("stack", type=Path)
        p.add_argument("service", help="a service or endpoint" + (" (or `router`: the router's log)" if name == "logs" else ""))
        if name == "keys":
            p.add_argument("--primary", action="store_true", help="print the primary key alone")
        if name == "logs":
            p.add_argument("--tail", type=_lines, metavar="N", help="print the last N lines of each log alone")
    args = parser.parse_args(argv)
    try:
        stack = load_stack(args.stack)
        if args.command == "up":
            return up(stack, timeout_s=args.timeout)
        if args.command == "down":
            return down(stack)
        if args.command == "status":
            return status(stack)
        if args.command == "score":
            return score(stack)
        if args.command == "logs" and args.service == "router" and not any(
                r.name == "router" for r in [*stack.spec.services, *stack.spec.endpoints]):
            return _print_logs([state_of(stack).logs / "router.log"], "router", args.tail)
        route = route_of(stack, args.service)
        if args.command == "keys":
            if not route.auth_enabled:
                raise StackError([f"{route.name}: key auth is off for it"])
            if args.primary:
                print(key_of(stack, route.name, "primary"))
            else:
                print(json.dumps({"primaryKey": key_of(stack, route.name, "primary"),
                                  "secondaryKey": key_of(stack, route.name, "secondary")}, indent=2))
            return 0
        if args.command == "token":
            return token(stack, route)
        return logs(stack, route, args.tail)
    except StackError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # up and down take Ctrl-C themselves from a router's start to its stop
        print("\nInterrupted", file=sys.stderr)
        return INTERRUPTED


def _seconds(text: str) -> float:
    """A positive number of seconds, for --timeout: 0, a negative or NaN would end the wait before it began."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _lines(text: str) -> int:
    """A positive number of lines, for --tail."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of lines, not {text!r}")
    return int(text)


def token(stack: Stack, route) -> int:
    from router_image.tokens import mint_token

    if not route.token_auth_enabled:
        raise StackError([f"{route.name}: token auth is off for it (token_auth_enabled: false); "
                          + ("it takes keys: `local keys`" if route.auth_enabled else "it takes no credential")])
    tok, refresh_by = mint_token(_signing_key(state_of(stack), route.name), route.name)
    print(tok)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(refresh_by))
    print(f"refresh_by: {refresh_by:.0f} ({when}): ask for a new token before then", file=sys.stderr)
    return 0


def _signing_key(state: State, name: str) -> bytes:
    """The stack's token signing key, made by the first `up` of a stack with a token-auth service."""
    try:
        return state.token_key.read_bytes()
    except FileNotFoundError:
        raise StackError([f"{name}: no signing key yet; run `local up` first"]) from None


def logs(stack: Stack, route, tail: int | None = None) -> int:
    state = state_of(stack)
    versions = [v.version_name for v in route.versions] if hasattr(route, "versions") else [None]
    return _print_logs(sorted(f for v in versions for f in _log_files(state.logs, deployment_name(route.name, v))),
                       route.name, tail)


def _print_logs(files: list[Path], name: str, tail: int | None = None) -> int:
    """Each log whole, or its last `tail` lines (a log may hold days of output)."""
    files = [f for f in files if f.exists()]
    if not files:
        raise StackError([f"{name}: no logs yet; run `local up` first"])
    for f in files:
        print(f"==> {f.name} <==")
        if tail is None:
            sys.stdout.write(f.read_text(errors="replace"))
        else:
            sys.stdout.writelines(f"{line}\n" for line in _tail(f, tail))
    return 0


def score(stack: Stack) -> int:
    """One real request to each service, printed: the end of `make local`."""
    from router_image.tokens import mint_token

    state = state_of(stack)
    if _pid(state) is None:
        raise StackError([f"the {stack.name} stack is not running; `local up {stack.path}` starts it"])
    for kind, r in [("service", s) for s in stack.spec.services] + [("endpoint", e) for e in stack.spec.endpoints]:
        headers = {"Content-Type": "application/json"}
        if r.token_auth_enabled:
            headers["Authorization"] = f"Bearer {mint_token(_signing_key(state, r.name), r.name)[0]}"
        elif r.auth_enabled:
            headers["Authorization"] = f"Bearer {key_of(stack, r.name, 'primary')}"
        url = f"{base_url(stack)}/api/v1/{kind}/{r.name}/score"
        req = urllib.request.Request(url, data=SAMPLE.encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                print(f"POST /api/v1/{kind}/{r.name}/score {SAMPLE} -> {resp.status} {resp.read().decode()}")
        except urllib.error.HTTPError as exc:
            print(f"POST /api/v1/{kind}/{r.name}/score -> {exc.code} {exc.read().decode()}")
            return 1
        except OSError as exc:  # refused, reset, timed out: the router stopped meanwhile?
            print(f"POST /api/v1/{kind}/{r.name}/score -> no answer from {base_url(stack)}: {getattr(exc, 'reason', exc)}")
            return 1
    return 0
