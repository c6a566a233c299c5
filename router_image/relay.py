"""The hot path: a whole-body score request relayed to a replica from callbacks.

The server hands over a `Request` whose body is all in (http_server); the relay takes a slot,
writes head and body to a pooled replica connection, and is that connection's sink
(upstream.py): the answer's head and body go to the client in one write from the replica
connection's own parser callback. No task, no coroutine, no ASGI message and no timer per
request: on 2 cores these were about half of the router's Python time per request. Only what
has to wait runs in a task: a request queued for a slot, a connection being opened (and the
retry on another replica when one refuses, see proxy.connect).

The rules are proxy.py's (head, slots, retries, errors); what differs is how the scoring
timeout is kept: one sweep every SWEEP_S over the deadlines (`Deadlines`), not a timer each.
A large answer (over STREAM_OVER) is streamed on as it arrives, reading from the replica paused
while the client does not keep up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from router_image.proxy import acquire, broke_error, connect, timeout_error
from router_image.pool import Replica
from router_image.responses import HttpError, error_answer
from router_image.routes import RouteState, VersionState
from http_server import Request
from router_image.upstream import Connection, UpstreamError

log = logging.getLogger("router.relay")
SWEEP_S = 0.05  # a 504 comes at most this late
STREAM_OVER = 256 * 1024  # an answer up to this goes out whole; a larger one streams
CLIENT_GONE = 499  # the status recorded when the client leaves before its answer (nginx's)
UPSTREAM_PATH = b"/score"


class Rerouter(Protocol):
    def repick(self, route: RouteState, pinned: str | None) -> VersionState:
        """The version for a request whose own a reload removed while it waited (app.Router)."""


class Relay:
    """One request, from its slot to its answer; the replica connection's sink (upstream.Sink)."""

    __slots__ = ("request", "version", "deadlines", "forward", "pinned", "rerouter", "deadline", "started", "replica",
                 "connection", "task", "status", "lines", "length", "chunks", "size", "streaming", "finished")

    def __init__(self, request: Request, version: VersionState, deadlines: Deadlines, forward: bytes,
                 pinned: str | None, rerouter: Rerouter):
        self.request = request
        self.version = version
        self.deadlines = deadlines
        self.forward = forward  # the request's header lines for the replica (proxy.request_lines)
        self.pinned = pinned
        self.rerouter = rerouter
        self.deadline = 0.0  # once it holds a slot: when the scoring timeout passes (time.perf_counter)
        self.started = time.perf_counter()
        self.replica: Replica | None = None  # whose slot this relay holds (while no task does)
        self.connection: Connection | None = None  # with the request on it
        self.task: asyncio.Task | None = None  # waiting for a slot or a connection
        self.status = 0
        self.lines = b""  # the answer's header lines, the version's included
        self.length = False  # whether they hold a Content-Length
        self.chunks: list[bytes] = []
        self.size = 0
        self.streaming = False
        self.finished = False
        request.handler = self

    def start(self) -> None:
        replica = self.version.pool.take()
        if replica is not None:
            self.deadlines.add(self, self.started)  # the slot came at once: no second clock read
            connection = replica.connections.idle()
            if connection is not None:
                self._send(replica, connection)
                return
        # The relay holds a slot taken here until the task runs: one cancelled before its first step never
        # enters _prepare, and _finish frees the slot instead.
        self.replica = replica
        self.task = asyncio.get_running_loop().create_task(self._prepare())

    async def _prepare(self) -> None:
        """The part that may wait: in the version's queue, for a new connection."""
        version = self.version
        replica, self.replica = self.replica, None  # from here on acquire and connect own the slot
        try:
            if replica is None:
                version, replica = await acquire(version, self._reroute)
                self.version = version
                self.deadlines.add(self, time.perf_counter())  # the scoring timeout runs from the slot on
            replica, connection = await connect(version, replica)
        except HttpError as exc:
            self.task = None
            self._fail(exc)
            return
        except asyncio.CancelledError:
            return  # the client left or the deadline passed; that answered for the request
        self.task = None
        self._send(replica, connection)

    def _reroute(self) -> VersionState:
        return self.rerouter.repick(self.request.claim, self.pinned)

    def _send(self, replica: Replica, connection: Connection) -> None:
        request = self.request
        query = request.query
        self.replica = replica
        self.connection = connection
        connection.send(b"POST %s%s HTTP/1.1\r\nhost: %s\r\n%scontent-length: %d\r\n\r\n"
                        % (UPSTREAM_PATH, b"?" + query if query else b"", replica.host, self.forward, len(request.body)),
                        request.body, self)

    # ------------------------------------------------------------ the replica's answer (upstream.Sink)

    def head(self, status: int, lines: bytes, length: bool) -> None:
        self.status = status
        self.lines = lines + self.version.response_line
        self.length = length

    def body(self, data: bytes) -> None:
        if not self.streaming:
            self.chunks.append(data)
            self.size += len(data)
            if self.size <= STREAM_OVER:
                return
            self.streaming = True
            self.request.start_lines(self.status, self.lines, self.length)
            data = b"".join(self.chunks)
            self.chunks = []
        self.request.write(data, True)
        if self.request.paused_writing:
            self.connection.pause_reading()  # type: ignore[union-attr]  # until writable()

    def end(self, keep_alive: bool) -> None:
        self.connection.done(keep_alive)  # type: ignore[union-attr]
        self.connection = None
        if self.streaming:
            self.request.write(b"", False)
        else:
            chunks = self.chunks
            self.request.start_lines(self.status, self.lines, self.length)
            self.request.write(chunks[0] if len(chunks) == 1 else b"".join(chunks), False)
        self._finish(self.status)

    def broke(self, error: UpstreamError) -> None:
        self.connection = None
        if self.streaming:
            log.warning("%s: %s while streaming the answer", self.version.config.deployment, error)
            self._cut(502)
        else:
            self._fail(broke_error(self.version, error))

    # ------------------------------------------------------------ the client's side (http_server.Request.handler)

    def aborted(self) -> None:
        """The client left: the answer is not wanted, so its connection is closed and the slot freed."""
        if not self.finished:
            self._drop()
            self._finish(CLIENT_GONE)

    def writable(self) -> None:
        if self.streaming and self.connection is not None:
            self.connection.resume_reading()

    def expire(self) -> None:
        """The scoring timeout passed (the sweep found it): 504, or the connection cut mid-answer."""
        self._drop()
        if self.streaming:
            log.warning("%s: scoring timeout while streaming the answer; connection closed",
                        self.version.config.deployment)
            self._cut(504)
        else:
            self._fail(timeout_error(self.version))

    # ------------------------------------------------------------ endings

    def _drop(self) -> None:
        """Stop waiting: the task (which frees what it holds) or the exchange (its connection closed)."""
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _fail(self, error: HttpError) -> None:
        config = self.version.config
        headers, body = error_answer(error, self.request.headers, f"{config.deployment} ({config.name})",
                                     self.request.claim.labels)
        self.request.respond(error.status, headers, body)
        self._finish(error.status)

    def _cut(self, status: int) -> None:
        self.request.close()  # the client cannot tell where an answer broken off mid-body ends
        self._finish(status)

    def _finish(self, status: int) -> None:
        self.finished = True
        self.request.handler = None  # no cycle left for the garbage collector
        self.deadlines.remove(self)
        if self.replica is not None:
            self.version.pool.release(self.replica)
            self.replica = None
        self.version.stats.observe(status, time.perf_counter() - self.started)


class Deadlines:
    """The relays' scoring timeouts, kept by one sweep every SWEEP_S over the relays waiting for an
    answer instead of a timer per request (as scoring_image/runner.py does)."""

    def __init__(self) -> None:
        self._waiting: set[Relay] = set()

    def add(self, relay: Relay, now: float) -> None:
        """From `now` (time.perf_counter, the clock of Relay.started) on."""
        relay.deadline = now + relay.version.timeout_s
        self._waiting.add(relay)

    def remove(self, relay: Relay) -> None:
        self._waiting.discard(relay)

    def sweep(self) -> None:
        now = time.perf_counter()
        for relay in [r for r in self._waiting if r.deadline <= now]:
            relay.expire()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            self.sweep()
