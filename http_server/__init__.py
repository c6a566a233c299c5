"""A small HTTP/1.1 server for ASGI apps on asyncio (uvloop) and httptools: the router's and
every scorer worker's.

Why not uvicorn: measured on 2 cores with wrk beside them, uvicorn's per-request work (header
validation by regex, URL parsing, one write per ASGI message, its flow control and timers) was
about half of the router's CPU and as much as the whole scoring contract in a scorer. This
server does only what a service behind a load balancer or the router needs: the response head
and a whole body leave in one write, headers pass as the bytes httptools parsed, keep-alive
with one sweep that also closes clients stalled or trickling mid-request, a cap on connections held, chunked bodies
both ways, pipelined requests answered in order (a malformed one too, after those before it; PIPELINED_MAX at most),
back-pressure, `Expect: 100-continue`, and a client that goes away cancels its request (freeing
a replica slot, skipping a queued run()); one that only shuts down its sending side looks the same
(a FIN cannot tell the two apart), so it gets no answer. It speaks ASGI 3 (http + lifespan), so
Starlette's CORS and OpenTelemetry's middleware wrap an app unchanged and tests can drive an app
in-process.

Fast path: even lean, ASGI costs a task, a few coroutines and message dicts per request, about
half of the router's Python time on the scoring path. An app may pass `fast` (a `FastPath`): a
POST it claims, with a body of up to WHOLE_BODY_MAX, is read whole and handed to it as a
`Request`, answered from callbacks (the router's relay.py proxies score requests that way);
every other request, and a claimed one whose body is larger, goes to the ASGI app.

A `Server` listens on a host and port (the router), or takes connections accepted elsewhere (a
scorer worker accepts from the socket its supervisor shares).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import heapq
import logging
import resource
import signal
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol

import httptools
from mypy_extensions import mypyc_attr

log = logging.getLogger("http_server")
App = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
# Told of each answer the server gives itself (status, code, message, request id), to log it: the router logs and
# counts them with its own errors, its log lines bounded as theirs; a scorer logs them as `log_error` and counts them.
ServerErrors = Callable[[int, str, str, str], None]
KEEP_ALIVE_S = 65.0  # over Azure's load balancer idle timeout (4 min is its max; 65 s is nginx-like)
IDLE_SWEEP_S = 5.0
SHUTDOWN_GRACE_S = 30.0
HIGH_WATER = 1 << 20  # stop reading a client's body with this much not yet taken by the app
WHOLE_BODY_MAX = HIGH_WATER  # a POST body up to this is held whole for the fast path; a larger one streams
# A request line and headers longer than this are refused (431), as nginx refuses a head over its buffers:
# unbounded, one client streaming a header grew a worker by hundreds of MiB, kept after it left.
MAX_HEAD_BYTES = 64 * 1024
# A request's body must come at this many bytes a second on average, beyond the keep_alive_s it may take on top (as
# Apache's mod_reqtimeout MinRate, Kestrel's MinRequestBodyDataRate): each byte reset the clock of a stalled body, so a
# client sending one a minute held its connection, before any authentication, for as long as it liked. 1 KiB/s is
# 8 kbit/s, under any client's link that is up; a 100 MiB upload may take a day.
MIN_BODY_RATE = 1024
# Requests held per connection at most, the one being answered included: httptools parses all a read brings before
# reading can pause, and a 128 KiB read of small pipelined requests queued 5,000 of them (10 MiB). The one that fills
# the queue is answered with the close, and what followed it is not read: a pipelining client sends it again on a new
# connection (RFC 9112 9.3.2).
PIPELINED_MAX = 128
# After an answer that leaves a request unread and ends the connection, what the client still sends is
# read and dropped for up to this long (nginx's lingering close), rather than reset by closing at once.
LINGER_S = 5.0
# A chunked body's pieces held apart before the last ones are joined into one: each chunk's data is a bytes object
# of its own, so a body in 1-byte chunks was held at about 40 times its size (100 MiB for the fast path's 1 MiB).
CHUNKS_JOINED = 1024
# Each chunk costs three parser callbacks, so a body in 1-byte chunks took about 50 times the CPU of the same bytes in
# large ones (a 100 MiB body, half a minute of the router's only core): each CHUNKS_JOINED chunks must bring at least
# this much a chunk, on average, or the request gets a 400.
MIN_CHUNK_BYTES = 64
# Connections held at once, at most (nginx's worker_connections), and never over half the file descriptors (the
# router's connections to replicas take the rest): unbounded, a client opening idle connections took every descriptor,
# and then every client's connection failed, the kubelet's probes' too. About 5 KiB each.
MAX_CONNECTIONS = 10_000
# At the cap, the connections idle longest close (as nginx reuses its keep-alive ones) to make room: this share of the
# cap at once, so that the connections are looked through once every so many new ones, not at each.
IDLE_CLOSED_AT_CAP = 1 / 64
# The request ids an answer the server or the router gives itself carries, as a scorer's do (scoring_image/app.py).
REQUEST_ID = b"x-request-id"
CLIENT_REQUEST_ID = b"x-ms-client-request-id"
LEGACY_REQUEST_ID = b"x-ms-request-id"  # what clients sent before x-ms-client-request-id
_ID_HEADERS = (REQUEST_ID, CLIENT_REQUEST_ID, LEGACY_REQUEST_ID)
MAX_REQUEST_ID = 100  # a longer one is not echoed (a scorer refuses it with a 431)
REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in REASONS.items()}
_date_second = 0
_date_line = b""


def _date() -> bytes:
    """The Date header line, made once a second: an origin server with a clock sends one with every answer
    (RFC 9110 6.6.1); a proxy passes its upstream's on."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second, _date_line = now, b"date: %s\r\n" % formatdate(now, usegmt=True).encode()
    return _date_line


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT = {"type": "http.disconnect"}


