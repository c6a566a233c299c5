"""Forwarding one request to a version: a replica slot (or the queue), the exchange, the stream back.

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
from collections.abc import AsyncIterator

from router_image.pool import NoReplicas, QueueTimeout, Replica, ReplicaPool
from router_image.responses import HttpError
from router_image.routes import VersionState
from router_image.traffic import PIN_HEADER
from router_image.upstream import ConnectFailed, UpstreamBroke

log = logging.getLogger("router.proxy")
MAX_BODY_BYTES = 100 * 1024 * 1024  # Azure ML's payload limit
CONNECT_TRIES = 3
VERSION_HEADER = PIN_HEADER.encode()
# Hop-by-hop headers stay on their hop; the client's credentials never reach a replica.
REQUEST_DROP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                          b"proxy-authorization", b"host", b"content-length", b"authorization", b"expect"})
RESPONSE_DROP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
                           b"proxy-authenticate"})


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


async def forward(scope: dict, receive, send, version: VersionState, path: bytes) -> int:
    """Answer the request from one of `version`'s replicas; returns the status sent."""
    head, length = _request_head(scope, path)
    body = await _request_body(length, receive)
    head = _with_length(head, body)
    pool = version.pool
    config = version.config
    replica: Replica | None = await _acquire(pool, version)
    started = False
    loop = asyncio.get_running_loop()
    deadline = _Deadline(asyncio.current_task())  # type: ignore[arg-type]
    timer = loop.call_at(loop.time() + config.scoring_timeout_ms / 1000, deadline.fire)
    try:
        for attempt in range(1, CONNECT_TRIES + 1):
            try:
                response = await replica.connections.request(head[0] + replica.address.encode() + head[1], body)
                break
            except ConnectFailed as exc:
                log.warning("replica %s of %s refused the connection (%s); ejected, trying another",
                            replica.address, config.deployment, exc)
                pool.eject(replica)
                pool.release(replica)
                replica = None
                if attempt == CONNECT_TRIES:
                    raise HttpError(502, "ReplicaUnavailable", "replicas refused the connection") from None
                replica = await _acquire(pool, version)
        try:
            headers = [h for h in response.headers if h[0] not in RESPONSE_DROP]
            headers.append((VERSION_HEADER, config.name.encode()))
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
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
        raise HttpError(504, "ScoringTimeout",
                        f"no answer from {config.name} within {config.scoring_timeout_ms} ms") from None
    except UpstreamBroke as exc:
        if started:
            log.warning("%s: %s while streaming the answer", config.deployment, exc)
            return 502
        raise HttpError(502, "ReplicaClosedConnection", f"replica of {config.name}: {exc}") from None
    finally:
        timer.cancel()
        if replica is not None:
            pool.release(replica)


async def _acquire(pool: ReplicaPool, version: VersionState) -> Replica:
    try:
        return await pool.acquire()
    except QueueTimeout:
        raise HttpError(503, "TooManyRequests", f"every replica of {version.config.name} stayed busy for "
                        f"{version.config.max_request_wait_time_ms} ms", [(b"retry-after", b"1")]) from None
    except NoReplicas:
        raise HttpError(503, "NoReadyReplicas", f"no ready replica of {version.config.name}",
                        [(b"retry-after", b"5")]) from None


def _request_head(scope: dict, path: bytes) -> tuple[tuple[bytes, bytes], int | None]:
    """The request head around the Host value (which names the replica, known only per try),
    without its length header yet, and the declared Content-Length (None when not declared)."""
    query = scope.get("query_string")
    lines = []
    length = None
    for k, v in scope["headers"]:
        if k not in REQUEST_DROP:
            lines.append(b"%s: %s\r\n" % (k, v))
        elif k == b"content-length" and v.isdigit():
            length = int(v)
    start = b"%s %s%s HTTP/1.1\r\nhost: " % (scope["method"].encode(), path, b"?" + query if query else b"")
    return (start, b"\r\n" + b"".join(lines)), length


def _with_length(head: tuple[bytes, bytes], body: bytes | AsyncIterator[bytes]) -> tuple[bytes, bytes]:
    if isinstance(body, bytes):
        return head[0], head[1] + b"content-length: %d\r\n\r\n" % len(body)
    return head[0], head[1] + b"transfer-encoding: chunked\r\n\r\n"


async def _request_body(length: int | None, receive) -> bytes | AsyncIterator[bytes]:
    """The whole body when it came in one piece (the usual case), else a stream of it."""
    if length is not None and length > MAX_BODY_BYTES:
        raise HttpError(413, "PayloadTooLarge", f"request body over {MAX_BODY_BYTES} bytes")
    message = await receive()
    first = message.get("body", b"")
    if not message.get("more_body"):
        return first
    return _body_stream(first, receive)


async def _body_stream(first: bytes, receive) -> AsyncIterator[bytes]:
    yield first
    size = len(first)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise UpstreamBroke("the client went away while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpError(413, "PayloadTooLarge", f"request body over {MAX_BODY_BYTES} bytes")
        yield chunk
        if not message.get("more_body"):
            return
