"""The router's own error answers: their log lines are bounded per route and code, their count is not."""

from __future__ import annotations

import asyncio
import logging

import pytest

from router_image import metrics, responses
from router_image.responses import HttpError, error_answer

IRIS = ("service", "iris")
pytestmark = pytest.mark.anyio


async def test_a_flood_of_one_error_logs_a_burst_then_one_line_with_how_many_more(monkeypatch, caplog) -> None:
    """Junk requests (401s) or an overload's 503s wrote a line each: megabytes a second into a log pipeline
    billed by the GB, from the router's CPU when it had the least to spare. The metric still counts each."""
    monkeypatch.setattr(responses, "LOG_WINDOW_S", 0.2)
    monkeypatch.setattr(responses, "_errors", responses.ErrorLog())
    caplog.set_level(logging.INFO, logger="router")
    before = metrics._ERRORS.get((IRIS, 401, "Unauthorized"), 0)
    for _ in range(100):
        error_answer(HttpError(401, "Unauthorized", "wrong key"), [], "service iris", IRIS)
    for _ in range(3):
        error_answer(HttpError(503, "QueueTimeout", "no slot"), [], "iris (iris)", IRIS)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("401 Unauthorized" in line for line in lines) == responses.LOG_BURST
    assert sum("503 QueueTimeout" in line for line in lines) == 3  # its own burst
    assert metrics._ERRORS.get((IRIS, 401, "Unauthorized"), 0) - before == 100
    caplog.clear()
    await asyncio.sleep(0.3)
    [summary] = [r for r in caplog.records]
    assert summary.levelno == logging.INFO
    assert f"{100 - responses.LOG_BURST} more 401 Unauthorized answers" in summary.getMessage()
    assert "service iris" in summary.getMessage()
    caplog.clear()
    error_answer(HttpError(401, "Unauthorized", "wrong key"), [], "service iris", IRIS)  # a new window
    assert [r.getMessage() for r in caplog.records] == ["service iris: 401 Unauthorized: wrong key"]


def test_a_window_left_open_by_an_event_loop_that_ended_does_not_silence_the_next_one(monkeypatch, caplog) -> None:
    monkeypatch.setattr(responses, "_errors", responses.ErrorLog())
    caplog.set_level(logging.INFO, logger="router")

    async def flood() -> None:
        for _ in range(responses.LOG_BURST):
            error_answer(HttpError(404, "NotFound", "no such service"), [], "/junk", metrics.NO_ROUTE)

    asyncio.run(flood())  # its window's timer never runs: that loop is closed
    caplog.clear()
    asyncio.run(flood())
    assert len(caplog.records) == responses.LOG_BURST


async def test_the_http_servers_own_answers_are_logged_within_the_same_bounds(monkeypatch, caplog) -> None:
    """A client opening connections past the cap, or sending junk, is answered by the server, not the app."""
    monkeypatch.setattr(responses, "_errors", responses.ErrorLog())
    caplog.set_level(logging.INFO, logger="router")
    before = metrics._ERRORS.get((metrics.NO_ROUTE, 503, "TooManyConnections"), 0)
    for i in range(50):
        responses.server_error(503, "TooManyConnections", "the server holds as many connections as it takes", f"r{i}")
    assert len(caplog.records) == responses.LOG_BURST and caplog.records[0].request_id == "r0"
    assert metrics._ERRORS[(metrics.NO_ROUTE, 503, "TooManyConnections")] - before == 50