class _Answer:
    """The response side of one exchange on a connection: the head and body framed for HTTP/1.1.

    The head waits for the first body write, so a whole body leaves with it in one write, with
    a Content-Length when the headers had none; a body in parts goes chunked.
    """

    __slots__ = ("conn", "keep_alive", "is_head", "head", "chunked", "started", "done")

    def __init__(self, conn: _Connection, keep_alive: bool, is_head: bool):
        self.conn = conn
        self.keep_alive = keep_alive
        self.is_head = is_head
        self.head: bytes | None = None
        self.chunked = False
        self.started = False
        self.done = False  # the whole response is out

    def start(self, status: int, headers) -> None:
        """The head from (name, value) pairs, as ASGI gives them; a Date added where they have none."""
        length = False
        date = _date()
        for name, value in headers:
            if name == b"content-length":
                length = True
            elif name == b"date":
                date = b""
            elif name == b"connection" and value.lower() == b"close":
                self.keep_alive = False
        self.start_lines(status, b"".join([b"%s: %s\r\n" % h for h in headers]) + date, length)

    def start_lines(self, status: int, lines: bytes, length: bool) -> None:
        """The head from header lines as bytes (each ending in CRLF, none a Connection header) and
        whether they hold a Content-Length."""
        if not length and status >= 200 and status not in (204, 304) and not self.is_head:
            self.chunked = True  # decided for good at the first body write, if it is the last
        # Stopping, the connection closes after this answer: said so, or a keep-alive client (the router's pool of
        # scorer connections) sends its next request into the closing socket, where it is lost.
        if self.keep_alive and self.conn.server.stopping:
            self.keep_alive = False
        status_line = STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status
        self.head = status_line + lines if self.keep_alive else status_line + lines + b"connection: close\r\n"
        self.started = True

    def write(self, body: bytes, more: bool) -> None:
        out = b""
        if self.head is not None:
            head, self.head = self.head, None
            if self.chunked and not more:  # the whole body is here: a length instead of chunks
                self.chunked = False
                head += b"content-length: %d\r\n" % len(body)
            # An HTTP/1.0 client knows no chunks: a body in parts ends with the connection. The parser is
            # asked only here, for a body in parts, the rare case that needs it.
            elif self.chunked and self.conn.http10():
                self.chunked = False
                if self.keep_alive:
                    self.keep_alive = False
                    head += b"connection: close\r\n"
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
            self.conn.write(out)
        if not more:
            self.done = True


class _Exchange(_Answer):
    """One request and its response, answered by the ASGI app in a task: its receive and send."""

    __slots__ = ("scope", "chunks", "complete", "waiter", "expect_continue", "task", "buffered", "size")

    def __init__(self, conn: _Connection, scope: dict, keep_alive: bool, expect_continue: bool):
        super().__init__(conn, keep_alive, scope["method"] == "HEAD")
        self.scope = scope
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.size = 0  # of the body so far: the sweep tells a stalled client by it
        self.complete = False  # the whole request body is in
        self.waiter: asyncio.Future[None] | None = None
        self.expect_continue = expect_continue
        self.task: asyncio.Task | None = None

    # ------------------------------------------------------------ what the connection calls

    def run(self) -> None:
        """Its turn on the connection: the app answers it in a task."""
        self.task = self.conn.loop.create_task(self.conn._run(self))

    def feed(self, body: bytes) -> None:
        self.size += len(body)
        if not self.done:  # a body nobody will read is dropped
            self.chunks.append(body)
            self.buffered += len(body)
            if self.buffered > HIGH_WATER:
                self.conn.pause_reading()
            self.wake()

    def finish(self) -> None:
        """The request's body is all in."""
        self.complete = True
        self.expect_continue = False
        self.wake()
        if self.done and self.conn._queue and self.conn._queue[0] is self:
            self.conn._next()  # answered before its body was all in: the body's end frees the connection

    def abort(self) -> None:
        """The client went away: nobody is waiting for the answer, so the replica slot is freed."""
        self.wake()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def writable(self) -> None:
        pass  # send() waits on the connection's drain

    # ------------------------------------------------------------ ASGI

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
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None
        if self.conn.lost and not self.chunks:
            return _DISCONNECT
        body = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        if self.buffered > HIGH_WATER:
            self.conn.resume_reading()
        self.buffered = 0
        return {"type": "http.request", "body": body, "more_body": not self.complete}

    async def send(self, message: dict) -> None:
        conn = self.conn
        if conn.lost or self.done:
            return
        if message["type"] == "http.response.start":
            if self.expect_continue:  # answered before it asked for the body: the client may never send it
                self.keep_alive = False
            self.start(message["status"], message.get("headers", ()))
            return
        more = message.get("more_body", False)
        self.write(message.get("body", b""), more)
        if more and conn.paused_writing:
            await conn.drain()


