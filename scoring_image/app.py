"""The HTTP surface of one worker: Azure ML's routes and headers as a plain ASGI app.

Plain ASGI rather than a framework: five fixed routes need no router, and the scoring path
is the hot path, where every microsecond per request shows in the benchmark.
Everything CPU-heavy (the entry script, encoding its result) runs on the worker's run thread, as does the spooling
of what a request collects (a large record's write would hold the loop).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import operator
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import orjson
import werkzeug.exceptions
import werkzeug.wrappers

from http_server import MAX_REQUEST_ID
from scoring_image import entry_script, logs, metrics, swagger
from scoring_image.amlcompat import AMLRequest, AMLResponse, Headers
from scoring_image.collection import modeldatacollector
from scoring_image.collection.spool import Spool
from scoring_image.config import ScorerSettings
from scoring_image.entry_script import BadInput, EntryScript
from scoring_image.readiness import Board
from scoring_image.runner import Abandoned, Runner, RunTimeout

log = logging.getLogger("scoring_image")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CLIENT_GONE = 499  # nginx's status for a client that left before its answer (the router's too)
_JSON = b"application/json"
_JSON_HEADER = (b"content-type", _JSON)
_TEXT_HEADER = (b"content-type", b"text/plain; charset=utf-8")
_MEDIA_TYPE_END = (b"", b";", b" ", b"\t")  # what may follow a media type in Content-Type
_SCORE_METHODS = b"GET, HEAD, POST, OPTIONS"
# numpy arrays; and keys that are not strings written as json.dumps writes them ({0: "setosa"} -> {"0": ...}).
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
# A header value or name with these would end the header, or the head, early: what run() chose to send
# could forge headers or a second response (response splitting); past Latin-1, HTTP/1.1 cannot send it.
_UNSAFE_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u0100-\U0010ffff]")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BODILESS = (204, 304)  # statuses whose response ends with its head, whatever it says of a length
# What the server sets on every answer: run()'s own would frame the body twice (a second Content-Length, or
# Transfer-Encoding beside it: the next response on the connection read from the middle of this one), or
# send the ids twice. As Azure ML's server, the server's values win.
_SERVER_HEADERS = frozenset((b"content-length", b"transfer-encoding", b"x-request-id", b"x-ms-request-id",
                             b"x-ms-client-request-id", b"x-ms-run-function-failed", b"x-ms-run-fn-exec-ms"))


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = (),
                 run_failed: bool = False, run_ms: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers  # beside content-type: json (a 405's Allow)
        self.run_failed = run_failed  # the scoring script failed, not the request or the server
        self.run_ms = run_ms  # how long run() ran before it raised; None: it never ran


class _Result:
    """What the run thread hands back: an encoded response and run()'s own duration (None: run() never ran);
    `run_failed`: an AMLResponse of run()'s own that says the script failed (a 5xx, or run_function_failed)."""

    __slots__ = ("status", "headers", "body", "run_ms", "run_failed")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, run_ms: float | None,
                 run_failed: bool = False) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.run_ms = run_ms
        self.run_failed = run_failed


