"""JSON log lines on stdout, each carrying the id of the request it belongs to.

The request id lives in a context variable: the event loop sets it per request task, the
run thread per job, so every line logged while serving a request names it, including what
the entry script `print()`s (Azure ML sends print output to the log; so do we).
"""

from __future__ import annotations

import contextvars
import io
import logging
import os
import sys
import time

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STDOUT_FD = 1


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, worker, traceback."""

    def __init__(self, worker: str) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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


class _FdHandler(logging.Handler):
    """Writes each line with one os.write to fd 1, so lines of several processes never interleave."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(_STDOUT_FD, (self.format(record) + "\n").encode())
        except Exception:
            self.handleError(record)


class _PrintToLog(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr: each printed line becomes a log record."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self._logger = logger
        self._level = level
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._logger.log(self._level, line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._logger.log(self._level, self._pending)
            self._pending = ""


def configure(level: str, worker: str, capture_print: bool) -> None:
    handler = _FdHandler()
    handler.setFormatter(JsonFormatter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if capture_print:
        sys.stdout = _PrintToLog(logging.getLogger("entry_script"), logging.INFO)
        sys.stderr = _PrintToLog(logging.getLogger("entry_script"), logging.WARNING)
