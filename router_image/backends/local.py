"""The `local` backend: scorer replicas as `python -m scoring_image` processes on loopback.

What the local stack runs. Each replica gets a free port on 127.0.0.1 and is routed to only
once its `/ready` answers 200 (its init() ran), and only while it goes on answering (a kubelet's
readiness probe: a replica that hangs leaves the pool, not killed, and comes back when it answers
again). A replica that exits is replaced. Children die with the router (PR_SET_PDEATHSIG), so no
scorer outlives it even after a SIGKILL. Why a version has no ready replica (an init() that failed,
a replica that exits at start or hangs) is kept for /readyz, where `local up` reads it rather than
waiting out its timeout.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from router_image.autoscale import PodLoad
from router_image.backends import ReadyCallback
from router_image.config import RouterConfig, VersionConfig
from router_image.upstream import is_ready, readiness

log = logging.getLogger("router.local")
PR_SET_PDEATHSIG = 1
HEALTH_EVERY_S = 0.2
# A replica that exits before it ran HEALTHY_S (bad settings, a broken environment, a model that loads
# and then crashes) is restarted after a pause doubling from 1 s up to 30 s, not every HEALTH_EVERY_S;
# one that exits after it ran that long is replaced at once, and the pauses start over. Before
# EARLY_EXIT_S it is said to have failed at its start.
EARLY_EXIT_S = 10.0
HEALTHY_S = 60.0
MAX_BACKOFF_S = 30.0
# A ready replica is asked again every READY_PROBE_EVERY_S, all at once, each within readiness()'s 1 s: one that
# hangs (its event loop stuck, SIGSTOPped) failed every request it got until it timed out. After READY_FAILURES
# failures in a row it gets no traffic until it answers again, as a kubelet's readiness probe (periodSeconds,
# failureThreshold) takes a pod out of its Service; it is not killed: a readiness failure restarts no pod.
READY_PROBE_EVERY_S = 2.0
READY_FAILURES = 3
# A replica's log past LOG_MAX_BYTES is copied to <log>.1 (replacing what was there) and emptied, as
# logrotate's copytruncate and a kubelet's rotation bound a pod's: a stack left running under load wrote an
# access line per request without end. The replica writes on to the file it opened in append mode, so at its
# new end; what it writes between the copy and the emptying is lost.
LOG_MAX_BYTES = 50 * 1024 * 1024
LOG_CHECK_EVERY_S = 5.0


# Loaded here, not in the child: between fork and exec, a dlopen could wait forever on a lock another
# thread of the router (the executor's reaps) held at the fork.
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def _die_with_parent(router: int) -> None:
    """In the child, before exec. A router that died since the fork sends no death signal: the child,
    by then the orphan of another parent, exits rather than run as a scorer nothing will stop."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != router:
        os._exit(1)


