"""scoring_image.server: a worker's accepts from the shared socket, spread by connection counts.

The HTTP details are http_server's (tests/http_server)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from scoring_image import balance, metrics, server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def app(scope, receive, send) -> None:
    """Answers every request with `|`."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"|"})


async def get(port: int) -> bytes:
    """One request on a connection of its own, closed after the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    try:
        return await asyncio.wait_for(reader.readuntil(b"|"), 5)
    finally:
        writer.close()


async def test_a_worker_holding_more_connections_leaves_new_ones_to_the_others(tmp_path) -> None:
    balance.create(tmp_path / "connections", 2)
    other = balance.Counts(tmp_path / "connections", 1)  # the other worker: one connection fewer than us
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    srv = server.Server(app, keep_alive_s=65.0, grace_s=5.0, recorder=metrics.Recorder(tmp_path / "metrics"),
                        counts=balance.Counts(tmp_path / "connections", 0))
    pauses: list[float] = []  # when the worker left a waiting connection to the others
    pause = srv._pause
    srv._pause = lambda s: (pauses.append(asyncio.get_running_loop().time()), pause(s))  # type: ignore[method-assign]
    task = asyncio.create_task(srv.serve_socket(sock))
    port = sock.getsockname()[1]
    try:
        loop = asyncio.get_running_loop()
        assert (await get(port)).endswith(b"|")  # 0 vs 0: at once
        assert pauses == []
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # held: now 1 vs 0
        writer.write(b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"|"), 5)
        while len(srv.connections) > 1:  # the first connection closing
            await asyncio.sleep(0.01)
        before = len(pauses)  # the held one may have come while the first was still counted
        started = loop.time()
        out = await get(port)  # nobody else takes it: we do, late
        assert out.endswith(b"|") and len(pauses) - before == server.ACCEPT_DEFERRALS
        assert loop.time() - started >= server.ACCEPT_PAUSE_S * server.ACCEPT_DEFERRALS
        while len(srv.connections) > 1:  # the third connection closing
            await asyncio.sleep(0.01)
        other.add(1)  # 1 vs 1: at once again
        before = len(pauses)
        assert (await get(port)).endswith(b"|")
        assert len(pauses) == before
        writer.close()
    finally:
        srv.stop()
        await asyncio.wait_for(task, 10)


def test_connection_counts_are_shared_and_a_replacement_starts_from_zero(tmp_path) -> None:
    balance.create(tmp_path / "connections", 2)
    first, second = balance.Counts(tmp_path / "connections", 0), balance.Counts(tmp_path / "connections", 1)
    first.add(2)
    assert first.busier_than_another() and not second.busier_than_another()
    second.add(3)
    assert second.busier_than_another() and not first.busier_than_another()
    replacement = balance.Counts(tmp_path / "connections", 1)
    assert not replacement.busier_than_another() and first.busier_than_another()


async def test_the_servers_own_answers_are_logged_and_counted_in_the_metrics(tmp_path, caplog) -> None:
    """A request that does not parse, a head too large, one that did not arrive, a connection over the cap: the
    app never sees them, so scorer_requests_total did not either, and nothing counted them (the router's do)."""
    caplog.set_level(logging.INFO, logger="http_server")
    recorder = metrics.Recorder(tmp_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    srv = server.Server(app, keep_alive_s=65.0, grace_s=5.0, recorder=recorder)
    task = asyncio.create_task(srv.serve_socket(sock))
    try:
        for _ in range(2):
            reader, writer = await asyncio.open_connection(*sock.getsockname())
            writer.write(b"NOT HTTP\r\n\r\n")
            assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 400 ")
            writer.close()
    finally:
        srv.stop()
        await asyncio.wait_for(task, 10)
    recorder.publish()
    counted = {sample.labels["code"]: (sample.labels["status"], sample.value) for family in metrics.registry(tmp_path).collect()
               for sample in family.samples if sample.name == "scorer_server_error_responses_total"}
    assert counted == {"BadRequest": ("400", 2)}
    [line, _] = [r for r in caplog.records if r.getMessage() == "400 BadRequest: malformed request"]
    assert len(line.request_id) == 36