class ScoringApp:
    def __init__(
        self,
        settings: ScorerSettings,
        runner: Runner,
        board: Board,
        stats: metrics.Recorder,
        spool: Spool | None,
        recycle: Callable[[], None],
        access_log: logs.AccessLog | None,
    ) -> None:
        self._settings = settings
        self._runner = runner
        self._board = board
        self._metrics = stats
        self._spool = spool
        self._drop_logged_at = -math.inf
        self._drop_lock = threading.Lock()
        self._recycle = recycle
        self._access_log = access_log
        self.script: EntryScript | None = None
        self.not_ready = "init() has not finished"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        method = scope["method"]
        if path == "/score":
            await self._score(scope, receive, send)
        elif method not in ("GET", "HEAD"):
            await _send_error(send, HttpError(405, "MethodNotAllowed", f"{method} is not allowed on {path}",
                                              ((b"allow", b"GET, HEAD"),)))
        elif path == "/":
            await _send(send, 200, [_TEXT_HEADER], b"Healthy")
        elif path == "/ready":
            await self._ready(send)
        elif path == "/metrics":
            await _send(send, 200, [(b"content-type", metrics.CONTENT_TYPE.encode())], metrics.scrape(self._metrics.folder))
        elif path == "/swagger.json":
            await self._swagger(scope, send)
        else:
            await _send_error(send, HttpError(404, "NotFound", f"no route {path}"))

    # -- /score ---------------------------------------------------------------------------

    async def _score(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = client_id = legacy_id = trace_id = content_type = None
        length = -1
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"x-ms-client-request-id":
                client_id = value
            elif name == b"x-ms-request-id":  # what clients sent before x-ms-client-request-id
                legacy_id = value
            elif name == b"traceid":
                trace_id = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = int(value)
        for header, value in ((b"x-request-id", request_id), (b"x-ms-client-request-id", client_id),
                              (b"x-ms-request-id", legacy_id)):  # each checked as sent: each is echoed back
            if value is not None and len(value) > MAX_REQUEST_ID:
                await _send_error(send, HttpError(431, "RequestHeaderFieldsTooLarge",
                                                  f"{header.decode()} is longer than {MAX_REQUEST_ID} characters"))
                return
        client_id = client_id or legacy_id
        if request_id is None:
            request_id = _new_request_id()
        rid = request_id.decode("latin-1")
        logs.request_id.set(rid)
        status = CLIENT_GONE  # unless its answer is sent: a router that gave up, a client that left (run() may have run)
        try:
            self._metrics.in_flight += 1
            try:
                result = await self._scored(scope, receive, content_type, length, rid)
                run_failed = result.run_failed
            except HttpError as exc:
                result = _Result(exc.status, [_JSON_HEADER, *exc.headers], _error_body(exc), exc.run_ms)
                run_failed = exc.run_failed
            finally:
                self._metrics.in_flight -= 1
            body = result.body
            # As Azure ML's server answers them: the legacy x-ms-request-id is the client's id when it sent one.
            headers = [
                *result.headers,
                (b"x-request-id", request_id),
                (b"x-ms-request-id", legacy_id or client_id or request_id),
                (b"x-ms-client-request-id", client_id or request_id),
                # As Azure ML's AMLResponse: callers tell a failing scoring script from a failing request or server.
                (b"x-ms-run-function-failed", b"True" if run_failed else b"False"),
            ]
            if result.status not in _BODILESS:  # a 204 has no Content-Length (RFC 9110 8.6); a 304's is not its own
                headers.append((b"content-length", b"%d" % len(body)))
            if result.run_ms is not None:  # only where run() ran (a request refused before it has none, as in Azure ML)
                headers.append((b"x-ms-run-fn-exec-ms", b"%.3f" % result.run_ms))
            if trace_id is not None:
                headers.append((b"traceid", trace_id))
            await send({"type": "http.response.start", "status": result.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            status = result.status
        except Exception:  # not CancelledError (a BaseException): that is the client leaving
            status = 500  # a fault of the server's own, not a client that left
            raise
        finally:
            elapsed = time.perf_counter() - started
            self._metrics.observe(status, elapsed)
            if self._access_log is not None:
                self._access_log.write(rid, client_id, scope["method"], status, elapsed * 1000)

    async def _scored(self, scope: Scope, receive: Receive, content_type: bytes | None, length: int, request_id: str) -> _Result:
        method = scope["method"]
        script = self.script
        if method == "OPTIONS" and (script is None or script.form != "rawhttp"):  # a raw script answers its own
            return _Result(200, [(b"allow", _SCORE_METHODS)], b"", None)
        if script is None:
            raise HttpError(503, "NotReady", self.not_ready)
        if method not in ("GET", "HEAD", "POST", "OPTIONS"):
            raise HttpError(405, "MethodNotAllowed", f"{method} is not allowed on /score", ((b"allow", _SCORE_METHODS),))
        if length > self._settings.max_body_bytes:
            raise HttpError(413, "PayloadTooLarge", f"the body is over {self._settings.max_body_bytes} bytes")
        body = await _read_body(receive, self._settings.max_body_bytes)

        parsed = None
        json_body = False  # collected as JSON
        lenient = False  # a JSON body only Python's json reads
        headers = Headers(scope["headers"]) if script.wants_headers else None
        if script.form == "rawhttp":
            call = _Call(script, AMLRequest.of(scope, body), headers)
        else:
            if method in ("GET", "HEAD"):  # HEAD as GET, as Flask answers it
                parsed, json_body = _query_input(scope["query_string"]), True
                try:
                    body = orjson.dumps(parsed)
                except TypeError:  # an int over 64 bits: as Python's json writes it, and spooled as text
                    body, lenient = json.dumps(parsed, separators=(",", ":")).encode(), True
            elif content_type is not None and _is_json(content_type):
                json_body = True
                if script.form == "schema":  # its inputs
                    parsed, lenient = _loads(body)
                else:
                    lenient = _check_json(body)
            elif script.form == "schema":
                raise HttpError(400, "BadRequest", "this service expects a JSON body (content-type: application/json)")
            try:
                payload = script.prepare(body, parsed)
            except BadInput as exc:
                raise HttpError(400, "BadRequest", str(exc)) from None
            call = _Call(script, payload, headers)
        if self._spool is not None:
            call.collected = []
            call.spool = partial(self._spool_call, call, request_id, body, json_body and not lenient,
                                 script.form == "schema", method)

        try:
            result: _Result = await self._runner.submit(call)
        except asyncio.CancelledError:
            call.unanswered = True
            raise
        except RunTimeout:
            call.unanswered = True
            log.error("run() overran scoring_timeout_ms=%d; recycling this worker", self._settings.scoring_timeout_ms)
            self._metrics.observe_run(time.perf_counter() - call.started)  # still running: at least this long
            self._recycle()
            # Azure ML's words (azureml_inference_server_http/server/routes.py), under the status an AKS client gets
            # from azureml-fe for a scoring timeout, and from the router here: 504, where that server answers 500.
            raise HttpError(504, "Timeout", f"Scoring timeout after {self._settings.scoring_timeout_ms} ms",
                            run_failed=True) from None
        except Abandoned:
            raise HttpError(503, "WorkerStopping", "this worker is stopping (replaced, or the server shuts down); retry") from None
        except BadInput as exc:  # a schema input that does not fit
            raise HttpError(400, "BadRequest", str(exc), run_ms=call.run_ms) from None
        except werkzeug.exceptions.HTTPException as exc:  # a raw request read as JSON that is not (400, 415), ...
            status = exc.code or 400  # a 5xx is the script failing, as one it returns
            raise HttpError(status, type(exc).__name__, exc.description or str(exc), run_failed=status >= 500,
                            run_ms=call.run_ms) from None
        except HttpError as exc:  # what run() returned cannot be sent
            exc.run_ms = call.run_ms
            raise
        except BaseException as exc:  # SystemExit or KeyboardInterrupt from run() too: that request's 500 only
            log.error("run() failed", exc_info=exc)
            if call.run_ms is not None:
                self._metrics.observe_run(call.run_ms / 1000)
            raise HttpError(500, "ScoringError", f"run() raised {type(exc).__name__}; see the server log for the traceback",
                            run_failed=True, run_ms=call.run_ms) from None
        assert call.run_ms is not None  # it returned
        self._metrics.observe_run(call.run_ms / 1000)
        return result

    def _spool_call(self, call: _Call, request_id: str, body: bytes, as_json: bool, schema: bool, method: str,
                    result: _Result | None) -> None:
        """On the run thread, after run() and before the answer: what run() collected, kept whatever it then did
        (as Azure ML's collector writes it at once), and, where the script collects nothing itself, the request's
        body and answer (`result`: None where run() failed). Not on the loop: a 50 MB record took ~180 ms to
        write, every other request waiting."""
        assert self._spool is not None and call.collected is not None
        self.spool_collected(call.collected)
        if result is None or call.unanswered or modeldatacollector.made or result.status >= 400 or method == "OPTIONS":
            return  # a preflight is no scoring either
        if not as_json:
            data: Any = body.decode(errors="replace")
        elif schema:  # read by orjson, which goes deeper than the shipper's decoder
            data = _spooled_json(body)
        else:  # checked by `_check_json`, with the shipper's decoder
            data = _one_line(body)
        if result.headers[0] is _JSON_HEADER:  # run()'s value, encoded by orjson: JSON on one line
            prediction: Any = result.body
        elif _JSON_HEADER in result.headers:  # an AMLResponse's body, whose headers of its own may come first
            prediction = _spooled_json(result.body)
        else:
            prediction = result.body.decode(errors="replace")
        if not self._spool.append(request_id, data, prediction):
            self._dropped_record()

    def spool_collected(self, lines: list[bytes]) -> None:
        """What the script's ModelDataCollectors were handed: in a request's run(), or outside one (init(), a thread
        of the script's own), on the thread that collected it."""
        assert self._spool is not None
        for line in lines:
            if not self._spool.write(line):
                self._dropped_record()

    def _dropped_record(self) -> None:
        """Collection is a side channel: the client still gets its prediction. Counted (from the threads that
        write records), and logged at most once a minute (a full disk fails every request)."""
        with self._drop_lock:
            self._metrics.collection_dropped += 1
            now = time.monotonic()
            if now - self._drop_logged_at < 60:
                return
            self._drop_logged_at = now
        log.error("a collected record could not be spooled (its disk full, or the spool at its budget?); %d dropped so far",
                  self._metrics.collection_dropped)

    # -- the other routes -----------------------------------------------------------------

    async def _ready(self, send: Send) -> None:
        waiting = self._board.not_ready()
        if not waiting:
            await _send(send, 200, [_JSON_HEADER], b'{"ready":true}')
            return
        reasons = "; ".join(f"worker {s.worker}: {s.state}{' - ' + s.reason if s.reason else ''}" for s in waiting)
        await _send_error(send, HttpError(503, "NotReady", reasons))

    async def _swagger(self, scope: Scope, send: Send) -> None:
        script = self.script
        if script is None:
            await _send_error(send, HttpError(503, "NotReady", self.not_ready))
            return
        query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        try:
            document = swagger.document(script.run, self._settings.data_collection_service, query.get("version", "2"),
                                        Path(self._settings.app_root), script.form == "schema")
        except swagger.UnsupportedVersion as exc:  # a 404, as Azure ML's server answers it
            await _send_error(send, HttpError(404, "NotFound", str(exc)))
            return
        except ValueError as exc:  # the app root's own file is not JSON
            await _send_error(send, HttpError(500, "SwaggerError", str(exc)))
            return
        await _send(send, 200, [_JSON_HEADER], orjson.dumps(document))

    # -- readiness, set by the worker -----------------------------------------------------

    def initialize(self) -> None:
        """Load the entry script and run its init() (on the run thread, before any run())."""
        script = entry_script.load(Path(self._settings.entry_script_path))
        if script.init is not None:
            script.init()
        self.script = script


class _Call:
    """One run() on the run thread, and how long it ran: also when it raised (the answer says so, and the run
    histogram counts it); None if it never started. `started`: when it did (perf_counter), for one that overran."""

    __slots__ = ("_script", "_payload", "_headers", "run_ms", "started", "collected", "spool", "unanswered")

    def __init__(self, script: EntryScript, payload: Any, headers: Headers | None) -> None:
        self._script = script
        self._payload = payload
        self._headers = headers
        self.run_ms: float | None = None
        self.started = 0.0
        # Where the service collects: the spool lines of what run() hands the script's ModelDataCollectors, and what
        # spools them and the request's record after run(), with its result (None where it failed).
        self.collected: list[bytes] | None = None
        self.spool: Callable[[_Result | None], None] | None = None
        self.unanswered = False  # the request was answered without its result (run() overran, the client left)

    def __call__(self) -> _Result:
        result = None
        try:
            result = self._run()
            return result
        finally:
            if self.spool is not None:
                self.spool(result)

    def _run(self) -> _Result:
        collecting = None if self.collected is None else modeldatacollector.pending.set(self.collected)
        self.started = started = time.perf_counter()
        try:
            output = self._script.call(self._payload, self._headers)
        finally:
            self.run_ms = run_ms = (time.perf_counter() - started) * 1000
            if collecting is not None:
                modeldatacollector.pending.reset(collecting)
        if isinstance(output, AMLResponse):
            return _aml_response(output, run_ms)
        if output is None:  # {}, as Azure ML's server answers it (it wraps the value in an AMLResponse)
            return _Result(200, [_JSON_HEADER], b"{}", run_ms)
        try:
            return _Result(200, [_JSON_HEADER], orjson.dumps(output, default=_to_builtin, option=_DUMPS_OPTIONS), run_ms)
        except TypeError as exc:
            if isinstance(output, werkzeug.wrappers.Response):  # Flask's too: sent as Azure ML's server sends it
                return _own_response(output.status_code, output.headers.items(), _whole_body(output), False, run_ms)
            # Not _JSON_HEADER itself: the spool reads this answer as an AMLResponse's, as text where orjson cannot.
            return _Result(200, [(b"content-type", _JSON)], _lenient_dumps(output, exc), run_ms)


def _aml_response(response: AMLResponse, run_ms: float) -> _Result:
    return _own_response(response.status_code, response.header_items(), response.body,
                         bool(response.run_function_failed), run_ms)


def _own_response(status_code: Any, header_items: Iterable[tuple[Any, Any]], body: bytes, failed: bool,
                  run_ms: float) -> _Result:
    """A response run() made itself (an AMLResponse, a Flask Response), as it can be sent."""
    given = list(header_items)
    for name, value in given:
        if not _TOKEN.fullmatch(str(name)) or _UNSAFE_IN_HEADER.search(str(value)):
            raise HttpError(500, "ScoringError", f"run() returned a response header that is not a valid HTTP header: "
                            f"{str(name)[:40]!r} (a line break, a control character or one outside Latin-1 in its name or value)",
                            run_failed=True)
    status = _final_status(status_code)
    headers = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in given]
    headers = [header for header in headers if header[0] not in _SERVER_HEADERS]
    if not any(name == b"content-type" for name, _ in headers):
        headers.insert(0, _TEXT_HEADER)
    # Sent, a body would be read as the start of the next response on the connection (as Werkzeug, dropped).
    # As Azure ML's server: a 5xx of run()'s own counts as the script failing, as does one it says so of.
    return _Result(status, headers, b"" if status in _BODILESS else body, run_ms, status >= 500 or failed)


def _whole_body(response: werkzeug.wrappers.Response) -> bytes:
    """A Werkzeug response's body, read in full, a file's too: `send_file` answers in direct passthrough, whose
    get_data() refuses (a WSGI server would stream the file); the file is closed after."""
    try:
        return b"".join(response.iter_encoded())
    finally:
        response.close()


def _final_status(status: Any) -> int:
    """An AMLResponse's status as sent: a 1xx is an interim answer, after which the client reads the body as
    the real one, and what is not three digits no client reads at all. A status in text ("201 CREATED", "404")
    is its number, as Flask's Response reads it."""
    try:
        code = operator.index(status)  # numpy ints too
    except TypeError:
        number = status.strip().partition(" ")[0] if isinstance(status, str) else ""
        code = int(number) if number.isascii() and number.isdigit() else None
    if code is None or not 200 <= code <= 599:
        raise HttpError(500, "ScoringError", f"run() returned an AMLResponse whose status {str(status)[:40]!r} is "
                        "not a final HTTP status (an int from 200 to 599)", run_failed=True)
    return code


def _is_json(content_type: bytes) -> bool:
    """application/json, whatever its parameters (media types ignore case), and not application/jsonl or
    another type it is the start of: those a raw run() gets as they are, as in Azure ML."""
    return content_type[: len(_JSON)].lower() == _JSON and content_type[len(_JSON):len(_JSON) + 1] in _MEDIA_TYPE_END


def _query_input(query: bytes) -> dict[str, Any]:
    """A GET's input, as Azure ML's server reads it: the query's parameters as a JSON object, each value
    read as JSON where it is JSON (`?a=1&b=[1,2]&c=x` is {"a": 1, "b": [1, 2], "c": "x"}), a repeated
    one as a list; a value nested too deeply for Python's json stays text."""
    values: dict[str, list[Any]] = {}
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        try:
            values.setdefault(key, []).append(json.loads(value))
        except (ValueError, RecursionError):
            values[key].append(value)
    return {key: found[0] if len(found) == 1 else found for key, found in values.items()}


def _loads(body: bytes) -> tuple[Any, bool]:
    """A JSON body, and whether only Python's json read it: what orjson refuses but Python's json reads (NaN,
    Infinity: json.dumps writes them) is read as Azure ML's server reads it, and spooled as text (orjson
    ships the spool)."""
    try:
        return orjson.loads(body), False
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body), True
        except (ValueError, RecursionError):
            raise HttpError(400, "BadRequest", f"malformed JSON: {exc}") from None


def _check_json(body: bytes) -> bool:
    """An undecorated run() gets the text (as Azure ML passes it), so the body is only checked: read into
    Python objects it is ~9x its size, and it holds the loop (liveness probes too) for seconds at 100 MB;
    checked, it is neither. Returns whether only Python's json reads it (as `_loads`)."""
    try:
        msgspec.json.decode(body, type=msgspec.Raw)
        return False
    except (msgspec.DecodeError, RecursionError) as exc:
        try:
            json.loads(body)  # NaN, Infinity: as Azure ML's run() reads them
            return True
        except (ValueError, RecursionError):
            raise HttpError(400, "BadRequest", f"malformed JSON: {str(exc).removeprefix('JSON is malformed: ')}") from None


def _lenient_dumps(output: Any, refused: TypeError) -> bytes:
    """run()'s value that orjson refuses but Python's json writes (an int over 64 bits), written as Azure ML's
    server writes it."""
    try:
        return json.dumps(output, default=_to_builtin, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        raise HttpError(500, "ScoringError", f"run() returned a value that is not JSON-serializable: {refused}",
                        run_failed=True) from None


def _to_builtin(value: Any) -> Any:
    """numpy scalars, pandas objects and the like: whatever they convert to."""
    for method in ("tolist", "to_dict", "item"):
        convert = getattr(value, method, None)
        if callable(convert):
            return convert()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


_ID_PREFIX = str(uuid.uuid4())[:24].encode()
_id_counter = itertools.count()


def _new_request_id() -> bytes:
    """UUID-shaped: this process's random uuid4 prefix, then a counter (uuid4() per request costs a syscall)."""
    return b"%s%012x" % (_ID_PREFIX, next(_id_counter))


async def _read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:
        return body
    chunks = []
    size = 0
    while True:
        size += len(body)
        if size > limit:
            raise HttpError(413, "PayloadTooLarge", f"the body is over {limit} bytes")
        chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()
        body = message.get("body", b"")


def _one_line(body: bytes) -> bytes:
    """A JSON body as a spool record's field, on one line (the spool, and the readers of what is shipped, take
    CR as well as LF for a line's end): a line break in JSON is whitespace between tokens, never raw in a
    string, so a space does as well."""
    if b"\n" in body or b"\r" in body:
        body = body.replace(b"\r", b" ").replace(b"\n", b" ")
    return body


def _spooled_json(body: bytes) -> bytes | str:
    """JSON by its content type, or read by orjson, as a spool record's field: as it is (on one line) where the
    shipper's decoder reads it and it is UTF-8, else as text. Text that is not JSON after all, or JSON nested
    deeper than that decoder goes (orjson reads 1024 levels, msgspec about 990), would be a record the shipper
    skips; read into objects, JSON past the 254 levels orjson writes failed the request after run() had
    answered. Read as Raw, the decoder never looks at a string's bytes: an AMLResponse's Latin-1 would have
    been shipped as it is, and the blob, every record in it, would not be UTF-8."""
    try:
        msgspec.json.decode(body, type=msgspec.Raw)
        if not body.isascii():
            body.decode()
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return body.decode(errors="replace")
    return _one_line(body)


def _error_body(error: HttpError) -> bytes:
    """`{"error": {"code", "message"}}`, with the message also at the top, where clients written for Azure ML's
    server read it (its errors are `{"message": ...}`, azureml_inference_server_http/server/routes.py)."""
    return orjson.dumps({"error": {"code": error.code, "message": error.message}, "message": error.message})


async def _send_error(send: Send, error: HttpError) -> None:
    await _send(send, error.status, [_JSON_HEADER, *error.headers], _error_body(error))


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
