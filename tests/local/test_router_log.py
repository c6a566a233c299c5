"""The local router's log, written through components.logcap: bounded, one older file kept."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from components import logcap


def test_the_log_past_its_bound_moves_aside_and_one_older_file_is_kept(tmp_path: Path) -> None:
    """router.log was the router's stdout itself: a stack left running grew it without end."""
    log = tmp_path / "router.log"
    read, write = os.pipe()
    writer = threading.Thread(target=logcap.copy, args=(read, log, 1000))
    writer.start()
    for i in range(100):  # some 3 kB in all, the bound 1 kB
        os.write(write, f"line {i:03d} of the router\n".encode())
    os.close(write)
    writer.join(5)
    assert not writer.is_alive()  # ends when its writers have
    older = log.with_name("router.log.1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["router.log", "router.log.1"]
    assert log.stat().st_size <= 1000 and 0 < older.stat().st_size <= 1000 + logcap.CHUNK
    assert log.read_text().endswith("line 099 of the router\n")
    assert older.read_text().endswith("\n") and log.read_text().startswith("line ")  # moved at a line's end
