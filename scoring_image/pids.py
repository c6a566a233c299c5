"""Whether a process still exists: spool segments and metric snapshots are named by their writer.

A spool outlives its container (an emptyDir survives a container restart) and a restarted
container numbers its processes from 1 again: a segment's writer is named by pid and start time,
so a pid a new process took is not taken for the writer, whose segment would then wait unshipped
for as long as that process lives.
"""

from __future__ import annotations

import os
from pathlib import Path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _started(pid: int) -> int:
    """When the process started, in clock ticks after boot (/proc/<pid>/stat's 22nd field); 0 where
    there is no procfs (macOS: the pid is then taken at its word)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def writer_id(pid: int | None = None) -> str:
    """This process (or `pid`) as files name their writer: `<pid>_<start ticks>`."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}_{_started(pid)}"


def writer_alive(writer: str) -> bool:
    """Whether the process a `writer_id` names still runs; a bare pid is taken at its word."""
    pid, _, started = writer.partition("_")
    return alive(int(pid)) and (not started or _started(int(pid)) in (0, int(started)))
