"""The running run()'s deadline, shared with the supervisor, which kills a worker stuck past it.

A worker's own sweep (runner.py) answers 504 when run() overruns, from the worker's event loop. A
run() that holds the GIL (a C extension that never lets go of it, a catastrophic regex) keeps that
loop from running at all: the client would wait as long as run() does, unbounded. So the run thread
writes each bounded job's deadline into its worker's slot of a small file the supervisor creates (a
memory write, no syscall), and the supervisor, which runs no user code, kills a worker still in a
job a grace past its deadline: the client's connection closes unanswered and the worker is replaced,
as gunicorn's arbiter does with a stuck worker. Deadlines are time.monotonic(): one clock for all
processes of the machine.
"""

from __future__ import annotations

import mmap
from pathlib import Path

_SLOT = 8  # bytes: a C double, seconds; 0 while no bounded job runs
# Past its deadline the worker's own sweep answers 504 within a tenth of a second; only a worker whose
# loop cannot run is still in the job this much later.
GRACE_S = 1.0


def create(path: Path, workers: int) -> None:
    """The supervisor's part: one zeroed slot per worker."""
    path.write_bytes(bytes(_SLOT * workers))


class _Slots:
    def __init__(self, path: Path) -> None:
        with path.open("r+b") as file:
            self._map = mmap.mmap(file.fileno(), 0)
        self.slots = memoryview(self._map).cast("d")


class Deadline(_Slots):
    """A worker's slot, written by its run thread."""

    def __init__(self, path: Path, index: int) -> None:
        super().__init__(path)
        self._index = index
        self.slots[index] = 0.0  # a replacement starts with none

    def set(self, deadline: float) -> None:
        self.slots[self._index] = deadline

    def clear(self) -> None:
        self.slots[self._index] = 0.0


class Watch(_Slots):
    """The supervisor's view of every worker's slot."""

    def overdue(self, index: int, now: float) -> bool:
        deadline = self.slots[index]
        return 0.0 < deadline < now - GRACE_S

    def clear(self, index: int) -> None:
        self.slots[index] = 0.0