def _listener() -> socket.socket:
    """A listening socket on a free loopback port, for a replica to inherit: a port picked here and
    bound by the replica later could be taken in between, and the replica would exit at start."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock


@dataclass(eq=False)
class LocalReplica:
    index: int
    port: int
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    ready: bool = False  # its init() ran: from then on it is probed every READY_PROBE_EVERY_S
    failures: int = 0  # readiness probes in a row it failed since it was ready
    log: Path | None = None
    grace_s: float = 10.0  # to finish its requests after SIGTERM (the scorer's stop grace)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def serving(self) -> bool:
        """Ready and still answering its readiness probe: a replica traffic goes to."""
        return self.ready and self.failures < READY_FAILURES

    def named(self, deployment: str) -> str:
        return f"{deployment}-{self.index}" + (f" (log: {self.log})" if self.log else "")


@dataclass
class _Version:
    config: VersionConfig
    desired: int
    replicas: list[LocalReplica] = field(default_factory=list)
    # Started with launch settings a reload replaced: they serve until as many new ones are ready.
    outdated: list[LocalReplica] = field(default_factory=list)
    early_exits: int = 0  # in a row, each before it ran HEALTHY_S
    spawn_after: float = 0.0
    problem: str | None = None  # why none is ready, as the last failed start showed it

    def free_index(self) -> int:
        """The lowest index no live replica has: a replica that keeps failing goes on in the same log."""
        taken = {r.index for r in self.replicas + self.outdated}
        return next(i for i in range(len(taken) + 1) if i not in taken)


class LocalBackend:
    is_leader = True  # the only router

    def __init__(self) -> None:
        self._versions: dict[str, _Version] = {}
        self._on_ready: ReadyCallback = lambda d, a: None
        self._tasks: list[asyncio.Task] = []

    async def start(self, on_ready: ReadyCallback) -> None:
        self._on_ready = on_ready
        self._tasks = [asyncio.create_task(_every(HEALTH_EVERY_S, self._check, "checking the replicas")),
                       asyncio.create_task(_every(READY_PROBE_EVERY_S, self._reprobe, "probing the ready replicas")),
                       asyncio.create_task(_every(LOG_CHECK_EVERY_S, self._bound_logs, "bounding the replicas' logs"))]

    async def apply(self, versions: list[VersionConfig]) -> None:
        wanted = {v.deployment: v for v in versions}
        for name, v in wanted.items():  # checked first: a refused config changes nothing
            _check_launch(name, v)
        for name in list(self._versions):
            if name not in wanted:
                gone = self._versions.pop(name)
                self._on_ready(name, [])
                for r in gone.replicas + gone.outdated:
                    self._terminate(r)
        for name, v in wanted.items():
            current = self._versions.setdefault(name, _Version(v, v.autoscale.min_replicas))
            if current.config.scorer != v.scorer:  # a new model, entry script or setting: replicas roll
                current.outdated += current.replicas
                current.replicas = []
                current.early_exits, current.spawn_after = 0, 0.0
                current.problem = None  # the replaced replicas' failure: the new ones have their own
            current.config = v
            if not v.autoscale.enabled:  # no autoscaler sizes it: a reload's num_replicas applies
                current.desired = v.num_replicas
            self._converge(current)

    async def scale(self, deployment: str, replicas: int) -> None:
        v = self._versions.get(deployment)
        if v is not None:
            v.desired = replicas
            self._converge(v)

    def replicas(self, deployment: str) -> int:
        v = self._versions.get(deployment)
        return v.desired if v else 0

    def synced(self) -> bool:
        return True  # it starts the replicas it reports: /readyz waits for them to be ready instead

    def problem(self, deployment: str) -> str | None:
        v = self._versions.get(deployment)
        return v.problem if v else None

    def rolling(self, deployment: str) -> bool:
        v = self._versions.get(deployment)
        return bool(v and v.outdated)

    def remote_demand(self, deployment: str) -> float:
        return 0.0

    def router_pods(self) -> list[PodLoad]:
        return []

    def _converge(self, v: _Version) -> None:
        if time.monotonic() >= v.spawn_after:
            while len(v.replicas) < v.desired:
                try:
                    v.replicas.append(self._spawn(v))
                except OSError as exc:  # its folder went, a log that cannot be written: as an early exit
                    self._backoff(v, f"replica {v.config.deployment} could not start ({exc})")
                    break
        if v.outdated and sum(r.serving for r in v.replicas) >= v.desired:
            for r in v.outdated:
                self._terminate(r)
            v.outdated = []
        while len(v.replicas) > v.desired:
            # Starting (or unanswering) ones first, then the newest; it leaves the pool now and gets
            # SIGTERM, which lets its in-flight requests finish.
            starting = [r for r in v.replicas if not r.serving]
            gone = starting[-1] if starting else v.replicas[-1]
            v.replicas.remove(gone)
            self._terminate(gone)
        self._publish(v)

    def _spawn(self, v: _Version) -> LocalReplica:
        launch = v.config.scorer
        assert launch is not None
        index = v.free_index()
        out: int | object = subprocess.DEVNULL
        path = Path(launch.log_dir) / f"{v.config.deployment}-{index}.log" if launch.log_dir else None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            out = open(path, "ab")
        try:
            with _listener() as sock:  # the replica holds it; the router's copy closes
                port = sock.getsockname()[1]
                process = subprocess.Popen(
                    [sys.executable, "-m", "scoring_image", "--fd", str(sock.fileno())],
                    env={**os.environ, **launch.env}, cwd=launch.cwd, stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, pass_fds=(sock.fileno(),), preexec_fn=functools.partial(_die_with_parent, os.getpid()),
                )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        log.info("started replica %s-%d on port %d (pid %d)", v.config.deployment, index, port, process.pid)
        return LocalReplica(index, port, process, log=path, grace_s=launch.stop_grace_seconds)

    def _terminate(self, r: LocalReplica) -> None:
        if r.process.poll() is None:
            r.process.terminate()
        asyncio.get_running_loop().run_in_executor(None, _reap, r.process, r.grace_s)

    def _publish(self, v: _Version) -> None:
        self._on_ready(v.config.deployment, [r.address for r in v.outdated + v.replicas if r.serving])

    async def probe(self, address: str) -> bool:
        host, _, port = address.rpartition(":")
        return await is_ready(host, int(port))

    async def _check(self) -> None:
        """One pass: exited replicas replaced, starting ones probed, ready ones published."""
        for v in list(self._versions.values()):
            changed = False
            for r in [r for r in v.outdated if r.process.poll() is not None]:
                v.outdated.remove(r)  # not replaced: new replicas are on their way
                changed = True
            for r in list(v.replicas):
                if r.process.poll() is not None:
                    v.replicas.remove(r)
                    changed = True
                    self._exited(v, r)
            starting = [r for r in v.replicas if not r.ready]
            for r, (ready, why) in zip(starting, await asyncio.gather(*(_readiness(r.address) for r in starting))):
                if r not in v.replicas:
                    continue
                if ready:
                    r.ready = changed = True
                    v.problem = None
                    log.info("replica %s-%d ready", v.config.deployment, r.index)
                elif why:
                    v.problem = f"replica {r.named(v.config.deployment)} is not ready: {why}"
            if changed or len(v.replicas) < v.desired:
                self._converge(v)

    async def _reprobe(self) -> None:
        """One round of the ready replicas' readiness probes: those that stopped answering leave the pool,
        those that answer again come back (the starting ones are _check's)."""
        asked = [(v, r) for v in self._versions.values() for r in v.outdated + v.replicas if r.ready]
        answers = await asyncio.gather(*(self.probe(r.address) for _, r in asked))
        changed: dict[str, _Version] = {}
        for (v, r), ok in zip(asked, answers):
            if self._versions.get(v.config.deployment) is not v or r not in v.outdated + v.replicas:
                continue  # stopped meanwhile
            serving = r.serving
            r.failures = 0 if ok else r.failures + 1
            if r.serving == serving:
                continue
            changed[v.config.deployment] = v
            name = r.named(v.config.deployment)
            if r.serving:
                log.info("replica %s answers its readiness probe again; back in the pool", name)
            else:
                log.warning("replica %s failed its readiness probe %d times in a row; out of the pool until it "
                            "answers (not restarted)", name, READY_FAILURES)
        for v in changed.values():
            unanswering = [r for r in v.outdated + v.replicas if r.ready and not r.serving]
            if any(r.serving for r in v.outdated + v.replicas):
                v.problem = None
            elif unanswering:  # why none is ready while they hang
                v.problem = (f"replica {unanswering[0].named(v.config.deployment)} does not answer its readiness "
                             f"probe ({READY_FAILURES} failed in a row); it gets no traffic until it does")
            self._converge(v)

    async def _bound_logs(self) -> None:
        logs = {r.log for v in self._versions.values() for r in v.replicas + v.outdated if r.log is not None}
        for path in logs:
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # removed by hand: the replica writes on to its unlinked file
                continue
            if size > LOG_MAX_BYTES:
                await asyncio.to_thread(_move_aside, path)

    def _backoff(self, v: _Version, what: str) -> None:
        v.early_exits += 1
        pause = min(2.0 ** (v.early_exits - 1), MAX_BACKOFF_S)
        v.spawn_after = time.monotonic() + pause
        log.warning("%s; trying again in %g s", what, pause)

    def _exited(self, v: _Version, r: LocalReplica) -> None:
        lived = time.monotonic() - r.started
        if lived < EARLY_EXIT_S:
            v.problem = f"replica {r.named(v.config.deployment)} {_ended(r.process.returncode)} {lived:.1f} s after its start"
            self._backoff(v, v.problem)
            return
        what = f"replica {r.named(v.config.deployment)} {_ended(r.process.returncode)} after {lived:.0f} s; replacing it"
        if not any(other.serving for other in v.replicas):  # why none is ready until its replacement is (a new model's load)
            v.problem = what
        if lived < HEALTHY_S:
            self._backoff(v, what)
            return
        v.early_exits = 0
        log.warning("%s", what)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        replicas = [r for v in self._versions.values() for r in v.replicas + v.outdated]
        for r in replicas:
            if r.process.poll() is None:
                r.process.terminate()
        await asyncio.gather(*(asyncio.to_thread(_reap, r.process, r.grace_s) for r in replicas))
        self._versions.clear()


def _check_launch(deployment: str, v: VersionConfig) -> None:
    """What would keep a replica from starting, found before a config changes anything."""
    launch = v.scorer
    if launch is None:
        raise ValueError(f"version {v.name} ({deployment}) has no scorer launch settings for the local backend")
    if launch.cwd is not None and not Path(launch.cwd).is_dir():
        raise ValueError(f"version {v.name} ({deployment}): scorer cwd {launch.cwd} is not a folder")
    if launch.log_dir is not None:
        try:
            Path(launch.log_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"version {v.name} ({deployment}): scorer log_dir {launch.log_dir}: {exc.strerror}") from None


async def _readiness(address: str) -> tuple[bool, str | None]:
    """Ready, else the reason the scorer gives when one of its workers' init() failed (None while
    it is merely starting, or does not answer yet)."""
    host, _, port = address.rpartition(":")
    ready, body = await readiness(host, int(port))
    if ready or not body:
        return ready, None
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return False, None
    return False, (message if ": failed" in message else None)


async def _every(period_s: float, check: Callable[[], Awaitable[None]], what: str) -> None:
    """`check` for ever, period_s apart: one pass that fails must not end it (replicas would never be
    replaced, or never leave the pool)."""
    while True:
        try:
            await check()
        except Exception:
            log.exception("%s failed; trying again", what)
        await asyncio.sleep(period_s)


def _ended(returncode: int) -> str:
    """How a replica ended, as its user reads it: a signal by name (SIGKILL: most often the kernel's
    out-of-memory killer), not the negative number Popen gives."""
    if returncode >= 0:
        return f"exited with {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}" + (" (out of memory?)" if -returncode == signal.SIGKILL else "")


def _move_aside(log: Path) -> None:
    shutil.copyfile(log, log.with_name(f"{log.name}.1"))
    os.truncate(log, 0)


def _reap(process: subprocess.Popen, grace_s: float) -> None:
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
