"""The router's own answers: JSON bodies, and errors as `{"error": {"code", "message"}, "message"}`, as the
scorer's: the message also at the top, where clients written for Azure ML read it (`{"message": ...}`)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from http_server import id_headers
from router_image import metrics

log = logging.getLogger("router")
Headers = list[tuple[bytes, bytes]]
# Error answers logged per route, status and code in each LOG_WINDOW_S; the rest are summed up in one line.
LOG_BURST = 20
LOG_WINDOW_S = 10.0


class HttpError(Exception):
    """An answer the router gives itself (401, 404, 413, 502, 503, 504 ...)."""

    def __init__(self, status: int, code: str, message: str, headers: Headers | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or []


def error_answer(error: HttpError, request: Headers, where: str, route: tuple[str, str]) -> tuple[Headers, bytes]:
    """The error's headers (its own, the content type and the request ids; whoever sends it adds the length)
    and body: the same on the ASGI path and the relay's. No replica logged such a request, so the router
    does, under the id the client gets (its own x-request-id, as the scorer takes it, else a new one; at most
    LOG_BURST lines per route and code in a window, see ErrorLog), and counts it by its route (kind, name;
    metrics.NO_ROUTE for none) and code (401s and queue timeouts included). The ids are those a scorer's answer
    carries, as the HTTP server's own answers do (http_server.id_headers)."""
    ids = id_headers(request)
    _tell(route, error.status, error.code, ids[0][1].decode("latin-1"), "%s: %d %s: %s", where, error.status, error.code,
          error)
    body = json.dumps({"error": {"code": error.code, "message": str(error)}, "message": str(error)}).encode()
    return [(b"content-type", b"application/json"), *ids, *error.headers], body


def server_error(status: int, code: str, message: str, request_id: str) -> None:
    """An answer the HTTP server gave itself (http_server.ServerErrors): a request that did not parse (BadRequest), a
    head too large (RequestHeaderFieldsTooLarge), one that did not arrive in time (RequestTimeout), a connection over
    the cap (TooManyConnections), an app that failed (InternalError). No route is known for them."""
    _tell(metrics.NO_ROUTE, status, code, request_id, "%d %s: %s", status, code, message)


def _tell(route: tuple[str, str], status: int, code: str, request_id: str, line: str, *args: Any) -> None:
    """Logged under its request id, within ErrorLog's bounds, and counted by its route and code."""
    if _errors.admit((route, status, code)):
        log.log(_level(status), line, *args, extra={"request_id": request_id})
    metrics.count_error(route, status, code)


def _level(status: int) -> int:
    return logging.WARNING if status >= 500 else logging.INFO


class ErrorLog:
    """How many error answers of each route, status and code the current window logged: LOG_BURST each, then
    one line when the window ends saying how many more there were (router_error_responses_total counts all).
    A flood of junk requests (401, 404), or an overload's 503s, wrote a line each: megabytes a second into a
    log pipeline billed by the GB, on the router's CPU when it had the least to spare."""

    def __init__(self) -> None:
        self._counts: dict[tuple[tuple[str, str], int, str], int] = {}
        self._window: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def admit(self, key: tuple[tuple[str, str], int, str]) -> bool:
        """Whether this answer gets its own line. Keys are bounded: a route no config names is metrics.NO_ROUTE."""
        loop = asyncio.get_running_loop()
        if self._window is None or self._loop is not loop:  # a window of a loop that ended never closes
            self._counts.clear()
            self._loop, self._window = loop, loop.call_later(LOG_WINDOW_S, self._close)
        count = self._counts[key] = self._counts.get(key, 0) + 1
        return count <= LOG_BURST

    def _close(self) -> None:
        self._window = None
        for ((kind, name), status, code), count in self._counts.items():
            if count > LOG_BURST:
                log.log(_level(status), "%s: %d more %d %s answers in %g s, not logged one by one",
                        f"{kind} {name}" if kind else "no route", count - LOG_BURST, status, code, LOG_WINDOW_S)
        self._counts.clear()


_errors = ErrorLog()


async def respond(send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send, status: int, payload: Any, headers: Headers | None = None) -> None:
    await respond(send, status, json.dumps(payload).encode(), [(b"content-type", b"application/json"), *(headers or [])])


async def respond_error(send, error: HttpError, scope: dict, route: tuple[str, str] = metrics.NO_ROUTE) -> None:
    headers, body = error_answer(error, scope["headers"], scope["path"], route)
    await respond(send, error.status, body, headers)