class FastPath(Protocol):
    """An app's way to answer some POSTs from callbacks, as `Request`s."""

    def claim(self, path: bytes) -> Any:
        """At the end of a POST's head: not None when the fast path answers it (kept as `Request.claim`)."""

    def answer(self, request: Request) -> None:
        """Once the body is in: answer it (now, or later from other callbacks)."""


class Request(_Answer):
    """A POST whose body is all in (up to WHOLE_BODY_MAX), for the app's fast path.

    The fast path answers from callbacks (start and write, or respond), with no task and no ASGI
    messages; the connection moves on to the next request once the answer is out. It sets
    `handler` to hear `aborted()` when the client goes away and `writable()` once the client
    takes data again after `paused_writing`.
    """

    __slots__ = ("path", "query", "headers", "claim", "chunks", "size", "body", "complete", "turn", "handler")

    def __init__(self, conn: _Connection, path: bytes, query: bytes, headers: list[tuple[bytes, bytes]],
                 claim: Any, keep_alive: bool):
        self.conn = conn  # _Answer's fields set here: no super() call per request
        self.keep_alive = keep_alive
        self.is_head = False
        self.head: bytes | None = None
        self.chunked = False
        self.started = False
        self.done = False
        self.path = path  # raw, as sent
        self.query = query
        self.headers = headers  # names lower-cased
        self.claim = claim  # what FastPath.claim gave for its path
        self.chunks: list[bytes] = []
        self.size = 0
        self.body = b""
        self.complete = False
        self.turn = False  # its answer is next on the connection
        self.handler: Any = None

    # ------------------------------------------------------------ for the fast path

    def respond(self, status: int, headers, body: bytes) -> None:
        """A whole answer: head and body in one write."""
        self.start(status, headers)
        self.write(body, False)

    def write(self, body: bytes, more: bool) -> None:
        if self.done:
            return
        _Answer.write(self, body, more)
        if not more:
            self.conn._answered(self)

    @property
    def paused_writing(self) -> bool:
        return self.conn.paused_writing

    def close(self) -> None:
        """Drop the connection (an answer broken off mid-body cannot be finished)."""
        self.conn.close()

    # ------------------------------------------------------------ what the connection calls

    def run(self) -> None:
        """Its turn on the connection: dispatched now if the body is in, else once it is."""
        if not self.conn.lost:
            self.turn = True
            if self.complete:
                self.conn._dispatch(self)

    def feed(self, body: bytes) -> None:
        self.chunks.append(body)
        self.size += len(body)
        if self.size > WHOLE_BODY_MAX:
            self.conn._to_asgi(self)  # called while this request is parsed

    def finish(self) -> None:
        self.complete = True
        chunks = self.chunks
        if len(chunks) == 1:
            self.body = chunks[0]
        else:  # the parts are not kept beside the whole for as long as it is answered
            self.body = b"".join(chunks)
            self.chunks = []
        if self.turn:
            self.conn._dispatch(self)

    def abort(self) -> None:
        if self.handler is not None:
            self.handler.aborted()

    def writable(self) -> None:
        if self.handler is not None:
            self.handler.writable()


class _Rejection:
    """A request that could not be parsed, in its place on the connection: its error goes out after the
    answers to the requests before it, then the connection closes."""

    __slots__ = ("conn", "response")

    def __init__(self, conn: _Connection, response: bytes):
        self.conn = conn
        self.response = response

    def run(self) -> None:
        self.conn.write(self.response)
        self.conn.linger()

    def abort(self) -> None:
        pass

    def writable(self) -> None:
        pass


