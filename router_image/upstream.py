"""Keep-alive HTTP/1.1 connections to scorer replicas, lean enough for the hot path.

Measured on 2 cores, aiohttp's client spent more Python per request than the scorer itself:
the router reached a third of the scorer's direct throughput. Here a request is one write
of a prebuilt head (plus its body) and an httptools parse of the answer, on connections kept
per replica (newest idle first, so a pool shrinks back after a burst).

The parse goes to the exchange's sink (`head`, `body`, `end`, `broke`) straight from the
parser's callbacks: the relay (relay.py) writes the answer to its client from there, with no
task or future per request; `Response` is the sink for coroutines (proxy.forward, `get`).
Bodies stream both ways: the request body is written as the client sends it (chunked when
its length is unknown) and the response body is handed on as it arrives, reading from the
replica paused while too much is buffered. What can go wrong is told apart by whether the
request may have reached the replica: `ConnectFailed` (nothing sent; safe to retry on
another replica) or `UpstreamBroke` (the replica closed or reset the connection afterwards).
"""

from __future__ import annotations

import asyncio
import collections
import re
import select
import time
from collections.abc import AsyncIterator
from typing import Protocol

import httptools

from router_image.traffic import PIN_HEADER

IDLE_TTL_S = 30.0  # well under the scorer's keep-alive (65 s), so a pooled connection is still open
MAX_IDLE_PER_REPLICA = 256
# A replica gone without a reset (a deleted pod's address, a stale watch) drops the SYN: the kernel would
# retry for two minutes. Nothing is sent before the connection is made, so another replica is tried (Envoy's
# default connect timeout).
CONNECT_TIMEOUT_S = 5.0
HIGH_WATER = 1 << 20  # pause reading the replica with this much response body unsent
# An answer's head is kept until it is whole: a replica sending header lines without end would grow the
# router's memory until the scoring timeout. As the router's own server limits a request's head (431).
MAX_ANSWER_HEAD_BYTES = 64 * 1024
# Headers of a replica's answer that stay on its hop (the client's connection has its own), and the one
# naming the version that answered, which the router adds itself (a replica's own could contradict it).
RESPONSE_DROP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                           b"proxy-authenticate", PIN_HEADER})
_DROP_LINE = re.compile(rb"\n(?:%s):" % b"|".join(sorted(RESPONSE_DROP)))  # in "\n" + lower-cased lines
_CHUNKED = re.compile(rb"\ntransfer-encoding:[^\r]*chunked", re.I)


class UpstreamError(Exception):
    pass


class ConnectFailed(UpstreamError):
    """No connection could be made: the replica never saw the request."""


class UpstreamBroke(UpstreamError):
    """The connection failed after the request (or part of it) was sent."""


class Sink(Protocol):
    """Who takes a replica's answer, called from the parser; after `end` or `broke`, nothing more."""

    def head(self, status: int, lines: bytes, length: bool) -> None:
        """Status, the end-to-end header lines as the replica sent them (each ending in CRLF; RESPONSE_DROP
        ones left out) and whether a Content-Length is among them."""

    def body(self, data: bytes) -> None: ...

    def end(self, keep_alive: bool) -> None: ...

    def broke(self, error: UpstreamError) -> None: ...


