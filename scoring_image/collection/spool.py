"""The worker's side of data collection: an append-only segment file per worker.

A record is written with one `os.write` before the response is sent.  Once `write` returns,
the bytes are in the kernel: a `kill -9` of the server cannot lose them (a crash of the whole
machine could; fsync per request would cost more than the scoring).  Segments are named
`<ns-timestamp>-<pid>_<start ticks>.open` while written (scoring_image.pids.writer_id) and renamed to
`.jsonl` when sealed; the shipper seals the open segments of processes that died.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from scoring_image.pids import writer_id

OPEN = ".open"
SEALED = ".jsonl"


class Spool:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._folder = folder
        self._fd: int | None = None
        self._path: Path | None = None

    def append(self, request_id: str, data: Any, prediction: Any) -> None:
        """Spool one record; `data` / `prediction` may be `orjson.Fragment`s of JSON already encoded."""
        record = {
            "id": uuid.uuid4().hex,
            "request_id": request_id,
            "time": time.time(),
            "data": data,
            "prediction": prediction,
        }
        if self._fd is None:
            self._path = self._folder / f"{time.time_ns():020d}-{writer_id()}{OPEN}"
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.write(self._fd, orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))

    def seal(self) -> None:
        """Close the current segment and hand it to the shipper (a no-op when nothing was written)."""
        if self._fd is None or self._path is None:
            return
        os.close(self._fd)
        self._path.rename(self._path.with_suffix(SEALED))
        self._fd = None
        self._path = None
