"""http_server: the HTTP/1.1 details the router and the scorers must get right, over real sockets."""

from __future__ import annotations

import asyncio
import json
import contextlib
import time
import tracemalloc
from email.utils import parsedate_to_datetime

import pytest

import http_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class App:
    """Echoes the body; /chunks streams three chunks; /early answers without reading; /slow waits; /big
    answers 256 KiB (counted); /headers names the request's headers."""

    def __init__(self) -> None:
        self.big = 0
        self.cancelled = asyncio.Event()
        self.slow_started = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        path = scope["path"]
        if path == "/big":
            self.big += 1
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"b" * 256 * 1024})
            return
        if path == "/early":
            await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"no"})
            if scope["query_string"] == b"linger":  # work after the answer (a log flush): the body ends meanwhile
                await asyncio.sleep(0.3)
            return
        if path == "/dated":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"date", b"Thu, 01 Jan 2026 00:00:00 GMT")]})
            await send({"type": "http.response.body", "body": b"d"})
            return
        if path == "/headers":
            names = b",".join(name for name, _ in scope["headers"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"|" + names})
            return
        if path == "/slow":
            self.slow_started.set()
            try:
                await asyncio.sleep(float(scope["query_string"] or 30))
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if path == "/chunks":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"a", b"bb", b"ccc"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-path", path.encode())]})
        await send({"type": "http.response.body", "body": scope["query_string"] + b"|" + body})


class Fast:
    """The fast path for POST /fast: echoes the whole body; POST /held is kept in `held`, unanswered."""

    def __init__(self) -> None:
        self.held: list[http_server.Request] = []

    def claim(self, path: bytes) -> object:
        return True if path in (b"/fast", b"/held") else None

    def answer(self, request: http_server.Request) -> None:
        if request.path == b"/held":
            self.held.append(request)
        else:
            request.respond(200, [], b"|" + request.body)


