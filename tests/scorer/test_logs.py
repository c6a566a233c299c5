"""The access log: whole JSON lines, gathered into few writes of at most PIPE_BUF bytes."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from scoring_image import logs


def test_access_lines_gather_into_whole_writes_of_at_most_pipe_buf(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    monkeypatch.setattr(logs, "_STDOUT_FD", write_end)
    writes: list[int] = []
    real_write = os.write
    monkeypatch.setattr(logs.os, "write", lambda fd, data: writes.append(len(data)) or real_write(fd, data))

    async def scenario() -> None:
        access = logs.AccessLog(asyncio.get_running_loop(), "3")
        access.write('quote"id', b"client-7", "POST", 200, 1.5)
        assert writes == []  # gathered, not written per request
        await asyncio.sleep(logs.AccessLog.FLUSH_S * 2)
        assert len(writes) == 1  # the timer wrote it
        for i in range(100):
            access.write(f"id-{i}", None, "POST", 200, 0.25)
        access.flush()

    asyncio.run(scenario())
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        lines = [json.loads(line) for line in pipe.read().splitlines()]
    assert len(lines) == 101 and all(size <= logs._PIPE_BUF for size in writes) and len(writes) < 20
    assert lines[0]["request_id"] == 'quote"id' and lines[0]["worker"] == "3"
    # the id the client traces by (what its support ticket quotes), when it sent one
    assert lines[0]["client_request_id"] == "client-7" and lines[1]["client_request_id"] is None
    assert lines[0]["message"] == "POST /score 200" and lines[0]["duration_ms"] == 1.5
    assert lines[0]["logger"] == "scoring_image.access" and lines[0]["time"].endswith("Z")
    assert [line["request_id"] for line in lines[1:]] == [f"id-{i}" for i in range(100)]
