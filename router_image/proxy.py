"""Forwarding one request to a version: a replica slot (or the queue), the exchange, the stream back.

Two ways in, one set of rules: `forward` (a coroutine, for the ASGI app: chunked and large
bodies, in-process tests) and relay.Relay (callbacks, for whole-body score requests: the hot
path). Both build the upstream head, take slots, connect, retry and name their errors here.

The request body is passed on as the client sends it and the answer as the replica sends it.
A replica that refuses the connection never saw the request, so the request is retried on
another one (that replica is ejected until its health check passes); once anything may have
reached a replica it is never sent twice. Errors the client can act on:
503 + Retry-After (every slot busy for max_request_wait_time, or no ready replica),
504 (no answer within scoring_timeout_ms), 502 (the replica broke the connection).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from router_image import metrics
from router_image.pool import Emptied, NoReplicas, QueueTimeout, Replica, Retired
from router_image.responses import HttpError
from router_image.routes import VersionState
from router_image.traffic import PIN_HEADER
from router_image.upstream import ConnectFailed, Connection, UpstreamBroke, UpstreamError

log = logging.getLogger("router.proxy")
MAX_BODY_BYTES = 100 * 1024 * 1024  # Azure ML's payload limit
CONNECT_TRIES = 3
# Hop-by-hop headers stay on their hop; the client's credentials never reach a replica.
REQUEST_DROP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                          b"proxy-authorization", b"proxy-connection", b"host", b"content-length", b"authorization",
                          b"expect"})
Head = tuple[bytes, bytes]
Reroute = Callable[[], VersionState]  # the version a request goes to when a reload removed its own
NO_NAMES: frozenset[bytes] = frozenset()


class _Deadline:
    """scoring_timeout_ms as one timer that cancels the request's task: what `asyncio.timeout`
    does, without its two coroutines and state machine per request (it showed in the profile)."""

    __slots__ = ("task", "fired")

    def __init__(self, task: asyncio.Task) -> None:
        self.task = task
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()

    def expired(self) -> bool:
        """After a CancelledError: was it this deadline alone (not also the client going away)?"""
        return self.fired and self.task.uncancel() == 0


async def forward(scope: dict, receive, send, version: VersionState, path: bytes, reroute: Reroute) -> int:
    """Answer the request from one of `version`'s replicas (or `reroute`'s, see acquire); returns the status sent."""
    head, length = request_head(scope["method"].encode(), path, scope.get("query_string"), scope["headers"])
    body = await _request_body(length, receive)
    head = (head[0], head[1] + (b"content-length: %d\r\n\r\n" % len(body) if isinstance(body, bytes)
                                else b"transfer-encoding: chunked\r\n\r\n"))
    version, first = await acquire(version, reroute)
    replica: Replica | None = first
    pool = version.pool
    config = version.config
    started = False
    loop = asyncio.get_running_loop()
    deadline = _Deadline(asyncio.current_task())  # type: ignore[arg-type]
    timer = loop.call_at(loop.time() + config.scoring_timeout_ms / 1000, deadline.fire)
    try:
        held, replica = replica, None  # connect() owns the slot until it returns
        replica, connection = await connect(version, held)  # type: ignore[arg-type]
        response = await connection.exchange(head[0] + replica.address.encode() + head[1], body)
        try:
            response.headers.append(version.response_header)  # upstream.py left the hop-by-hop ones out
            await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
            started = True
            while True:
                data, last = await response.next_chunk()
                await send({"type": "http.response.body", "body": data, "more_body": not last})
                if last:
                    return response.status
        finally:
            response.release()
    except asyncio.CancelledError:
        if not deadline.expired():
            raise
        if started:
            log.warning("%s: scoring timeout while streaming the answer; connection closed", config.deployment)
            return 504
        raise timeout_error(version) from None
    except UpstreamBroke as exc:
        if started:
            log.warning("%s: %s while streaming the answer", config.deployment, exc)
            return 502
        raise broke_error(version, exc) from None
    finally:
        timer.cancel()
        if replica is not None:
            pool.release(replica)


async def acquire(version: VersionState, reroute: Reroute | None = None, front: bool = False) -> tuple[VersionState, Replica]:
    """A slot of the version, waiting in its queue (at its head: `front`); 503 when none frees up in time. When a reload removes
    the version meanwhile, the version `reroute` picks from the new config (it may raise a 404) is
    waited for instead; without `reroute`, a 503. When its replicas all leave meanwhile, the one
    `reroute` picks now (a version with a ready replica stands in) is waited for, within the same wait."""
    replica = version.pool.take()
    if replica is not None:
        return version, replica
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + version.pool.max_wait_s
    wait_s = None  # the pool's own wait, until an Emptied: what is left of the first
    try:
        while True:
            try:
                return version, await version.pool.acquire(wait_s, front)
            except Retired:
                if reroute is None:
                    raise HttpError(503, "NoReadyReplicas", f"{version.config.name} was removed",
                                    [(b"retry-after", b"1")]) from None
                version = reroute()
            except Emptied:
                wait_s = deadline - loop.time()
                if wait_s <= 0:
                    raise _no_replicas(version) from None
                if reroute is not None:
                    version = reroute()
            except QueueTimeout:
                raise HttpError(503, "TooManyRequests", f"every replica of {version.config.name} stayed busy for "
                                f"{version.config.max_request_wait_time_ms} ms", [(b"retry-after", b"1")]) from None
            except NoReplicas:
                raise _no_replicas(version) from None
    finally:  # however the wait ended (a slot, a 503, the client gone): the ones that got none waited longest
        metrics.queue_waited(version.labels, loop.time() - started)


def _no_replicas(version: VersionState) -> HttpError:
    return HttpError(503, "NoReadyReplicas", f"no ready replica of {version.config.name}", [(b"retry-after", b"5")])


async def connect(version: VersionState, replica: Replica) -> tuple[Replica, Connection]:
    """A connection to the replica whose slot is held, else (refused) to another one's.

    Takes over that slot: returns the replica whose slot is now held with its connection, or
    raises (502 after CONNECT_TRIES refusals, or cancelled) holding none.
    """
    pool = version.pool
    held: Replica | None = replica
    try:
        for _ in range(CONNECT_TRIES):
            if held is None:  # its turn came already: ahead of those who queued meanwhile
                _, held = await acquire(version, front=True)
            try:
                return held, await held.connections.connect()
            except ConnectFailed as exc:
                log.warning("replica %s of %s refused the connection (%s); ejected, trying another",
                            held.address, version.config.deployment, exc)
                pool.eject(held)
                pool.release(held)
                held = None
        raise HttpError(502, "ReplicaUnavailable", "replicas refused the connection")
    except BaseException:
        if held is not None:
            pool.release(held)
        raise


def request_head(method: bytes, path: bytes, query: bytes | None, headers) -> tuple[Head, int | None]:
    """The request head around the Host value (which names the replica, known only per try),
    without its length header yet, and the declared Content-Length (None when not declared)."""
    lines = []
    length = None
    listed = NO_NAMES
    for k, v in headers:
        if k not in REQUEST_DROP:
            lines.append(b"%s: %s\r\n" % (k, v))
        elif k == b"content-length" and v.isdigit():
            length = int(v)
        elif k == b"connection":
            listed |= _hop_by_hop(v)
    if listed:
        lines = _without(headers, listed)
    start = b"%s %s%s HTTP/1.1\r\nhost: " % (method, path, b"?" + query if query else b"")
    return (start, b"\r\n" + b"".join(lines)), length


# Which of two would a front proxy have checked? Neither is taken (RFC 9110: Authorization is no list).
REPEATED_AUTHORIZATION = "more than one Authorization header"
# Nor of two pins, which could name different versions (one a front proxy allowed, one it did not).
REPEATED_PIN = f"more than one {PIN_HEADER.decode()} header"


def request_lines(headers) -> tuple[bytes, str | None, bytes | None]:
    """A whole POST's headers in one pass (the fast path): the lines `request_head` forwards, the
    pinned version and the Authorization value (what Router._version looks for)."""
    lines = []
    pin = authorization = None
    listed = NO_NAMES
    for k, v in headers:
        if k not in REQUEST_DROP:
            lines.append(b"%s: %s\r\n" % (k, v))
            if k == PIN_HEADER:
                if pin is not None:
                    raise HttpError(400, "BadRequest", REPEATED_PIN)
                pin = v
        elif k == b"authorization":
            if authorization is not None:
                raise HttpError(400, "BadRequest", REPEATED_AUTHORIZATION)
            authorization = v
        elif k == b"connection":
            listed |= _hop_by_hop(v)
    if listed:
        lines = _without(headers, listed)
    return b"".join(lines), pin.decode("latin-1") if pin else None, authorization  # an empty pin pins nothing


def _hop_by_hop(connection: bytes) -> frozenset[bytes]:
    """The header names a Connection header lists (RFC 9110 7.6.1: they stay on the client's hop), other than
    its own options, which REQUEST_DROP holds. Most clients send only an option: answered without a set."""
    if connection.lower() in (b"keep-alive", b"close"):
        return NO_NAMES
    return frozenset(t.strip().lower() for t in connection.split(b",")) - {b"keep-alive", b"close", b""}


def _without(headers, listed: frozenset[bytes]) -> list[bytes]:
    """The forwarded lines again, without the listed ones: a second pass, only for the rare client that lists any."""
    return [b"%s: %s\r\n" % (k, v) for k, v in headers if k not in REQUEST_DROP and k not in listed]


def timeout_error(version: VersionState) -> HttpError:
    return HttpError(504, "ScoringTimeout",
                     f"no answer from {version.config.name} within {version.config.scoring_timeout_ms} ms")


def broke_error(version: VersionState, exc: UpstreamError) -> HttpError:
    return HttpError(502, "ReplicaClosedConnection", f"replica of {version.config.name}: {exc}")


async def _request_body(length: int | None, receive) -> bytes | AsyncIterator[bytes]:
    """The whole body when it came in one piece (the usual case), else a stream of it."""
    if length is not None and length > MAX_BODY_BYTES:
        raise HttpError(413, "PayloadTooLarge", f"request body over {MAX_BODY_BYTES} bytes")
    message = await receive()
    first = message.get("body", b"")
    if not message.get("more_body"):
        return first
    return _BodyStream(first, receive)


class _BodyStream:
    """A request body as it comes in, each chunk checked against the size limit (an iterator class, not
    an async generator: mypyc compiles this module and has no async generators)."""

    def __init__(self, first: bytes, receive) -> None:
        self._next: bytes | None = first
        self._size = len(first)
        self._receive = receive
        self._more = True

    def __aiter__(self) -> _BodyStream:
        return self

    async def __anext__(self) -> bytes:
        if self._next is not None:
            chunk, self._next = self._next, None
            return chunk
        if not self._more:
            raise StopAsyncIteration
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise UpstreamBroke("the client went away while sending the body")
        chunk = message.get("body", b"")
        self._size += len(chunk)
        if self._size > MAX_BODY_BYTES:
            raise HttpError(413, "PayloadTooLarge", f"request body over {MAX_BODY_BYTES} bytes")
        self._more = bool(message.get("more_body"))
        return chunk
