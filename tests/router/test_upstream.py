"""upstream.py's pooled connections: what a replica closed is not handed out again."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from router_image.upstream import ReplicaConnections

pytestmark = pytest.mark.anyio


async def test_a_connection_the_replica_closed_is_not_reused_before_the_loop_sees_it() -> None:
    """A replica that dies closes its idle connections. When its FIN arrives in the same batch of events
    as a new request, the loop has not yet run connection_lost, so only the poll on reuse can tell."""
    accepted: list[socket.socket] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    host, port = listener.getsockname()
    connections = ReplicaConnections(host, port)
    try:
        loop = asyncio.get_running_loop()
        stale = await connections.connect()
        fresh = await connections.connect()
        for _ in range(2):
            conn, _ = await loop.sock_accept(listener)
            accepted.append(conn)
        fresh.done(True)  # both idle in the pool; the newest idle one is taken first: `stale`
        stale.done(True)
        accepted[0].close()  # the replica's end of `stale` (accepted first) goes away
        time.sleep(0.05)  # the FIN is in, and the loop (blocked here) has not read it
        assert not stale.closed
        assert connections.idle() is fresh
        assert stale.closed  # closed for good, not put back
        assert not fresh.dropped()
    finally:
        for conn in accepted:
            conn.close()
        connections.close()
        listener.close()


async def test_an_idle_connection_the_replica_writes_on_is_dropped() -> None:
    """An idle connection has nothing to read: bytes on one mean the replica broke the protocol."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    host, port = listener.getsockname()
    connections = ReplicaConnections(host, port)
    try:
        connection = await connections.connect()
        conn, _ = await asyncio.get_running_loop().sock_accept(listener)
        connection.done(True)
        conn.send(b"HTTP/1.1 200 OK\r\n")
        time.sleep(0.05)
        assert connections.idle() is None
        conn.close()
    finally:
        connections.close()
        listener.close()
