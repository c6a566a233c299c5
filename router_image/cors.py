"""CORS preflights, answered by the router itself.

A browser asks `OPTIONS` before a cross-origin call, and sends no credentials with it, so a preflight
the router passed on would be an anonymous request taking a replica's slot (one slot is Azure ML's
default): anyone could queue the paying requests into 503s and drive the autoscaler up. The router
answers it from the route's origins, which are the scorer's own (`AML_CORS_ORIGINS`, components.routes),
as the scorer's CORS middleware would: the methods a score route takes, any request header, for 10
minutes. The call itself then goes to the scorer, authenticated, and its answer carries the origin.
"""

from __future__ import annotations

METHODS = b"GET, POST, OPTIONS"
MAX_AGE = b"600"


def preflight(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes] | None:
    """The CORS headers of an OPTIONS that is a preflight (Origin and Access-Control-Request-Method, no body),
    else None: any other OPTIONS is a call like the others."""
    asked: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in (b"origin", b"access-control-request-method", b"access-control-request-headers"):
            asked[name] = value
        elif name == b"transfer-encoding" or name == b"content-length" and value.strip(b" \t0"):
            return None
    return asked if b"origin" in asked and b"access-control-request-method" in asked else None


def refusal(origins: tuple[str, ...], asked: dict[bytes, bytes]) -> str | None:
    """Why the preflight is refused (an origin not listed, a method the route does not take), or None."""
    origin = asked[b"origin"].decode("latin-1")
    method = asked[b"access-control-request-method"].decode("latin-1")
    if "*" not in origins and origin not in origins:
        return f"origin {origin!r} is not one this route admits (AML_CORS_ORIGINS)"
    if method.encode() not in METHODS.split(b", "):
        return f"method {method!r}: a score route takes {METHODS.decode()}"
    return None


def answer_headers(origins: tuple[str, ...], asked: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """An admitted preflight's answer: any origin as `*`, a listed one named (and `Vary: Origin`)."""
    headers = [(b"access-control-allow-origin", b"*")] if "*" in origins else [
        (b"access-control-allow-origin", asked[b"origin"]), (b"vary", b"Origin")]
    headers += [(b"access-control-allow-methods", METHODS), (b"access-control-max-age", MAX_AGE)]
    if b"access-control-request-headers" in asked:
        headers.append((b"access-control-allow-headers", asked[b"access-control-request-headers"]))
    return headers
