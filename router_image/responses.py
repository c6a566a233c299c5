"""The router's own answers: JSON bodies, and errors as `{"error": {"code", "message"}, "message"}`, as the
scorer's: the message also at the top, where clients written for Azure ML read it (`{"message": ...}`)."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from router_image import metrics

log = logging.getLogger("router")
Headers = list[tuple[bytes, bytes]]
REQUEST_ID = b"x-request-id"
CLIENT_REQUEST_ID = b"x-ms-client-request-id"
LEGACY_REQUEST_ID = b"x-ms-request-id"  # what clients sent before x-ms-client-request-id
_ID_HEADERS = (REQUEST_ID, CLIENT_REQUEST_ID, LEGACY_REQUEST_ID)
MAX_REQUEST_ID = 100  # as the scorer takes one


class HttpError(Exception):
    """An answer the router gives itself (401, 404, 413, 502, 503, 504 ...)."""

    def __init__(self, status: int, code: str, message: str, headers: Headers | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or []


def error_answer(error: HttpError, request: Headers, where: str, route: tuple[str, str]) -> tuple[Headers, bytes]:
    """The error's headers (its own, the content type and the request ids; whoever sends it adds the length)
    and body: the same on the ASGI path and the relay's. No replica logged such a request, so the router
    does, under the id the client gets (its own x-request-id, as the scorer takes it, else a new one),
    and counts it by its route (kind, name; metrics.NO_ROUTE for none) and code (401s and queue timeouts
    included). The ids are those a scorer's answer carries (scoring_image/app.py), so that a client of Azure
    ML's x-ms-request-id or x-ms-client-request-id finds its id on every answer, whoever gave it."""
    ids = {k: v for k, v in request if k in _ID_HEADERS and len(v) <= MAX_REQUEST_ID}
    rid = ids.get(REQUEST_ID) or str(uuid.uuid4()).encode()
    client = ids.get(CLIENT_REQUEST_ID)
    legacy = ids.get(LEGACY_REQUEST_ID)
    log.log(logging.WARNING if error.status >= 500 else logging.INFO, "%s: %d %s: %s", where, error.status, error.code,
            error, extra={"request_id": rid.decode("latin-1")})
    metrics.count_error(route, error.status, error.code)
    body = json.dumps({"error": {"code": error.code, "message": str(error)}, "message": str(error)}).encode()
    return [(b"content-type", b"application/json"), (REQUEST_ID, rid), (LEGACY_REQUEST_ID, legacy or client or rid),
            (CLIENT_REQUEST_ID, client or legacy or rid), *error.headers], body


async def respond(send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send, status: int, payload: Any, headers: Headers | None = None) -> None:
    await respond(send, status, json.dumps(payload).encode(), [(b"content-type", b"application/json"), *(headers or [])])


async def respond_error(send, error: HttpError, scope: dict, route: tuple[str, str] = metrics.NO_ROUTE) -> None:
    headers, body = error_answer(error, scope["headers"], scope["path"], route)
    await respond(send, error.status, body, headers)
