"""How many connections each worker holds, shared between the workers, so new ones go to the least busy.

All workers accept from one socket, and whichever is first to look takes the connection; a
burst of new clients (a load balancer opening its pool, wrk starting) used to land mostly on
one worker (14/2, 16/0 of 16 over 2), which then did the work of two.  Each worker keeps its
count in one slot of a small file the supervisor creates, mapped into every worker; a worker
holding more than the least loaded one lets a new connection wait a moment for the others.
Only the owner writes a slot, so no lock is needed; a reader may see a count one off.
"""

from __future__ import annotations

import mmap
from pathlib import Path

_SLOT = 4  # bytes: a C int


def create(path: Path, workers: int) -> None:
    """The supervisor's part: one zeroed slot per worker."""
    path.write_bytes(bytes(_SLOT * workers))


class Counts:
    def __init__(self, path: Path, index: int) -> None:
        with path.open("r+b") as file:
            self._map = mmap.mmap(file.fileno(), 0)
        self._slots = memoryview(self._map).cast("i")
        self._index = index
        self._slots[index] = 0  # a replacement starts from nothing

    def add(self, delta: int) -> None:
        self._slots[self._index] += delta

    def busier_than_another(self) -> bool:
        return self._slots[self._index] > min(self._slots)
