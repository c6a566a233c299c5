"""A worker's HTTP server: the shared one (`http_server`), accepting from the supervisor's socket.

Every worker listens on the one socket the supervisor shares. libuv's accept-all loop let one
worker take most of a burst of new connections (wrk's 16 split 14/2 or 16/0 at times: half the
throughput), so a worker accepts one connection at a time, and given the workers' connection
counts (`balance.Counts`), one that holds more than another leaves a new connection to the
others for up to ACCEPT_DEFERRALS pauses of ACCEPT_PAUSE_S, then takes it anyway (the other
may be stuck).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import http_server
from scoring_image.balance import Counts
from scoring_image.metrics import Recorder

log = logging.getLogger("scoring_image.server")
ACCEPT_PAUSE_S = 0.001
ACCEPT_DEFERRALS = 3


class Server(http_server.Server):
    """Serves `app` on a shared socket until `stop()`; then drains for at most `grace_s`. The answers the server gives
    itself (a request that does not parse, or did not arrive; the connection cap) are logged as `http_server` logs
    them, and counted in `recorder` (no request reached the app, which counts those it answers)."""

    def __init__(self, app: http_server.App, keep_alive_s: float, grace_s: float, recorder: Recorder,
                 counts: Counts | None = None):
        super().__init__(app, keep_alive_s=keep_alive_s, grace_s=grace_s, errors=self._error)
        self.recorder = recorder
        self.counts = counts
        self._deferred = 0

    def _error(self, status: int, code: str, message: str, request_id: str) -> None:
        http_server.log_error(status, code, message, request_id)
        self.recorder.count_server_error(status, code)

    def closed(self, conn: asyncio.Protocol) -> None:
        super().closed(conn)
        if self.counts is not None:
            self.counts.add(-1)

    async def serve_socket(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self._listen(sock)

        def stop_listening() -> None:
            loop.remove_reader(sock.fileno())
            sock.close()

        await self.serve(stop_listening)

    def _listen(self, sock: socket.socket) -> None:
        if not self.stopping:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)

    def _pause(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        loop.call_later(ACCEPT_PAUSE_S, self._listen, sock)

    def _accept(self, sock: socket.socket) -> None:
        counts = self.counts
        if counts is not None and self._deferred < ACCEPT_DEFERRALS and counts.busier_than_another():
            self._deferred += 1
            self._pause(sock)
            return
        self._deferred = 0
        try:
            client, _ = sock.accept()
        except (BlockingIOError, InterruptedError):  # another worker took it
            return
        except OSError as exc:  # out of file descriptors and the like: retried after a pause
            log.warning("accept failed: %s", exc)
            self._pause(sock)
            return
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if counts is not None:
            counts.add(1)  # now, not at connection_made: the next readiness event may come first
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.connect_accepted_socket(self.connection, client))
        task.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:  # the client was gone already
            if self.counts is not None:
                self.counts.add(-1)
