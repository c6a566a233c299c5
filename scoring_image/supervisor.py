"""The server's main process: binds the port, keeps `workers` worker processes alive, ships data.

It loads no entry script and serves no request, so nothing a script does can take it down.
A worker that exits after it was ready (recycled after a timeout, or crashed on a request) is
replaced at once; one that keeps dying before it was ready (killed for memory in init(), a
broken environment) is replaced after a growing pause instead of in a tight loop.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

import prometheus_client

from scoring_image import balance, logs, metrics, watchdog
from scoring_image.config import ScorerSettings
from scoring_image.readiness import Board

if TYPE_CHECKING:
    from scoring_image.collection.shipper import Shipper

log = logging.getLogger("scoring_image.supervisor")

_POLL_S = 0.1
_MAX_BACKOFF_S = 30.0
INIT_FAILED = 4  # a worker's exit code when it leaves to have init() tried again (worker.py)
_MAX_INIT_RETRY_S = 300.0


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    exits: int = 0  # of its workers, each replaced (metrics.publish_worker_exits)
    early_deaths: int = 0  # in a row, before it was ready
    init_failures: int = 0  # in a row: the next worker waits longer before trying init() again
    not_before: float = field(default=0.0)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def inherited(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise OSError(f"fd {fd} is not a listening socket")
    sock.set_inheritable(True)
    return sock


def serve(settings: ScorerSettings, listen_fd: int | None = None) -> None:
    logs.configure(settings.log_level, worker="supervisor", capture_print=False)
    try:
        sock = bind(settings.host, settings.port) if listen_fd is None else inherited(listen_fd)
    except OSError as exc:  # a port in use, an address not of this host: one line, not a traceback
        where = f"{settings.host}:{settings.port}" if listen_fd is None else f"fd {listen_fd}"
        log.error("cannot listen on %s: %s", where, exc.strerror or exc)
        sys.exit(2)
    state = Path(tempfile.mkdtemp(prefix="scorer-"))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    slots = [_Slot(i) for i in range(settings.worker_count)]
    shipper = exporter = None
    try:
        (state / "metrics").mkdir()
        (state / "ready").mkdir()
        balance.create(state / "connections", settings.worker_count)
        watchdog.create(state / "deadlines", settings.worker_count)
        watch = watchdog.Watch(state / "deadlines")
        env = {**os.environ, **settings.to_env(), "WORKER_COUNT": str(settings.worker_count)}
        board = Board(state / "ready", settings.worker_count)
        shipper = _start_shipper(settings, state / "metrics" / metrics.SHIPPER_STATS)
        if settings.metrics_port is not None:
            exporter = _serve_metrics(settings.host, settings.metrics_port, state / "metrics")
        host, port = sock.getsockname()[:2]
        log.info("listening on %s:%d with %d worker(s)", host, port, len(slots),
                 extra={"fields": {"entry_script": settings.entry_script_path}})
        for slot in slots:
            _spawn(slot, sock, state, env, defer=False, init_retry_s=settings.init_retry_seconds)
        exits = 0  # published as it changes (none yet reads as 0)
        while not stop.wait(_POLL_S):
            for slot in slots:
                _tend(slot, sock, state, env, board, watch, settings.init_retry_seconds)
            if (total := sum(slot.exits for slot in slots)) != exits:
                exits = total
                metrics.publish_worker_exits(state / "metrics", exits)
    finally:
        # First: with every copy of the socket closed (the workers close theirs as they stop), a new
        # connection is refused at once, and the router tries another replica, rather than waiting
        # in a queue nobody reads until the drain ends and it is reset.
        sock.close()
        _stop_all(slots, settings.stop_grace_seconds)
        if exporter is not None:  # scraped through the drain: what the last requests counted is seen
            exporter.shutdown()
            exporter.server_close()
        if shipper is not None:
            shipper.stop()
        shutil.rmtree(state, ignore_errors=True)
        log.info("stopped")


def _serve_metrics(host: str, port: int, folder: Path) -> WSGIServer:
    """/metrics on a port of its own (prometheus_client's server, on a thread of the supervisor)."""
    try:
        server, _ = prometheus_client.start_http_server(port, host, metrics.registry(folder))
    except OSError as exc:
        log.error("cannot serve metrics on %s:%d: %s", host, port, exc.strerror or exc)
        sys.exit(2)
    return server


def _spawn(slot: _Slot, sock: socket.socket, state: Path, env: dict[str, str], defer: bool, init_retry_s: float) -> None:
    retry_s = min(init_retry_s * 2.0 ** slot.init_failures, _MAX_INIT_RETRY_S)
    command = [sys.executable, "-m", "scoring_image.worker", "--fd", str(sock.fileno()), "--parent", str(os.getpid()),
               "--index", str(slot.index), "--state", str(state), "--init-retry-s", str(retry_s)]
    if defer:
        command.append("--defer-accept")
    slot.process = subprocess.Popen(command, env=env, pass_fds=(sock.fileno(),))
    slot.started = time.monotonic()
    log.info("worker %d started (pid %d)", slot.index, slot.process.pid)


def _tend(slot: _Slot, sock: socket.socket, state: Path, env: dict[str, str], board: Board,
          watch: watchdog.Watch, init_retry_s: float) -> None:
    process = slot.process
    if process is not None:
        code = process.poll()
        if code is None:
            if watch.overdue(slot.index, time.monotonic()):
                log.error("worker %d (pid %d) is still in run() %.0f s past scoring_timeout_ms, its loop not "
                          "running (run() holds the GIL?); killing it", slot.index, process.pid, watchdog.GRACE_S)
                watch.clear(slot.index)
                process.kill()
            return
        lived = time.monotonic() - slot.started
        slot.exits += 1
        metrics.retire(state / "metrics", process.pid)
        watch.clear(slot.index)  # a deadline it left (it died in run()) is not its replacement's
        last = board.state(slot.index)
        served = last is not None and last.state in ("ready", "recycling")
        # One that left to have init() tried again paused already, for its own growing wait.
        slot.early_deaths = 0 if served or code == INIT_FAILED else slot.early_deaths + 1
        pause = min(2.0 ** slot.early_deaths - 1, _MAX_BACKOFF_S)
        slot.not_before = time.monotonic() + pause
        slot.process = None
        if code == INIT_FAILED:  # it served its not-ready answers through the wait; the board keeps why
            slot.init_failures += 1
            log.warning("worker %d (pid %d) left to have init() tried again; replacing it", slot.index, process.pid)
        else:
            slot.init_failures = 0
            board.publish(slot.index, "replacing", "replacing an exited worker")
            log.warning("worker %d (pid %d) exited with %d after %.1f s%s; replacing it%s", slot.index, process.pid,
                        code, lived, "" if served else ", before it was ready", f" in {pause:g} s" if pause else "")
    if time.monotonic() >= slot.not_before:
        _spawn(slot, sock, state, env, defer=True, init_retry_s=init_retry_s)


def _stop_all(slots: list[_Slot], grace_s: float) -> None:
    running = [s.process for s in slots if s.process is not None and s.process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + grace_s
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _start_shipper(settings: ScorerSettings, stats: Path) -> Shipper | None:
    if not settings.data_collection_enabled:
        return None
    from scoring_image.collection.destinations import open_destination
    from scoring_image.collection.shipper import Shipper

    shipper = Shipper(settings, open_destination(settings), stats)
    shipper.start()
    return shipper
