"""cors.py: which OPTIONS is a preflight, and the router's answer to one."""

from __future__ import annotations

from router_image import cors

ASKED = [(b"origin", b"https://app.example"), (b"access-control-request-method", b"POST")]


def test_a_preflight_has_both_headers_and_no_body() -> None:
    assert cors.preflight(ASKED) == dict(ASKED)
    assert cors.preflight(ASKED[:1]) is None and cors.preflight(ASKED[1:]) is None
    assert cors.preflight([*ASKED, (b"content-length", b"0")]) == dict(ASKED)
    assert cors.preflight([*ASKED, (b"content-length", b"2")]) is None
    assert cors.preflight([*ASKED, (b"transfer-encoding", b"chunked")]) is None


def test_any_origin_is_answered_as_star_a_listed_one_by_name() -> None:
    asked = dict(ASKED)
    assert cors.refusal(("*",), asked) is None
    assert dict(cors.answer_headers(("*",), asked))[b"access-control-allow-origin"] == b"*"
    named = dict(cors.answer_headers(("https://app.example",), asked))
    assert named[b"access-control-allow-origin"] == b"https://app.example" and named[b"vary"] == b"Origin"
    assert b"access-control-allow-headers" not in named  # none asked for
    assert "not one this route admits" in cors.refusal(("https://other.example",), asked)
    assert "a score route takes GET, POST, OPTIONS" in cors.refusal(("*",), asked | {b"access-control-request-method": b"PUT"})
