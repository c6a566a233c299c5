"""The router's own answers: JSON bodies, and errors as `{"error": {"code", "message"}}`."""

from __future__ import annotations

import json
from typing import Any

Headers = list[tuple[bytes, bytes]]


class HttpError(Exception):
    """An answer the router gives itself (401, 404, 413, 502, 503, 504 ...)."""

    def __init__(self, status: int, code: str, message: str, headers: Headers | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or []


def error_answer(error: HttpError) -> tuple[Headers, bytes]:
    """The error's headers (its own and the content type; whoever sends it adds the length) and body:
    the same on the ASGI path and the relay's."""
    body = json.dumps({"error": {"code": error.code, "message": str(error)}}).encode()
    return [(b"content-type", b"application/json"), *error.headers], body


async def respond(send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send, status: int, payload: Any, headers: Headers | None = None) -> None:
    await respond(send, status, json.dumps(payload).encode(), [(b"content-type", b"application/json"), *(headers or [])])


async def respond_error(send, error: HttpError) -> None:
    headers, body = error_answer(error)
    await respond(send, error.status, body, headers)