@pytest.fixture
async def served(request):
    """An App server; `keep_alive_s` from an indirect parameter, 65 s without one."""
    app = App()
    srv = http_server.Server(app, fast=Fast(), keep_alive_s=getattr(request, "param", 65.0), grace_s=5.0)
    listener = await asyncio.get_running_loop().create_server(srv.connection, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    task = asyncio.create_task(srv.serve(listener.close))
    yield app, port, srv
    srv.stop()
    await asyncio.wait_for(task, 10)


async def exchange(port: int, data: bytes, until: bytes, timeout: float = 5) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    try:
        async with asyncio.timeout(timeout):
            while until not in out:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                out += chunk
    finally:
        writer.close()
    return out


async def test_one_write_with_a_length_and_keep_alive_serves_pipelined_requests_in_order(served) -> None:
    _, port, _ = served
    requests = b"".join(b"POST /p%d?q=%d HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nab%d" % (i, i, i) for i in range(3))
    out = await exchange(port, requests, b"q=2|ab2")
    answers = out.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(answers) == 3
    for i, answer in enumerate(answers):
        assert b"x-path: /p%d\r\n" % i in answer and b"content-length: 7\r\n" in answer
        assert answer.endswith(b"q=%d|ab%d" % (i, i))


def dates(answer: bytes) -> list[float]:
    head = answer.partition(b"\r\n\r\n")[0].decode()
    return [parsedate_to_datetime(line[6:]).timestamp() for line in head.split("\r\n") if line.lower().startswith("date: ")]


@pytest.mark.parametrize("request_", [b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
                                      b"POST /fast HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
                                      b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: x\r\n\r\n"],
                         ids=["asgi", "fast path", "refused by the server"])
async def test_every_answer_says_when_it_was_given(served, request_) -> None:
    """RFC 9110 6.6.1: an origin server with a clock sends a Date (caches and clients reckon ages from it)."""
    _, port, _ = served
    before = time.time()
    answer = await exchange(port, request_, b"\r\n\r\n")
    [date] = dates(answer)
    assert int(before) <= date <= time.time()


async def test_a_date_the_app_gives_is_sent_alone(served) -> None:
    _, port, _ = served
    answer = await exchange(port, b"GET /dated HTTP/1.1\r\nhost: x\r\n\r\n", b"\r\n\r\nd")
    assert dates(answer) == [parsedate_to_datetime("Thu, 01 Jan 2026 00:00:00 GMT").timestamp()]


async def test_chunked_both_ways(served) -> None:
    _, port, _ = served
    out = await exchange(port, b"POST /chunks HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                               b"3\r\nabc\r\n0\r\n\r\n", b"0\r\n\r\n")
    assert b"transfer-encoding: chunked\r\n" in out and out.endswith(b"1\r\na\r\n2\r\nbb\r\n3\r\nccc\r\n0\r\n\r\n")
    out = await exchange(port, b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                               b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n", b"|abc")
    assert b"content-length: 4\r\n" in out


@pytest.mark.parametrize("path", [b"/fast", b"/slow?0.3"])
async def test_a_body_in_chunks_too_small_for_their_cost_is_refused(served, path) -> None:
    """Each chunk costs three parser callbacks: a body in 1-byte chunks took about 50 times the CPU of the same
    bytes in large ones (a 100 MiB one, half a minute of a router's core), and before the pieces were joined a
    1 MiB one was held as a million bytes objects, 100 MiB (the fast path holds a body whole; an app not reading
    yet up to HIGH_WATER). A few small chunks are taken."""
    _, port, _ = served
    head = b"POST %s HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" % path
    few = http_server.CHUNKS_JOINED - 2  # and the last, empty one: CHUNKS_JOINED in all
    out = await exchange(port, head + b"1\r\na\r\n" * few + b"0\r\n\r\n", b"|" + b"a" * few)
    assert out.startswith(b"HTTP/1.1 200 OK")
    data = head + b"1\r\na\r\n" * 100_000 + b"0\r\n\r\n"
    tracemalloc.start()
    try:
        out = await exchange(port, data, b"\x00never")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out[:80]
    assert peak < 2 * len(data), peak
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["error"]["message"] == (
        f"a chunked body's chunks average under {http_server.MIN_CHUNK_BYTES} bytes")


async def test_a_whole_body_that_came_in_parts_is_held_once_while_it_is_answered(served) -> None:
    """The fast path answers from the joined body: its parts, kept beside it until the answer, doubled what a
    request held for the whole of its scoring (2 MiB for each 1 MiB body in flight)."""
    _, port, srv = served
    body = b"x" * http_server.WHOLE_BODY_MAX
    head = b"POST /held HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    tracemalloc.start()
    try:
        writer.write(head)
        for i in range(0, len(body), 65536):  # in parts, as a large body arrives
            writer.write(body[i:i + 65536])
            await writer.drain()
            await asyncio.sleep(0.001)
        for _ in range(500):
            if srv.fast.held:
                break
            await asyncio.sleep(0.01)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    request = srv.fast.held.pop()
    assert request.body == body
    assert held < 1.5 * len(body), held
    request.respond(200, [], b"|")
    writer.close()


async def test_expect_100_continue(served) -> None:
    _, port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /e HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hi")
    assert (await asyncio.wait_for(reader.readuntil(b"|hi"), 5)).startswith(b"HTTP/1.1 200 OK")
    writer.close()


async def test_an_answer_before_the_body_keeps_the_connection(served) -> None:
    _, port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12345")
    assert (await asyncio.wait_for(reader.readuntil(b"no"), 5)).startswith(b"HTTP/1.1 413 Request Entity Too Large")
    writer.write(b"67890GET /next HTTP/1.1\r\nhost: x\r\n\r\n")  # the rest of the body, then the next request
    assert b"x-path: /next" in await asyncio.wait_for(reader.readuntil(b"|"), 5)
    writer.close()


@pytest.mark.parametrize("path", [b"/fast", b"/echo"])
async def test_an_http_1_0_chunked_request_is_answered_then_the_connection_closes(served, path) -> None:
    """RFC 9112 6.1: HTTP/1.0 has no chunks, so an intermediary speaking it takes such a body for none and what
    follows for a request of its own; kept alive, the request hidden in the chunks was answered too (smuggled)."""
    _, port, _ = served
    out = await exchange(port, b"POST %s HTTP/1.0\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n"
                               b"2\r\nhi\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n" % path, b"\x00never")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"connection: close\r\n" in out and out.endswith(b"|hi")
    assert b"/smuggled" not in out


async def test_an_http_1_0_chunked_request_answered_before_its_body_closes_the_connection(served) -> None:
    """The app may answer at the head (the router's 401, a 404), before any chunk came: the connection was kept for
    what followed the body, so the request hidden in the chunks was answered as a request of its own (smuggled)."""
    _, port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /early HTTP/1.0\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n")
    answer = await asyncio.wait_for(reader.readuntil(b"no"), 5)
    assert answer.startswith(b"HTTP/1.1 413") and b"connection: close\r\n" in answer
    writer.write(b"2\r\nhi\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n")
    assert b"/smuggled" not in await asyncio.wait_for(reader.read(), 10)
    writer.close()


async def test_http_1_0_closes_and_head_has_no_body(served) -> None:
    _, port, _ = served
    out = await exchange(port, b"GET /old HTTP/1.0\r\n\r\n", b"\x00never")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"connection: close\r\n" in out and out.endswith(b"|")
    out = await exchange(port, b"HEAD /h HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", b"\x00never")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"\r\n\r\n")


async def test_an_http_1_0_client_gets_a_body_in_parts_unchunked_and_the_connection_closes(served) -> None:
    """It knows no chunked encoding: the body goes as it comes and the close ends it, keep-alive asked or not."""
    _, port, _ = served
    for extra in (b"", b"connection: keep-alive\r\n"):
        out = await exchange(port, b"GET /chunks HTTP/1.0\r\n" + extra + b"\r\n", b"\x00never")
        head, _, body = out.partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head and b"connection: close" in head and body == b"abbccc"


async def test_a_client_that_pipelines_and_does_not_read_gets_no_further_answers_until_it_does(served) -> None:
    """Its answers would otherwise pile up in the server's memory (one such client reached 409 MiB)."""
    app, port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.set_write_buffer_limits(high=1 << 24)
    asked = http_server.PIPELINED_MAX - 8  # 30 MiB of answers
    writer.write(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n" * asked)
    await asyncio.sleep(1.0)
    held = app.big
    assert held < 60, held  # what the sockets' buffers take, then nothing until the client reads
    received = 0
    async with asyncio.timeout(20):
        while received < asked * 256 * 1024:
            received += len(await reader.read(1 << 20))
    assert app.big == asked
    writer.close()


@pytest.mark.parametrize("served", [0.3], indirect=True)
async def test_a_client_that_reads_nothing_of_its_answers_is_dropped_after_the_keep_alive_time(served) -> None:
    """Else its connection and the answers buffered for it stay as long as the client does."""
    app, port, srv = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n" * 200)
    async with asyncio.timeout(5):
        while not any(c.paused_writing for c in srv.connections):
            await asyncio.sleep(0.05)
    async with asyncio.timeout(3):  # 0.3 s paused, found by a sweep (every 0.3 s)
        while srv.connections:
            await asyncio.sleep(0.05)
    assert app.big < 100
    received = 0
    with contextlib.suppress(ConnectionResetError):  # ended: what the server still held is not delivered
        async with asyncio.timeout(5):
            while chunk := await reader.read(1 << 20):
                received += len(chunk)
    assert received < app.big * 256 * 1024
    writer.close()


async def test_malformed_requests_get_400(served) -> None:
    _, port, _ = served
    out = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n", b"\x00never")
    assert out.startswith(b"HTTP/1.1 400 Bad Request")


@pytest.mark.parametrize("path", [b"/fast", b"/echo"])
@pytest.mark.parametrize("coding", [b"transfer-encoding: gzip, chunked\r\n", b"transfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n"])
async def test_a_body_in_a_transfer_coding_other_than_chunked_is_refused_with_501(served, path, coding) -> None:
    """httptools takes the chunks off and hands on what they hold, still gzipped: an app (a replica, through the
    router, which frames it anew) read compressed bytes as the body. RFC 9112 6.1: a 501, as nginx answers."""
    _, port, _ = served
    out = await exchange(port, b"POST %s HTTP/1.1\r\nhost: x\r\n%s\r\n2\r\nhi\r\n0\r\n\r\n" % (path, coding),
                         b"\x00never")
    assert out.startswith(b"HTTP/1.1 501 Not Implemented\r\n") and b"connection: close\r\n" in out, out
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "NotImplemented"


async def test_a_client_that_goes_away_cancels_its_request(served) -> None:
    app, port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(app.slow_started.wait(), 5)
    writer.close()
    await asyncio.wait_for(app.cancelled.wait(), 5)


async def test_idle_keep_alive_connections_are_closed(served) -> None:
    _, port, srv = served
    srv.keep_alive_s = 0.2  # the sweep after the one already sleeping uses it
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"|"), 5)
    assert await asyncio.wait_for(reader.read(), http_server.IDLE_SWEEP_S + 5) == b""  # closed by the sweep
    writer.close()


async def test_stop_finishes_requests_in_flight_and_closes_idle_connections(served) -> None:
    app, port, srv = served
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    idle_writer.write(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.wait_for(idle_reader.readuntil(b"|"), 5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow?0.3 HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.wait_for(app.slow_started.wait(), 5)
    srv.stop()
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    answer = await asyncio.wait_for(reader.read(), 5)  # answered, saying the connection closes, then closed
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"connection: close\r\n" in answer and answer.endswith(b"|")
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    idle_writer.close()
    writer.close()


async def test_answers_given_while_stopping_say_the_connection_closes_on_both_paths(served) -> None:
    """A keep-alive client (the router's pool of scorer connections too) sends its next request as soon as it has
    an answer: closed without a word, that request meets the closing socket and is lost (a POST is not retried)."""
    app, port, srv = served
    slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
    slow_writer.write(b"GET /slow?0.3 HTTP/1.1\r\nhost: x\r\n\r\n")
    fast_reader, fast_writer = await asyncio.open_connection("127.0.0.1", port)
    fast_writer.write(b"POST /fast HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nhi")
    await asyncio.wait_for(app.slow_started.wait(), 5)
    srv.stop()
    fast_writer.write(b"ho")
    for reader, writer, body in ((slow_reader, slow_writer, b"|"), (fast_reader, fast_writer, b"|hiho")):
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"connection: close\r\n" in answer and answer.endswith(body)


async def test_the_grace_is_what_a_function_says_when_stopping() -> None:
    """The router's config may reload a longer scoring timeout after start: the grace is read at stop."""
    app = App()
    grace = {"s": 5.0}
    srv = http_server.Server(app, grace_s=lambda: grace["s"])
    listener = await asyncio.get_running_loop().create_server(srv.connection, "127.0.0.1", 0)
    task = asyncio.create_task(srv.serve(listener.close))
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.sockets[0].getsockname()[1])
    writer.write(b"GET /slow?30 HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.wait_for(app.slow_started.wait(), 5)
    grace["s"] = 0.2
    started = asyncio.get_running_loop().time()
    srv.stop()
    await asyncio.wait_for(task, 5)
    assert asyncio.get_running_loop().time() - started < 2  # 0.2 s, not 5
    assert await asyncio.wait_for(reader.read(), 5) == b""  # cut: it did not finish in the grace
    writer.close()


async def test_a_head_over_the_limit_ends_the_connection_one_under_it_is_served(served) -> None:
    """A client streaming one endless header (or URL) must not grow the process: httptools buffers a header
    whole until it ends, so the bytes of a head are counted as they arrive, and past the limit the
    connection gets a 431 and is closed (with the client's unread bytes, the kernel may turn that into a reset)."""
    _, port, _ = served
    fits = "v" * (http_server.MAX_HEAD_BYTES - 1024)
    out = await exchange(port, f"GET /a HTTP/1.1\r\nhost: x\r\nx-big: {fits}\r\n\r\n".encode(), b"|")
    assert out.startswith(b"HTTP/1.1 200 OK")
    for start in (b"GET /a HTTP/1.1\r\nhost: x\r\nx-big: ", b"GET /"):  # a header, a URL: never ending
        sent, answer = await stream_for_ever(port, start)
        assert sent < 8 * http_server.MAX_HEAD_BYTES  # ended near the limit, not after 4 MiB
        assert not answer or answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:80]


async def stream_for_ever(port: int, start: bytes) -> tuple[int, bytes]:
    """`start`, then bytes without end (up to 4 MiB) until the server answers and closes: what was sent
    by then, and the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(start)
    sent, answer = 0, b""
    try:
        while sent < 64 * http_server.MAX_HEAD_BYTES:
            writer.write(b"v" * 16384)
            await writer.drain()
            sent += 16384
            try:
                answer += await asyncio.wait_for(reader.read(65536), 0.01)
            except asyncio.TimeoutError:
                continue
            if answer and not answer.endswith(b"}") or reader.at_eof():
                break
    except ConnectionError:
        pass
    writer.close()
    return sent, answer


@pytest.mark.parametrize("served", [0.3], indirect=True)
async def test_a_client_stalled_mid_request_gets_408_and_is_closed(served) -> None:
    _, port, _ = served
    stalled = [
        b"GET /a HT",  # half a request line
        b"GET /a HTTP/1.1\r\nhost: x\r\n",  # a head without its end
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789",  # a tenth of a body
        b"POST /fast HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789",  # the same, fast path
    ]
    for data in stalled:
        out = await exchange(port, data, b"\x00never")  # until the server closes
        assert out.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
        assert b"connection: close\r\n" in out and out.endswith(b'{"error": {"code": "RequestTimeout", '
                                                                  b'"message": "the request did not arrive in time"}, '
                                                                  b'"message": "the request did not arrive in time"}')
    # Answered before the body, then stalled: closed, with no second answer.
    out = await exchange(port, b"POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12", b"\x00never")
    assert out.startswith(b"HTTP/1.1 413 ") and b"408" not in out


@pytest.mark.parametrize("served", [0.3], indirect=True)
async def test_a_body_trickled_in_under_the_minimum_rate_gets_408_and_is_closed(served) -> None:
    """A byte now and then reset the clock of a body's stall, so an unauthenticated client held a connection (and,
    at the cap, a place among them) for as long as it liked: past keep_alive_s a body must average
    MIN_BODY_RATE. One answered before its body was all in (a 401) is closed, without a second answer."""
    _, port, _ = served

    async def trickle(head: bytes, part: bytes) -> bytes:
        """`head`, then `part` every 50 ms (progress at every sweep) until the server closes, for 5 s at most."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        answer = asyncio.ensure_future(reader.read())
        started = asyncio.get_running_loop().time()
        while not answer.done() and asyncio.get_running_loop().time() - started < 5:
            writer.write(part)
            await asyncio.sleep(0.05)
        writer.close()
        assert answer.done(), head
        return answer.result()

    fast, chunked, early = await asyncio.gather(
        trickle(b"POST /fast HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n", b"a"),
        trickle(b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n", b"1\r\na\r\n"),
        trickle(b"POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n", b"a"))
    for out in (fast, chunked):
        assert out.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"connection: close\r\n" in out, out
        assert json.loads(out.split(b"\r\n\r\n", 1)[1])["error"] == {
            "code": "RequestTimeout", "message": f"the request body arrived under {http_server.MIN_BODY_RATE} bytes a second"}
    assert early.startswith(b"HTTP/1.1 413 ") and b"408" not in early


@pytest.mark.parametrize("served", [0.3], indirect=True)
async def test_a_head_trickled_in_is_closed_but_a_body_that_progresses_and_a_slow_answer_are_not(served) -> None:
    _, port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # The request line at once: until its URL is read the connection counts as idle, and an idle one is closed
    # without an answer (a busy machine had the first bytes take the 0.3 s).
    writer.write(b"GET /a HTTP/1.1\r\n")
    head = b"host: x\r\nx-pad: " + b"p" * 100
    answer = asyncio.ensure_future(reader.read())
    for i in range(len(head)):  # a byte every 50 ms: 5 s, far over the 0.3 s allowed for a head
        if answer.done():
            break
        writer.write(head[i:i + 1])
        await asyncio.sleep(0.05)
    assert answer.done() and answer.result().startswith(b"HTTP/1.1 408 ")
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    part = b"p" * (http_server.MIN_BODY_RATE // 2)  # a part every 150 ms: over three times the minimum rate
    writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (10 * len(part)))
    for i in range(10):  # 1.5 s in all, five times the stall allowed
        await asyncio.sleep(0.15)
        writer.write(part)
    assert (await asyncio.wait_for(reader.readuntil(b"|" + part * 10), 5)).startswith(b"HTTP/1.1 200 OK")
    writer.write(b"GET /slow?1 HTTP/1.1\r\nhost: x\r\n\r\n")  # an app slower than the deadline
    assert (await asyncio.wait_for(reader.readuntil(b"|"), 5)).startswith(b"HTTP/1.1 200 OK")
    writer.close()


@pytest.mark.parametrize("served", [0.3], indirect=True)
async def test_a_head_stalled_before_its_url_gets_408_as_any_stalled_head(served) -> None:
    """Until its URL was read a connection counted as idle: a client stalled after `GE` was closed without an answer,
    where one stalled a byte later got the 408 that says why."""
    _, port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GE")
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"RequestTimeout" in answer
    writer.close()


async def test_a_malformed_request_behind_another_is_answered_after_it(served) -> None:
    _, port, _ = served
    out = await exchange(port, b"GET /slow?0.2 HTTP/1.1\r\nhost: x\r\n\r\nBOGUS\r\n\r\nGET /a HTTP/1.1\r\n\r\n",
                         b"\x00never")
    first, _, second = out.partition(b"HTTP/1.1 400 Bad Request\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"\r\n\r\n0.2|")
    assert second.endswith(b'"message": "malformed request"}, "message": "malformed request"}') and b"HTTP/1.1" not in second


async def test_an_answer_before_100_continue_closes_the_connection(served) -> None:
    _, port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /early HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 10\r\n\r\n")
    out = await asyncio.wait_for(reader.read(), 5)  # the client never sends the body it was not asked for
    assert out.startswith(b"HTTP/1.1 413 ") and b"connection: close\r\n" in out and out.endswith(b"no")
    writer.close()


async def test_trailer_fields_are_dropped_not_added_to_the_next_requests_headers(served) -> None:
    """httptools reports a chunked body's trailer through on_header: taken as headers, they became the next
    request's (an Authorization in one request's trailer authenticated the next)."""
    _, port, _ = served
    out = await exchange(port, b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                               b"2\r\nab\r\n0\r\nauthorization: Bearer stolen\r\nexpect: 100-continue\r\n\r\n"
                               b"GET /headers HTTP/1.1\r\nhost: x\r\n\r\n", b"|host")
    assert b"|ab" in out and out.endswith(b"|host") and b"100 Continue" not in out


async def test_trailer_fields_over_the_head_limit_end_the_connection(served) -> None:
    """Held whole by httptools as a head is: without a limit a client could stream them for ever."""
    _, port, _ = served
    sent, answer = await stream_for_ever(
        port, b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nx-t: ")
    assert sent < 16 * http_server.MAX_HEAD_BYTES  # ended near the limit (plus a read), not after 4 MiB
    assert not answer or answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:80]


async def test_a_request_asking_to_upgrade_is_answered_once_and_the_connection_closes(served) -> None:
    """httptools hands over the whole request before it stops at the upgrade: answered as any other, with
    the upgrade ignored (RFC 9110 7.8), and nothing after it is read (a 400 sent too answered the next one)."""
    _, port, _ = served
    out = await exchange(port, b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
                               b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n", b"never")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close\r\n" in out and out.endswith(b"|")
    assert out.count(b"HTTP/1.1") == 1


@pytest.mark.parametrize("path", [b"/echo", b"/fast"])
@pytest.mark.parametrize("framing", [b"content-length: 2\r\n\r\n{}", b"transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"])
async def test_a_request_asking_to_upgrade_with_a_body_is_refused_not_answered_without_it(served, path, framing) -> None:
    """httptools takes what follows an upgrade request's head for the new protocol's data, so its body would
    never be read: answered as if empty (a scorer scoring an empty payload), on both paths. A 400 instead."""
    _, port, _ = served
    out = await exchange(port, b"POST %s HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: h2c\r\n%s" % (path, framing),
                         b"never")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out[:200]
    assert b"upgrade" in out.split(b"\r\n\r\n", 1)[1] and out.count(b"HTTP/1.1") == 1


async def test_pipelined_requests_are_read_one_ahead_of_the_answer(served) -> None:
    """Each could hold a 1 MiB body: one connection queueing them all could take the process's memory."""
    app, port, srv = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow?1 HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.wait_for(app.slow_started.wait(), 5)
    body = b"b" * 65536
    fast = b"POST /fast HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    for _ in range(40):
        writer.write(fast)
        with contextlib.suppress(asyncio.TimeoutError):  # the socket buffers fill once the server stops reading
            await asyncio.wait_for(writer.drain(), 0.2)
    (connection,) = srv.connections
    assert len(connection._queue) <= 6  # the slow one, and what one read brought in behind it
    answers = b""
    async with asyncio.timeout(10):
        while answers.count(b"|" + body) < 40:  # every one answered, in the end
            answers += await reader.read(1 << 20)
    writer.close()


async def test_a_client_pipelining_past_the_limit_gets_that_many_answers_and_the_close(served) -> None:
    """httptools parses all a read brings before reading can pause: a 128 KiB read of small pipelined requests
    queued about 5,000 of them, 10 MiB held per connection for as long as the first answer took. At
    PIPELINED_MAX nothing more is read; the last one queued is answered with the close, and the client
    sends the rest again on a new connection (RFC 9112 9.3.2)."""
    _, port, srv = served
    requests = b"GET /slow?0.2 HTTP/1.1\r\nhost: x\r\n\r\n" + b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n" * (
        2 * http_server.PIPELINED_MAX)
    out = await exchange(port, requests, b"\x00never")  # until the server closes
    answers = out.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(answers) == http_server.PIPELINED_MAX
    assert [b"connection: close\r\n" in answer for answer in answers] == [False] * (len(answers) - 1) + [True]


async def test_an_app_working_on_after_its_answer_keeps_the_pipelined_answers_in_order(served) -> None:
    """The body's end moved the connection on, and the app's return moved it on again: the second move
    took the next request out of turn."""
    _, port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /early?linger HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12345")
    await asyncio.wait_for(reader.readuntil(b"no"), 5)
    writer.write(b"67890GET /slow?0.6 HTTP/1.1\r\nhost: x\r\n\r\nGET /second HTTP/1.1\r\nhost: x\r\n\r\n"
                 b"GET /third HTTP/1.1\r\nhost: x\r\n\r\n")
    out = await asyncio.wait_for(reader.readuntil(b"x-path: /third"), 5)
    writer.close()
    assert out.index(b"x-path: /slow") < out.index(b"x-path: /second") < out.index(b"x-path: /third")


async def test_an_http_1_0_clients_expectation_is_ignored(served) -> None:
    """RFC 9110 10.1.1: a 100 Continue is for HTTP/1.1 clients only."""
    _, port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /e HTTP/1.0\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
    with pytest.raises(asyncio.TimeoutError):  # nothing comes while the body is awaited
        await asyncio.wait_for(reader.read(100), 0.3)
    writer.write(b"hi")
    out = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"|hi")


async def test_an_absolute_form_target_is_served_as_its_path(served) -> None:
    """RFC 9112 3.2.2: a server must accept it; on both paths."""
    _, port, _ = served
    out = await exchange(port, b"POST http://x/fast HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi"
                               b"GET HTTPS://x:443/p?q=1 HTTP/1.1\r\nhost: x\r\n\r\n", b"q=1|")
    assert b"|hi" in out and b"x-path: /p\r\n" in out


async def test_an_http_1_1_request_without_one_host_header_is_400(served) -> None:
    """RFC 9112 3.2: none, or two, is a 400; HTTP/1.0 may leave it out."""
    _, port, _ = served
    for head in (b"GET /a HTTP/1.1\r\n\r\n", b"GET /a HTTP/1.1\r\nhost: x\r\nhost: y\r\n\r\n",
                 b"GET /a HTTP/1.0\r\nhost: x\r\nhost: y\r\n\r\n"):
        out = await exchange(port, head, b"}}")
        assert out.startswith(b"HTTP/1.1 400 Bad Request") and b"exactly one Host header" in out, out
        json.loads(out.partition(b"\r\n\r\n")[2])
    assert (await exchange(port, b"GET /a HTTP/1.0\r\n\r\n", b"|")).startswith(b"HTTP/1.1 200 OK")


def _send_then_read(port: int, head: bytes, body_bytes: int) -> tuple[str, bytes]:
    """Blocking client: the head, then the body however the server answers meanwhile; then what came back."""
    import socket

    with socket.create_connection(("127.0.0.1", port)) as sock:
        try:
            sock.sendall(head + b"x" * body_bytes)
            sent = "all"
        except OSError as exc:
            sent = type(exc).__name__
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
        return sent, answer


async def test_an_early_answer_on_a_closing_connection_lingers_instead_of_resetting(served) -> None:
    """Closing with the client's bytes unread resets the connection, and a reset can destroy the answer
    before the client reads it: the rest of the request is read and dropped, then the connection closes."""
    _, port, _ = served
    for head in (b"POST /early HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 8388608\r\n\r\n",
                 b"POST /early HTTP/1.0\r\ncontent-length: 8388608\r\n\r\n",
                 b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nZZZ\r\n"):  # a 400, then more
        sent, answer = await asyncio.to_thread(_send_then_read, port, head, 8 << 20)
        assert sent == "all", (head, sent)
        assert answer.startswith((b"HTTP/1.1 413", b"HTTP/1.1 400")), answer[:60]


async def test_lingering_ends_after_a_few_seconds_for_a_client_that_never_stops(served) -> None:
    _, port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /early HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 100000000\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"no"), 5)).startswith(b"HTTP/1.1 413")
    started = asyncio.get_running_loop().time()
    with pytest.raises(ConnectionError):
        async with asyncio.timeout(15):
            while True:  # a trickle, for ever
                writer.write(b"x" * 1024)
                await writer.drain()
                await asyncio.sleep(0.05)
    assert http_server.LINGER_S - 1 < asyncio.get_running_loop().time() - started < http_server.LINGER_S + 3
    writer.close()


async def test_the_servers_own_answers_carry_a_request_id_and_are_counted(served) -> None:
    """A 400 or 431 the app never sees: a client can quote its id, and the router's dashboards count it."""
    _, port, srv = served
    counted: list[tuple[int, str]] = []
    srv.errors = lambda status, code, message, rid: counted.append((status, code))
    out = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n", b"\x00never")
    head = out.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 400 Bad Request"
    assert len([h for h in head if h.startswith(b"x-request-id: ")][0]) == len("x-request-id: ") + 36
    await stream_for_ever(port, b"GET /")  # a head over the limit
    assert counted == [(400, "BadRequest"), (431, "RequestHeaderFieldsTooLarge")]


def ids(answer: bytes) -> dict[bytes, bytes]:
    """An answer's request id headers."""
    lines = answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    return {name: value for name, _, value in (line.partition(b": ") for line in lines) if name in (
        b"x-request-id", b"x-ms-request-id", b"x-ms-client-request-id")}


@pytest.mark.parametrize("served", [0.3], indirect=True)
async def test_the_servers_own_answers_carry_the_clients_request_ids_where_it_sent_them(served) -> None:
    """A client quoting its own id for an answer the app never gave (a head or body that did not parse or
    arrive) found a fresh one there: its ids are reused where the server had read them, under the router's
    rules (the three Azure ML ids; one over MAX_REQUEST_ID characters is not echoed)."""
    _, port, _ = served
    mine = b"x-request-id: mine\r\nx-ms-client-request-id: client\r\n"
    sent = {
        400: b"POST /echo HTTP/1.1\r\nhost: x\r\n%stransfer-encoding: chunked\r\n\r\nZZZ\r\n" % mine,
        501: b"POST /fast HTTP/1.1\r\nhost: x\r\n%stransfer-encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n" % mine,
        408: b"POST /fast HTTP/1.1\r\nhost: x\r\n%scontent-length: 10\r\n\r\n12" % mine,
        431: b"GET /a HTTP/1.1\r\n%sx-big: %s" % (mine, b"v" * (http_server.MAX_HEAD_BYTES + 1)),
    }
    for status, data in sent.items():
        out = await exchange(port, data, b"\x00never")
        assert out.startswith(b"HTTP/1.1 %d " % status), out[:80]
        assert ids(out) == {b"x-request-id": b"mine", b"x-ms-request-id": b"client", b"x-ms-client-request-id": b"client"}
    # A head that parsed but is no request (two Host headers), and a head stalled after its id.
    for data in (b"GET /a HTTP/1.1\r\nhost: x\r\nhost: y\r\nx-request-id: mine\r\n\r\n",
                 b"GET /a HTTP/1.1\r\nhost: x\r\nx-request-id: mine\r\nx-next: "):
        assert ids(await exchange(port, data, b"\x00never"))[b"x-request-id"] == b"mine", data
    too_long = b"r" * (http_server.MAX_REQUEST_ID + 1)
    out = await exchange(port, b"GET /a HTTP/1.1\r\nhost: x\r\nx-request-id: %s\r\nhost: y\r\n\r\n" % too_long,
                         b"\x00never")
    fresh = ids(out)[b"x-request-id"]
    assert len(fresh) == 36 and ids(out) == dict.fromkeys((b"x-request-id", b"x-ms-request-id", b"x-ms-client-request-id"), fresh)


async def test_at_the_connection_cap_the_longest_idle_one_closes_and_with_none_idle_a_new_one_gets_503() -> None:
    """Unbounded, a client opening idle connections took every file descriptor, and then every client's connection
    failed. At the cap an idle one (a client's kept-alive connection, one that sent nothing yet) makes room, as
    nginx reuses its keep-alive connections; one receiving or answering a request never does."""
    app = App()
    counted: list[tuple[int, str]] = []
    srv = http_server.Server(app, grace_s=5.0, max_connections=2, errors=lambda status, code, message, rid: counted.append((status, code)))
    listener = await asyncio.get_running_loop().create_server(srv.connection, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    task = asyncio.create_task(srv.serve(listener.close))
    writers = []

    async def connect(request: bytes) -> asyncio.StreamReader:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(request)
        return reader

    try:
        await connect(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.wait_for(app.slow_started.wait(), 5)
        idle = await connect(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.wait_for(idle.readuntil(b"|"), 5)
        app.slow_started.clear()
        await connect(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")  # the third: the idle one closes for it
        await asyncio.wait_for(app.slow_started.wait(), 5)
        assert await asyncio.wait_for(idle.read(), 5) == b""
        refused = await connect(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")  # both held are busy
        out = await asyncio.wait_for(refused.read(), 5)
        assert out.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and b"\r\nx-request-id: " in out, out
        assert json.loads(out.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "TooManyConnections"
        assert counted == [(503, "TooManyConnections")] and len(srv.connections) == 2
    finally:
        for writer in writers:
            writer.close()
        srv.stop()
        await asyncio.wait_for(task, 10)