# No asyncio.Protocol base, so that mypyc compiles it as a native class (the router's image does):
# uvloop and httptools call the protocol's methods by name, and eof_received stands in for the base's.
class _Connection:
    def __init__(self, server: Server):
        self.server = server
        self.app = server.app
        self.fast = server.fast
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.lost = False
        self.paused_writing = False
        self.paused_since = 0.0  # when the client last stopped taking our writes
        self._drain: asyncio.Future[None] | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._expect = False
        self._hosts = 0  # Host headers in the head being parsed
        self._head_size = 0  # bytes received since the last head ended, while no body was being read
        self._chunk_head = False  # a chunk's size line parsed and none of its data yet: the last one's trailer follows
        self._trailer_size = 0  # bytes received meanwhile (a trailer is held whole, as a head is)
        self._chunks_apart = 0  # chunks of the body being read since the held pieces were last joined (CHUNKS_JOINED)
        self._size_joined = 0  # the body's size then
        self._pipelined = False  # reading paused: a whole request waits behind the one being answered
        self._reading_stopped = False  # the parser cannot go on (an error, an upgrade): reading never resumes
        self._lingering = False  # closing: our side is shut, what the client still sends is dropped
        self._current: _Exchange | Request | None = None  # its body being parsed
        self._queue: collections.deque[_Exchange | Request | _Rejection] = collections.deque()  # answered in order
        self.idle_since: float | None = None  # None while a request is being received or answered
        # What the sweep last saw arriving (a head's header list, a request), its size and since when.
        self._watched: object = None
        self._watched_size = 0
        self._watched_since = 0.0
        self._arriving_since = 0.0  # when the sweep first saw it
        self._arrived_before = 0  # its size then
        self._turn_waits = False  # the next queued request waits for the client to take the answers out
        self._scheme = server.scheme
        self._client: tuple[str, int] | None = None
        self._local: tuple[str, int] | None = None

    # ------------------------------------------------------------ transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self._client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self._local = (sock[0], sock[1]) if isinstance(sock, tuple) else None
        self.idle_since = self.loop.time()
        if not self.server.admit(self):
            self._lingering = True  # what it sends is no request of ours
            self.write(self.server.error_answer(503, b"TooManyConnections", b"the server holds as many connections "
                                                b"as it takes; try again", ()))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # asyncio.Protocol's: the transport closes itself

    def http10(self) -> bool:
        """Is the client speaking HTTP/1.0 (the version of the request last parsed: one client, one version)?"""
        return self.parser.get_http_version() == "1.0"

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.closed(self)
        for exchange in self._queue:
            exchange.abort()
        self._queue.clear()
        self.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._current is None:  # a head (or the gap before one): httptools buffers it whole until it ends
            self._head_size += len(data)
            self.idle_since = None  # a head has begun, its URL maybe not yet: the sweep watches it as one
        elif self._chunk_head:  # the last chunk's trailer fields, buffered whole by httptools as a head is
            self._trailer_size += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade_refused()
            return
        except httptools.HttpParserError as exc:
            context = exc.__context__
            if isinstance(context, _BadHead):
                self._reject(context.status, context.message, context.code)
            elif isinstance(context, _QueueFull):
                self._end_with_the_queue()
            else:
                self._reject(400, b"malformed request")
            return
        if self._current is None:
            if self._head_size > MAX_HEAD_BYTES:  # no head ended in all that
                self._reject(431, b"the request line and headers are over %d bytes" % MAX_HEAD_BYTES,
                             b"RequestHeaderFieldsTooLarge")
        elif self._chunk_head and self._trailer_size > MAX_HEAD_BYTES:
            self._reject(431, b"the trailer fields are over %d bytes" % MAX_HEAD_BYTES, b"RequestHeaderFieldsTooLarge")

    def _upgrade_refused(self) -> None:
        """A request asking to switch protocols (Upgrade, CONNECT). httptools has already handed over a whole
        one: it is answered as any other, ignoring the upgrade as RFC 9110 allows, and the connection closes
        after it, since the parser cannot go on past it."""
        self._reading_stopped = True
        self.pause_reading()
        if self._current is not None:  # CONNECT: no body of known length follows
            self._reject(400, b"upgrades are not supported")
        elif self._queue:
            self._end_with_the_queue()
        else:  # answered already
            self.close()

    def _end_with_the_queue(self) -> None:
        """Nothing more is read (the parser cannot go on): the connection closes after the answers to the requests
        queued."""
        self._reading_stopped = True
        self.pause_reading()
        last = self._queue[-1]
        if not isinstance(last, _Rejection):
            last.keep_alive = False

    def _reject(self, status: int, message: bytes, code: bytes = b"BadRequest") -> None:
        """A request that cannot be parsed: reading stops (the parser cannot go on past it), and the error
        takes its turn after the answers to the requests before it (sent at once, it would overtake them)."""
        self._reading_stopped = True
        self.pause_reading()
        headers = self._sent_headers()
        broken, self._current = self._current, None
        if broken is not None:  # the error cut its body short: it is never answered
            if broken.started:  # nothing can follow an answer begun
                self.close()
                return
            self._queue.pop()  # the last one queued
            broken.abort()
        rejection = _Rejection(self, self.server.error_answer(status, code, message, headers))
        self._queue.append(rejection)
        if len(self._queue) == 1:
            rejection.run()

    def write(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    def pause_writing(self) -> None:
        self.paused_writing = True
        self.paused_since = self.loop.time()

    def resume_writing(self) -> None:
        self.paused_writing = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None
        if self._turn_waits:
            self._turn_waits = False
            self.resume_reading()
            if self._queue:  # empty when the connection was lost meanwhile
                self._run_next()
        elif self._queue:
            self._queue[0].writable()

    async def drain(self) -> None:
        if self.paused_writing and not self.lost:
            self._drain = self.loop.create_future()
            await self._drain

    def pause_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.lost and not self._reading_stopped and not self._pipelined:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def linger(self) -> None:
        """Close after an answer that left the client's request unread (an early 401 or 413, a 400): closing
        with its bytes unread resets the connection, and a reset can destroy the answer before the client
        reads it. So our side is shut (FIN, after the answer), what the client still sends is dropped, and
        the connection closes at its EOF, or after LINGER_S."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.lost:
            return
        if not transport.can_write_eof():  # TLS: no half close
            transport.close()
            return
        self._lingering = True
        transport.write_eof()
        transport.resume_reading()
        self.loop.call_later(LINGER_S, self.abort)

    def abort(self) -> None:
        """Closed without flushing: what close() would flush, a client that reads nothing never takes."""
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------ httptools callbacks

    def on_url(self, url: bytes) -> None:
        self._url += url  # reset after each head, not in on_message_begin: one callback less per request
        self.idle_since = None

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._current is not None:  # a trailer field, after a chunked body: dropped (it is no header)
            return
        name = name.lower()
        if name == b"host":
            self._hosts += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_size = 0
        parser = self.parser
        path, _, query = self._url.partition(b"?")
        headers, expect, hosts = self._headers, self._expect, self._hosts
        if hosts != 1 and (hosts or parser.get_http_version() != "1.0"):  # RFC 9112 3.2: a 400
            raise _BadHead(b"an HTTP/1.1 request carries exactly one Host header")
        # httptools takes what follows the head of a request asking to upgrade for the new protocol's data:
        # its body would never be read, and the request answered as if it had none (_upgrade_refused).
        if parser.should_upgrade() and _declares_body(headers):
            raise _BadHead(b"a request asking to upgrade the protocol cannot carry a body (upgrades are not supported)")
        # Reset once the head is taken (not before: a refused one's error carries the client's request ids).
        self._url, self._headers, self._expect, self._hosts = b"", [], False, 0
        if not path.startswith(b"/"):
            path = _origin_form(path)
        if expect and parser.get_http_version() == "1.0":  # RFC 9110 10.1.1: a 1.0 client's expectation is ignored
            expect = False
        method = parser.get_method()
        keep_alive = parser.should_keep_alive()
        # RFC 9112 6.1: HTTP/1.0 has no chunks, so an intermediary speaking it read such a body as none and what
        # follows as a request of its own: the framing is not to be trusted, so nothing after this request is read.
        # Decided at the head, which the app may answer before any chunk comes (the router's 401).
        if keep_alive and parser.get_http_version() == "1.0" and any(n == b"transfer-encoding" for n, _ in headers):
            keep_alive = False
        exchange: _Exchange | Request
        claim = self.fast.claim(path) if self.fast is not None and method == b"POST" and not expect else None
        if claim is not None:
            exchange = Request(self, path, query, headers, claim, keep_alive)
        else:
            exchange = _Exchange(self, self._scope(method.decode("ascii"), parser.get_http_version(), path, query,
                                                   headers), keep_alive, expect)
        self._current = exchange
        self._queue.append(exchange)
        if len(self._queue) == 1:
            exchange.run()

    def on_body(self, body: bytes) -> None:
        self._chunk_head = False
        if self._current is not None:
            self._current.feed(body)

    def on_chunk_header(self) -> None:
        self._chunk_head = True
        self._trailer_size = 0
        current = self._current
        if current is None:
            return
        if current.size == 0:  # the first chunk: what its request's framing says is asked once
            # httptools takes the chunks off a body in another coding too (gzip, chunked): what they hold would be
            # handed on as the body, still coded. RFC 9112 6.1: a 501.
            if _coded(self._sent_headers()):
                raise _BadHead(b"transfer codings other than chunked are not supported", 501, b"NotImplemented")
            self._chunks_apart = self._size_joined = 0
        self._chunks_apart += 1
        if self._chunks_apart >= CHUNKS_JOINED:
            if current.size - self._size_joined < (CHUNKS_JOINED - 1) * MIN_CHUNK_BYTES:  # this chunk's data is to come
                raise _BadHead(b"a chunked body's chunks average under %d bytes" % MIN_CHUNK_BYTES)
            self._chunks_apart, self._size_joined = 0, current.size
            if len(current.chunks) > 1:
                _join_last(current.chunks)

    def on_chunk_complete(self) -> None:
        self._chunk_head = False

    def on_message_complete(self) -> None:
        exchange, self._current = self._current, None
        if exchange is not None:
            exchange.finish()
        if len(self._queue) > 1:  # a whole request waits for its turn: read no more (each could hold 1 MiB)
            self._pipelined = True
            self.pause_reading()
            if len(self._queue) >= PIPELINED_MAX:  # but httptools goes on with the rest of this read: stopped
                raise _QueueFull

    # ------------------------------------------------------------ the sweep's look

    def check_progress(self, now: float, cutoff: float) -> None:
        """A connection that is not idle: close it (with a 408 if nothing was answered yet) when its client
        sent nothing of a request's head, or of its body, since `cutoff` (a slow or stuck client would hold
        it, and in the router a replica slot, forever), or a body slower than MIN_BODY_RATE beyond the first
        keep_alive_s (a trickle would). Progress is told from what the last sweep saw, so receiving a request
        costs nothing for this; a request waits for no deadline while the answers to those before it are under
        way, nor while our back-pressure holds its body back (its clocks start again after)."""
        current = self._current
        if current is None and self._head_size and not self._queue:
            watched: object = self._headers  # a new list for each head: the same one means the same head
            size = 0  # a head's clock is not reset by trickling it in
        elif (current is not None and self._queue[0] is current and self.transport is not None
              and self.transport.is_reading()  # not held back by our own back-pressure
              and not (isinstance(current, _Exchange) and current.expect_continue)):  # nor waiting for our 100
            watched, size = current, current.size
        else:
            self._watched = None
            return
        if watched is not self._watched:  # a new head or body: its clocks start
            self._watched, self._watched_size, self._watched_since = watched, size, now
            self._arriving_since, self._arrived_before = now, size
            return
        if size != self._watched_size:
            self._watched_size, self._watched_since = size, now
        if self._watched_since < cutoff:
            message = b"the request did not arrive in time"
        elif self._arriving_since + (size - self._arrived_before) / MIN_BODY_RATE < cutoff:  # a second for each
            message = b"the request body arrived under %d bytes a second" % MIN_BODY_RATE
        else:
            return
        if current is None or not current.started:
            self.write(self.server.error_answer(408, b"RequestTimeout", message, self._sent_headers()))
        self.close()

    def _sent_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers of the request being received: those of its head so far, or all of them once its body is."""
        current = self._current
        if current is None:
            return self._headers
        return current.headers if isinstance(current, Request) else current.scope["headers"]

    def _scope(self, method: str, http_version: str, path: bytes, query: bytes, headers: list) -> dict[str, Any]:
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": http_version, "method": method, "scheme": self._scheme,
            "path": _unquote(path), "raw_path": path, "query_string": query, "root_path": "",
            "headers": headers, "client": self._client, "server": self._local,
        }

    # ------------------------------------------------------------ answering

    def _dispatch(self, request: Request) -> None:
        """A whole request's turn: the fast path answers it."""
        try:
            self.fast.answer(request)  # type: ignore[union-attr]
        except Exception:
            log.exception("error answering POST %r", request.path)
            if not request.started:
                self.write(self.server.error_answer(500, b"InternalError", b"server error", request.headers))
            self.close()

    def _to_asgi(self, request: Request) -> None:
        """Its body is too large to hold: the ASGI app takes the request over, streaming the body."""
        exchange = _Exchange(self, self._scope("POST", self.parser.get_http_version(), request.path, request.query,
                                               request.headers), request.keep_alive, False)
        for chunk in request.chunks:
            exchange.feed(chunk)
        self._current = exchange
        i = self._queue.index(request)
        self._queue[i] = exchange
        if i == 0:
            exchange.run()

    def _answered(self, request: Request) -> None:
        """The fast path's answer is out (the body was all in before it began)."""
        if self.lost:
            return
        if not request.keep_alive:
            self.close()
        else:
            self._next()

    async def _run(self, exchange: _Exchange) -> None:
        try:
            await self.app(exchange.scope, exchange.receive, exchange.send)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("error answering %s %s", exchange.scope["method"], exchange.scope["path"])
            if not exchange.started:
                self.write(self.server.error_answer(500, b"InternalError", b"server error", exchange.scope["headers"]))
            self.close()
            return
        if self.lost:
            return
        if not exchange.done:  # the app returned mid-response: the client cannot tell where it ends
            log.error("response to %s %s left unfinished; connection closed", exchange.scope["method"],
                      exchange.scope["path"])
            self.close()
            return
        if not exchange.keep_alive:
            if exchange.complete:
                self.close()
            else:
                self.linger()
        elif exchange.complete:
            if self._queue and self._queue[0] is exchange:  # not moved on already, by the body's end
                self._next()
        else:
            self.resume_reading()
        # Not complete: answered before the request body was all in (a 401, a 413): the rest of it is read
        # and dropped, and on_message_complete moves on; closing now would reset the connection
        # under a client still sending, which then never sees the answer.

    def _next(self) -> None:
        self._queue.popleft()
        if self._pipelined and len(self._queue) <= 1:  # the waiting request's turn: read what follows it
            self._pipelined = False
            self.resume_reading()
        if self._queue:
            if self.paused_writing:  # a client that pipelines and does not read: its answers would pile up here
                self._turn_waits = True
                self.pause_reading()  # and its requests in the queue
            else:
                self._run_next()
        elif not self.server.stopping:
            self.idle_since = self.loop.time()
        else:
            self.close()

    def _run_next(self) -> None:
        following = self._queue[0]
        if isinstance(following, Request):  # not nested: pipelined answers given at once would recurse
            self.loop.call_soon(following.run)
        else:
            following.run()


