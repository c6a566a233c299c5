"""upstream.py's pooled connections: what a replica closed is not handed out again."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from router_image import upstream
from router_image.upstream import ConnectFailed, ReplicaConnections

pytestmark = pytest.mark.anyio


class Replica:
    """A listening socket standing in for a replica; the test holds the ends it accepts."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.accepted: list[socket.socket] = []
        self.connections = ReplicaConnections(*self.listener.getsockname())

    async def accept(self) -> socket.socket:
        conn, _ = await asyncio.get_running_loop().sock_accept(self.listener)
        self.accepted.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.connections.close()
        self.listener.close()


def black_hole() -> tuple[socket.socket, socket.socket]:
    """A listener whose accept queue is full (and the connection filling it): Linux drops further SYNs,
    as a deleted pod's address does."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    return listener, socket.create_connection(listener.getsockname())


@pytest.fixture
async def replica() -> AsyncIterator[Replica]:
    r = Replica()
    try:
        yield r
    finally:
        r.close()


async def test_a_connection_the_replica_closed_is_not_reused_before_the_loop_sees_it(replica: Replica) -> None:
    """A replica that dies closes its idle connections. When its FIN arrives in the same batch of events
    as a new request, the loop has not yet run connection_lost, so only the poll on reuse can tell."""
    stale = await replica.connections.connect()
    stale_end = await replica.accept()
    fresh = await replica.connections.connect()
    await replica.accept()
    fresh.done(True)  # both idle in the pool; the newest idle one is taken first: `stale`
    stale.done(True)
    stale_end.close()  # the replica's end of `stale` goes away
    time.sleep(0.05)  # the FIN is in, and the loop (blocked here) has not read it
    assert not stale.closed
    assert replica.connections.idle() is fresh
    assert stale.closed  # closed for good, not put back
    assert not fresh.dropped()


async def test_an_idle_connection_the_replica_writes_on_is_dropped(replica: Replica) -> None:
    """An idle connection has nothing to read: bytes on one mean the replica broke the protocol."""
    connection = await replica.connections.connect()
    end = await replica.accept()
    connection.done(True)
    end.send(b"HTTP/1.1 200 OK\r\n")
    time.sleep(0.05)
    assert replica.connections.idle() is None


class Sink:
    """An exchange's end as the relay is one: the connection goes back to the pool when the answer ends."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.status = 0
        self.lines = b""
        self.error: Exception | None = None
        self.ended = asyncio.Event()

    def head(self, status: int, lines: bytes, length: bool) -> None:
        self.status, self.lines = status, lines

    def body(self, data: bytes) -> None:
        pass

    def end(self, keep_alive: bool) -> None:
        self.connection.done(keep_alive)
        self.ended.set()

    def broke(self, error: Exception) -> None:
        self.error = error
        self.ended.set()


async def answered(replica: Replica, answer: bytes) -> tuple[Sink, object]:
    connection = await replica.connections.connect()
    end = await replica.accept()
    sink = Sink(connection)
    connection.send(b"POST /score HTTP/1.1\r\nhost: r\r\ncontent-length: 0\r\n\r\n", b"", sink)
    end.sendall(answer)
    await asyncio.wait_for(sink.ended.wait(), 5)
    await asyncio.sleep(0.05)  # anything after the answer in the same read is parsed by now
    return sink, connection


async def test_bytes_after_an_answer_close_the_connection_instead_of_answering_the_next_request(replica: Replica) -> None:
    """Whose answer would they be? Reused, the connection would hand them to another client's request."""
    sink, connection = await answered(replica, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    assert sink.status == 200 and replica.connections.idle() is connection  # a clean answer: reused
    for stray in (b"HTTP/1.1 200 OK\r\ncontent-le", b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext"):
        sink, connection = await answered(replica, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" + stray)
        assert sink.status == 200 and sink.error is None  # the answer itself went on
        assert connection.closed and replica.connections.idle() is None


@pytest.mark.parametrize("status", [b"099", b"600", b"101"])
async def test_a_status_that_is_no_answer_breaks_the_exchange(replica: Replica, status: bytes) -> None:
    extra = b"upgrade: websocket\r\nconnection: upgrade\r\n" if status == b"101" else b""
    sink, connection = await answered(replica, b"HTTP/1.1 %s X\r\n%scontent-length: 0\r\n\r\n" % (status, extra))
    assert sink.error is not None and connection.closed
    assert (f"status {int(status)} is not an HTTP status" if status != b"101"
            else "the replica switched protocols") in str(sink.error)


async def test_headers_the_answers_connection_header_names_stay_on_the_replicas_hop(replica: Replica) -> None:
    sink, _ = await answered(replica, b"HTTP/1.1 200 OK\r\nconnection: keep-alive, X-Hop, content-length\r\n"
                                      b"x-hop: secret\r\nx-ok: 1\r\ncontent-length: 2\r\n\r\nok")
    assert sink.lines == b"x-ok: 1\r\ncontent-length: 2\r\n"  # the length the client reads is never dropped


async def test_a_replica_that_drops_the_connect_is_given_up_after_the_connect_timeout(monkeypatch) -> None:
    """Not the kernel's two minutes of SYN retries: nothing was sent, so the caller may try another replica."""
    monkeypatch.setattr(upstream, "CONNECT_TIMEOUT_S", 0.3)
    listener, filler = black_hole()
    try:
        started = time.monotonic()
        with pytest.raises(ConnectFailed, match="no answer to connect within 0.3 s"):
            await ReplicaConnections(*listener.getsockname()).connect()
        assert 0.25 <= time.monotonic() - started < 1.5
    finally:
        filler.close()
        listener.close()


async def test_an_answer_head_without_end_breaks_the_exchange_at_its_limit(replica: Replica) -> None:
    """Kept until whole, header lines without end grew the router's memory until the scoring timeout."""
    connection = await replica.connections.connect()
    end = await replica.accept()
    sink = Sink(connection)
    connection.send(b"POST /score HTTP/1.1\r\nhost: r\r\ncontent-length: 0\r\n\r\n", b"", sink)
    end.sendall(b"HTTP/1.1 200 OK\r\n")
    line = b"x-more: " + b"y" * 1000 + b"\r\n"
    for _ in range(70):  # 70 kB of header lines, past the 64 KiB limit
        if sink.ended.is_set():
            break
        end.sendall(line)
        await asyncio.sleep(0.001)  # one read each, as a trickling replica's
    await asyncio.wait_for(sink.ended.wait(), 5)
    assert connection.closed and "the answer's head is over 65536 bytes" in str(sink.error)
    # A head under the limit still answers, and so does one whose end comes in a read with a large body.
    sink, connection = await answered(replica, b"HTTP/1.1 200 OK\r\n" + line * 40 + b"content-length: 2\r\n\r\nok")
    assert sink.status == 200 and sink.error is None
    connection = await replica.connections.connect()
    end = replica.accepted[-1] if connection is sink.connection else await replica.accept()
    sink = Sink(connection)
    connection.send(b"POST /score HTTP/1.1\r\nhost: r\r\ncontent-length: 0\r\n\r\n", b"", sink)
    end.sendall(b"HTTP/1.1 200 OK\r\n")
    await asyncio.sleep(0.05)
    end.sendall(b"content-length: 200000\r\n\r\n" + b"z" * 200_000)
    await asyncio.wait_for(sink.ended.wait(), 5)
    assert sink.status == 200 and sink.error is None
