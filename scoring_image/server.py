"""A small HTTP/1.1 server for one worker's ASGI app, on asyncio (uvloop) and httptools.

Why not uvicorn: measured on 2 cores with wrk beside it, uvicorn's own per-request work
(header checks by regex, two writes per response, its flow control and timers) was about as
much CPU as the whole scoring contract, and kept the scorer near 0.6x of a bare uvicorn app.
This server does only what a scorer behind a load balancer or the router needs: the response
head and a whole body leave in one write, headers pass as the bytes httptools parsed,
keep-alive with an idle sweep, chunked bodies both ways, pipelined requests answered in order,
back-pressure, `Expect: 100-continue`, and a client that goes away cancels its request (a
queued run() it no longer waits for is skipped).  It speaks ASGI 3 http, so Starlette's CORS
and OpenTelemetry's middleware wrap the app unchanged.

It serves on a socket it is given (the supervisor's, shared by every worker) and accepts one
connection at a time instead of libuv's accept-all loop: given the workers' connection counts
(`balance.Counts`), a worker that holds more than another leaves a new connection to the
others for up to ACCEPT_DEFERRALS pauses of ACCEPT_PAUSE_S, then takes it anyway (the other
may be stuck).  `stop()` stops accepting, lets requests in flight finish within a grace
period and closes the rest.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import httptools

from scoring_image.balance import Counts

log = logging.getLogger("scoring_image.server")
App = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
IDLE_SWEEP_S = 5.0
ACCEPT_PAUSE_S = 0.001
ACCEPT_DEFERRALS = 3
HIGH_WATER = 1 << 20  # stop reading a client's body with this much not yet taken by the app
STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT = {"type": "http.disconnect"}
_ASGI = {"version": "3.0", "spec_version": "2.3"}


class _Exchange:
    """One request and its response on a connection: the ASGI receive and send."""

    __slots__ = ("conn", "scope", "chunks", "complete", "waiter", "started", "done", "chunked", "keep_alive",
                 "expect_continue", "head", "task", "buffered", "is_head")

    def __init__(self, conn: _Connection, scope: dict, keep_alive: bool, expect_continue: bool):
        self.conn = conn
        self.scope = scope
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False  # the whole request body is in
        self.waiter: asyncio.Future[None] | None = None
        self.started = False
        self.done = False  # the whole response is out
        self.chunked = False
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.is_head = scope["method"] == "HEAD"
        self.head: bytes | None = None
        self.task: asyncio.Task | None = None

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def receive(self) -> dict:
        while not self.chunks and not self.complete:
            if self.conn.lost:
                return _DISCONNECT
            if self.expect_continue:
                self.expect_continue = False
                self.conn.write(_CONTINUE)
            self.waiter = self.conn.loop.create_future()
            await self.waiter
            self.waiter = None
        if self.conn.lost and not self.chunks:
            return _DISCONNECT
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        if self.buffered > HIGH_WATER:
            self.conn.resume_reading()
        self.buffered = 0
        return {"type": "http.request", "body": body, "more_body": not self.complete}

    async def send(self, message: dict) -> None:
        conn = self.conn
        if conn.lost or self.done:
            return
        if message["type"] == "http.response.start":
            status = message["status"]
            lines = [STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status]
            length = False
            for name, value in message.get("headers", ()):
                if name == b"content-length":
                    length = True
                elif name == b"connection" and value.lower() == b"close":
                    self.keep_alive = False
                lines += (name, b": ", value, b"\r\n")
            if not length and status >= 200 and status not in (204, 304) and not self.is_head:
                self.chunked = True  # decided for good at the first body message, if it is the last
            if not self.keep_alive:
                lines.append(b"connection: close\r\n")
            self.head = b"".join(lines)
            self.started = True
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        out = b""
        if self.head is not None:
            head, self.head = self.head, None
            if self.chunked and not more:  # the whole body is here: a length instead of chunks
                self.chunked = False
                head += b"content-length: %d\r\n" % len(body)
            elif self.chunked:
                head += b"transfer-encoding: chunked\r\n"
            out = head + b"\r\n"
        if self.is_head:
            body = b""
        if self.chunked:
            if body:
                out += b"%x\r\n%b\r\n" % (len(body), body)
            if not more:
                out += b"0\r\n\r\n"
        else:
            out += body
        if out:
            conn.write(out)
        if not more:
            self.done = True
        elif conn.paused_writing:
            await conn.drain()


class _Connection(asyncio.Protocol):
    def __init__(self, server: Server):
        self.server = server
        self.app = server.app
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.lost = False
        self.paused_writing = False
        self._drain: asyncio.Future[None] | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._expect = False
        self._current: _Exchange | None = None  # being parsed
        self._queue: collections.deque[_Exchange] = collections.deque()  # answered in order
        self.idle_since: float | None = None  # None while a request is being answered
        self._client: tuple[str, int] | None = None
        self._local: tuple[str, int] | None = None

    # ------------------------------------------------------------ transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self._client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self._local = (sock[0], sock[1]) if isinstance(sock, tuple) else None
        self.server.connections.add(self)
        self.idle_since = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        if self.server.counts is not None:
            self.server.counts.add(-1)
        for exchange in self._queue:
            exchange.wake()
            if exchange.task is not None and not exchange.task.done():
                exchange.task.cancel()  # nobody is waiting for the answer
        self._queue.clear()
        self.resume_writing()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(b"upgrades are not supported")
        except httptools.HttpParserError:
            self._reject(b"malformed request")

    def _reject(self, message: bytes) -> None:
        body = b'{"error": {"code": "BadRequest", "message": "%s"}}' % message
        self.write(STATUS_LINES[400] + b"content-type: application/json\r\ncontent-length: %d\r\n"
                   b"connection: close\r\n\r\n%s" % (len(body), body))
        self.close()

    def write(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    async def drain(self) -> None:
        if self.paused_writing and not self.lost:
            self._drain = self.loop.create_future()
            await self._drain

    def resume_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._expect = False
        self.idle_since = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        path, _, query = self._url.partition(b"?")
        method = parser.get_method().decode("ascii")
        scope: dict[str, Any] = {
            "type": "http", "asgi": _ASGI, "http_version": parser.get_http_version(), "method": method,
            "scheme": "http", "path": _unquote(path), "raw_path": path, "query_string": query, "root_path": "",
            "headers": self._headers, "client": self._client, "server": self._local,
        }
        exchange = _Exchange(self, scope, parser.should_keep_alive(), self._expect)
        self._current = exchange
        self._queue.append(exchange)
        if len(self._queue) == 1:
            self._start(exchange)

    def on_body(self, body: bytes) -> None:
        exchange = self._current
        if exchange is not None and not exchange.done:  # a body nobody will read is dropped
            exchange.chunks.append(body)
            exchange.buffered += len(body)
            if exchange.buffered > HIGH_WATER and self.transport is not None:
                self.transport.pause_reading()
            exchange.wake()

    def on_message_complete(self) -> None:
        exchange = self._current
        self._current = None
        if exchange is not None:
            exchange.complete = True
            exchange.expect_continue = False
            exchange.wake()
            if exchange.done and self._queue and self._queue[0] is exchange:
                self._next()  # answered before its body was all in: the body's end frees the connection

    # ------------------------------------------------------------ running the app

    def _start(self, exchange: _Exchange) -> None:
        exchange.task = self.loop.create_task(self._run(exchange))

    async def _run(self, exchange: _Exchange) -> None:
        try:
            await self.app(exchange.scope, exchange.receive, exchange.send)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("error answering %s %s", exchange.scope["method"], exchange.scope["path"])
            if not exchange.started:
                body = b'{"error": {"code": "InternalError", "message": "server error"}}'
                self.write(STATUS_LINES[500] + b"content-type: application/json\r\ncontent-length: %d\r\n"
                           b"connection: close\r\n\r\n%s" % (len(body), body))
            self.close()
            return
        if self.lost:
            return
        if not exchange.done:  # the app returned mid-response: the client cannot tell where it ends
            log.error("response to %s %s left unfinished; connection closed", exchange.scope["method"],
                      exchange.scope["path"])
            self.close()
        elif not exchange.keep_alive or self.server.stopping:
            self.close()
        elif exchange.complete:
            self._next()
        else:
            self.resume_reading()
        # Not complete: answered before the request body was all in (a 413): the rest of it is read
        # and dropped, and on_message_complete moves on; closing now would reset the connection
        # under a client still sending, which then never sees the answer.

    def _next(self) -> None:
        self._queue.popleft()
        if self._queue:
            self._start(self._queue[0])
        elif self.server.stopping:
            self.close()
        else:
            self.idle_since = self.loop.time()


def _unquote(path: bytes) -> str:
    if b"%" not in path:
        return path.decode("latin-1")
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(path).decode("latin-1")


class Server:
    """Serves `app` on `sock` until `stop()`; then drains for at most `grace_s` and returns."""

    def __init__(self, app: App, keep_alive_s: float, grace_s: float, counts: Counts | None = None):
        self.app = app
        self.keep_alive_s = keep_alive_s
        self.grace_s = grace_s
        self.counts = counts
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._stop = asyncio.Event()
        self._deferred = 0

    def stop(self) -> None:
        self.stopping = True
        self._stop.set()

    async def serve(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._listen(sock)
        sweeper = self.loop.create_task(self._close_idle())
        try:
            await self._stop.wait()
        finally:
            sweeper.cancel()
            self.stopping = True
            self.loop.remove_reader(sock.fileno())
            sock.close()
            await self._drain()

    def _listen(self, sock: socket.socket) -> None:
        if not self.stopping:
            self.loop.add_reader(sock.fileno(), self._accept, sock)

    def _pause(self, sock: socket.socket) -> None:
        self.loop.remove_reader(sock.fileno())
        self.loop.call_later(ACCEPT_PAUSE_S, self._listen, sock)

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
        task = self.loop.create_task(self.loop.connect_accepted_socket(lambda: _Connection(self), client))
        task.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:  # the client was gone already
            if self.counts is not None:
                self.counts.add(-1)

    async def _close_idle(self) -> None:
        """Keep-alive connections idle for keep_alive_s are closed (one sweep, not a timer per request)."""
        while True:
            await asyncio.sleep(min(IDLE_SWEEP_S, self.keep_alive_s))
            cutoff = self.loop.time() - self.keep_alive_s
            for conn in list(self.connections):
                if conn.idle_since is not None and conn.idle_since < cutoff:
                    conn.close()

    async def _drain(self) -> None:
        """Idle keep-alive connections close now; requests in flight get grace_s to finish."""
        deadline = self.loop.time() + self.grace_s
        while self.connections and self.loop.time() < deadline:
            for conn in list(self.connections):
                if not conn.busy:
                    conn.close()
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