class _BadHead(Exception):
    """Raised by a parser callback: the head parses, but is no request (its message goes into the error, a 400
    unless it says otherwise)."""

    def __init__(self, message: bytes, status: int = 400, code: bytes = b"BadRequest") -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


class _QueueFull(Exception):
    """Raised by a parser callback: PIPELINED_MAX requests are queued, and nothing after them is to be parsed."""


def _coded(headers: list[tuple[bytes, bytes]]) -> bool:
    """Does a chunked request's Transfer-Encoding name a coding besides chunked?"""
    return any(name == b"transfer-encoding" and value.strip().lower() != b"chunked" for name, value in headers)


def _declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.lstrip(b"0")):
            return True
    return False


def _join_last(chunks: list[bytes] | collections.deque[bytes]) -> None:
    """The last CHUNKS_JOINED pieces held as one: the last ones only, so a long body is copied once, not at each join."""
    tail = [chunks.pop() for _ in range(min(CHUNKS_JOINED, len(chunks)))]
    tail.reverse()
    chunks.append(b"".join(tail))


def _origin_form(target: bytes) -> bytes:
    """The path of an absolute-form target (`http://host/path`), which RFC 9112 3.2.2 says a server must
    accept; any other target (`*`) as it is."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return target
    slash = rest.find(b"/")
    return rest[slash:] if slash >= 0 else b"/"


def _unquote(path: bytes) -> str:
    if b"%" not in path:
        return path.decode("latin-1")
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(path).decode("latin-1")


def _idle_since(conn: _Connection) -> float:
    return conn.idle_since or 0.0


def id_headers(request: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The request id headers of an answer no scorer gave (the server's own, the router's), as a scorer's answer
    carries them, so that a client of Azure ML's x-ms-request-id or x-ms-client-request-id finds its id on every
    answer, whoever gave it: x-request-id first (the client's own, else a new one), then the legacy x-ms-request-id
    (the client's, else its x-ms-client-request-id, else the request id) and x-ms-client-request-id (likewise).
    An id over MAX_REQUEST_ID bytes is taken as not sent."""
    ids = {name: value for name, value in request if name in _ID_HEADERS and len(value) <= MAX_REQUEST_ID}
    rid = ids.get(REQUEST_ID) or str(uuid.uuid4()).encode()
    client, legacy = ids.get(CLIENT_REQUEST_ID), ids.get(LEGACY_REQUEST_ID)
    return [(REQUEST_ID, rid), (LEGACY_REQUEST_ID, legacy or client or rid), (CLIENT_REQUEST_ID, client or legacy or rid)]


