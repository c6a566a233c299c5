"""A segment's batches on their way to the destination: in parts, to every model's blob at once.

A batch holds one kind (inputs or predictions) of one day's records of a segment, bound for one
blob per model.  It keeps at most a part of its lines: each full part is staged to every blob
before the shipper reads on (a 200 MiB segment read whole cost the supervisor, which shares the
pod's memory, ~450 MB more).  The blobs are written by up to UPLOADS_AT_ONCE threads: one after the
other, 50 models' blobs behind a store 10 ms away took ~3.7 s a segment.  The threads are daemons,
as ThreadPoolExecutor's are not: a store that hangs must not hold the process's exit.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from functools import partial

from scoring_image.collection.destinations import Destination

PART_BYTES = 4 * 2**20  # Azure's default block size, and what the shipper holds per batch
UPLOADS_AT_ONCE = 8


def run_all(calls: list[Callable[[], object]]) -> None:
    """Run `calls` on up to UPLOADS_AT_ONCE threads; after a failure no new one starts, and the first
    failure is raised once every running one ended."""
    todo = deque(calls)
    failures: list[Exception] = []

    def work() -> None:
        while not failures:
            try:
                call = todo.popleft()
            except IndexError:
                return
            try:
                call()
            except Exception as exc:  # raised below, in the shipper's thread
                failures.append(exc)

    threads = [threading.Thread(target=work, name="upload", daemon=True)
               for _ in range(min(UPLOADS_AT_ONCE, len(todo)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


class Batch:
    def __init__(self, destination: Destination, names: list[str]) -> None:
        self._destination = destination
        self._names = names
        self._buffer = bytearray()
        self._staged = 0  # parts staged to every blob

    def add(self, line: bytes) -> None:
        """Append a line (its "\\n" added), staging every part it fills: a line larger than a part is
        cut, never copied whole."""
        rest = memoryview(line)
        while len(self._buffer) + len(rest) >= PART_BYTES:
            cut = PART_BYTES - len(self._buffer)
            self._buffer += rest[:cut]
            rest = rest[cut:]
            part = bytes(self._buffer)
            self._buffer.clear()
            run_all([partial(self._destination.stage, name, self._staged, part) for name in self._names])
            self._staged += 1
        self._buffer += rest
        self._buffer += b"\n"

    def finish(self) -> list[Callable[[], None]]:
        """What writes each blob whole: the batch in one write when it never filled a part, else its last
        part staged and all committed (to be run by `run_all`, with other batches' for more at once)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        if not self._staged:
            return [partial(self._destination.put, name, rest) for name in self._names]
        return [partial(self._commit, name, rest) for name in self._names]

    def _commit(self, name: str, rest: bytes) -> None:
        parts = self._staged
        if rest:
            self._destination.stage(name, parts, rest)
            parts += 1
        self._destination.commit(name, parts)
