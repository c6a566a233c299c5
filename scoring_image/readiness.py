"""Whether every worker's init() succeeded, shared between the worker processes.

Any worker may answer `/ready`, so each publishes its state as a small file in a folder the
supervisor created; the answer is the union.  Files are replaced atomically (rename), so a
reader never sees half a state.  Once one generation was ready, a worker being replaced (after a
timeout or a crash) does not take the pod out of service while another one serves: its init() may
take as long as the model's load, and one slow request would otherwise empty a one-replica service.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

# replacing: a worker started in place of one that exited, not yet ready; recycling: one about to exit.
State = Literal["starting", "replacing", "ready", "failed", "recycling"]


@dataclass(frozen=True)
class WorkerState:
    worker: int
    state: State
    reason: str = ""


class Board:
    def __init__(self, folder: Path, workers: int) -> None:
        self._folder = folder
        self._workers = workers

    def publish(self, worker: int, state: State, reason: str = "") -> None:
        target = self._folder / f"worker-{worker}.json"
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps({"state": state, "reason": reason}))
        tmp.replace(target)

    def state(self, worker: int) -> WorkerState | None:
        """The worker slot's last published state; None before any."""
        try:
            data = orjson.loads((self._folder / f"worker-{worker}.json").read_bytes())
        except FileNotFoundError:
            return None
        return WorkerState(worker, data["state"], data["reason"])

    def read(self) -> list[WorkerState]:
        return [self.state(worker) or WorkerState(worker, "starting") for worker in range(self._workers)]

    def not_ready(self) -> list[WorkerState]:
        """The workers that keep the pod from being ready: none while one serves and the others are replacements."""
        states = self.read()
        waiting = [s for s in states if s.state != "ready"]
        if len(waiting) < len(states) and all(s.state in ("replacing", "recycling") for s in waiting):
            return []
        return waiting
