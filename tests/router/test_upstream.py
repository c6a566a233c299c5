"""upstream.py's pooled connections: what a replica closed is not handed out again."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from router_image.upstream import ReplicaConnections

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