# No asyncio.Protocol base, so that mypyc compiles it as a native class (the router's image does):
# uvloop calls the protocol's methods by name, and eof_received stands in for the base's.
class Connection:
    """One keep-alive connection: one exchange at a time, its answer parsed into the exchange's sink.

    httptools finds where the answer's head and body end; the header lines go on as the bytes the
    replica sent (no callback, tuple and re-serialization per header: ~4k instructions each).
    """

    def __init__(self, pool: ReplicaConnections):
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._sink: Sink | None = None
        self._head: list[bytes] | None = None  # what came in of the answer so far, until its head is complete
        self._head_bytes = 0
        self._interim = False  # the head parsed is a 1xx: the answer proper follows it
        self._until_close = False  # the answer has neither length nor chunks: the replica's close ends it
        self._can_write: asyncio.Future[None] | None = None
        self._readable = select.poll()
        self._feeding = False  # in data_received: the parse of a chunk is under way
        self._reuse = False  # the answer ended mid-chunk: back to the pool once the rest of it is parsed
        self._stray = False  # bytes of no exchange of ours: no answer on this connection can be trusted

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._readable.register(transport.get_extra_info("socket").fileno(), select.POLLIN | select.POLLRDHUP)

    def eof_received(self) -> bool | None:
        return None  # asyncio.Protocol's: the transport closes itself

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            self._head.append(data)
            self._head_bytes += len(data)
        self._feeding = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # a 101: not an answer the client asked for
            self._broke(UpstreamBroke("the replica switched protocols"))
            self.close()
        except httptools.HttpParserError as exc:  # a callback's own error is the one that says what is wrong
            self._broke(UpstreamBroke(f"malformed response: {exc.__context__ or exc}"))
            self.close()
        finally:
            self._feeding = False
        if self._head is not None and self._head_bytes > MAX_ANSWER_HEAD_BYTES:  # still no end of the head in them
            self._broke(UpstreamBroke(f"the answer's head is over {MAX_ANSWER_HEAD_BYTES} bytes"))
            self.close()
        elif self._stray:
            self.close()
        elif self._reuse:
            self._reuse = False
            self._pool._put(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._until_close and exc is None and self._sink is not None:
            sink, self._sink = self._sink, None
            sink.end(False)
        self._broke(UpstreamBroke("the replica closed the connection"))
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._can_write = None

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self._sink is None:  # after the answer (or with no request out): whose would it be?
            self._stray = True

    def on_headers_complete(self) -> None:
        parts, self._head = self._head, None
        if self._sink is None or not parts:
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)  # the answer starts a data chunk: one at a time
        end = data.find(b"\r\n\r\n")
        status = self._parser.get_status_code()
        if not 100 <= status <= 599:
            raise ValueError(f"status {status} is not an HTTP status")
        if status < 200:  # interim (103 Early Hints, 100 Continue): not the answer, which comes after it
            self._interim = True
            self._head = [data[end + 4:]]
            self._head_bytes = len(self._head[0])
            return
        lines, length = _end_to_end(data[data.find(b"\r\n") + 2:end + 2])
        self._until_close = not length and status not in (204, 304) and not _CHUNKED.search(data, 0, end)
        self._sink.head(status, lines, length)

    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            self._sink.body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._until_close = False
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.end(self._parser.should_keep_alive())

    # ------------------------------------------------------------ the exchange

    def _broke(self, error: UpstreamError) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.broke(error)

    def send(self, head: bytes, body: bytes, sink: Sink) -> None:
        """Write a whole request; its answer goes to `sink`."""
        self._answer_to(sink)
        self._transport.write(head + body)  # type: ignore[union-attr]

    def _answer_to(self, sink: Sink) -> None:
        """The next answer goes to `sink`, its head gathered from the first byte on."""
        self._sink = sink
        self._head = []
        self._head_bytes = 0

    async def exchange(self, head: bytes, body: bytes | AsyncIterator[bytes]) -> Response:
        """Send a request (its body whole or as a stream); returns once the response head is in."""
        response = Response(self)
        try:
            if isinstance(body, bytes):
                self.send(head, body, response)
            else:
                self._answer_to(response)
                self._transport.write(head)  # type: ignore[union-attr]
                async for chunk in body:
                    if self.closed:
                        break
                    if chunk:
                        self._transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))  # type: ignore[union-attr]
                    if self._can_write is not None:
                        await self._can_write
                if not self.closed:
                    self._transport.write(b"0\r\n\r\n")  # type: ignore[union-attr]
            await response.headed
        except BaseException:
            self.close()
            raise
        return response

    def dropped(self) -> bool:
        """Did the replica close this idle connection (or send on it) where the loop has not seen it yet?

        A replica that dies closes its idle connections; when the router's loop gets their end in the
        same batch of events as a new request, the request could be written to a dead connection and
        answered 502, though the replica never saw it. So a reused connection is asked first (one
        poll(2), as urllib3 does before reusing one): an idle connection has nothing to read.
        """
        return bool(self._readable.poll(0))

    def pause_reading(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.resume_reading()

    def done(self, reusable: bool) -> None:
        """The exchange is over: back to the pool, or closed when it cannot be reused."""
        self._sink = None
        self._head = None
        if not reusable or self.closed:
            self.close()
        elif self._feeding:  # anything after the answer in this chunk is stray: known once it is parsed
            self._reuse = True
        else:
            self._pool._put(self)

    def close(self) -> None:
        """Closed, and its sink hears nothing more (whoever closes it has given up on the answer)."""
        self._sink = None
        self._head = None
        self.closed = True
        if self._transport is not None:
            self._transport.close()


def _end_to_end(lines: bytes) -> tuple[bytes, bool]:
    """Header lines without the RESPONSE_DROP ones, and whether a Content-Length is among them."""
    lower = b"\n" + lines.lower()
    length = lower.find(b"\ncontent-length:") >= 0
    if _DROP_LINE.search(lower):  # rare (our scorers send none): those lines dropped one by one
        fields = [(line.partition(b":")[0].strip().lower(), line) for line in lines.split(b"\r\n") if line]
        # And the ones its Connection header names (RFC 9110 7.6.1), but never the length the client reads.
        listed = {token.strip() for name, line in fields if name == b"connection"
                  for token in line.partition(b":")[2].lower().split(b",")} - {b"content-length"}
        lines = b"".join(line + b"\r\n" for name, line in fields if name not in RESPONSE_DROP and name not in listed)
    return lines, length


def pairs(lines: bytes) -> list[tuple[bytes, bytes]]:
    """Header lines as (lower-case name, value) pairs, as ASGI has them."""
    return [(name.strip().lower(), value.strip()) for name, _, value in
            (line.partition(b":") for line in lines.split(b"\r\n") if line)]


class Response:
    """A replica's answer for a coroutine: status and headers once `headed`, the body as it arrives."""

    __slots__ = ("status", "headers", "headed", "_connection", "_chunks", "_buffered", "_waiter", "complete",
                 "_keep_alive", "_error", "_released")

    def __init__(self, connection: Connection):
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._connection = connection
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self.complete = False
        self._keep_alive = False
        self._error: UpstreamError | None = None
        self._released = False

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ------------------------------------------------------------ Sink

    def head(self, status: int, lines: bytes, length: bool) -> None:
        self.status, self.headers = status, pairs(lines)
        if not self.headed.done():
            self.headed.set_result(None)

    def body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._connection.pause_reading()
        self._wake()

    def end(self, keep_alive: bool) -> None:
        self.complete = True
        self._keep_alive = keep_alive
        self._wake()

    def broke(self, error: UpstreamError) -> None:
        if not self.headed.done():
            self.headed.set_exception(error)
        self._error = error
        self._wake()

    # ------------------------------------------------------------ reading

    async def next_chunk(self) -> tuple[bytes, bool]:
        """Whatever body arrived since the last call, and whether that was the end of it."""
        while not self._chunks and not self.complete:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        paused = self._buffered > HIGH_WATER
        self._buffered = 0
        if paused:
            self._connection.resume_reading()
        return data, self.complete and not self._chunks

    def release(self) -> None:
        """Give the connection back (or close it when the body was not read to its end)."""
        if not self._released:
            self._released = True
            self._connection.done(self.complete and self._keep_alive and self._error is None)


class ReplicaConnections:
    """The keep-alive connections to one replica."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._idle: list[Connection] = []
        self._closed = False

    def idle(self) -> Connection | None:
        """The newest open idle connection, or None (the caller then waits for `connect`)."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_TTL_S and not connection.dropped():
                return connection
            connection.close()
        return None

    async def connect(self) -> Connection:
        """An idle connection, else a new one; ConnectFailed when none can be made (nothing was sent)."""
        connection = self.idle()
        if connection is not None:
            return connection
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, connection = await asyncio.get_running_loop().create_connection(  # type: ignore[type-var]
                    lambda: Connection(self), self.host, self.port)
        except TimeoutError:
            raise ConnectFailed(f"{self.host}:{self.port}: no answer to connect within {CONNECT_TIMEOUT_S:g} s") from None
        except OSError as exc:
            raise ConnectFailed(f"{self.host}:{self.port}: {exc.strerror or exc}") from None
        return connection

    def _put(self, connection: Connection) -> None:
        if self._closed or len(self._idle) >= MAX_IDLE_PER_REPLICA:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    def close(self) -> None:
        """The replica left: close idle connections now, busy ones when their exchange ends."""
        self._closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()


async def get(host: str, port: int, path: str, timeout_s: float) -> tuple[int, bytes]:
    """One GET on a fresh connection (health checks, peers' load): status and body.

    Raises UpstreamError (or TimeoutError) when there is no answer.
    """
    host_header = f"[{host}]" if ":" in host else host
    head = f"GET {path} HTTP/1.1\r\nhost: {host_header}:{port}\r\nconnection: close\r\n\r\n".encode()
    connections = ReplicaConnections(host, port)
    async with asyncio.timeout(timeout_s):
        response = await (await connections.connect()).exchange(head, b"")
        try:
            chunks = []
            while True:
                data, last = await response.next_chunk()
                chunks.append(data)
                if last:
                    return response.status, b"".join(chunks)
        finally:
            response.release()
            connections.close()


async def readiness(host: str, port: int) -> tuple[bool, bytes]:
    """Does the replica's `/ready` answer 200 (its init() ran)? With the answer's body (b"" when none)."""
    try:
        status, body = await get(host, port, "/ready", 1.0)
    except (UpstreamError, TimeoutError, OSError):
        return False, b""
    return status == 200, body


async def is_ready(host: str, port: int) -> bool:
    return (await readiness(host, port))[0]