def log_error(status: int, code: str, message: str, request_id: str) -> None:
    """The `errors` of a server given none: an answer it gave itself, logged under its request id."""
    log.log(logging.WARNING if status >= 500 else logging.INFO, "%d %s: %s", status, code, message,
            extra={"request_id": request_id})


def connection_cap() -> int:
    """MAX_CONNECTIONS, or half the process's file descriptors where that is less."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(1, min(MAX_CONNECTIONS, soft // 2))


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled, it stays subclassable: scoring_image.server.Server
class Server:
    """The connections of one ASGI app (whole POSTs offered to `fast` first), from `connection_made`
    until `stop()`: keep-alive connections idle for `keep_alive_s` close, as do those whose client sends
    nothing of a request it began for as long, or its body slower than MIN_BODY_RATE past the first `keep_alive_s`
    (see check_progress); on stopping, requests in flight get `grace_s` to finish
    (a function: read when stopping, so an app whose config reloads can say what its requests need then).
    At most `max_connections` are held (see `admit`)."""

    def __init__(self, app: App, fast: FastPath | None = None, keep_alive_s: float = KEEP_ALIVE_S,
                 grace_s: float | Callable[[], float] = SHUTDOWN_GRACE_S, max_connections: int | None = None,
                 errors: ServerErrors | None = None):
        self.app, self.fast, self.scheme = app, fast, "http"
        self.keep_alive_s, self.grace_s = keep_alive_s, grace_s
        self.max_connections = max_connections or connection_cap()
        self.errors: ServerErrors = errors or log_error
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._stop = asyncio.Event()
        self._closed_at_cap = 0  # since the sweep last logged them
        self._refused_at_cap = 0

    def connection(self) -> _Connection:
        """The protocol of a new connection: for `create_server` or `connect_accepted_socket`."""
        return _Connection(self)

    def admit(self, conn: _Connection) -> bool:
        """A new connection is held, unless the cap is reached and none of those held is idle (a request being
        received or answered is never dropped for a new connection): then it is refused."""
        if len(self.connections) >= self.max_connections:
            idle = [c for c in self.connections if c.idle_since is not None]
            if not idle:
                self._refused_at_cap += 1
                return False
            longest = heapq.nsmallest(max(1, int(self.max_connections * IDLE_CLOSED_AT_CAP)), idle,
                                      key=_idle_since)
            for old in longest:
                self.connections.discard(old)  # now: its transport closes at the loop's next turn
                old.close()
            self._closed_at_cap += len(longest)
        self.connections.add(conn)
        return True

    def error_answer(self, status: int, code: bytes, message: bytes, request: Iterable[tuple[bytes, bytes]]) -> bytes:
        """A whole answer the server gives itself, when the app cannot (a request that does not parse, a head too
        large, one that did not arrive, an app that failed, the connection cap), then the connection closes. With
        the request ids of `request`'s headers (those parsed), or a new one a client can quote, handed to `errors`
        to log (and count)."""
        ids = id_headers(request)
        self.errors(status, code.decode(), message.decode(), ids[0][1].decode("latin-1"))
        body = b'{"error": {"code": "%s", "message": "%s"}, "message": "%s"}' % (code, message, message)  # as the apps' errors
        return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s%sconnection: close\r\n\r\n%s"
                % (status, REASONS[status], len(body), b"".join([b"%s: %s\r\n" % h for h in ids]), _date(), body))

    def closed(self, conn: _Connection) -> None:
        """A connection is gone (a subclass counting connections hears it here)."""
        self.connections.discard(conn)

    def stop(self) -> None:
        self.stopping = True
        self._stop.set()

    async def serve_address(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        """Serve the app (lifespan, then http) on host:port until `stop()`, SIGTERM or SIGINT."""
        lifespan = _Lifespan(self.app)
        await lifespan.startup()
        # What start-up made (config, pydantic models, metrics, crypto) lives as long as the process:
        # frozen, the collector's full passes no longer walk it under load.
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        self.scheme = "https" if tls else "http"
        listener = await loop.create_server(self.connection, host, port, ssl=tls, backlog=2048,  # type: ignore[arg-type]
                                            reuse_address=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        log.info("listening on %s://%s:%d", self.scheme, host, port)
        await self.serve(listener.close)
        await lifespan.shutdown()

    async def serve(self, stop_listening: Callable[[], None]) -> None:
        """Until `stop()`; then `stop_listening()`, and drain."""
        sweeper = asyncio.create_task(self._sweep())
        try:
            await self._stop.wait()
        finally:
            sweeper.cancel()
            self.stopping = True
            stop_listening()
            await self._drain()

    async def _sweep(self) -> None:
        """One sweep every few seconds, not a timer per request: idle connections close after keep_alive_s,
        and so do clients that let as long pass without sending any of a request they began, or without
        reading any of our answers (their buffered answers are dropped: they would never be taken)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(IDLE_SWEEP_S, self.keep_alive_s))
            now = loop.time()
            cutoff = now - self.keep_alive_s
            if self._closed_at_cap or self._refused_at_cap:
                log.warning("at the cap of %d connections: %d idle ones closed, %d new ones refused", self.max_connections,
                            self._closed_at_cap, self._refused_at_cap)
                self._closed_at_cap = self._refused_at_cap = 0
            for conn in list(self.connections):
                if conn.paused_writing:
                    if conn.paused_since < cutoff:  # its client took none of our writes for as long
                        conn.abort()
                elif conn.idle_since is None:
                    conn.check_progress(now, cutoff)
                elif conn.idle_since < cutoff:
                    conn.close()

    async def _drain(self) -> None:
        """Idle keep-alive connections close now; requests in flight get grace_s to finish."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.grace_s() if callable(self.grace_s) else self.grace_s)
        while self.connections and loop.time() < deadline:
            for conn in list(self.connections):
                if not conn._queue:
                    conn.close()
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()


class _Lifespan:
    """ASGI lifespan: the app's startup before the first request, its shutdown after the last."""

    def __init__(self, app: App):
        self.app = app
        self._inbox: asyncio.Queue[dict] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def startup(self) -> None:
        self._task = asyncio.create_task(self.app({"type": "lifespan", "asgi": {"version": "3.0"}},  # type: ignore[arg-type]
                                                  self._inbox.get, self._outbox.put))
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._outbox.get()
        if reply["type"] != "lifespan.startup.complete":
            raise SystemExit(f"startup failed: {reply.get('message', '')}")

    async def shutdown(self) -> None:
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._outbox.get()
        if self._task is not None:
            await self._task


def run(app: App, host: str, port: int, tls: ssl.SSLContext | None = None, fast: FastPath | None = None,
        grace_s: float | Callable[[], float] = SHUTDOWN_GRACE_S, errors: ServerErrors | None = None) -> None:
    import uvloop

    uvloop.run(Server(app, fast, grace_s=grace_s, errors=errors).serve_address(host, port, tls))
