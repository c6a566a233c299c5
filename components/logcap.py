"""`python components/logcap.py FILE`: the local router's output, written to FILE and bounded.

`local up` gave the router its log file as its stdout, which nothing could bound: a stack left running wrote
to router.log without end. The output now comes through a pipe to this process, which moves FILE aside to
FILE.1 (replacing the one there) before it would pass MAX_BYTES, at a line's end, as the router bounds its
replicas' logs (the same 50 MiB). It ends when everything holding the pipe has: the router and its session.
Standard library only, run as a file: it is the CLI's own copy that runs, whatever Python path the stack's
project gives.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MAX_BYTES = 50 * 1024 * 1024
CHUNK = 64 * 1024


def copy(source: int, path: Path, max_bytes: int = MAX_BYTES) -> None:
    """What `source` (a file descriptor) gives, into `path`, until its end; each file ends at a line's end,
    but for a line longer than max_bytes, which is alone in its file."""
    out = open(path, "ab")
    try:
        while chunk := os.read(source, CHUNK):
            while chunk:
                room = max_bytes - out.tell()
                if len(chunk) <= room:
                    out.write(chunk)
                    break
                cut = chunk.rfind(b"\n", 0, room) + 1  # the lines that fit
                if cut == 0 and out.tell() == 0:
                    cut = chunk.find(b"\n") + 1 or len(chunk)
                out.write(chunk[:cut])
                chunk = chunk[cut:]
                out.close()
                path.replace(path.with_name(f"{path.name}.1"))
                out = open(path, "ab")
            out.flush()  # read as it comes: `local status` and a failed `up` show its end
    finally:
        out.close()


if __name__ == "__main__":
    copy(sys.stdin.fileno(), Path(sys.argv[1]))
