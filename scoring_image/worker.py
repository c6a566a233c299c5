"""One worker process: init() once, then serve on the listening socket the supervisor shares.

Started by the supervisor as `python -m scoring_image.worker --fd N --parent PID --index I --state DIR`.
All workers accept from the same socket, so a connection waits in one kernel queue for
whichever worker is free, and a recycled worker takes no queued connection down with it.

The first generation serves at once, so liveness answers while init() runs and /ready says
why it is not ready yet.  A replacement (after a timeout or a crash) starts accepting only once
its init() succeeded while another worker serves, so that it never takes traffic it cannot score
(one whose init() failed leaves for its retry having accepted nothing); with none serving it answers
at once, as the first generation does (else the liveness probe, unanswered through a long init(),
would restart the container).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import faulthandler
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path

import uvloop

from scoring_image import balance, logs, metrics, telemetry, watchdog
from scoring_image.app import ScoringApp
from scoring_image.collection import modeldatacollector
from scoring_image.collection.spool import Spool
from scoring_image.config import ScorerSettings
from scoring_image.readiness import Board
from scoring_image.runner import Abandoned, Runner
from scoring_image.server import Server
from scoring_image.supervisor import INIT_FAILED

log = logging.getLogger("scoring_image.worker")

_PR_SET_PDEATHSIG = 1
# Before the drain's end: the requests still queued behind a run() get a 503 to retry elsewhere,
# written in this time, rather than their connection closed with no answer.
_ABANDON_BEFORE_S = 1.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scoring_image.worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True, help="the supervisor's pid")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True,
                        help="the supervisor's folder: ready/, metrics/, connections, deadlines")
    parser.add_argument("--defer-accept", action="store_true")
    parser.add_argument("--init-retry-s", type=float, default=10.0,
                        help="after a failed init(), leave (exit INIT_FAILED) this much later to be replaced")
    args = parser.parse_args(argv)

    _die_with_parent(args.parent)
    faulthandler.enable()  # a crash in native code (a segfault in a model's library) leaves its traceback
    settings = ScorerSettings.from_env()
    logs.configure(settings.log_level, worker=str(args.index), capture_print=True)
    sock = socket.socket(fileno=args.fd)
    code = uvloop.run(_serve(settings, sock, args.index, args.state, args.defer_accept, args.init_retry_s))
    # A recycled worker may leave run() stuck on its thread: leave without waiting for it, which skips
    # the exit handlers; what they would do, done here.
    telemetry.shutdown()
    logging.shutdown()
    os._exit(code)


async def _serve(settings: ScorerSettings, sock: socket.socket, index: int, state: Path, defer: bool,
                 init_retry_s: float) -> int:
    """Serve until stopped; the exit code: 0, or INIT_FAILED when it leaves to have init() tried again."""
    loop = asyncio.get_running_loop()
    code = 0
    board = Board(state / "ready", settings.worker_count)
    runner = Runner(loop, settings.scoring_timeout_ms / 1000, watchdog.Deadline(state / "deadlines", index))
    spool = Spool(Path(settings.data_collection_spool_dir)) if settings.data_collection_enabled else None
    server: Server | None = None

    def recycle() -> None:
        board.publish(index, "recycling", "run() overran scoring_timeout_ms")
        runner.abandon()
        if server is not None:
            server.stop()

    recorder = metrics.Recorder(state / "metrics")
    access_log = logs.AccessLog(loop, str(index)) if settings.access_log else None
    app = ScoringApp(settings, runner, board, recorder, spool, recycle, access_log)
    if spool is not None:  # before the script, which may make its collectors as it is imported
        modeldatacollector.enable(settings, app.spool_collected)
    # A replacement (it defers accepting, see above) does not hold the pod back while another worker serves;
    # one trying a failed init() again does, as the first generation does.
    previous = board.state(index)
    board.publish(index, "replacing" if defer and (previous is None or previous.state != "failed") else "starting")
    leaving = asyncio.Event()

    def retry_init() -> None:
        """A failed init() is tried again by a new worker (a new process: what init() left half-done goes)."""
        nonlocal code
        code = INIT_FAILED
        leaving.set()
        if server is not None:
            server.stop()

    init = runner.submit(app.initialize, bounded=False)
    init.add_done_callback(lambda f: _initialized(f, app, board, index, lambda: loop.call_later(init_retry_s, retry_init)))
    if defer and any(s.state == "ready" for s in board.read() if s.worker != index):
        await asyncio.wait([init])
        if init.exception() is not None:  # another serves: it accepts nothing (each answer a 503) and leaves at its retry
            await leaving.wait()
            return code

    asgi = telemetry.instrument(_with_cors(app, settings), settings)
    grace_s = settings.scoring_timeout_ms / 1000
    server = Server(asgi, settings.keep_alive_seconds, grace_s, recorder, counts=balance.Counts(state / "connections", index))

    def stop() -> None:
        server.stop()
        loop.call_later(max(grace_s - _ABANDON_BEFORE_S, 0.0), runner.abandon)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    _every(loop, metrics.PUBLISH_S, recorder.publish)
    if spool is not None:
        _every(loop, settings.data_collection_batch_seconds, partial(_seal, runner, spool))
    try:
        await server.serve_socket(sock)
    finally:
        recorder.publish()
        if access_log is not None:
            access_log.flush()
        if spool is not None:
            spool.seal()
    return code


def _initialized(future: asyncio.Future[None], app: ScoringApp, board: Board, index: int,
                 retry: Callable[[], object]) -> None:
    exc = future.exception()
    if exc is None:
        # What init() loaded (the model, its libraries) lives as long as the process: left out of
        # every later collection, the periodic full ones stop walking it (milliseconds each).
        gc.freeze()
        board.publish(index, "ready")
        log.info("init() succeeded; worker %d ready", index)
        return
    reason = f"init() failed: {type(exc).__name__}: {exc}"
    app.not_ready = reason
    board.publish(index, "failed", reason)
    log.error("%s; worker %d stays up, not ready, until a new worker tries init() again", reason, index, exc_info=exc)
    retry()


def _with_cors(app: ScoringApp, settings: ScorerSettings) -> object:
    if not settings.cors_origins:
        return app
    from starlette.middleware.cors import CORSMiddleware

    return CORSMiddleware(
        app,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["x-request-id", "x-ms-request-id", "x-ms-client-request-id", "x-ms-run-fn-exec-ms",
                        "x-ms-run-function-failed"],
    )


def _seal(runner: Runner, spool: Spool) -> None:
    """Seal the spool's segment on the run thread, where records are written: the loop never waits for one being
    written (a 50 MB record takes ~180 ms).  A failure is logged; the next seal tries again."""
    def told(sealed: asyncio.Future[None]) -> None:
        failure = None if sealed.cancelled() else sealed.exception()
        if failure is not None and not isinstance(failure, Abandoned):  # a stopping worker seals as it leaves
            log.error("sealing the spool segment failed; again in the next period", exc_info=failure)

    runner.submit(spool.seal, bounded=False).add_done_callback(told)


def _every(loop: asyncio.AbstractEventLoop, seconds: float, action: Callable[[], None]) -> None:
    """`action` every `seconds`, also after one that failed (a rename refused once must not stop sealing)."""
    def tick() -> None:
        try:
            action()
        except Exception:
            log.exception("%s failed; again in %g s", getattr(action, "__qualname__", action), seconds)
        loop.call_later(seconds, tick)

    loop.call_later(seconds, tick)


def _die_with_parent(parent: int) -> None:
    """A supervisor killed with -9 cannot stop its workers; the kernel does it (SIGTERM). The parent is
    named, not taken to be any but pid 1: the supervisor is pid 1 where tini is bypassed (a command override)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


if __name__ == "__main__":
    main()
