"""JSON log lines on stdout, each carrying the id of the request it belongs to.

The request id lives in a context variable: the event loop sets it per request task, the
run thread per job, so every line logged while serving a request names it, including what
the entry script `print()`s (Azure ML sends print output to the log; so do we).
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import os
import sys
import threading
import time

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STDOUT_FD = 1
# Writes to a pipe up to this size are atomic: lines of several processes never interleave.
_PIPE_BUF = 4096


def timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, worker, traceback."""

    def __init__(self, worker: str) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "worker": self._worker,
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid is not None:
            line["request_id"] = rid
        extra = getattr(record, "fields", None)
        if extra:
            line.update(extra)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class AccessLog:
    """One JSON line per scored request, in the same shape as the other log lines.

    It bypasses `logging` (a LogRecord and a write per request cost more than a trivial
    request itself), and lines collect until PIPE_BUF bytes or FLUSH_S have gathered, then
    leave in writes of at most PIPE_BUF bytes, so that they stay whole next to other
    processes' lines.  Flushing once per event-loop iteration instead still cost about 15 us
    per trivial request (a write per one or two requests at wrk -c16); lines now appear up
    to FLUSH_S late.
    """

    FLUSH_S = 0.1

    _LINE = (b'{"time":"%s.%03dZ","level":"INFO","logger":"scoring_image.access","message":"%s /score %d",'
             b'"worker":%s,"request_id":%s,"client_request_id":%s,"status":%d,"duration_ms":%.3f}\n')

    def __init__(self, loop: asyncio.AbstractEventLoop, worker: str) -> None:
        self._loop = loop
        self._worker = orjson.dumps(worker)
        self._lines: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._second = 0
        self._prefix = b""

    def write(self, request_id: str, client_id: bytes | None, method: str, status: int, duration_ms: float) -> None:
        """`method` is an HTTP token: nothing in it to escape. `client_id`: the id the client sent for its own
        tracing (x-ms-client-request-id, or the legacy x-ms-request-id), what its support ticket quotes."""
        now = time.time()
        if int(now) != self._second:  # strftime once a second, not once a request
            self._second = int(now)
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)).encode()
        line = self._LINE % (self._prefix, int(now % 1 * 1000), method.encode(), status, self._worker,
                             orjson.dumps(request_id), orjson.dumps(client_id.decode("latin-1") if client_id else None),
                             status, duration_ms)
        if self._size + len(line) > _PIPE_BUF:
            self.flush()
        if self._timer is None:
            self._timer = self._loop.call_later(self.FLUSH_S, self.flush)
        self._lines.append(line)
        self._size += len(line)

    def flush(self) -> None:
        """Write what has gathered (the worker calls it last, before it exits)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            os.write(_STDOUT_FD, b"".join(self._lines))
            self._lines.clear()
            self._size = 0


class _FdHandler(logging.Handler):
    """Writes each line with one os.write to fd 1, so lines of several processes never interleave."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(_STDOUT_FD, (self.format(record) + "\n").encode())
        except Exception:
            self.handleError(record)


_logging_a_line = threading.local()  # set while a printed line is being logged, on the thread that printed it


class _PrintToLog(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr: each printed line becomes a log record. What is asked of a
    real stream beyond text (its fd for faulthandler or a subprocess, its bytes buffer, its encoding)
    is the real stream's: those bytes reach the container log as they are, not as records."""

    def __init__(self, logger: logging.Logger, level: int, stream: io.TextIOBase) -> None:
        self._logger = logger
        self._level = level
        self._stream = stream
        self._pending = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self._stream.errors

    @property
    def buffer(self) -> io.BufferedIOBase:
        return self._stream.buffer  # type: ignore[attr-defined]

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if getattr(_logging_a_line, "active", False):
            # A handler of the script's own on this stream (logging.basicConfig(force=True) puts one at the root)
            # writing the line being logged: logged again, it would come back here without end.
            return self._stream.write(text)
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        _logging_a_line.active = True
        try:
            for line in lines:
                self._logger.log(self._level, line)
        finally:
            _logging_a_line.active = False
        return len(text)

    def flush(self) -> None:
        if getattr(_logging_a_line, "active", False):
            self._stream.flush()
        elif self._pending:
            self.write("\n")


def configure(level: str, worker: str, capture_print: bool) -> None:
    handler = _FdHandler()
    handler.setFormatter(JsonFormatter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The Azure SDK logs each HTTP call of the exporters at INFO: noise, and exported in turn.
    logging.getLogger("azure").setLevel(max(logging.WARNING, root.level))
    if capture_print:
        sys.stdout = _PrintToLog(logging.getLogger("entry_script"), logging.INFO, sys.__stdout__)  # type: ignore[arg-type]
        sys.stderr = _PrintToLog(logging.getLogger("entry_script"), logging.WARNING, sys.__stderr__)  # type: ignore[arg-type]
