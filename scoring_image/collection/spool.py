"""The worker's side of data collection: an append-only segment file per worker.

A record is written with one `os.write` before the response is sent.  Once `write` returns,
the bytes are in the kernel: a `kill -9` of the server cannot lose them (a crash of the whole
machine could; fsync per request would cost more than the scoring).  A record that cannot be
written (a full disk) is left out whole: the segment is cut back to the records before it, and
the caller counts it as dropped; the prediction itself is still answered.  Segments are named
`<ns-timestamp>-<pid>_<start ticks>.open` while written (scoring_image.pids.writer_id) and renamed to
`.jsonl` when sealed; the shipper seals the open segments of processes that died.

A worker writes a request's records on its run thread, after run(): a 50 MB record took ~180 ms to write, which
held the event loop (and every other request on it) where it was written there.  A record is written in parts
(os.writev), its body and answer as they came, never copied into one line.  What a script collects outside a
request is written on the thread that collects it; a lock keeps each record whole and the segment's end known.

The spool has a budget: while shipping fails (storage unreachable), segments pile up, and on a
node's disk that ends in the kubelet evicting pods. From when the spool holds its budget's worth until
it is well under it again (shipper.RESUME_AT) the shipper keeps a `full` file in it, and writers leave
new records out, as on a full disk.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from scoring_image.pids import writer_id

OPEN = ".open"
SEALED = ".jsonl"
FULL = "full"
FULL_CHECK_S = 1.0  # how often a writer looks for FULL, and the shipper measures the spool


class Spool:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._folder = folder
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0  # of the open segment: ours alone to write
        self._full = False
        self._full_checked = 0.0
        self._lock = threading.Lock()

    def append(self, request_id: str, data: Any, prediction: Any) -> bool:
        """Spool one record; `data` / `prediction` as bytes are JSON already encoded, on one line.
        False when it could not be written, or the spool is full: nothing of it stays in the segment."""
        head = orjson.dumps({"id": uuid.uuid4().hex, "request_id": request_id, "time": time.time()})
        return self.write(head[:-1], b',"data":', _json(data), b',"prediction":', _json(prediction), b"}\n")

    def write(self, *parts: bytes) -> bool:
        """Spool one record already encoded (a JSON object ending in "\\n", in `parts`), as `append` does."""
        with self._lock:
            return self._write(parts)

    def _write(self, parts: tuple[bytes, ...]) -> bool:
        now = time.monotonic()
        if now - self._full_checked >= FULL_CHECK_S:
            self._full_checked = now
            self._full = (self._folder / FULL).exists()
        if self._full:
            return False
        try:
            if self._fd is None:
                self._path = self._folder / f"{time.time_ns():020d}-{writer_id()}{OPEN}"
                self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
                self._size = 0
            written = os.writev(self._fd, parts)
        except OSError:
            written = -1
        if written == sum(map(len, parts)):
            self._size += written
            return True
        if written > 0 and self._fd is not None:  # a part of the line: the shipper would read a broken record
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._seal()  # the part ends the segment, where the shipper skips it as a torn record
        return False

    def seal(self) -> None:
        """Close the current segment and hand it to the shipper (a no-op when nothing was written)."""
        with self._lock:
            self._seal()

    def _seal(self) -> None:
        if self._fd is None or self._path is None:
            return
        fd, path, self._fd, self._path = self._fd, self._path, None, None
        os.close(fd)
        path.rename(path.with_suffix(SEALED))


def _json(value: Any) -> bytes:
    return value if isinstance(value, bytes) else orjson.dumps(value)


def named(folder: Path, suffix: str) -> list[str]:
    """The names of the spool's segments that end in `suffix`, oldest first (a segment is named by its start):
    names, not paths, which took ten times as long to list and sort where a store down for days left 100,000s."""
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries if entry.name.endswith(suffix))


class Usage:
    """What the spool's open and sealed segments take on the disk: their blocks, as the kubelet counts an emptyDir,
    not their length (a quiet service's segment of a record or two takes a 4 KiB block for a few hundred bytes,
    and the budget guards the node's disk).  Measured every second: a sealed segment never changes, so its size is
    kept and only open and new ones are looked at (stat'ing each of the 250,000 a store down for days leaves
    took the supervisor, which shares the pod's CPU with the workers, a core)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._sealed: dict[str, int] = {}

    def held(self) -> int:
        sealed: dict[str, int] = {}
        total = 0
        with os.scandir(self._folder) as entries:
            for entry in entries:
                if entry.name.endswith(SEALED):
                    size = self._sealed.get(entry.name)
                    sealed[entry.name] = size = _taken(entry) if size is None else size
                    total += size
                elif entry.name.endswith(OPEN):
                    total += _taken(entry)
        self._sealed = sealed
        return total


def _taken(segment: os.DirEntry[str]) -> int:
    try:
        found = segment.stat()
    except FileNotFoundError:  # the shipper deleted it meanwhile
        return 0
    return max(found.st_blocks * 512, found.st_size)  # a filesystem that packs small files: their length
