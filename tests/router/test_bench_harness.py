"""The router benchmark's own arithmetic (benchmarks/router/harness.py), where a figure it reports rests on it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "router"))
import harness  # noqa: E402


def test_machine_ticks_count_a_guests_time_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On a machine running virtual machines /proc/stat's guest columns repeat time its user and nice
    columns already hold: summed again, the busy share read high (here 0.6 for half the time busy)."""
    stat = tmp_path / "stat"
    #                user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  300 0 100 350 50 0 0 0 200 0\ncpu0 300 0 100 350 50 0 0 0 200 0\n")
    monkeypatch.setattr(harness, "Path", lambda _: stat)
    busy, total = harness.machine_ticks()
    assert (busy, total) == (400, 800)
